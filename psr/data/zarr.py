"""``ZarrDataModule``: random clean patches from zarr / OME-Zarr images, read lazily, never all in memory.

The datamodule yields only clean, normalised high-resolution patches ``(B, C, Y, X)``; degradation
happens on the device in the LightningModule. Images are split into training and validation *by image*
(a single image is split by rows instead). Each image is normalised by its own low/high percentiles per
channel, computed once from a strided subsample, so memory is bounded by the patch size and the
subsample, never by the image. Training patches are drawn at random (images weighted by area) with
flips and 90° rotations; validation patches are a fixed set, identical every epoch.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import lightning as L
import numpy as np
import torch
import zarr
from scipy.ndimage import uniform_filter
from torch.utils.data import DataLoader, Dataset

from psr.data.normalise import check_range, smooth_planes
from psr.data.omezarr import (
    ImageRef,
    Manifest,
    ManifestImage,
    discover_images,
    local_path,
    open_node,
    read_manifest,
)

STATS_SUBSAMPLE = 1 << 22  # values read per image to estimate its percentiles
STATS_VERSION = 1  # of the statistics record stored in an image's attributes ("psr" → "stats")
# Percentiles stored per image and channel: fine near both ends, where normalisation percentiles (and
# their jitter) live, so any percentile can be interpolated later without reading pixels again.
PERCENTILE_GRID: tuple[float, ...] = tuple(
    sorted(
        {
            round(float(q), 4)
            for q in np.concatenate(
                [
                    np.arange(0.0, 5.0, 0.05),
                    np.arange(5.0, 95.0, 0.5),
                    np.arange(95.0, 99.0, 0.05),
                    np.arange(99.0, 100.0, 0.01),
                    [100.0],
                ]
            )
        }
    )
)
log = logging.getLogger(__name__)


def _is_store(path: str) -> bool:
    """A zarr store, a folder of them, or a URL: read as zarr. Image files, their folders and globs are not."""
    if "://" in path:
        return True
    candidate = os.path.expanduser(path)
    if not os.path.exists(candidate):
        return not any(ch in path for ch in "*?[")  # a glob is ingested; a missing path is reported as such
    if not os.path.isdir(candidate):
        return False
    if candidate.rstrip("/").endswith(".zarr") or any(
        os.path.exists(os.path.join(candidate, m)) for m in ("zarr.json", ".zgroup", ".zarray")
    ):
        return True
    # A folder holding *.zarr stores is a collection; a folder of image files is ingested.
    return any(name.endswith(".zarr") for name in os.listdir(candidate))


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


def _strided_sample(
    ref: ImageRef, channel_axis: int | None, spatial: tuple[int, ...], smoothing: float = 0.0
) -> np.ndarray:
    """About ``STATS_SUBSAMPLE`` values per channel, every ``stride``-th pixel along the spatial axes:
    ``(C, N)`` float64, each sampled Y/X plane smoothed by a Gaussian of ``smoothing`` pixels first
    (``psr.data.normalise``: as raw inputs are at inference). Raises ``ValueError`` naming the image when
    the sample holds NaN or Inf."""
    arr = ref.open()
    n_channels = ref.shape[channel_axis] if channel_axis is not None else 1
    per_channel = max(1, int(np.prod(ref.shape)) // n_channels)
    stride = max(1, int(np.ceil((per_channel / STATS_SUBSAMPLE) ** (1 / len(spatial)))))
    index = tuple(slice(None, None, stride) if i in spatial else slice(None) for i in range(len(ref.shape)))
    sample = np.asarray(arr[index])
    # (C, other axes…, *spatial): the last two axes are Y and X
    first = [channel_axis] if channel_axis is not None else []
    order = first + [i for i in range(sample.ndim) if i not in spatial and i != channel_axis] + list(spatial)
    sample = np.transpose(sample, order)
    if channel_axis is None:
        sample = sample[None]
    if smoothing > 0:
        if not np.isfinite(sample).all():
            _finite_sample(ref, sample.reshape(n_channels, -1).astype(np.float64))  # names the image
        sample = smooth_planes(sample, smoothing)
    sample = sample.reshape(n_channels, -1)
    return _finite_sample(ref, sample)


def _finite_sample(ref: ImageRef, sample: np.ndarray) -> np.ndarray:
    sample = sample.astype(np.float64, copy=False)
    finite = np.isfinite(sample)
    if not finite.any():
        raise ValueError(f"image {ref.name} is all NaN/Inf; expected finite intensities")
    if not finite.all():
        bad = int((~finite).sum())
        raise ValueError(
            f"image {ref.name} holds {bad} NaN/Inf values in a subsample; expected finite intensities everywhere"
        )
    return sample


def _check_range(
    name: str, low: np.ndarray, high: np.ndarray, percentiles: Sequence[float], channels: Sequence[int]
) -> None:
    check_range(low, high, percentiles, f"image {name}", channels)


def image_statistics(
    ref: ImageRef,
    channel_axis: int | None,
    spatial: tuple[int, ...],
    percentiles: tuple[float, float],
    smoothing: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel low/high percentiles of an image from a strided subsample (smoothed by ``smoothing``
    px first).

    Raises ``ValueError`` naming the image when it is empty, holds NaN or Inf, or has no dynamic range.
    """
    sample = _strided_sample(ref, channel_axis, spatial, smoothing)
    low = np.percentile(sample, percentiles[0], axis=1)
    high = np.percentile(sample, percentiles[1], axis=1)
    _check_range(ref.name, low, high, percentiles, range(len(low)))
    return low.astype(np.float32), high.astype(np.float32)


