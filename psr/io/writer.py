"""One streaming OME-Zarr writer: an NGFF 0.5 multiscale image written block by block, with its pyramid.

``OmeZarrWriter`` creates the arrays of every resolution level under a zarr group and writes the
multiscales metadata with ome-zarr-py's ``write_multiscales_metadata``. ``write(region, block)`` stores a
block of level 0 and its 2x2-mean downsamplings in the levels below, so the pyramid is built while
streaming and memory is bounded by the block. ``close()`` adds ``omero`` rendering metadata (channel
names, colours and contrast limits measured on the smallest level). ``write_collection_root`` makes a
store of several images openable from its root (a bioformats2raw-style ``OME/`` series listing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import zarr

DEFAULT_CHUNKS = {"z": 16, "y": 256, "x": 256}
# napari's usual channel colours; one channel is grey
_COLOURS = ("00FF00", "FF00FF", "00FFFF", "FFFF00", "FF0000", "0000FF", "FFFFFF")
_RGB = {"red": "FF0000", "green": "00FF00", "blue": "0000FF"}
CONTRAST_PERCENTILES = (0.1, 99.9)
_CONTRAST_VALUES = 1 << 18  # values per channel sampled for contrast limits


def level_shape(shape: Sequence[int], axes: str, level: int) -> tuple[int, ...]:
    """The shape of pyramid level ``level``: Y and X halved ``level`` times (rounded up)."""
    f = 2**level
    return tuple(-(-int(s) // f) if a in "yx" else int(s) for a, s in zip(axes, shape, strict=True))


def auto_levels(shape: Sequence[int], axes: str, smallest: int = 256, most: int = 6) -> int:
    """Levels until Y and X are at most ``smallest`` pixels (1 for small images, at most ``most``)."""
    size = max(int(s) for a, s in zip(axes, shape, strict=True) if a in "yx")
    return max(1, min(most, 1 + math.ceil(math.log2(max(size, 1) / smallest)) if size > smallest else 1))


def cast_to(values: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def downsample2(block: np.ndarray) -> np.ndarray:
    """Halve the last two axes (Y, X) by 2x2 means; odd sizes round up (edge rows / columns repeated)."""
    pad = [(0, 0)] * (block.ndim - 2) + [(0, block.shape[-2] % 2), (0, block.shape[-1] % 2)]
    if any(p[1] for p in pad):
        block = np.pad(block, pad, mode="edge")
    y, x = block.shape[-2] // 2, block.shape[-1] // 2
    # float32 sums of four 8/16-bit values are exact; wider types need float64
    acc = np.float32 if block.dtype.itemsize <= 2 or block.dtype == np.float32 else np.float64
    means = block.reshape(*block.shape[:-2], y, 2, x, 2).mean(axis=(-3, -1), dtype=acc)
    return cast_to(means, block.dtype)


def ngff_axes(axes: str, unit: str | None, pixel_size: Mapping[str, float]) -> list[dict[str, str]]:
    """NGFF axis entries: names, types, and the unit on spatial axes whose size is known."""
    out = []
    for a in axes:
        kind = {"t": "time", "c": "channel"}.get(a, "space")
        entry = {"name": a, "type": kind}
        if kind == "space" and unit and a in pixel_size:
            entry["unit"] = unit
        out.append(entry)
    return out


def datasets(
    axes: str, pixel_size: Mapping[str, float], levels: int, path: str = "s{}"
) -> list[dict[str, Any]]:
    """The ``datasets`` of a pyramid: each level's scale, and the translation of a downsampled pixel's centre."""
    out = []
    for level in range(levels):
        f = 2**level
        scale = [float(pixel_size.get(a, 1.0)) * (f if a in "yx" else 1) for a in axes]
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": scale}]
        if level:
            shift = [(f - 1) / 2 * float(pixel_size.get(a, 1.0)) if a in "yx" else 0.0 for a in axes]
            transforms.append({"type": "translation", "translation": shift})
        out.append({"path": path.format(level), "coordinateTransformations": transforms})
    return out


def default_chunks(axes: str, shape: Sequence[int], requested: Sequence[int] = ()) -> tuple[int, ...]:
    """Chunks: one along t and c, ``DEFAULT_CHUNKS`` (or ``requested`` for the trailing spatial axes)."""
    chunk_of = dict(DEFAULT_CHUNKS)
    for ax, size in zip("zyx"[-len(requested) :] if requested else "", requested, strict=True):
        chunk_of[ax] = int(size)
    return tuple(min(chunk_of.get(a, 1), int(s)) for a, s in zip(axes, shape, strict=True))


class OmeZarrWriter:
    """One multiscale OME-Zarr image under ``group``, written block by block (NGFF 0.5, zarr v3, zstd).

    ``axes`` is a subset of ``tczyx`` in that order; ``levels`` resolution levels (level 0 full size,
    each next one halving Y and X) named by ``path`` (``"s{}"`` -> ``s0``, ``s1``...). Blocks written with
    ``write`` must start at multiples of ``2**(levels-1)`` in Y and X, so each level's block is whole.
    """

    def __init__(
        self,
        group: zarr.Group,
        axes: str,
        shape: Sequence[int],
        dtype: Any,
        *,
        name: str,
        levels: int = 1,
        chunks: Sequence[int] | None = None,
        pixel_size: Mapping[str, float] | None = None,
        unit: str | None = None,
        channel_names: Sequence[str] = (),
        path: str = "s{}",
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        from ome_zarr.format import FormatV05
        from ome_zarr.writer import write_multiscales_metadata
        from zarr.codecs import ZstdCodec

        if not 1 <= levels <= 12:
            raise ValueError(f"levels={levels}: expected 1 to 12 resolution levels")
        self.group, self.axes, self.shape = group, axes, tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.levels, self.name = levels, name
        self.channel_names = tuple(channel_names)
        chunks = tuple(chunks) if chunks is not None else default_chunks(axes, self.shape)
        self.arrays = [
            group.create_array(
                path.format(level),
                shape=level_shape(self.shape, axes, level),
                dtype=self.dtype,
                chunks=tuple(
                    min(c, s) for c, s in zip(chunks, level_shape(self.shape, axes, level), strict=True)
                ),
                compressors=ZstdCodec(level=3),
                dimension_names=list(axes),
                fill_value=0,
            )
            for level in range(levels)
        ]
        pixel = {a: float(v) for a, v in (pixel_size or {}).items() if a in axes and a in "zyx"}
        write_multiscales_metadata(
            group,
            datasets(axes, pixel, levels, path),
            fmt=FormatV05(),
            axes=ngff_axes(axes, unit, pixel),
            name=name,
        )
        if attributes:
            group.attrs.update(dict(attributes))

    def write(self, region: Mapping[str, slice], block: np.ndarray) -> None:
        """Store ``block`` (axes ``self.axes``) at ``region`` (a slice per axis; missing axes whole)."""
        step = 2 ** (self.levels - 1)
        starts = {a: (region[a].start or 0) if a in region else 0 for a in self.axes}
        if any(starts[a] % step for a in "yx" if a in starts):
            raise ValueError(
                f"a block at {starts} is not aligned to the {self.levels}-level pyramid ({step})"
            )
        block = block.astype(self.dtype, copy=False)
        for level, array in enumerate(self.arrays):
            if level:
                block = downsample2(block)
            f = 2**level
            array[
                tuple(
                    slice(starts[a] // f, starts[a] // f + block.shape[i])
                    if a in "yx"
                    else region.get(a, slice(None))
                    for i, a in enumerate(self.axes)
                )
            ] = block

    def contrast_limits(self) -> list[tuple[float, float]]:
        """Per-channel ``CONTRAST_PERCENTILES`` of a strided sample of the smallest level (about
        ``_CONTRAST_VALUES`` values per channel, whatever the image size)."""
        array = self.arrays[-1]
        other = [n for a, n in zip(self.axes, array.shape, strict=True) if a != "c" and n > 1]
        step = max(1, math.ceil((math.prod(other) / _CONTRAST_VALUES) ** (1 / max(len(other), 1))))
        index = tuple(slice(None) if a == "c" else slice(None, None, step) for a in self.axes)
        sample = np.asarray(array[index])
        sample = np.moveaxis(sample, self.axes.index("c"), 0) if "c" in self.axes else sample[None]
        limits = []
        for values in sample.reshape(sample.shape[0], -1):
            finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
            lo, hi = np.percentile(finite, CONTRAST_PERCENTILES) if finite.size else (0.0, 1.0)
            limits.append((float(lo), float(hi)))
        return limits

    def close(self, contrast: Sequence[tuple[float, float]] | None = None) -> None:
        """Write the ``omero`` rendering metadata (contrast limits measured unless given)."""
        n = self.shape[self.axes.index("c")] if "c" in self.axes else 1
        limits = list(contrast) if contrast is not None else self.contrast_limits()
        if self.dtype.kind in "iu":
            lowest, highest = float(np.iinfo(self.dtype).min), float(np.iinfo(self.dtype).max)
        else:
            lowest, highest = min(lo for lo, _ in limits), max(hi for _, hi in limits)
        names = self.channel_names if len(self.channel_names) == n else ()
        channels = []
        for k in range(n):
            label = names[k] if names else f"channel {k}" if n > 1 else self.name
            colour = _RGB.get(label.lower()) or ("FFFFFF" if n == 1 else _COLOURS[k % len(_COLOURS)])
            start, end = limits[k]
            channels.append(
                {
                    "label": label,
                    "color": colour,
                    "active": True,
                    "window": {"min": lowest, "max": highest, "start": start, "end": end},
                }
            )
        ome: dict[str, Any] = dict(cast(Mapping[str, Any], self.group.attrs.get("ome") or {}))
        ome["omero"] = {"name": self.name, "channels": channels, "rdefs": {"model": "color"}}
        self.group.attrs["ome"] = ome


def write_collection_root(root: zarr.Group, names: Sequence[str]) -> None:
    """Make ``root`` openable as one entity: bioformats2raw layout 3 with an ``OME/`` group whose
    ``series`` lists the image groups ``names`` (NGFF 0.5's way to hold several images in one store)."""
    ome: dict[str, Any] = dict(cast(Mapping[str, Any], root.attrs.get("ome") or {}))
    ome.update({"version": "0.5", "bioformats2raw.layout": 3})
    root.attrs["ome"] = ome
    listing = root.require_group("OME")
    listing.attrs["ome"] = {"version": "0.5", "series": list(names)}
