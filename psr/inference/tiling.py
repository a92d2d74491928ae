"""Tiling, blending windows and stitching for prediction on images of any size: pure functions, 2D and 3D.

An image's spatial axes ``(Y, X)`` or ``(Z, Y, X)`` are covered by a grid of equally sized tiles that
overlap by ``overlap`` pixels; the last tile along an axis is shifted inward so that it ends at the image
border (tiles never leave the image, and an axis smaller than the tile gets one tile of the axis' size).
A model maps an input tile to an output tile ``factors`` times larger per axis (``(s, s)`` in 2D,
``(1, s, s)`` for lateral-only 3D models); ``scale_region`` maps input regions to output regions.

Overlapping output tiles are blended with a window per tile and normalised by the summed windows::

    out = Σ_tiles window · prediction / Σ_tiles window

A window is 1 in the tile's interior and on every side that touches the image border (no other tile
covers those pixels), and ramps up from a side shared with a neighbouring tile (``cosine`` or ``linear``).
The first ``margin`` pixels of such a side (``overlap // 4`` by default) carry a negligible weight
(``FLOOR``), so that predictions there, which see the tile border, are outweighed by the neighbour's:
when the model's receptive-field radius is at most the margin, tiled prediction equals whole-image
prediction. Weights are > 0 everywhere, so every pixel is covered. With a ramp that fits in the nominal
overlap, two neighbours' ramps sum to one (``sin² + cos²``, ``t + (1 - t)``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal, Protocol

import numpy as np

Region = tuple[slice, ...]
"""A box of spatial pixels, one ``slice(start, stop)`` per spatial axis."""

WindowKind = Literal["cosine", "linear"]
WINDOWS: tuple[str, ...] = ("cosine", "linear")
FLOOR = 1e-6  # the weight of pixels whose prediction saw a tile border: > 0, yet negligible


class Accumulator(Protocol):
    """An array a tile can be added into: a NumPy array or a zarr array (read-modify-write)."""

    shape: tuple[int, ...]

    def __getitem__(self, key: Any) -> Any: ...

    def __setitem__(self, key: Any, value: Any) -> None: ...


def per_axis(value: int | Sequence[int], ndim: int, key: str) -> tuple[int, ...]:
    """An int for every spatial axis, or one per axis; ``ValueError`` naming the option ``key`` otherwise."""
    try:
        values = (int(value),) * ndim if isinstance(value, int | np.integer) else tuple(int(v) for v in value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{key}={value} is not an integer or a list of {ndim} integers") from err
    if len(values) != ndim:
        raise ValueError(
            f"{key}={list(values)} has {len(values)} values; there are {ndim} spatial axes: give one value"
            f" or {ndim}"
        )
    return values


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels along an axis of ``size``, neighbours overlapping by
    at least ``overlap``; the last tile is shifted inward to end at ``size``. ``size <= tile``: ``[0]``."""
    if size < 1:
        raise ValueError(f"cannot tile an axis of size {size}")
    if tile < 1 or overlap < 0:
        raise ValueError(f"tile must be >= 1 and overlap >= 0, got tile={tile} and overlap={overlap}")
    if size <= tile:
        return [0]
    if 2 * overlap > tile:
        raise ValueError(
            f"overlap={overlap} is more than half the tile ({tile}); pick an overlap of at most {tile // 2}"
        )
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def balanced_tile(size: int, tile: int, overlap: int) -> int:
    """The smallest tile edge that covers an axis of ``size`` pixels with as few tiles of at most ``tile``
    as possible: a 2048-pixel axis takes three 726-pixel tiles (overlap 64) rather than three of 1024."""
    if size <= tile:
        return size
    n = math.ceil((size - overlap) / (tile - overlap))
    return max(2 * overlap, min(tile, math.ceil((size + (n - 1) * overlap) / n)))


def tile_grid(
    shape: Sequence[int], tile: int | Sequence[int], overlap: int | Sequence[int] = 0
) -> list[Region]:
    """Every tile of a grid over an image of spatial ``shape`` (``(Y, X)`` or ``(Z, Y, X)``), in raster
    order. ``tile`` and ``overlap`` are one value for every axis or one per axis. All tiles have the same
    shape: ``min(tile, size)`` per axis; together they cover the image exactly."""
    ndim = len(shape)
    tiles = per_axis(tile, ndim, "tile")
    overlaps = per_axis(overlap, ndim, "overlap")
    axes: list[list[slice]] = []
    for axis, (size, t, o) in enumerate(zip(shape, tiles, overlaps, strict=True)):
        try:
            starts = tile_starts(int(size), t, o)
        except ValueError as err:
            raise ValueError(f"axis {axis} (size {size}): {err}") from err
        width = min(t, int(size))
        axes.append([slice(s, s + width) for s in starts])
    regions: list[Region] = [()]
    for slices in axes:
        regions = [(*r, s) for r in regions for s in slices]
    return regions


