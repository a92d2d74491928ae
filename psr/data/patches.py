"""Patch sampling: ``PatchSource`` (an image prepared for sampling) and ``PatchDataset`` (random or
fixed normalised patches ``(C, *patch)`` from a list of them), read lazily from zarr, never all in memory.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.ndimage import uniform_filter
from torch.utils.data import DataLoader, Dataset, Sampler

from psr.data.augment import Augmenter
from psr.data.normalise import apply_range
from psr.data.statistics import PercentileTable
from psr.io.omezarr import ImageRef


@dataclass(frozen=True)
class PatchSource:
    """An image prepared for patch sampling: its layout, the usable row range and its normalisation."""

    ref: ImageRef
    channel_axis: int | None
    plane_axes: tuple[int, ...]  # non-channel, non-sampled axes (t, and z for 2D patches): one index each
    spatial_axes: tuple[int, ...]  # the axes patches span, in order (z,) y, x
    y_range: tuple[int, int]  # rows of this image usable by this split
    low: np.ndarray  # (C,) per-channel low percentile
    high: np.ndarray  # (C,) per-channel high percentile
    channels: tuple[int, ...]
    frame_axis: int | None = (
        None  # multi-frame patches: the plane axis (t or z) whose window becomes channels
    )
    table: PercentileTable | None = None  # percentiles of the picked channels (intensity jitter)

    def spatial_extent(self) -> tuple[int, ...]:
        sizes = [self.ref.shape[a] for a in self.spatial_axes]
        sizes[-2] = self.y_range[1] - self.y_range[0]
        return tuple(sizes)


def patch_layout(ref: ImageRef, spatial_dims: int) -> tuple[int | None, tuple[int, ...], tuple[int, ...]]:
    axes = ref.axes
    spatial_names = "zyx"[-spatial_dims:]
    missing = [a for a in spatial_names if a not in axes]
    if missing:
        raise ValueError(
            f"image {ref.name} has axes '{axes}' but {spatial_dims}D patches need axes '{spatial_names}'"
        )
    channel_axis = axes.index("c") if "c" in axes else None
    spatial = tuple(axes.index(a) for a in spatial_names)
    planes = tuple(i for i, a in enumerate(axes) if i not in spatial and i != channel_axis)
    return channel_axis, planes, spatial


def _to_channels_first(
    block: np.ndarray, ref_axes: str, channel_axis: int | None, spatial: tuple[int, ...]
) -> np.ndarray:
    """Reorder a block read with all axes kept to ``(C, *spatial)``, dropping plane axes of size 1."""
    order = ([channel_axis] if channel_axis is not None else []) + list(spatial)
    rest = [i for i in range(block.ndim) if i not in order]
    block = np.transpose(block, rest + order)
    block = block.reshape(block.shape[len(rest) :])
    if channel_axis is None:
        block = block[None]
    return block


def foreground_fraction(block: np.ndarray, threshold: float) -> float:
    """Share of pixels of a normalised ``(C, *spatial)`` block whose 3×3-smoothed intensity (maximum
    over channels) exceeds ``threshold``: the foreground test of patch sampling."""
    size = (1,) * (block.ndim - 2) + (3, 3)
    smooth = uniform_filter(block.astype(np.float32, copy=False), size=size, mode="nearest")
    return float(np.mean(smooth.max(axis=0) > threshold))


class PatchDataset(Dataset[torch.Tensor | tuple[torch.Tensor, int]]):
    """Random (or fixed) normalised patches ``(C, *patch)`` float32 from a list of ``PatchSource``.

    Every patch is a pure function of its index, whatever process draws it. With ``fixed=True`` patch
    ``i`` depends only on ``(seed, i)``: the validation set is identical every epoch. Otherwise index
    ``j`` stands for sample ``j % n_samples`` of epoch ``j // n_samples`` (``EpochSampler`` yields them)
    and draws from ``(seed, epoch, sample)`` alone: patches, jitter and augmentation do not depend on the
    loader's worker count or on how Lightning seeds its workers, and any sample of any epoch can be
    drawn again on its own (a run resumed mid-epoch continues with the same patches).

    Images are drawn in proportion to their area. With ``foreground_fraction > 0`` a patch whose
    foreground share (``foreground_fraction()`` above ``foreground_threshold``) is below it is redrawn,
    at most ``max_tries`` times in all; then the best candidate is kept. ``percentile_jitter`` draws the
    normalisation percentiles per training patch from two ranges ``((lo_min, lo_max), (hi_min, hi_max))``,
    interpolated from each source's stored percentile table (no pixels re-read); fixed sets never jitter.
    ``augment``: ``True`` flips every spatial axis and rotates Y/X by a multiple of 90° (square patches) at
    random; an ``Augmenter`` (``psr.data.augment``) applies its albumentations transforms instead, seeded
    from the patch's own random stream.

    ``zoom`` (training only) ``(lo, hi)``: each patch is read from a window ``1/z`` times its size in Y
    and X, with ``z`` drawn log-uniformly from ``[lo, hi]``, and resized to the patch (bilinear,
    antialiased): ``z < 1`` shrinks the structures (zoom out), ``z > 1`` enlarges them. A network trained
    on one microscope's sampling then meets other pixel sizes (a confocal's finer structures in pixel
    units). A window never exceeds the image: ``z`` is raised as far as needed.

    ``pool`` (training only) makes a fixed training set, CSBDeep's workflow: index ``j`` stands for sample
    ``j % pool`` drawn from ``(seed, sample)`` alone, the same patch in every epoch, and each item is
    ``(patch, noise_seed)`` so that the module degrades it the same way every time (``pool_noise_seed``).
    """

    def __init__(
        self,
        sources: Sequence[PatchSource],
        patch: tuple[int, ...],
        n_samples: int,
        *,
        seed: int = 0,
        fixed: bool = False,
        augment: bool | Augmenter = False,
        frames: int = 1,
        foreground_fraction: float = 0.0,
        foreground_threshold: float = 0.2,
        max_tries: int = 10,
        percentile_jitter: tuple[tuple[float, float], tuple[float, float]] | None = None,
        pool: int | None = None,
        zoom: tuple[float, float] | None = None,
    ) -> None:
        if pool is not None and (fixed or int(pool) < 1):
            raise ValueError(f"a training pool needs random patches and at least 1 sample, got pool={pool}")
        self.pool = None if pool is None else int(pool)
        self.sources = list(sources)
        self.patch = tuple(patch)
        self.n_samples = int(n_samples)
        self.seed = seed
        self.fixed = fixed
        self.augment = augment
        self.frames = frames
        self.foreground_fraction = float(foreground_fraction)
        self.foreground_threshold = float(foreground_threshold)
        self.max_tries = max(1, int(max_tries))
        self.percentile_jitter = None if fixed else percentile_jitter
        self.zoom = None if fixed else zoom
        if self.percentile_jitter is not None and any(s.table is None for s in self.sources):
            raise ValueError("percentile_jitter needs sources with a percentile table")
        areas = np.array([float(np.prod(s.spatial_extent())) for s in self.sources])
        self.weights = areas / areas.sum()
        self._arrays: dict[int, object] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return self.n_samples

    def _array(self, k: int):  # noqa: ANN202 - a zarr array, opened once per process
        if os.getpid() != self._pid:  # a forked worker reopens its own handles
            self._arrays, self._pid = {}, os.getpid()
        if k not in self._arrays:
            self._arrays[k] = self.sources[k].ref.open()
        return self._arrays[k]

    def _window(self, src: PatchSource, rng: np.random.Generator) -> tuple[int, ...]:
        """The size of the window a patch of ``src`` is read from: the patch, or with ``zoom`` a window
        ``1/z`` times its size in Y and X (within the image)."""
        if self.zoom is None:
            return self.patch
        lo, hi = self.zoom
        z = math.exp(rng.uniform(math.log(lo), math.log(hi))) if hi > lo else lo
        extent = src.spatial_extent()[-2:]
        z = max(z, *(p / e for p, e in zip(self.patch[-2:], extent, strict=True)))
        return (
            *self.patch[:-2],
            *(min(e, max(1, round(p / z))) for p, e in zip(self.patch[-2:], extent, strict=True)),
        )

    def _resize(self, block: np.ndarray) -> np.ndarray:
        """``block`` ``(C, *window)`` resized to the patch in Y and X (bilinear, antialiased)."""
        size = tuple(self.patch[-2:])
        if block.shape[-2:] == size:
            return block
        planes = torch.from_numpy(np.ascontiguousarray(block)).reshape(-1, 1, *block.shape[-2:])
        planes = torch.nn.functional.interpolate(
            planes, size=size, mode="bilinear", antialias=True, align_corners=False
        )
        return planes.reshape(*block.shape[:-2], *size).numpy()

    def _draw(self, rng: np.random.Generator) -> tuple[int, np.ndarray]:
        """A random source and an un-normalised patch of it ``(C, *patch)`` float32."""
        k = int(rng.choice(len(self.sources), p=self.weights))
        src = self.sources[k]
        window = self._window(src, rng)
        index: list[slice | int] = [slice(None)] * len(src.ref.shape)
        for axis in src.plane_axes:
            width = self.frames if axis == src.frame_axis else 1
            j = int(rng.integers(src.ref.shape[axis] - width + 1))
            index[axis] = slice(j, j + width)
        for n, (axis, size) in enumerate(zip(src.spatial_axes, window, strict=True)):
            lo, hi = src.y_range if n == len(window) - 2 else (0, src.ref.shape[axis])
            start = int(rng.integers(lo, hi - size + 1))
            index[axis] = slice(start, start + size)
        if src.channel_axis is not None:
            index[src.channel_axis] = list(src.channels)  # type: ignore[call-overload]
        block = np.asarray(self._array(k).oindex[tuple(index)])  # type: ignore[attr-defined]
        if src.frame_axis is not None:
            # (…, frames, …) → (frames, *spatial): the window of neighbouring frames becomes the channels.
            block = np.moveaxis(block, src.frame_axis, 0)
            block = block.reshape(self.frames, *block.shape[-len(window) :])
        else:
            block = _to_channels_first(block, src.ref.axes, src.channel_axis, src.spatial_axes)
        return k, self._resize(block.astype(np.float32))

    def _normalise(self, block: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        return apply_range(block, low, high, dtype=np.float32)  # float32 patches stay float32 throughout

    def __getitem__(self, i: int) -> torch.Tensor | tuple[torch.Tensor, int]:
        if self.fixed:
            rng = np.random.default_rng([self.seed, i])
        elif self.pool is not None:
            sample = int(i) % self.pool
            patch = self._patch(np.random.default_rng([self.seed, 0, sample]))
            return patch, pool_noise_seed(self.seed, sample)
        else:
            epoch, index = divmod(int(i), self.n_samples)  # EpochSampler's indices carry the epoch
            rng = np.random.default_rng([self.seed, epoch, index])
        return self._patch(rng)

    def _patch(self, rng: np.random.Generator) -> torch.Tensor:
        k, raw = self._draw(rng)
        if self.foreground_fraction > 0:
            src = self.sources[k]
            best = foreground_fraction(self._normalise(raw, src.low, src.high), self.foreground_threshold)
            for _ in range(self.max_tries - 1):
                if best >= self.foreground_fraction:
                    break
                k2, raw2 = self._draw(rng)
                src2 = self.sources[k2]
                share = foreground_fraction(
                    self._normalise(raw2, src2.low, src2.high), self.foreground_threshold
                )
                if share > best:
                    k, raw, best = k2, raw2, share
        src = self.sources[k]
        low, high = src.low, src.high
        if self.percentile_jitter is not None and src.table is not None:
            (a0, a1), (b0, b1) = self.percentile_jitter
            low, high = src.table.at(float(rng.uniform(a0, a1))), src.table.at(float(rng.uniform(b0, b1)))
        block = self._normalise(raw, low, high)
        if not np.isfinite(block).all():
            raise ValueError(
                f"image {src.ref.name} holds NaN/Inf values in a patch; expected finite intensities"
            )
        if isinstance(self.augment, Augmenter):
            block = self.augment(block, int(rng.integers(2**32)))
        elif self.augment:
            for axis in range(1, block.ndim):
                if rng.random() < 0.5:
                    block = np.flip(block, axis)
            if self.patch[-1] == self.patch[-2]:
                block = np.rot90(block, int(rng.integers(4)), axes=(-2, -1))
        return torch.from_numpy(np.ascontiguousarray(block))


def pool_noise_seed(seed: int, sample: int) -> int:
    """The seed of the degradation of sample ``sample`` of a fixed training pool: one noisy copy of each
    patch for the whole run."""
    return int(np.random.default_rng([seed, 1, sample]).integers(2**62))


class EpochSampler(Sampler[int]):
    """The indices of one epoch of a ``PatchDataset`` with random patches: ``epoch * n + i`` for
    ``i = start … n - 1`` in order (the patches are independent draws; shuffling adds nothing).

    Lightning calls ``set_epoch`` at each epoch start (under DDP through its sampler wrapper).
    ``start`` skips the samples an interrupted epoch already used; it applies to the next iteration
    only. Without it, ``position`` (when given) is asked as each iteration begins how many samples of
    the epoch were already used (a run resumed mid-epoch; 0 otherwise).
    """

    def __init__(self, n_samples: int, position: Callable[[], int] | None = None) -> None:
        self.n_samples = int(n_samples)
        self.position = position
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n_samples

    def __iter__(self) -> Iterator[int]:
        start, self.start = self.start, 0
        if not start and self.position is not None:
            start = self.position()
        base = self.epoch * self.n_samples
        return iter(range(base + min(start, self.n_samples), base + self.n_samples))


def samples_done(trainer: Any, batch_size: int) -> int:
    """Samples of the current epoch already trained on as an epoch's iteration begins: those before the
    checkpoint for a run resumed mid-epoch (Lightning has restored its loops by then), else 0. Under DDP
    a resumed epoch starts over (each rank's count is of its own share of the samples)."""
    if trainer is None or trainer.world_size > 1:
        return 0
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.ready) * int(batch_size)


