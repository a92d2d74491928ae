"""``ZarrDataModule``: random clean patches from zarr / OME-Zarr images, read lazily, never all in memory.

The datamodule yields only clean, normalised high-resolution patches ``(B, C, Y, X)``; degradation
happens on the device in the LightningModule. Images are split into training and validation *by image*
(a single image is split by rows instead). Each image is normalised by its own low/high percentiles per
channel, computed once from a strided subsample, so memory is bounded by the patch size and the
subsample, never by the image. Training patches are drawn at random (images weighted by area) with
flips and 90° rotations; validation patches are a fixed set, identical every epoch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from psr.data.omezarr import ImageRef, discover_images

STATS_SUBSAMPLE = 1 << 22  # values read per image to estimate its percentiles


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

    def spatial_extent(self) -> tuple[int, ...]:
        sizes = [self.ref.shape[a] for a in self.spatial_axes]
        sizes[-2] = self.y_range[1] - self.y_range[0]
        return tuple(sizes)


def _layout(ref: ImageRef, spatial_dims: int) -> tuple[int | None, tuple[int, ...], tuple[int, ...]]:
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


def image_statistics(
    ref: ImageRef, channel_axis: int | None, spatial: tuple[int, ...], percentiles: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel low/high percentiles of an image from a strided subsample.

    Raises ``ValueError`` naming the image when it is empty, holds NaN or Inf, or has no dynamic range.
    """
    arr = ref.open()
    n_channels = ref.shape[channel_axis] if channel_axis is not None else 1
    per_channel = max(1, int(np.prod(ref.shape)) // n_channels)
    stride = max(1, int(np.ceil((per_channel / STATS_SUBSAMPLE) ** (1 / len(spatial)))))
    index = tuple(slice(None, None, stride) if i in spatial else slice(None) for i in range(len(ref.shape)))
    sample = np.asarray(arr[index])
    if channel_axis is not None:
        sample = np.moveaxis(sample, channel_axis, 0).reshape(n_channels, -1)
    else:
        sample = sample.reshape(1, -1)
    sample = sample.astype(np.float64, copy=False)
    finite = np.isfinite(sample)
    if not finite.any():
        raise ValueError(f"image {ref.name} is all NaN/Inf; expected finite intensities")
    if not finite.all():
        bad = int((~finite).sum())
        raise ValueError(
            f"image {ref.name} holds {bad} NaN/Inf values in a subsample; expected finite intensities everywhere"
        )
    low = np.percentile(sample, percentiles[0], axis=1)
    high = np.percentile(sample, percentiles[1], axis=1)
    flat = np.nonzero(high <= low)[0]
    if flat.size:
        raise ValueError(
            f"image {ref.name} channel {int(flat[0])} has no dynamic range (percentiles {percentiles} are both"
            f" {low[flat[0]]:g}); expected an image with signal"
        )
    return low.astype(np.float32), high.astype(np.float32)


class PatchDataset(Dataset[torch.Tensor]):
    """Random (or fixed) normalised patches ``(C, *patch)`` float32 from a list of ``PatchSource``.

    With ``fixed=True`` patch ``i`` depends only on ``(seed, i)``: the validation set is identical every
    epoch and in every worker. Otherwise each draw takes fresh randomness from torch's generator, which
    Lightning seeds per worker and epoch, so a seeded run is reproducible.
    """

    def __init__(
        self,
        sources: Sequence[PatchSource],
        patch: tuple[int, ...],
        n_samples: int,
        *,
        seed: int = 0,
        fixed: bool = False,
        augment: bool = False,
        frames: int = 1,
    ) -> None:
        self.sources = list(sources)
        self.patch = tuple(patch)
        self.n_samples = int(n_samples)
        self.seed = seed
        self.fixed = fixed
        self.augment = augment
        self.frames = frames
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

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.fixed:
            rng = np.random.default_rng([self.seed, i])
        else:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        k = int(rng.choice(len(self.sources), p=self.weights))
        src = self.sources[k]
        index: list[slice | int] = [slice(None)] * len(src.ref.shape)
        for axis in src.plane_axes:
            width = self.frames if axis == src.frame_axis else 1
            j = int(rng.integers(src.ref.shape[axis] - width + 1))
            index[axis] = slice(j, j + width)
        for n, (axis, size) in enumerate(zip(src.spatial_axes, self.patch, strict=True)):
            lo, hi = src.y_range if n == len(self.patch) - 2 else (0, src.ref.shape[axis])
            start = int(rng.integers(lo, hi - size + 1))
            index[axis] = slice(start, start + size)
        if src.channel_axis is not None:
            index[src.channel_axis] = list(src.channels)  # type: ignore[call-overload]
        block = np.asarray(self._array(k).oindex[tuple(index)])  # type: ignore[attr-defined]
        if src.frame_axis is not None:
            # (…, frames, …) → (frames, *spatial): the window of neighbouring frames becomes the channels.
            block = np.moveaxis(block, src.frame_axis, 0)
            block = block.reshape(self.frames, *block.shape[-len(self.patch) :]).astype(np.float32)
        else:
            block = _to_channels_first(block, src.ref.axes, src.channel_axis, src.spatial_axes).astype(
                np.float32
            )
        low = src.low.reshape(-1, *([1] * len(self.patch)))
        high = src.high.reshape(-1, *([1] * len(self.patch)))
        block = (block - low) / (high - low)
        if not np.isfinite(block).all():
            raise ValueError(
                f"image {src.ref.name} holds NaN/Inf values in a patch; expected finite intensities"
            )
        if self.augment:
            for axis in range(1, block.ndim):
                if rng.random() < 0.5:
                    block = np.flip(block, axis)
            if self.patch[-1] == self.patch[-2]:
                block = np.rot90(block, int(rng.integers(4)), axes=(-2, -1))
        return torch.from_numpy(np.ascontiguousarray(block))


class ZarrDataModule(L.LightningDataModule):
    """Clean patches from one or many zarr arrays / OME-Zarr images.

    Args:
        path: an OME-Zarr image, a zarr array, a folder or group of them, or a list of those.
        patch_size: patch edge in high-resolution pixels (an int, or one per spatial axis); must be
            divisible by ``scale`` laterally.
        scale: the super-resolution factor the patches will be degraded by (checked, not applied).
        spatial_dims: 2 for ``(C, Y, X)`` patches (t and z become samples), 3 for ``(C, Z, Y, X)``.
        channels: channel indices to use (all when ``None``).
        percentiles: low/high percentiles mapped to 0 and 1 per image and channel.
        val_fraction: share of images held out for validation (a single image is split by rows).
        frames: multi-frame patches (PSSR-MF): a window of this many neighbouring frames along
            ``frame_axis`` (t or z) becomes the channels, ``(frames, Y, X)``; odd, the target is the
            centre frame.
    """

    def __init__(
        self,
        path: str | Sequence[str],
        patch_size: int | Sequence[int] = 64,
        scale: int = 1,
        spatial_dims: int = 2,
        channels: Sequence[int] | None = None,
        batch_size: int = 16,
        samples_per_epoch: int = 1024,
        val_samples: int = 128,
        val_fraction: float = 0.2,
        percentiles: Sequence[float] = (1.0, 99.8),
        augment: bool = True,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        frames: int = 1,
        frame_axis: str = "t",
    ) -> None:
        super().__init__()
        if frames < 1 or frames % 2 == 0:
            raise ValueError(f"frames must be odd (a centre frame and its neighbours), got {frames}")
        if frame_axis not in ("t", "z"):
            raise ValueError(f"frame_axis must be 't' or 'z', got {frame_axis!r}")
        if frames > 1 and spatial_dims != 2:
            raise ValueError("multi-frame patches (frames > 1) are 2D: set spatial_dims=2")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        patch = (
            (int(patch_size),) * spatial_dims
            if isinstance(patch_size, int)
            else tuple(int(p) for p in patch_size)
        )
        if len(patch) != spatial_dims:
            raise ValueError(
                f"patch_size {list(patch)} must have {spatial_dims} entries for {spatial_dims}D patches"
            )
        if any(p % scale for p in patch[-2:]):
            raise ValueError(f"patch_size {list(patch)} is not divisible by the scale {scale} in Y and X")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        low, high = (float(p) for p in percentiles)
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {list(percentiles)}")
        self.path = path
        self.patch = patch
        self.scale = scale
        self.spatial_dims = spatial_dims
        self.channels = tuple(channels) if channels is not None else None
        self.batch_size = batch_size
        self.samples_per_epoch = samples_per_epoch
        self.val_samples = val_samples
        self.val_fraction = val_fraction
        self.percentiles = (low, high)
        self.augment = augment
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.frames = frames
        self.frame_axis = frame_axis
        self.train_sources: list[PatchSource] = []
        self.val_sources: list[PatchSource] = []

    @property
    def in_channels(self) -> int:
        """Number of channels of each patch (frames × channels; known after ``setup``)."""
        src = (self.train_sources or self.val_sources)[0]
        return len(src.channels) * self.frames

    def _prepare_source(self, ref: ImageRef) -> PatchSource:
        if any(s == 0 for s in ref.shape):
            raise ValueError(f"image {ref.name} is empty (shape {ref.shape}); expected pixels on every axis")
        channel_axis, planes, spatial = _layout(ref, self.spatial_dims)
        n_channels = ref.shape[channel_axis] if channel_axis is not None else 1
        channels = self.channels if self.channels is not None else tuple(range(n_channels))
        if any(c < 0 or c >= n_channels for c in channels):
            raise ValueError(
                f"image {ref.name} has {n_channels} channels; data.channels={list(channels)} is out of range"
            )
        for axis, size in zip(spatial, self.patch, strict=True):
            if ref.shape[axis] < size:
                raise ValueError(
                    f"image {ref.name} (shape {ref.shape}, axes '{ref.axes}') is smaller than the patch {list(self.patch)}"
                )
        frame_axis = None
        if self.frames > 1:
            if self.frame_axis not in ref.axes:
                raise ValueError(
                    f"image {ref.name} has axes '{ref.axes}' but data.frames={self.frames} needs a"
                    f" '{self.frame_axis}' axis (data.frame_axis)"
                )
            frame_axis = ref.axes.index(self.frame_axis)
            if ref.shape[frame_axis] < self.frames:
                raise ValueError(
                    f"image {ref.name} has {ref.shape[frame_axis]} frames along '{self.frame_axis}';"
                    f" data.frames={self.frames} needs at least that many"
                )
            if len(channels) != 1:
                raise ValueError(
                    f"image {ref.name} has {len(channels)} channels; multi-frame patches take one: set data.channels=[k]"
                )
        low, high = image_statistics(ref, channel_axis, spatial, self.percentiles)
        y_size = ref.shape[spatial[-2]]
        return PatchSource(
            ref,
            channel_axis,
            planes,
            spatial,
            (0, y_size),
            low[list(channels)],
            high[list(channels)],
            channels,
            frame_axis,
        )

    def setup(self, stage: str | None = None) -> None:
        if self.train_sources:
            return
        refs = discover_images(self.path)
        sources = [self._prepare_source(ref) for ref in refs]
        if len(sources) == 1 or self.val_fraction == 0:
            train, val = sources, []
            if self.val_fraction > 0:
                # One image: hold out its last rows for validation.
                src = sources[0]
                y0, y1 = src.y_range
                cut = y1 - max(self.patch[-2], int(round((y1 - y0) * self.val_fraction)))
                if cut - y0 < self.patch[-2]:
                    raise ValueError(
                        f"image {src.ref.name} is too small to split into training and validation rows for patch"
                        f" {list(self.patch)}; add images or set data.val_fraction=0"
                    )
                train, val = [replace(src, y_range=(y0, cut))], [replace(src, y_range=(cut, y1))]
        else:
            order = np.random.default_rng(self.seed).permutation(len(sources))
            n_val = max(1, int(round(len(sources) * self.val_fraction)))
            val = [sources[i] for i in sorted(order[:n_val])]
            train = [sources[i] for i in sorted(order[n_val:])]
        channel_counts = {len(s.channels) for s in sources}
        if len(channel_counts) != 1:
            raise ValueError(
                f"images under {self.path} have different channel counts {sorted(channel_counts)}; pick data.channels"
            )
        self.train_sources, self.val_sources = train, val

    def _loader(self, dataset: Dataset[torch.Tensor], shuffle: bool) -> DataLoader[torch.Tensor]:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle,
        )

    def train_dataloader(self) -> DataLoader[torch.Tensor]:
        dataset = PatchDataset(
            self.train_sources, self.patch, self.samples_per_epoch, augment=self.augment, frames=self.frames
        )
        return self._loader(dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader[torch.Tensor]:
        if not self.val_sources:
            return DataLoader([])  # type: ignore[arg-type]
        dataset = PatchDataset(
            self.val_sources, self.patch, self.val_samples, seed=self.seed + 1, fixed=True, frames=self.frames
        )
        return self._loader(dataset, shuffle=False)
