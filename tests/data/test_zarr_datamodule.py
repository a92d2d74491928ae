import numpy as np
import pytest
import torch

from psr.data.omezarr import write_ome_zarr_collection
from psr.data.zarr import ZarrDataModule


def _images(n: int, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.random((1, size, size)) * 1000 + 100).astype(np.uint16) for _ in range(n)]


def test_patches_are_normalised_and_split_by_image(tmp_path) -> None:  # noqa: ANN001
    store = write_ome_zarr_collection(tmp_path / "set.ome.zarr", _images(5), "cyx")
    dm = ZarrDataModule(str(store), patch_size=16, scale=4, batch_size=4, samples_per_epoch=8, val_samples=4)
    dm.setup()
    train_names = {s.ref.name for s in dm.train_sources}
    val_names = {s.ref.name for s in dm.val_sources}
    assert len(train_names) == 4 and len(val_names) == 1 and not train_names & val_names
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (4, 1, 16, 16) and batch.dtype == torch.float32
    assert -0.2 < float(batch.mean()) < 1.2


def test_validation_patches_are_identical_every_epoch(tmp_path) -> None:  # noqa: ANN001
    store = write_ome_zarr_collection(tmp_path / "set.ome.zarr", _images(4), "cyx")
    dm = ZarrDataModule(str(store), patch_size=16, batch_size=4, val_samples=8, val_fraction=0.5)
    dm.setup()
    first = torch.cat(list(dm.val_dataloader()))
    second = torch.cat(list(dm.val_dataloader()))
    assert torch.equal(first, second)
    assert not torch.equal(first[0], first[1])
    torch.manual_seed(0)
    a = next(iter(dm.train_dataloader()))
    b = next(iter(dm.train_dataloader()))
    assert not torch.equal(a, b)  # training patches are redrawn


def test_single_image_is_split_by_rows(write_zarr) -> None:  # noqa: ANN001
    path = write_zarr(np.arange(128 * 64, dtype=np.float32).reshape(128, 64))
    dm = ZarrDataModule(str(path), patch_size=16, val_fraction=0.25, val_samples=16)
    dm.setup()
    (train,), (val,) = dm.train_sources, dm.val_sources
    assert train.y_range == (0, 96) and val.y_range == (96, 128)
    # Every validation patch comes from the held-out rows: values there are >= 96 * 64.
    lo, hi = val.low[0], val.high[0]
    raw = torch.cat(list(dm.val_dataloader())) * (hi - lo) + lo
    assert float(raw.min()) >= 96 * 64 - 1e-2


def test_percentile_normalisation_per_image(write_zarr) -> None:  # noqa: ANN001
    image = np.linspace(0, 1000, 64 * 64, dtype=np.float32).reshape(64, 64)
    dm = ZarrDataModule(str(write_zarr(image)), patch_size=16, percentiles=(0, 100), val_fraction=0)
    dm.setup()
    src = dm.train_sources[0]
    assert src.low[0] == pytest.approx(0) and src.high[0] == pytest.approx(1000)


def test_multichannel_and_time_axes(tmp_path) -> None:  # noqa: ANN001
    rng = np.random.default_rng(0)
    image = rng.random((3, 2, 32, 32)).astype(np.float32)  # t, c, y, x
    store = write_ome_zarr_collection(tmp_path / "tc.ome.zarr", [image, image], "tcyx")
    dm = ZarrDataModule(str(store), patch_size=16, batch_size=2, samples_per_epoch=2, channels=[1])
    dm.setup()
    assert dm.in_channels == 1
    assert next(iter(dm.train_dataloader())).shape == (2, 1, 16, 16)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.full((32, 32), np.nan, np.float32), "all NaN"),
        (np.zeros((0, 32), np.float32), "empty"),
        (np.where(np.eye(32) > 0, np.nan, 1.0).astype(np.float32) + np.arange(32), "NaN/Inf values"),
        (np.ones((32, 32), np.float32), "no dynamic range"),
        (np.random.default_rng(0).random((8, 8)).astype(np.float32), "smaller than the patch"),
    ],
)
def test_bad_images_fail_with_the_image_name(write_zarr, array: np.ndarray, message: str) -> None:  # noqa: ANN001
    path = write_zarr(array, "bad.zarr")
    dm = ZarrDataModule(str(path), patch_size=16, val_fraction=0)
    with pytest.raises(ValueError, match=message) as info:
        dm.setup()
    assert "bad.zarr" in str(info.value)


def test_missing_path_and_bad_patch_size(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ZarrDataModule(str(tmp_path / "nope.zarr")).setup()
    with pytest.raises(ValueError, match="not divisible by the scale 4"):
        ZarrDataModule(str(tmp_path), patch_size=30, scale=4)


def test_multi_frame_windows_become_channels(tmp_path) -> None:  # noqa: ANN001
    # Frame t holds the value t everywhere (plus a ramp so percentiles differ): windows are consecutive.
    t = np.arange(9, dtype=np.float32)[:, None, None, None]
    stack = t * 10 + np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(1, 1, 32, 32)
    store = write_ome_zarr_collection(tmp_path / "t.ome.zarr", [stack, stack], "tcyx")
    dm = ZarrDataModule(str(store), patch_size=16, batch_size=4, samples_per_epoch=8, val_samples=4, frames=5)
    dm.setup()
    assert dm.in_channels == 5
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (4, 5, 16, 16)
    src = dm.train_sources[0]
    raw = batch.numpy() * (src.high[0] - src.low[0]) + src.low[0]
    frame_index = np.floor(raw.mean(axis=(2, 3)) / 10 + 0.01)
    assert np.all(np.diff(frame_index, axis=1) == 1)  # five neighbouring frames, in order


def test_multi_frame_errors(tmp_path) -> None:  # noqa: ANN001
    store = write_ome_zarr_collection(
        tmp_path / "s.ome.zarr", [np.random.default_rng(0).random((3, 1, 32, 32))], "tcyx"
    )
    with pytest.raises(ValueError, match="frames must be odd"):
        ZarrDataModule(str(store), patch_size=16, frames=4)
    with pytest.raises(ValueError, match="needs at least that many"):
        ZarrDataModule(str(store), patch_size=16, frames=5, val_fraction=0).setup()
    with pytest.raises(ValueError, match="needs a 'z' axis"):
        ZarrDataModule(str(store), patch_size=16, frames=3, frame_axis="z", val_fraction=0).setup()