class _LateIterator:
    """An iterator that creates the one it stands for when the first item is asked for."""

    def __init__(self, begin: Callable[[], Iterator[Any]]) -> None:
        self._begin: Callable[[], Iterator[Any]] | None = begin
        self._iterator: Iterator[Any] | None = None

    def __iter__(self) -> _LateIterator:
        return self

    def __next__(self) -> Any:
        if self._iterator is None:
            assert self._begin is not None
            self._iterator, self._begin = self._begin(), None
        return next(self._iterator)


class LateStartLoader(DataLoader[Any]):
    """A ``DataLoader`` whose iteration (its workers' first requests included) starts with the first
    batch asked for, not when ``iter`` is called. Lightning creates the training iterator before it
    restores a checkpoint's loop state and calls ``set_epoch``; begun late, the ``EpochSampler`` knows
    the epoch and where in it a resumed run stands before any index goes to a worker."""

    def __iter__(self) -> Any:
        return _LateIterator(super().__iter__)

    # Lightning saves a loader's state in mid-epoch checkpoints and gives it back on resume (and warns
    # that a resumed epoch is unreliable for loaders without one). Where an epoch stands is in the loop
    # state Lightning restores; the state here is what must match for the rest of the epoch to follow.
    def state_dict(self) -> dict[str, int]:
        return {"samples_per_epoch": len(self.sampler), "batch_size": int(self.batch_size or 0)}  # type: ignore[arg-type]

    def load_state_dict(self, state: dict[str, int]) -> None:
        saved = (state.get("samples_per_epoch"), state.get("batch_size"))
        if saved != (len(self.sampler), self.batch_size):  # type: ignore[arg-type]
            raise ValueError(
                f"the checkpoint stopped mid-epoch with data.samples_per_epoch={saved[0]} and data.batch_size="
                f"{saved[1]}, this run has {len(self.sampler)} and {self.batch_size}; resume with the same"  # type: ignore[arg-type]
                " values (or from an end-of-epoch checkpoint)"
            )


