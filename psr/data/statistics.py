"""Per-image intensity statistics: the percentile table each image is normalised by.

Every image's percentiles are estimated once from a strided subsample (about ``STATS_SUBSAMPLE`` values
per channel, so memory is bounded by the subsample, never by the image) on a fine grid
(``PERCENTILE_GRID``), and stored in its attributes (``attrs["psr"]["stats"]``) so that later runs read
no pixel. Any percentile (and percentile jitter) is then interpolated from the table. The mapping itself
is ``psr.data.normalise``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from psr.data.normalise import check_range, smooth_planes
from psr.io.omezarr import ImageRef, local_path, open_node

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
    sample = _finite_sample(ref, sample)
    if stride > 1:
        check_finite_everywhere(ref, arr)  # the sample skipped pixels: a NaN there must not reach training
    return sample


def _blocks(shape: tuple[int, ...], max_values: int) -> list[tuple[slice, ...]]:
    """Regions tiling ``shape``, each at most ``max_values`` elements (the largest axis halved until so)."""
    block = list(shape)
    while int(np.prod(block)) > max_values and max(block) > 1:
        i = int(np.argmax(block))
        block[i] = (block[i] + 1) // 2
    grids = [range(0, n, b) for n, b in zip(shape, block, strict=True)]
    regions: list[tuple[slice, ...]] = []
    for starts in np.ndindex(*(len(g) for g in grids)):
        regions.append(tuple(slice(g[k], g[k] + b) for g, k, b in zip(grids, starts, block, strict=True)))
    return regions


def check_finite_everywhere(ref: ImageRef, arr: Any, max_values: int = STATS_SUBSAMPLE) -> None:
    """Read a float image block by block (memory bounded by ``max_values``) and raise ``ValueError``
    naming it when any value is NaN or Inf. Integer images cannot hold either and are not read. Runs when
    an image's statistics are computed, so a store whose statistics are cached is read once."""
    if np.dtype(ref.dtype).kind not in "fc":
        return
    bad = sum(int((~np.isfinite(np.asarray(arr[region]))).sum()) for region in _blocks(ref.shape, max_values))
    if bad:
        raise ValueError(
            f"image {ref.name} holds {bad} NaN/Inf values; expected finite intensities everywhere"
        )


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


def check_image_range(
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
    check_image_range(ref.name, low, high, percentiles, range(len(low)))
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
