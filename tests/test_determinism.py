"""Training patches are a pure function of (seed, epoch, index): the same with any number of loader
workers, different from epoch to epoch, and any part of an epoch can be drawn again on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch
import zarr

from psr.data.pairs import PairError, list_images, read_planes
from psr.data.patches import EpochSampler
from psr.data.zarr import ZarrDataModule


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("determinism") / "cells.zarr"
    pixels = np.random.default_rng(0).integers(0, 4000, (96, 96), dtype=np.uint16)
    zarr.create_array(str(path), shape=pixels.shape, dtype=pixels.dtype, chunks=(48, 48))[...] = pixels
    return path


def _epoch(store: Path, workers: int, epoch: int, start: int = 0, **options: Any) -> list[Any]:
    data = ZarrDataModule(
        str(store),
        patch_size=16,
        batch_size=2,
        samples_per_epoch=8,
        val_samples=2,
        num_workers=workers,
        persistent_workers=False,
        seed=3,
        foreground_fraction=0.3,
        percentile_jitter=[[0.5, 2.0], [99.0, 99.9]],
        cache_statistics=False,
        **options,
    )
    data.setup("fit")
    loader = data.train_dataloader()
    assert isinstance(loader.sampler, EpochSampler)
    loader.sampler.set_epoch(epoch)
    loader.sampler.start = start
    return list(loader)


def test_training_batches_do_not_depend_on_the_number_of_workers(store: Path) -> None:
    torch.manual_seed(1)  # the main process's stream plays no part either
    alone = _epoch(store, 0, epoch=1)
    torch.manual_seed(2)
    two = _epoch(store, 2, epoch=1)
    assert len(alone) == len(two) == 4
    assert all(torch.equal(a, b) for a, b in zip(alone, two, strict=True))


def test_each_epoch_draws_new_patches_and_a_part_of_one_can_be_drawn_again(store: Path) -> None:
    first, second = _epoch(store, 0, epoch=0), _epoch(store, 0, epoch=1)
    assert not any(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    rest = _epoch(store, 0, epoch=1, start=4)  # two batches of the epoch already used
    assert len(rest) == 2
    assert all(torch.equal(a, b) for a, b in zip(second[2:], rest, strict=True))


def test_a_training_pool_repeats_the_same_patches_and_noise_seeds_every_epoch(store: Path) -> None:
    first, second = (_epoch(store, 0, epoch=e, train_pool=3) for e in (0, 1))
    patches = torch.cat([b[0] for b in first + second])
    seeds = torch.cat([b[1] for b in first + second])
    assert len(patches) == 16 and len(set(seeds.tolist())) == 3  # 16 samples, 3 distinct ones
    for seed in set(seeds.tolist()):
        same = patches[seeds == seed]
        assert all(torch.equal(same[0], p) for p in same)  # one patch per seed, always the same
    assert torch.equal(torch.cat([b[1] for b in _epoch(store, 2, epoch=0, train_pool=3)]), seeds[:8])
    with pytest.raises(ValueError, match="data.train_pool must be null or >= 1"):
        _epoch(store, 0, epoch=0, train_pool=0)


def test_epoch_sampler_skips_only_once() -> None:
    sampler = EpochSampler(4)
    sampler.set_epoch(2)
    sampler.start = 3
    assert list(sampler) == [11]
    assert list(sampler) == [8, 9, 10, 11]
    sampler.position = lambda: 2  # where a resumed run's loop stands, asked as an iteration begins
    assert list(sampler) == [10, 11] and len(sampler) == 4


@pytest.mark.parametrize("dtype", [bool, np.complex64])
def test_pairs_refuse_pixels_that_are_not_intensities(tmp_path: Path, dtype: type) -> None:
    path = tmp_path / "low.tif"
    tifffile.imwrite(path, np.eye(32, dtype=dtype))
    (image,) = list_images(str(path))
    with pytest.raises(
        PairError, match=rf"image \S+low\.tif has {np.dtype(dtype)} pixels; expected intensities"
    ):
        read_planes(image, None, 2, 1)


def test_a_mid_epoch_resume_needs_the_same_epoch_layout(store: Path) -> None:
    data = ZarrDataModule(
        str(store), patch_size=16, batch_size=2, samples_per_epoch=8, cache_statistics=False
    )
    data.setup("fit")
    loader = data.train_dataloader()
    state = loader.state_dict()  # type: ignore[attr-defined]
    loader.load_state_dict(state)  # type: ignore[attr-defined]
    with pytest.raises(
        ValueError, match="data.samples_per_epoch=16 and data.batch_size=2, this run has 8 and 2"
    ):
        loader.load_state_dict({**state, "samples_per_epoch": 16})  # type: ignore[attr-defined]
