"""Tiled prediction in-process: tiled equals whole-image, TTA, normalisation as in training, inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr

from psr.data.zarr import STATS_SUBSAMPLE, image_statistics
from psr.inference import images
from psr.inference.errors import PredictionError
from psr.inference.forward import infer
from psr.inference.images import open_input
from psr.inference.predict import predict_image
from psr.io.omezarr import discover_images, write_ome_zarr_collection
from tests.inference.conftest import IsotropicNet, LocalNet, loaded


def read_output(path: Path) -> np.ndarray:
    return np.asarray(zarr.open_group(str(path), mode="r")["0"][...])


def run(model, source: Path, output: Path, **options) -> np.ndarray:  # noqa: ANN001, ANN003
    with open_input(source) as image:
        predict_image(model, image, output, denormalize=False, **options)
    return read_output(output)


@pytest.mark.parametrize(("tile", "overlap"), [(16, 8), (17, 8), (23, 11), ((16, 30), (8, 12))])
def test_tiled_prediction_equals_whole_image_prediction_2d(tmp_path: Path, write_zarr, tile, overlap) -> None:  # noqa: ANN001
    """Receptive-field radius 2 input pixels; margins of overlap // 4 >= 2 hide every tile border."""
    model = loaded(LocalNet(scale=2))
    source = write_zarr(np.random.default_rng(0).random((37, 53)).astype(np.float32) * 300)
    whole = run(model, source, tmp_path / "whole.ome.zarr", tile=64, overlap=0)
    tiled = run(model, source, tmp_path / "tiled.ome.zarr", tile=tile, overlap=overlap, batch_size=3)
    assert tiled.shape == whole.shape == (74, 106)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-4)


def test_tiled_prediction_equals_whole_image_prediction_3d(tmp_path: Path, write_zarr) -> None:  # noqa: ANN001
    model = loaded(LocalNet(scale=2, dims=3, channels=2))
    volume = np.random.default_rng(1).random((2, 21, 19, 23)).astype(np.float32)  # (c, z, y, x)
    source = write_zarr(volume)
    whole = run(model, source, tmp_path / "whole.ome.zarr", tile=32, overlap=0)
    tiled = run(model, source, tmp_path / "tiled.ome.zarr", tile=(16, 16, 20), overlap=(8, 8, 10))
    assert tiled.shape == whole.shape == (2, 21, 38, 46)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-4)


def test_too_little_overlap_shows_seams(tmp_path: Path, write_zarr) -> None:  # noqa: ANN001
    """The control: with no overlap, tile borders differ from whole-image prediction."""
    model = loaded(LocalNet(scale=2))
    source = write_zarr(np.random.default_rng(0).random((37, 53)).astype(np.float32))
    whole = run(model, source, tmp_path / "whole.ome.zarr", tile=64, overlap=0)
    seams = run(model, source, tmp_path / "seams.ome.zarr", tile=16, overlap=0)
    assert np.abs(seams - whole).max() > 1e-2


def test_tta_of_an_equivariant_model_equals_plain_prediction(tmp_path: Path, write_zarr) -> None:  # noqa: ANN001
    model = loaded(IsotropicNet(scale=2))
    source = write_zarr(np.random.default_rng(2).random((29, 41)).astype(np.float32))
    plain = run(model, source, tmp_path / "plain.ome.zarr", tile=16, overlap=8)
    tta = run(model, source, tmp_path / "tta.ome.zarr", tile=16, overlap=8, tta=True)
    np.testing.assert_allclose(tta, plain, rtol=0, atol=1e-5)