def scale_region(region: Region, factors: Sequence[int]) -> Region:
    """The output region of an input ``region`` for a model that enlarges axis ``i`` by ``factors[i]``."""
    return tuple(slice(s.start * f, s.stop * f) for s, f in zip(region, factors, strict=True))


def scale_shape(shape: Sequence[int], factors: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(n) * int(f) for n, f in zip(shape, factors, strict=True))


def _ramp(distance: np.ndarray, overlap: int, margin: int, kind: str) -> np.ndarray:
    """Weight by distance (pixels) from a side shared with a neighbour: ``FLOOR`` within ``margin``, then
    rising to 1 over the rest of the nominal overlap (``overlap - 2·margin`` pixels)."""
    width = overlap - 2 * margin
    if width <= 0:
        return np.where(distance < margin, 0.0, 1.0)
    t = np.clip((distance - margin + 0.5) / width, 0.0, 1.0)
    ramp = np.sin(0.5 * np.pi * t) ** 2 if kind == "cosine" else t
    return np.where(distance < margin, 0.0, ramp)


def window_1d(
    start: int, stop: int, size: int, overlap: int, kind: str = "cosine", margin: int | None = None
) -> np.ndarray:
    """The blending weights of a tile ``[start, stop)`` along an axis of ``size`` pixels (float64, > 0)."""
    if kind not in WINDOWS:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}, got {kind!r}")
    margin = overlap // 4 if margin is None else margin
    position = np.arange(start, stop, dtype=np.float64)
    weight = np.ones(stop - start)
    if start > 0:
        weight *= _ramp(position - start, overlap, margin, kind)
    if stop < size:
        weight *= _ramp(stop - 1 - position, overlap, margin, kind)
    return np.maximum(weight, FLOOR)


