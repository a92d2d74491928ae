"""Scale augmentation (``data.zoom``): training patches read from windows 1/z their size and resized."""

from pathlib import Path

import numpy as np
import pytest
import torch

from psr.data.zarr import ZarrDataModule
from psr.io.omezarr import write_ome_zarr_collection


def _ramp_module(tmp_path: Path, zoom, shape=(1, 128, 128), axes="cyx", patch=32):  # noqa: ANN001
    """A datamodule over images whose intensity is the x coordinate: a patch's slope along x is 1/z."""
    ramp = np.broadcast_to(np.arange(shape[-1], dtype=np.float32), shape).copy()
    store = write_ome_zarr_collection(tmp_path / "ramp.ome.zarr", [ramp, ramp], axes)
    dm = ZarrDataModule(
        str(store),
        patch_size=patch,
        spatial_dims=len(axes) - 1,
        val_fraction=0.5,
        augment=False,
        percentiles=(0.0, 100.0),
        input_smoothing=0,
        zoom=zoom,
    )
    dm.setup()
    return dm


def _slope(patch: torch.Tensor, span: int = 127) -> float:
    """The median step along x inside the patch, in raw pixel units (the ramp 0..span is mapped to 0..1)."""
    return float(torch.median(patch[..., 2:-2].diff(dim=-1))) * span


def test_zoom_shows_structures_at_the_drawn_scale_in_training_only(tmp_path: Path) -> None:
    dm = _ramp_module(tmp_path, zoom=[0.5, 1.0])
    train = dm.train_dataloader().dataset
    slopes = [_slope(train[i]) for i in range(40)]
    assert all(tuple(train[i].shape) == (1, 32, 32) for i in range(3))
    assert min(slopes) > 0.97 and max(slopes) < 2.03  # a window of 32/z px shown in 32: slope 1/z
    assert max(slopes) - min(slopes) > 0.5  # drawn per patch
    val = dm.val_dataloader().dataset
    assert all(_slope(val[i]) == pytest.approx(1.0, abs=1e-4) for i in range(5))  # validation: never zoomed
    fixed = _ramp_module(tmp_path / "f", zoom=0.5).train_dataloader().dataset
    assert all(_slope(fixed[i]) == pytest.approx(2.0, rel=0.02) for i in range(5))
    # a window larger than the image is not read: z is raised until it fits (128 / 32 = 4 at most)
    far = _ramp_module(tmp_path / "g", zoom=0.1).train_dataloader().dataset
    assert all(_slope(far[i]) == pytest.approx(4.0, rel=0.02) for i in range(5))
    # no zoom: the patches are the raw pixels, as before the option existed
    plain = _ramp_module(tmp_path / "p", zoom=None).train_dataloader().dataset
    assert all(_slope(plain[i]) == pytest.approx(1.0, abs=1e-4) for i in range(5))


def test_zoom_scales_y_and_x_of_3d_patches_and_keeps_z(tmp_path: Path) -> None:
    dm = _ramp_module(tmp_path, zoom=0.5, shape=(1, 8, 64, 64), axes="czyx", patch=(4, 16, 16))
    patch = dm.train_dataloader().dataset[0]
    assert tuple(patch.shape) == (1, 4, 16, 16)
    assert _slope(patch, span=63) == pytest.approx(2.0, rel=0.02)


@pytest.mark.parametrize("zoom", [0, -1, [1.0, 0.5], [0.5], "big", [0.5, float("nan")]])
def test_a_bad_zoom_is_one_clear_error(tmp_path: Path, zoom) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="data.zoom"):
        _ramp_module(tmp_path, zoom=zoom)
