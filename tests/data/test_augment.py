"""``data.augment``: albumentations transforms on training patches (``psr.data.augment``)."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import albumentations as A
import numpy as np
import pytest
import torch

from psr.data.augment import Augmenter, AugmentError, make_augment


def _dihedral(plane: np.ndarray) -> list[np.ndarray]:
    """The 8 symmetries of a square over the last two axes."""
    rots = [np.rot90(plane, k, axes=(-2, -1)) for k in range(4)]
    return rots + [np.flip(r, -1) for r in rots]


def _patch(dtype: type, channels: int, shape: tuple[int, ...] = (16, 16), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype is np.float32:  # normalised intensities run past [0, 1]
        return rng.uniform(-0.3, 1.4, (channels, *shape)).astype(np.float32)
    return rng.integers(0, np.iinfo(dtype).max, (channels, *shape)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("channels", [1, 3, 5])
def test_the_dihedral_group_maps_a_patch_onto_one_of_its_eight_symmetries(dtype: type, channels: int) -> None:
    block = _patch(dtype, channels)
    out = Augmenter([A.D4(p=1.0)])(block, seed=3)
    assert out.dtype == block.dtype and out.shape == block.shape
    # All channels moved together, values untouched (no clipping of float32 outside [0, 1]).
    assert any(np.array_equal(out, g) for g in _dihedral(block))
    seen = {
        next(i for i, g in enumerate(_dihedral(block)) if np.array_equal(out_s, g))
        for out_s in (Augmenter([A.D4(p=1.0)])(block, seed=s) for s in range(40))
    }
    assert len(seen) >= 6  # the seed picks among the symmetries


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_rotation_zoom_and_elastic_keep_shape_dtype_and_are_seeded(dtype: type) -> None:
    yy, xx = np.mgrid[0:32, 0:32]
    smooth = (np.sin(yy / 5.0) * np.cos(xx / 7.0) + 1.0) / 2.0  # a smooth image: interpolation keeps it
    scale = 1.0 if dtype is np.float32 else 0.8 * np.iinfo(dtype).max
    block = np.stack([smooth, smooth[::-1]]).astype(np.float64) * scale
    block = block.astype(dtype)
    aug = Augmenter(
        [
            A.Affine(rotate=(-10, 10), scale=(1.0, 1.1), border_mode=4, p=1.0),
            A.ElasticTransform(alpha=1.0, sigma=10.0, border_mode=4, p=1.0),
        ]
    )
    a, b, c = aug(block, 1), aug(block, 1), aug(block, 2)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(aug))(block, 1), a)  # spawned workers get a copy
    assert a.dtype == block.dtype and a.shape == block.shape
    np.testing.assert_array_equal(a, b)  # same seed, same draw
    assert not np.array_equal(a, c) and not np.array_equal(a, block)
    # A small rotation and zoom of a smooth image: same intensity scale, no channel mixing.
    assert abs(float(a.astype(np.float64).mean()) - float(block.astype(np.float64).mean())) < 0.1 * scale
    corr = np.corrcoef(a[0].ravel().astype(np.float64), block[0].ravel().astype(np.float64))[0, 1]
    assert corr > 0.5


def test_a_3d_patch_is_transformed_plane_by_plane_alike_and_cubic_symmetry_needs_a_cube() -> None:
    block = _patch(np.float32, 2, (4, 16, 16))
    out = Augmenter([A.D4(p=1.0)])(block, seed=5)
    matches = [g for g in _dihedral(block) if np.array_equal(out, g)]
    assert matches  # every Z plane and channel got the same symmetry
    cube = _patch(np.float32, 1, (8, 8, 8))
    turned = Augmenter([A.CubicSymmetry(p=1.0)])(cube, seed=1)
    assert turned.shape == cube.shape
    np.testing.assert_array_equal(np.sort(turned.ravel()), np.sort(cube.ravel()))
    with pytest.raises(AugmentError, match=r"CubicSymmetry\] turned a patch of shape \[4, 16, 16, 2\]"):
        Augmenter([A.CubicSymmetry(p=1.0)])(block, seed=1)


def test_bad_augment_values_are_refused_with_one_sentence() -> None:
    assert make_augment(True) is True and make_augment(False) is False and make_augment([]) is False
    with pytest.raises(AugmentError, match=r"data.augment\[0\] is a mapping .*give it a _target_"):
        make_augment([{"p": 1.0}])
    with pytest.raises(AugmentError, match=r"data.augment\[1\] is a int; expected an albumentations"):
        make_augment([A.D4(), 3])
    with pytest.raises(AugmentError, match="expected true, false, or a list"):
        make_augment("flips")
    with pytest.raises(AugmentError, match="turned a patch"):
        Augmenter([A.RandomCrop(8, 8, p=1.0)])(_patch(np.float32, 1), seed=0)


def test_the_config_list_reaches_the_training_patches(compose_cfg: Callable[..., object]) -> None:
    from hydra.utils import instantiate

    from psr.data.patches import PatchDataset

    default = instantiate(compose_cfg().data)
    assert default.augment is True  # unchanged: the built-in flips and rotations
    cfg = compose_cfg("data.augment=[{_target_: albumentations.D4, p: 1.0}]", "data.samples_per_epoch=6")
    dm = instantiate(cfg.data)
    assert isinstance(dm.augment, Augmenter)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader.dataset, PatchDataset) and loader.dataset.augment is dm.augment
    torch.manual_seed(0)
    first = torch.cat(list(loader))
    torch.manual_seed(0)
    again = torch.cat(list(loader))
    torch.testing.assert_close(first, again, rtol=0, atol=0)  # seeded: the same augmented patches
    # The same draws without augmentation: each augmented patch is a symmetry of its plain twin.
    plain = PatchDataset(dm.train_sources, dm.patch, 6, seed=loader.dataset.seed, augment=False)
    torch.manual_seed(0)
    twins = torch.stack([plain[i] for i in range(6)])
    torch.manual_seed(0)
    augmented = torch.stack([loader.dataset[i] for i in range(6)])
    for p, q in zip(twins.numpy(), augmented.numpy(), strict=True):
        assert any(np.array_equal(q, g) for g in _dihedral(p))
    val = next(iter(dm.val_dataloader()))
    assert val.shape[1:] == first.shape[1:]