@dataclass(frozen=True)
class PercentileTable:
    """Per-channel intensities ``values (C, G)`` at the percentiles ``grid (G,)`` of one image."""

    grid: np.ndarray
    values: np.ndarray

    def at(self, q: float) -> np.ndarray:
        """``(C,)`` intensities at percentile ``q``: exact on the grid, linearly interpolated between."""
        return np.array([np.interp(q, self.grid, v) for v in self.values], dtype=np.float64)

    def has(self, q: float) -> bool:
        return bool(np.isclose(self.grid, q, rtol=0, atol=1e-9).any())

    def channels(self, picked: Sequence[int]) -> PercentileTable:
        return PercentileTable(self.grid, self.values[list(picked)])


def percentile_table(
    ref: ImageRef,
    channel_axis: int | None,
    spatial: tuple[int, ...],
    extra: Sequence[float] = (),
    smoothing: float = 0.0,
) -> tuple[PercentileTable, int]:
    """The image's percentiles at ``PERCENTILE_GRID`` plus ``extra`` from a strided subsample (smoothed by
    ``smoothing`` px), and the subsample's size per channel. Reads pixels (the only function of this module
    that does for stats)."""
    sample = _strided_sample(ref, channel_axis, spatial, smoothing)
    grid = np.array(sorted(set(PERCENTILE_GRID) | {float(q) for q in extra}), dtype=np.float64)
    values = np.percentile(sample, grid, axis=1).T  # (C, G)
    return PercentileTable(grid, np.ascontiguousarray(values)), int(sample.shape[1])


def _stats_location(ref: ImageRef) -> tuple[str, str]:
    """Where an image's statistics live: its OME-Zarr group (keyed by the level-0 array's path in it),
    or, for a bare array, the array's own attributes."""
    if ref.image_path and ref.image_path != ref.array_path:
        return ref.image_path, ref.array_path[len(ref.image_path) :].strip("/")
    if not ref.image_path and ref.array_path:
        return "", ref.array_path  # an OME-Zarr image at the store's root
    return ref.array_path, ""


def load_statistics(
    ref: ImageRef, required: Sequence[float], smoothing: float = 0.0
) -> PercentileTable | None:
    """The statistics stored with ``ref`` (``attrs["psr"]["stats"]``), or ``None`` when they are missing,
    from another psr version, for another shape or dtype, or lack a ``required`` percentile. Reads no
    pixels."""
    node_path, array_key = _stats_location(ref)
    try:
        node = open_node(ref.store, node_path, ref.storage_options)
        record = dict(node.attrs).get("psr", {}).get("stats")
    except (OSError, ValueError, KeyError, AttributeError):
        return None
    if not isinstance(record, dict):
        return None
    expected = {
        "version": STATS_VERSION,
        "array": array_key,
        "shape": list(ref.shape),
        "dtype": ref.dtype,
        "max_subsample": STATS_SUBSAMPLE,
        "smoothing": float(smoothing),
    }
    if any(record.get(key) != value for key, value in expected.items()):
        return None
    try:
        table = PercentileTable(
            np.asarray(record["percentiles"], dtype=np.float64),
            np.asarray(record["values"], dtype=np.float64),
        )
    except (KeyError, TypeError, ValueError):
        return None
    if table.values.ndim != 2 or table.values.shape[1] != table.grid.size or table.grid.size < 2:
        return None
    if np.any(np.diff(table.grid) <= 0) or not np.isfinite(table.values).all():
        return None
    if not all(table.has(q) for q in required):
        return None
    return table