def axis_windows(
    region: Region,
    shape: Sequence[int],
    overlap: int | Sequence[int],
    kind: str = "cosine",
    factors: Sequence[int] | None = None,
) -> list[np.ndarray]:
    """The per-axis 1D windows of an input tile ``region`` at output resolution; ``blend_window`` is their
    outer product. Each depends only on whether the tile's sides along that axis are shared."""
    ndim = len(shape)
    factors = tuple(factors) if factors is not None else (1,) * ndim
    overlaps = per_axis(overlap, ndim, "overlap")
    return [
        window_1d(s.start * f, s.stop * f, int(size) * f, o * f, kind, (o // 4) * f)
        for s, size, o, f in zip(region, shape, overlaps, factors, strict=True)
    ]


def outer(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """The outer product of 1D arrays, float32: a separable window or normaliser."""
    result = np.ones((), dtype=np.float64)
    for v in vectors:
        result = np.multiply.outer(result, v)
    return result.astype(np.float32)


def blend_window(
    region: Region,
    shape: Sequence[int],
    overlap: int | Sequence[int],
    kind: str = "cosine",
    factors: Sequence[int] | None = None,
) -> np.ndarray:
    """The window of an input tile ``region`` of an image of spatial ``shape``, at output resolution.

    Returns float32 weights of the output tile's shape (the input tile's shape times ``factors``), > 0
    everywhere. The ramps and margins (``overlap // 4`` input pixels) scale with the factors too, so the
    margin covers every output pixel whose input neighbourhood reaches the tile border.
    """
    return outer(axis_windows(region, shape, overlap, kind, factors))


def window_key(region: Region, shape: Sequence[int]) -> tuple[tuple[bool, bool], ...]:
    """Which sides of a tile are shared with a neighbour, per axis: all a tile's window depends on in a
    grid of equal tiles (so a grid has at most ``3 ** ndim`` distinct windows)."""
    return tuple((s.start > 0, s.stop < int(n)) for s, n in zip(region, shape, strict=True))


class WindowCache:
    """The windows of the tiles of one grid (``blend_window``), each computed once per ``window_key``.

    Windows are kept while they take at most ``max_bytes`` together (large 3D tiles: computed per call).
    """

    def __init__(
        self,
        shape: Sequence[int],
        overlap: int | Sequence[int],
        kind: str = "cosine",
        factors: Sequence[int] | None = None,
        max_bytes: int = 256 << 20,
    ) -> None:
        self.shape, self.overlap, self.kind = tuple(int(n) for n in shape), overlap, kind
        self.factors = tuple(factors) if factors is not None else (1,) * len(self.shape)
        self.max_bytes = max_bytes
        self.cache: dict[tuple[tuple[bool, bool], ...], np.ndarray] = {}
        self.bytes = 0

    def __call__(self, region: Region) -> np.ndarray:
        key = window_key(region, self.shape)
        window = self.cache.get(key)
        if window is None:
            window = blend_window(region, self.shape, self.overlap, self.kind, self.factors)
            if self.bytes + window.nbytes <= self.max_bytes:
                self.cache[key] = window
                self.bytes += window.nbytes
        return window


def accumulate(
    total: Accumulator,
    region: Region,
    values: np.ndarray,
    window: np.ndarray,
    weights: Accumulator | None = None,
) -> None:
    """Add ``window · values`` (``(C, *tile)``) into ``total`` (``(C, *spatial)``) at ``region``, and the
    window into ``weights`` (``spatial``) when given. Works on NumPy and zarr arrays alike."""
    index = (slice(None), *region)
    total[index] = np.asarray(total[index]) + values * window
    if weights is not None:
        weights[region] = np.asarray(weights[region]) + window


def stitch(
    pieces: Iterable[tuple[Region, np.ndarray]],
    shape: Sequence[int],
    overlap: int | Sequence[int],
    kind: str = "cosine",
    factors: Sequence[int] | None = None,
) -> np.ndarray:
    """Blend output tiles into one image, in memory (small images and tests; prediction streams to zarr).

    ``pieces`` pairs each *input* tile region of an image of spatial ``shape`` with its output values
    ``(C, *tile·factors)``. Returns ``(C, *shape·factors)`` float32: the window-weighted mean of the tiles.
    """
    ndim = len(shape)
    factors = tuple(factors) if factors is not None else (1,) * ndim
    out_shape = scale_shape(shape, factors)
    weights = np.zeros(out_shape, np.float32)
    total: np.ndarray | None = None
    for region, values in pieces:
        if total is None:
            total = np.zeros((values.shape[0], *out_shape), np.float32)
        out_region = scale_region(region, factors)
        accumulate(total, out_region, values, blend_window(region, shape, overlap, kind, factors), weights)
    if total is None:
        raise ValueError("stitch needs at least one tile")
    if not (weights > 0).all():
        raise ValueError("the tiles do not cover the image")
    return total / weights


def n_tiles(shape: Sequence[int], tile: int | Sequence[int], overlap: int | Sequence[int]) -> int:
    """How many tiles ``tile_grid`` makes, without listing them."""
    ndim = len(shape)
    tiles, overlaps = per_axis(tile, ndim, "tile"), per_axis(overlap, ndim, "overlap")
    return math.prod(len(tile_starts(int(n), t, o)) for n, t, o in zip(shape, tiles, overlaps, strict=True))


def window_sums(
    shape: Sequence[int],
    tile: int | Sequence[int],
    overlap: int | Sequence[int],
    kind: str = "cosine",
    factors: Sequence[int] | None = None,
) -> list[np.ndarray]:
    """The summed windows of every tile of ``tile_grid(shape, tile, overlap)``, one 1D array per axis
    (output resolution, float64): the normaliser of ``stitch`` at a pixel is their outer product.

    Windows are products of per-axis windows and the grid is a product of per-axis starts, so
    ``Σ_tiles ⊗_axes w = ⊗_axes Σ_starts w``: streaming prediction needs no weight array on disk.
    """
    ndim = len(shape)
    factors = tuple(factors) if factors is not None else (1,) * ndim
    tiles, overlaps = per_axis(tile, ndim, "tile"), per_axis(overlap, ndim, "overlap")
    sums: list[np.ndarray] = []
    for size, t, o, f in zip(shape, tiles, overlaps, factors, strict=True):
        total = np.zeros(int(size) * f)
        width = min(t, int(size))
        for start in tile_starts(int(size), t, o):
            total[start * f : (start + width) * f] += window_1d(
                start * f, (start + width) * f, int(size) * f, o * f, kind, (o // 4) * f
            )
        sums.append(total)
    return sums


def block_weights(sums: Sequence[np.ndarray], region: Region) -> np.ndarray:
    """The summed windows over an output ``region``, from ``window_sums`` (float32)."""
    return outer([total[s] for total, s in zip(sums, region, strict=True)])