def jitter_ranges(
    jitter: Sequence[Sequence[float]] | None,
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    if jitter is None:
        return None
    try:
        (a0, a1), (b0, b1) = ((float(x) for x in pair) for pair in jitter)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"data.percentile_jitter must be two [min, max] ranges like [[0.5, 3.0], [99.0, 99.9]], got {jitter!r}"
        ) from err
    if not (0.0 <= a0 <= a1 < b0 <= b1 <= 100.0):
        raise ValueError(
            f"data.percentile_jitter {[[a0, a1], [b0, b1]]} must hold two ranges within [0, 100], the low range"
            " entirely below the high one"
        )
    return (a0, a1), (b0, b1)


def zoom_range(zoom: float | Sequence[float] | None) -> tuple[float, float] | None:
    """``data.zoom`` as ``(lo, hi)``: ``None`` (no zoom), one factor, or a ``[lo, hi]`` range, each > 0."""
    if zoom is None:
        return None
    try:
        values = [float(zoom)] * 2 if isinstance(zoom, int | float) else [float(z) for z in zoom]
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"data.zoom must be null, a factor or a [min, max] range like [0.5, 1.0], got {zoom!r}"
        ) from err
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values) or values[0] > values[1]:
        raise ValueError(
            f"data.zoom {zoom!r} must be a factor or a [min, max] range of positive factors with min <= max"
            " (e.g. [0.5, 1.0]: structures shown at half to full size)"
        )
    return values[0], values[1]