def _open_for_update(ref: ImageRef, node_path: str) -> Any:
    root = local_path(ref.store)
    if node_path == ref.array_path and ref.image_path == ref.array_path:
        return zarr.open_array(root, path=node_path, mode="r+")
    return zarr.open_group(root, path=node_path, mode="r+", use_consolidated=False)


def save_statistics(ref: ImageRef, table: PercentileTable, subsample: int, smoothing: float = 0.0) -> bool:
    """Store ``table`` in ``ref``'s attributes for the next run; ``False`` (and a log line) when the
    store is remote or cannot be written. Other ``psr`` attributes are kept."""
    if ref.remote:
        return False
    node_path, array_key = _stats_location(ref)
    record = {
        "version": STATS_VERSION,
        "array": array_key,
        "shape": list(ref.shape),
        "dtype": ref.dtype,
        "max_subsample": STATS_SUBSAMPLE,
        "subsample": subsample,
        "smoothing": float(smoothing),
        "percentiles": table.grid.tolist(),
        "values": table.values.tolist(),
    }
    try:
        node = _open_for_update(ref, node_path)
        psr = dict(node.attrs.get("psr") or {})
        psr["stats"] = record
        node.attrs["psr"] = psr  # zarr writes metadata atomically (temporary file, then rename)
    except Exception as err:  # noqa: BLE001 - read-only folders, permissions, foreign stores
        log.warning(
            "could not store statistics of %s (%s: %s); computed in memory", ref.name, type(err).__name__, err
        )
        return False
    return True


def cached_statistics(
    ref: ImageRef,
    channel_axis: int | None,
    spatial: tuple[int, ...],
    required: Sequence[float],
    cache: bool = True,
    smoothing: float = 0.0,
) -> PercentileTable:
    """The image's percentile table (of its planes smoothed by ``smoothing`` px): from its attributes when
    they are current, else computed from a subsample (``percentile_table``) and, with ``cache``, stored for
    the next run."""
    if cache:
        table = load_statistics(ref, required, smoothing)
        if table is not None:
            return table
    table, subsample = percentile_table(ref, channel_axis, spatial, required, smoothing)
    if cache:
        save_statistics(ref, table, subsample, smoothing)
    return table


def foreground_fraction(block: np.ndarray, threshold: float) -> float:
    """Share of pixels of a normalised ``(C, *spatial)`` block whose 3×3-smoothed intensity (maximum
    over channels) exceeds ``threshold``: the foreground test of patch sampling."""
    size = (1,) * (block.ndim - 2) + (3, 3)
    smooth = uniform_filter(block.astype(np.float32, copy=False), size=size, mode="nearest")
    return float(np.mean(smooth.max(axis=0) > threshold))