def test_tta_averages_the_eight_symmetries() -> None:
    """A non-equivariant model: TTA is the mean of the 8 transformed predictions, each undone."""
    net = LocalNet(scale=2).eval()
    x = torch.rand(2, 1, 9, 13)
    expected = torch.zeros(2, 1, 18, 26)
    for flip in (False, True):
        for k in range(4):
            t = torch.rot90(x.flip(-1) if flip else x, k, (-2, -1))
            y = torch.rot90(net(t), -k, (-2, -1))
            expected += (y.flip(-1) if flip else y) / 8
    with torch.no_grad():
        torch.testing.assert_close(infer(net, x, tta=True), expected, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(infer(net, x, tta=True), infer(net, x), atol=1e-3)


class Identity(torch.nn.Module):
    spatial_dims, scale, in_channels, out_channels = 2, 1, 2, 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


def test_normalisation_matches_training_and_denormalize_restores_the_range(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    image = np.stack([rng.gamma(2.0, 100.0, (3, 40, 50)), rng.normal(5000, 300, (3, 40, 50))], 1)
    store = write_ome_zarr_collection(tmp_path / "in.ome.zarr", [image.astype(np.uint16)], "tcyx")
    ref = discover_images(store)[0]
    low, high = image_statistics(ref, 1, (2, 3), (1.0, 99.8))  # what training uses for this image
    model = loaded(Identity())
    normalised = run(model, store / "img_000", tmp_path / "norm.ome.zarr", tile=16, overlap=4)
    source = np.asarray(ref.open()[...], np.float32)
    expected = (source - low[None, :, None, None]) / (high - low)[None, :, None, None]
    np.testing.assert_allclose(normalised, expected, rtol=1e-5, atol=1e-5)
    with open_input(store) as img:
        predict_image(model, img, tmp_path / "denorm.ome.zarr", tile=16, overlap=4)
    np.testing.assert_allclose(read_output(tmp_path / "denorm.ome.zarr"), source, rtol=1e-5, atol=1e-2)
    assert images.STATS_SUBSAMPLE == STATS_SUBSAMPLE


def test_png_rgb_needs_a_three_channel_model_or_a_channel_choice(tmp_path: Path) -> None:
    import skimage.io

    rgb = (np.random.default_rng(4).random((20, 30, 3)) * 255).astype(np.uint8)
    skimage.io.imsave(tmp_path / "rgb.png", rgb, check_contrast=False)
    with open_input(tmp_path / "rgb.png") as img:
        with pytest.raises(
            PredictionError, match=r"has 3 channel\(s\) \(an RGB image\) but the model expects 1.*channel=0"
        ):
            predict_image(loaded(LocalNet()), img, tmp_path / "out.ome.zarr")
        predict_image(loaded(LocalNet()), img, tmp_path / "green.ome.zarr", channel=1)
        predict_image(loaded(LocalNet(channels=3)), img, tmp_path / "rgb.ome.zarr")
    assert read_output(tmp_path / "green.ome.zarr").shape == (1, 40, 60)
    assert read_output(tmp_path / "rgb.ome.zarr").shape == (3, 40, 60)


def test_tiff_axes_and_pixel_sizes_are_read(tmp_path: Path) -> None:
    data = np.zeros((3, 4, 10, 12), np.uint16)
    tifffile.imwrite(
        tmp_path / "ij.tif",
        data,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.25),
        metadata={"axes": "TZYX", "unit": "um", "spacing": 0.5},
    )
    tifffile.imwrite(
        tmp_path / "ome.tif",
        data[0],
        ome=True,
        metadata={"axes": "ZYX", "PhysicalSizeX": 0.1, "PhysicalSizeY": 0.1, "PhysicalSizeZ": 0.3},
    )
    tifffile.imwrite(tmp_path / "tiled.tif", data[0, 0], tile=(16, 16), compression="zlib")
    with open_input(tmp_path / "ij.tif") as img:
        assert (img.axes, img.unit, img.pixel_size) == (
            "tzyx",
            "micrometer",
            {"x": 0.25, "y": 0.25, "z": 0.5},
        )
    with open_input(tmp_path / "ome.tif") as img:
        assert img.axes == "zyx" and img.pixel_size == {"x": 0.1, "y": 0.1, "z": 0.3}
    with open_input(tmp_path / "tiled.tif") as img:  # compressed tiles: read through tifffile's zarr store
        assert isinstance(img.data, zarr.Array) and img.axes == "yx"
    with open_input(tmp_path / "ij.tif", axes="zcyx") as img:
        assert img.axes == "zcyx"
    with pytest.raises(PredictionError, match="axes=zyx has 3 letters but input .* has 4 axes"):
        open_input(tmp_path / "ij.tif", axes="zyx")


def test_2d_model_predicts_every_z_plane_and_3d_model_needs_z(tmp_path: Path, write_zarr) -> None:  # noqa: ANN001
    """Each z plane is predicted on its own. The model is linear with unit gain, so the result does not
    depend on the normalisation (which covers the whole volume), except at the zero-padded border."""
    volume = np.random.default_rng(5).random((1, 3, 20, 24)).astype(np.float32)
    source = write_zarr(volume)  # a bare 4D array reads as (c, z, y, x)
    model = loaded(IsotropicNet())
    with open_input(source) as img:
        predict_image(model, img, tmp_path / "planes.ome.zarr", tile=16, overlap=4)
    out = read_output(tmp_path / "planes.ome.zarr")
    assert out.shape == (1, 3, 40, 48)
    single = write_zarr(volume[0, 1], "plane.zarr")
    with open_input(single) as img:
        predict_image(model, img, tmp_path / "one.ome.zarr", tile=16, overlap=4)
    inner = (slice(2, -2), slice(2, -2))
    np.testing.assert_allclose(out[0, 1][inner], read_output(tmp_path / "one.ome.zarr")[inner], atol=1e-4)
    with open_input(single) as img, pytest.raises(PredictionError, match="3D model .* no z axis"):
        predict_image(loaded(LocalNet(dims=3)), img, tmp_path / "x.ome.zarr")
    assert not (tmp_path / "x.ome.zarr").exists()


class FailingNet(LocalNet):
    """Fails on its third batch, after the output and the accumulator exist on disk."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("device lost")
        return super().forward(x)


@pytest.mark.parametrize("name", ["out.ome.zarr", "out.tif"])
def test_a_failure_midway_leaves_no_output_and_no_temporary_folder(
    tmp_path: Path, write_zarr, name: str
) -> None:  # noqa: ANN001
    source = write_zarr(np.random.default_rng(6).random((40, 40)).astype(np.float32))
    out = tmp_path / "nested" / name
    with open_input(source) as img, pytest.raises(RuntimeError, match="device lost"):
        predict_image(loaded(FailingNet()), img, out, tile=16, overlap=4, batch_size=1)
    assert not (tmp_path / "nested").exists()  # the folder it created goes too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.zarr"]
