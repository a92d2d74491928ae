"""Ingest planning: every source's metadata opened and checked, and each image named, laid out and split,
before any pixel is written."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from psr.data.ingest.manifest import Manifest, PairEntry, _collect, _Item, fingerprint, load_manifest
from psr.data.ingest.options import OUTPUT_AXES, IngestError, IngestOptions, ingest_errors, unit_option
from psr.io import Source, open_images
from psr.io.omezarr import MANIFEST_VERSION
from psr.io.units import convert
from psr.io.writer import cast_to, default_chunks

# native axis codes -> output axes. 'S' (samples, e.g. RGB) is a channel; Q/I (generic pages) become t.
_NATIVE_AXES = {"T": "t", "Z": "z", "C": "c", "S": "c", "Y": "y", "X": "x"}
_GENERIC_AXES = "QI"
# the group of a store's root that lists its images (``psr.io.writer.write_collection_root``)
RESERVED_NAMES = ("OME",)


def open_source(path: Path, source: str) -> list[Source]:
    """The images in one file or zarr store (a multi-series TIFF or a zarr collection gives several)."""
    with ingest_errors():
        return open_images(path, source)


@dataclass(frozen=True)
class Layout:
    """How a source image maps onto its OME-Zarr image: output axes, shape, and the per-axis source mapping."""

    axes: str  # output axes, a subset of tczyx in order
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    source_to_output: tuple[str | None, ...]  # per source axis: output letter, or None (size 1, dropped)
    channel_axis: int | None  # source axis holding channels that are picked / reduced
    channel: int | str | None  # what to do with them
    pixel_size: dict[str, float]  # z / y / x in ``unit``
    unit: str | None
    chunks: tuple[int, ...]


def _output_letters(img: Source, options: IngestOptions) -> list[str | None]:
    """Per source axis its output letter (None for a dropped size-1 axis), or an error naming the file."""
    if options.axes is not None:
        if len(options.axes) != len(img.shape):
            raise IngestError(
                f"{img.path}: --axes '{options.axes}' has {len(options.axes)} letters but the image has {len(img.shape)} axes (shape {img.shape}, axes '{img.native_axes}')"
            )
        letters: list[str | None] = list(options.axes)
    else:
        letters = []
        for a in img.native_axes:
            if a in _NATIVE_AXES:
                letters.append(_NATIVE_AXES[a])
            elif a in OUTPUT_AXES:
                letters.append(a)
            else:
                letters.append("?")
    out: list[str | None] = []
    for letter, size in zip(letters, img.shape, strict=True):
        out.append(None if size == 1 and letter not in ("y", "x") else letter)
    unknown = [
        (raw, size)
        for letter, raw, size in zip(out, img.native_axes, img.shape, strict=True)
        if letter == "?"
    ]
    if unknown:
        generic = [u for u in unknown if u[0] in _GENERIC_AXES]
        if len(unknown) == 1 and generic and "t" not in out:
            out = ["t" if letter == "?" else letter for letter in out]
        else:
            raw, size = unknown[0]
            raise IngestError(
                f"{img.path}: cannot tell what axis '{raw}' (size {size}) of axes '{img.native_axes}' shape {img.shape} is; pass --axes with one letter of tczyx per axis"
            )
    present = [a for a in out if a is not None]
    if len(set(present)) != len(present):
        raise IngestError(
            f"{img.path}: axes '{img.native_axes}' shape {img.shape} map onto repeated axes {''.join(present)}; pass --axes with one letter of tczyx per axis"
        )
    if "y" not in present or "x" not in present:
        raise IngestError(f"{img.path}: axes '{img.native_axes}' have no y and x (expected an image)")
    return out


def plan_layout(img: Source, options: IngestOptions) -> Layout:
    """Check one source image against the options and decide its output layout (no pixel data read)."""
    if img.dtype.kind not in "iuf":  # bool is a mask (psr ingest --labels), complex is not an intensity
        raise IngestError(
            f"{img.path}: pixel type {img.dtype} is not supported (expected integer or float intensities;"
            " masks go in with --labels)"
        )
    if any(s == 0 for s in img.shape):
        raise IngestError(f"{img.path}: the image is empty (shape {img.shape}, expected no zero-size axis)")
    letters = _output_letters(img, options)
    channel_axis = letters.index("c") if "c" in letters else None
    channel = options.channel
    if channel_axis is not None:
        n_channels = img.shape[channel_axis]
        if channel is None and options.single_channel:
            kind = "RGB samples" if img.native_axes[channel_axis] == "S" else "channels"
            raise IngestError(
                f"{img.path}: found {n_channels} {kind} where one channel is expected; pass --channel N, --channel max or --channel mean"
            )
        if isinstance(channel, int) and channel >= n_channels:
            raise IngestError(
                f"{img.path}: --channel {channel} is out of range (the image has {n_channels} channels)"
            )
    else:
        channel = None
    order = [a for a in OUTPUT_AXES if a in letters and not (a == "c" and channel is not None)]
    sizes = {letter: size for letter, size in zip(letters, img.shape, strict=True) if letter is not None}
    shape = tuple(sizes[a] for a in order)
    if sizes["y"] < options.min_size or sizes["x"] < options.min_size:
        raise IngestError(
            f"{img.path}: the image is {sizes['y']}x{sizes['x']} pixels (Y x X), smaller than --min-size {options.min_size}"
        )
    dtype = img.dtype.newbyteorder("=")
    # physical sizes: the file's, converted to the requested unit, then the flags
    unit = unit_option(options.unit) or img.unit or "micrometer"
    pixel_size = {ax: convert(v, img.unit, unit) for ax, v in img.pixel_size.items() if ax in order}
    if options.pixel_size is not None:
        pixel_size["y"] = pixel_size["x"] = options.pixel_size
    if options.z_spacing is not None and "z" in order:
        pixel_size["z"] = options.z_spacing
    chunks = default_chunks("".join(order), shape, options.chunks or ())
    return Layout(
        axes="".join(order),
        shape=shape,
        dtype=dtype,
        source_to_output=tuple(letters),
        channel_axis=channel_axis if channel is not None else None,
        channel=channel,
        pixel_size=pixel_size,
        unit=unit if pixel_size else None,
        chunks=chunks,
    )


def read_block(img: Source, layout: Layout, region: dict[str, slice]) -> np.ndarray:
    """Read the output ``region`` (slices per output axis) from the source, in output axes and dtype."""
    index: list[slice] = []
    for i, letter in enumerate(layout.source_to_output):
        if letter is None:
            index.append(slice(0, 1))
        elif i == layout.channel_axis:
            ch = layout.channel
            index.append(slice(ch, ch + 1) if isinstance(ch, int) else slice(None))
        else:
            index.append(region[letter])
    block = img.read(tuple(index))
    if layout.channel_axis is not None and isinstance(layout.channel, str):
        ax = layout.channel_axis
        if layout.channel == "max":
            block = block.max(axis=ax, keepdims=True)
        else:
            reduced = block.mean(axis=ax, keepdims=True, dtype=np.float64)
            block = cast_to(reduced, layout.dtype)
    kept = [
        i
        for i, letter in enumerate(layout.source_to_output)
        if letter is not None and i != layout.channel_axis
    ]
    squeeze = tuple(i for i in range(block.ndim) if i not in kept)
    block = block.reshape([s for i, s in enumerate(block.shape) if i not in squeeze])
    letters = [layout.source_to_output[i] for i in kept]
    block = np.transpose(block, [letters.index(a) for a in layout.axes])
    return block.astype(layout.dtype, copy=False)


@dataclass
class PlannedImage:
    name: str
    image: Source
    layout: Layout
    split: str
    role: str


_NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")


def sanitize_name(stem: str) -> str:
    """A zarr-safe image name from a file stem: letters, digits, ``._-``; never empty or hidden."""
    name = _NAME_RE.sub("_", stem).strip("._") or "image"
    return name


def _assign_splits(planned: list[PlannedImage], unsplit: list[int], options: IngestOptions) -> None:
    n = len(unsplit)
    n_test = round(n * options.test_fraction)
    n_val = round(n * options.val_fraction)
    if options.test_fraction > 0 and n_test == 0 and n >= 3:
        n_test = 1
    if options.val_fraction > 0 and n_val == 0 and n - n_test >= 2:
        n_val = 1
    n_val = min(n_val, max(n - n_test - 1, 0))
    order = np.random.default_rng(options.seed).permutation(n)
    for rank, k in enumerate(order):
        planned[unsplit[k]].split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"


def _check_pair(low: PlannedImage, high: PlannedImage, scale: int) -> None:
    la, ha = low.layout, high.layout
    expected = tuple(s * scale if a in "yx" else s for a, s in zip(la.axes, la.shape, strict=True))
    if la.axes != ha.axes or ha.shape != expected:
        raise IngestError(
            f"pair {low.image.path} / {high.image.path}: low has axes '{la.axes}' shape {la.shape} and high axes '{ha.axes}' shape {ha.shape}, "
            f"expected high shape {expected} (Y and X {scale} times the low image's, other axes equal)"
        )


@dataclass
class IngestPlan:
    """Everything known before any pixel is written: the images, their layouts, splits and pairs."""

    images: list[PlannedImage]
    pairs: list[dict[str, Any]]
    fingerprint: str
    options: dict[str, Any]

    def manifest(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "images": {
                p.name: {"source": p.image.source, "split": p.split, "role": p.role} for p in self.images
            },
            "pairs": self.pairs,
        }

    def attributes(self) -> dict[str, Any]:
        return {
            "psr": {
                "manifest": self.manifest(),
                "ingest": {"fingerprint": self.fingerprint, "options": self.options},
            }
        }


def _recorded_options(
    options: IngestOptions, manifest: Manifest | None, sources: Sequence[str | Path] | None
) -> dict[str, Any]:
    out = options.as_dict()
    out["sources"] = [str(s) for s in sources] if sources is not None else None
    out["manifest"] = manifest.as_dict() if manifest is not None else None
    return out


def _prepare(
    sources: Sequence[str | Path] | None,
    manifest: str | Path | Manifest | None,
    options: IngestOptions,
    exclude: Sequence[Path] = (),
) -> tuple[list[_Item], list[tuple[Path, Path, PairEntry]], str, dict[str, Any]]:
    if not sources and manifest is None:
        raise IngestError(
            "no sources given (expected image files, folders, globs or zarr stores, or --manifest)"
        )
    loaded = manifest if isinstance(manifest, Manifest) or manifest is None else load_manifest(manifest)
    items, pairs = _collect(sources or None, loaded, exclude)
    recorded = _recorded_options(options, loaded, sources or None)
    return items, pairs, fingerprint([it.path for it in items], recorded), recorded


def plan(
    items: list[_Item],
    pairs: list[tuple[Path, Path, PairEntry]],
    fp: str,
    recorded: dict[str, Any],
    options: IngestOptions,
) -> IngestPlan:
    """Open every source's metadata, check it, and name, lay out and split every image."""
    planned: list[PlannedImage] = []
    by_path: dict[Path, list[PlannedImage]] = {}
    used: set[str] = set()
    unsplit: list[int] = []
    for item in items:
        for img in open_source(item.path, item.source):
            layout = plan_layout(img, options)
            base = sanitize_name(img.name)
            name, k = base, 2
            while name in used or name in RESERVED_NAMES:
                name, k = f"{base}_{k}", k + 1
            used.add(name)
            if item.split is None:
                unsplit.append(len(planned))
            p = PlannedImage(name, img, layout, item.split or "train", item.role)
            planned.append(p)
            by_path.setdefault(item.path, []).append(p)
    _assign_splits(planned, unsplit, options)
    pair_records = []
    for low_path, high_path, entry in pairs:
        lows, highs = by_path[low_path], by_path[high_path]
        if len(lows) != 1 or len(highs) != 1:
            raise IngestError(
                f"pair {low_path} / {high_path}: each side must hold one image (found {len(lows)} and {len(highs)})"
            )
        _check_pair(lows[0], highs[0], entry.scale)
        pair_records.append(
            {"low": lows[0].name, "high": highs[0].name, "scale": entry.scale, "split": entry.split}
        )
    return IngestPlan(planned, pair_records, fp, recorded)