class PatchDataset(Dataset[torch.Tensor]):
    """Random (or fixed) normalised patches ``(C, *patch)`` float32 from a list of ``PatchSource``.

    With ``fixed=True`` patch ``i`` depends only on ``(seed, i)``: the validation set is identical every
    epoch and in every worker. Otherwise each draw takes fresh randomness from torch's generator, which
    Lightning seeds per worker and epoch, so a seeded run is reproducible.

    Images are drawn in proportion to their area. With ``foreground_fraction > 0`` a patch whose
    foreground share (``foreground_fraction()`` above ``foreground_threshold``) is below it is redrawn,
    at most ``max_tries`` times in all; then the best candidate is kept. ``percentile_jitter`` draws the
    normalisation percentiles per training patch from two ranges ``((lo_min, lo_max), (hi_min, hi_max))``,
    interpolated from each source's stored percentile table (no pixels re-read); fixed sets never jitter.
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
        foreground_fraction: float = 0.0,
        foreground_threshold: float = 0.2,
        max_tries: int = 10,
        percentile_jitter: tuple[tuple[float, float], tuple[float, float]] | None = None,
    ) -> None:
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

    def _draw(self, rng: np.random.Generator) -> tuple[int, np.ndarray]:
        """A random source and an un-normalised patch of it ``(C, *patch)`` float32."""
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
            return k, block.reshape(self.frames, *block.shape[-len(self.patch) :]).astype(np.float32)
        return k, _to_channels_first(block, src.ref.axes, src.channel_axis, src.spatial_axes).astype(
            np.float32
        )

    def _normalise(self, block: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        shape = (-1, *([1] * len(self.patch)))
        low32, high32 = low.astype(np.float32).reshape(shape), high.astype(np.float32).reshape(shape)
        return (block - low32) / (high32 - low32)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.fixed:
            rng = np.random.default_rng([self.seed, i])
        else:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
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
        if self.augment:
            for axis in range(1, block.ndim):
                if rng.random() < 0.5:
                    block = np.flip(block, axis)
            if self.patch[-1] == self.patch[-2]:
                block = np.rot90(block, int(rng.integers(4)), axes=(-2, -1))
        return torch.from_numpy(np.ascontiguousarray(block))


def _jitter_ranges(
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


class ZarrDataModule(L.LightningDataModule):
    """Clean patches from one or many zarr arrays / OME-Zarr images, local or remote.

    Args:
        path: an OME-Zarr image, a zarr array, a folder or group of them, or a list of those; local
            paths or fsspec URLs (``https://``, ``s3://``, ``gs://``, ``file://``).
        patch_size: patch edge in high-resolution pixels (an int, or one per spatial axis); must be
            divisible by ``scale`` laterally.
        scale: the super-resolution factor the patches will be degraded by (checked, not applied).
        spatial_dims: 2 for ``(C, Y, X)`` patches (t and z become samples), 3 for ``(C, Z, Y, X)``.
        channels: channel indices to use (all when ``None``).
        percentiles: low/high percentiles mapped to 0 and 1 per image and channel.
        val_fraction: share of images held out for validation (a single image is split by rows). A
            store whose root carries a psr manifest is split by it instead (see ``setup``).
        frames: multi-frame patches (PSSR-MF): a window of this many neighbouring frames along
            ``frame_axis`` (t or z) becomes the channels, ``(frames, Y, X)``; odd, the target is the
            centre frame.
        foreground_fraction: redraw patches whose foreground share is below this (0 disables);
            foreground is the 3×3-smoothed normalised intensity above ``foreground_threshold``. After
            ``max_tries`` draws the best candidate is kept.
        percentile_jitter: ``[[lo_min, lo_max], [hi_min, hi_max]]``: training patches are normalised
            with percentiles drawn from these ranges (``None``: always ``percentiles``).
        storage_options: passed to fsspec for URLs (e.g. ``{"anon": True}`` for a public s3 bucket).
        cache_statistics: store each image's percentile table in its attributes and reuse it.
    """

    def __init__(
        self,
        path: str | Sequence[str] | None,
        patch_size: int | Sequence[int] = 64,
        scale: int = 1,
        spatial_dims: int = 2,
        channels: Sequence[int] | None = None,
        batch_size: int = 16,
        samples_per_epoch: int = 1024,
        val_samples: int = 128,
        val_fraction: float = 0.2,
        percentiles: Sequence[float] = (1.0, 99.8),
        input_smoothing: float = 0.0,
        augment: bool = True,
        num_workers: int | None = 0,
        pin_memory: bool | None = False,
        persistent_workers: bool | None = None,
        prefetch_factor: int | None = None,
        seed: int = 0,
        frames: int = 1,
        frame_axis: str = "t",
        foreground_fraction: float = 0.0,
        foreground_threshold: float = 0.2,
        max_tries: int = 10,
        percentile_jitter: Sequence[Sequence[float]] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        cache_statistics: bool = True,
        manifest: str | Mapping[str, Any] | None = None,
        ingest: Mapping[str, Any] | None = None,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if path is not None and manifest is not None:
            raise ValueError(
                "data.path and data.manifest are both set: name the images once, either as data.path (stores,"
                " files, folders, globs) or in data.manifest (with splits and pairs), and set the other to null"
            )
        if path is None and manifest is None:
            raise ValueError(
                "data.path is not set: expected zarr stores, image files, folders or globs (or data.manifest)"
            )
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
        if not 0.0 <= foreground_fraction <= 1.0:
            raise ValueError(f"data.foreground_fraction must be in [0, 1], got {foreground_fraction}")
        if max_tries < 1:
            raise ValueError(f"data.max_tries must be >= 1, got {max_tries}")
        self.path = path
        self.manifest = manifest
        self.ingest = dict(ingest or {})
        self.cache_dir = cache_dir
        self._ingested = False
        self.patch = patch
        self.scale = scale
        self.spatial_dims = spatial_dims
        self.channels = tuple(channels) if channels is not None else None
        self.batch_size = batch_size
        self.samples_per_epoch = samples_per_epoch
        self.val_samples = val_samples
        self.val_fraction = val_fraction
        self.percentiles = (low, high)
        if not 0.0 <= float(input_smoothing) <= 8.0:
            raise ValueError(
                f"data.input_smoothing must be a Gaussian sigma in [0, 8] pixels, got {input_smoothing}"
            )
        self.input_smoothing = float(input_smoothing)
        self.augment = augment
        # Loader settings; None: 0 workers, no pinning, workers kept alive when there are any, and
        # torch's prefetch depth (the training task picks them from the machine for data.*: null).
        self.num_workers = int(num_workers or 0)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = persistent_workers
        self.prefetch_factor = prefetch_factor
        self.seed = seed
        self.frames = frames
        self.frame_axis = frame_axis
        self.foreground_fraction = float(foreground_fraction)
        self.foreground_threshold = float(foreground_threshold)
        self.max_tries = int(max_tries)
        self.percentile_jitter = _jitter_ranges(percentile_jitter)
        self.storage_options = dict(storage_options) if storage_options else None
        self.cache_statistics = cache_statistics
        self.refs: list[ImageRef] = []  # every image found, including those no split uses
        self.manifests: dict[str, Manifest | None] = {}  # per store root
        self.train_sources: list[PatchSource] = []
        self.val_sources: list[PatchSource] = []

    @property
    def in_channels(self) -> int:
        """Number of channels of each patch (frames × channels; known after ``setup``)."""
        src = (self.train_sources or self.val_sources)[0]
        return len(src.channels) * self.frames

    @property
    def clean_validation(self) -> bool:
        """Whether validation yields clean patches (degraded on the device), known after ``setup``."""
        return bool(self.val_sources)

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
        table = cached_statistics(
            ref, channel_axis, spatial, self.percentiles, self.cache_statistics, self.input_smoothing
        )
        if table.values.shape[0] != n_channels:
            raise ValueError(
                f"image {ref.name} has {n_channels} channels but its stored statistics have"
                f" {table.values.shape[0]}; delete attrs['psr']['stats'] to recompute them"
            )
        table = table.channels(channels)
        low, high = table.at(self.percentiles[0]), table.at(self.percentiles[1])
        _check_range(ref.name, low, high, self.percentiles, channels)
        if self.percentile_jitter is not None:
            (_, a1), (b0, _) = self.percentile_jitter
            lo, hi = table.at(a1), table.at(b0)
            flat = np.nonzero(hi <= lo)[0]
            if flat.size:
                raise ValueError(
                    f"image {ref.name} channel {channels[int(flat[0])]} has no dynamic range between percentiles"
                    f" {a1:g} and {b0:g} (both {lo[flat[0]]:g}); narrow data.percentile_jitter or set it to null"
                )
        y_size = ref.shape[spatial[-2]]
        return PatchSource(
            ref,
            channel_axis,
            planes,
            spatial,
            (0, y_size),
            low.astype(np.float32),
            high.astype(np.float32),
            channels,
            frame_axis,
            table,
        )

    def _manifest_entry(self, ref: ImageRef) -> ManifestImage | None:
        manifest = self.manifests.get(ref.store)
        return manifest.images.get(ref.image_path) if manifest is not None else None

    def _sources_to_ingest(self) -> list[str]:
        """The entries of ``path`` that are image files, folders of images or globs rather than zarr stores."""
        if self.path is None:
            return []
        paths = [self.path] if isinstance(self.path, str | os.PathLike) else list(self.path)
        return [str(p) for p in paths if not _is_store(str(p))]

    def prepare_data(self) -> None:
        """Convert TIFF / PNG sources (``path`` entries or ``manifest``) to OME-Zarr once, in ``cache_dir``.

        The store is named by a fingerprint of the files (paths, sizes, times) and the ``ingest`` options,
        so later runs reuse it and an edited file makes a new one (``psr.data.ingest.ensure_ingested``).
        """
        if self._ingested:
            return
        sources = self._sources_to_ingest()
        if not sources and self.manifest is None:
            return
        if sources and len(sources) != (
            1 if isinstance(self.path, str | os.PathLike) else len(self.path or [])
        ):
            raise ValueError(
                f"data.path mixes zarr stores and image files ({sources[0]}); ingest the files first"
                " (scripts/ingest.py) or list only one kind"
            )
        from psr.data.ingest import IngestError, ensure_ingested, manifest_from_mapping

        manifest: Any = self.manifest
        if isinstance(manifest, Mapping):
            manifest = manifest_from_mapping(manifest, os.getcwd(), "data.manifest")
        cache = self.cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "psr")
        # Images without a split in a manifest: the datamodule splits them (data.val_fraction), not the ingest.
        options = {"val_fraction": 0.0, **self.ingest}
        try:
            store = ensure_ingested(sources, cache, manifest=manifest, **options)
        except IngestError as err:
            # The ingest speaks of its command-line flags; here the user set config keys.
            def key(match: re.Match[str]) -> str:
                name = match.group(1).replace("-", "_")
                return "data.manifest" if name == "manifest" else f"data.ingest.{name}"

            raise ValueError(re.sub(r"--([a-z][a-z-]*)", key, str(err))) from err
        self.path = str(store)
        self._ingested = True

    def _discover(self) -> list[ImageRef]:
        """Every image under ``path`` and each store's manifest (read once per store)."""
        self.prepare_data()  # idempotent; covers callers that skip prepare_data
        if self.path is None:
            raise ValueError("data.path is not set and data.manifest produced no store")
        refs = discover_images(self.path, self.storage_options)
        for store in dict.fromkeys(ref.store for ref in refs):
            self.manifests[store] = read_manifest(store, self.storage_options)
        return refs

    def setup(self, stage: str | None = None) -> None:
        """Find the images, split them and prepare their statistics.

        Where a store's root carries a psr manifest, its ``test`` images and its ``low`` images (the
        degraded halves of real pairs) are never used; its ``val`` images are the validation set (none
        with ``val_fraction=0``), the others train. A manifest naming no ``val`` image falls back to the
        random split below. Otherwise images are split at random by image (``val_fraction``), and a
        single image by rows.
        """
        if self.train_sources:
            return
        self.refs = self._discover()
        usable = []
        for ref in self.refs:
            entry = self._manifest_entry(ref)
            if entry is None or (entry.split != "test" and entry.role != "low"):
                usable.append(ref)
        if not usable:
            raise ValueError(
                f"the manifest of {self.path} leaves no image to train on (all {len(self.refs)} are test or"
                " low-quality images); expected clean or high-quality images in the train split"
            )
        named_val = [
            ref for ref in usable if (e := self._manifest_entry(ref)) is not None and e.split == "val"
        ]
        if named_val:
            held_out = {id(ref) for ref in named_val}
            train_refs = [ref for ref in usable if id(ref) not in held_out]
            if not train_refs:
                raise ValueError(
                    f"the manifest of {self.path} puts every usable image in the val split; expected train images"
                )
            train = [self._prepare_source(ref) for ref in train_refs]
            val = [self._prepare_source(ref) for ref in named_val] if self.val_fraction > 0 else []
        else:
            train, val = self._random_split([self._prepare_source(ref) for ref in usable])
        channel_counts = {len(s.channels) for s in train + val}
        if len(channel_counts) != 1:
            raise ValueError(
                f"images under {self.path} have different channel counts {sorted(channel_counts)}; pick data.channels"
            )
        self.train_sources, self.val_sources = train, val

    def _random_split(self, sources: list[PatchSource]) -> tuple[list[PatchSource], list[PatchSource]]:
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
            return train, val
        order = np.random.default_rng(self.seed).permutation(len(sources))
        n_val = max(1, int(round(len(sources) * self.val_fraction)))
        val = [sources[i] for i in sorted(order[:n_val])]
        train = [sources[i] for i in sorted(order[n_val:])]
        return train, val

    def _loader(self, dataset: Dataset[Any], shuffle: bool) -> DataLoader[Any]:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0 and self.persistent_workers is not False,
            prefetch_factor=self.prefetch_factor if self.num_workers > 0 else None,
            drop_last=shuffle,
        )

    def _sampling(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "foreground_fraction": self.foreground_fraction,
            "foreground_threshold": self.foreground_threshold,
            "max_tries": self.max_tries,
        }

    def train_dataloader(self) -> DataLoader[torch.Tensor]:
        dataset = PatchDataset(
            self.train_sources,
            self.patch,
            self.samples_per_epoch,
            augment=self.augment,
            percentile_jitter=self.percentile_jitter,
            **self._sampling(),
        )
        return self._loader(dataset, shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        if not self.val_sources:
            return DataLoader([])  # type: ignore[arg-type]
        dataset = PatchDataset(
            self.val_sources, self.patch, self.val_samples, seed=self.seed + 1, fixed=True, **self._sampling()
        )
        return self._loader(dataset, shuffle=False)
