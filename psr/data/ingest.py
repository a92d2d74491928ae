"""Ingest microscopy images (TIFF, OME-TIFF, ImageJ hyperstacks, PNG/JPEG, zarr / OME-Zarr) into one OME-Zarr store.

The output is a zarr v3 group holding one multiscale OME-Zarr image (NGFF 0.5) per source image, named after
the file stem, with the axes present (a subset of ``tczyx`` in that order), physical pixel sizes, chunks
suited to patch reads and zstd compression. The root attributes carry a dataset manifest under ``"psr"``::

    {"manifest": {"version": 1,
                  "images": {"<name>": {"source": "<path>", "split": "train|val|test", "role": "clean|low|high"}},
                  "pairs": [{"low": "<name>", "high": "<name>", "scale": 1, "split": "val"}]},
     "ingest": {"fingerprint": "<sha256>", "options": {...}}}

Conversion is chunked: TIFF pixels are read one chunk row at a time (rows of uncompressed
TIFFs read with pread, or the strips / tiles of compressed ones through tifffile's zarr store), so memory is bounded by a
chunk row, never by the image. PNG / JPEG files are decoded whole (those formats cannot be read in parts).
Metadata is validated before any pixel is written, pixels (NaN / Inf, corrupt strips) while writing; the store is written under a
temporary name beside the output and renamed when complete.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import math
import os
import re
import shutil
import uuid
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from psr.data.omezarr import MANIFEST_VERSION, SPLITS
from psr.tasks.errors import ConfigError

if TYPE_CHECKING:
    from psr.data.omezarr import ImageRef

INGEST_VERSION = 1
TIFF_SUFFIXES = (".tif", ".tiff")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg")
OUTPUT_AXES = "tczyx"
DEFAULT_CHUNKS = {"z": 16, "y": 256, "x": 256}
BLOCK_BYTES = 32 * 2**20  # pixels read and written at once (per band), whatever the image size

# Lengths in metres: metadata sizes are converted to one unit per image (NGFF unit names).
_UNIT_METRES = {
    "angstrom": 1e-10,
    "nanometer": 1e-9,
    "micrometer": 1e-6,
    "millimeter": 1e-3,
    "centimeter": 1e-2,
    "meter": 1.0,
}
_UNIT_ALIASES = {
    "a": "angstrom",
    "å": "angstrom",
    "\\u00c5": "angstrom",
    "nm": "nanometer",
    "nanometre": "nanometer",
    "um": "micrometer",
    "µm": "micrometer",  # micro sign
    "μm": "micrometer",  # greek mu
    "\\u00b5m": "micrometer",  # ImageJ writes the escape literally
    "micron": "micrometer",
    "microns": "micrometer",
    "micrometre": "micrometer",
    "mm": "millimeter",
    "millimetre": "millimeter",
    "cm": "centimeter",
    "centimetre": "centimeter",
    "m": "meter",
    "metre": "meter",
}
_NO_UNIT = {"", "pixel", "pixels", "px", "none"}

# tifffile series axes -> output axes. 'S' (samples, e.g. RGB) is a channel; Q/I (generic pages) become t.
_TIFF_AXES = {"T": "t", "Z": "z", "C": "c", "S": "c", "Y": "y", "X": "x"}
_GENERIC_AXES = "QI"


class IngestError(ConfigError):
    """A source that cannot be ingested: the message names the file, what was found and what was expected."""


def normalize_unit(unit: str | None, where: str = "--unit") -> str | None:
    """The NGFF name of a length unit (``"um"`` -> ``"micrometer"``), ``None`` for pixels / no unit."""
    if unit is None:
        return None
    key = unit.strip().lower()
    if key in _NO_UNIT:
        return None
    name = _UNIT_ALIASES.get(key, key)
    if name not in _UNIT_METRES:
        raise IngestError(
            f"{where}: unknown length unit '{unit}' (expected one of {', '.join(_UNIT_METRES)}, or um / nm / mm)"
        )
    return name


def _convert(value: float, unit: str | None, to: str | None) -> float:
    if unit is None or to is None or unit == to:
        return value
    return value * _UNIT_METRES[unit] / _UNIT_METRES[to]


# --------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class IngestOptions:
    """How sources become OME-Zarr images; every field is recorded in the store and its fingerprint.

    pixel_size / z_spacing: physical sizes in ``unit`` overriding the files' metadata.
    unit: the unit of the stored sizes (metadata sizes are converted to it); default: the file's own unit.
    axes: override the source axes, one letter of ``tczyx`` per source axis (e.g. ``"zyx"``).
    channel: pick channel N or reduce channels (``"max"`` / ``"mean"``) where an image has several.
    single_channel: an image with several channels (e.g. RGB) is an error unless ``channel`` is given.
    chunks: chunk sizes of the trailing spatial axes (``(y, x)`` or ``(z, y, x)``); t and c chunk by 1.
    min_size: smallest Y and X accepted (an image smaller than a patch is useless for training).
    levels: pyramid levels (level 0 is full resolution; each next level halves Y and X).
    val_fraction / test_fraction / seed: random split by image of the images given without a split.
    """

    pixel_size: float | None = None
    z_spacing: float | None = None
    unit: str | None = None
    axes: str | None = None
    channel: int | str | None = None
    single_channel: bool = False
    chunks: tuple[int, ...] | None = None
    min_size: int = 16
    levels: int = 2
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("pixel_size", "z_spacing"):
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise IngestError(f"--{key.replace('_', '-')}: expected a positive number, got {value}")
        normalize_unit(self.unit)
        if self.axes is not None and (
            not self.axes
            or any(a not in OUTPUT_AXES for a in self.axes)
            or len(set(self.axes)) != len(self.axes)
            or not {"y", "x"} <= set(self.axes)
        ):
            raise IngestError(
                f"--axes: got '{self.axes}', expected distinct letters from 'tczyx' including y and x, one per source axis"
            )
        if isinstance(self.channel, str) and self.channel not in ("max", "mean"):
            raise IngestError(f"--channel: got '{self.channel}', expected a channel index, 'max' or 'mean'")
        if isinstance(self.channel, int) and self.channel < 0:
            raise IngestError(f"--channel: got {self.channel}, expected a channel index >= 0")
        if self.chunks is not None and (not 1 <= len(self.chunks) <= 3 or any(c < 1 for c in self.chunks)):
            raise IngestError(f"--chunks: got {self.chunks}, expected 1 to 3 positive sizes for (z,) y, x")
        if self.min_size < 1:
            raise IngestError(f"--min-size: got {self.min_size}, expected at least 1")
        if not 1 <= self.levels <= 8:
            raise IngestError(f"--levels: got {self.levels}, expected 1 to 8")
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1):
            raise IngestError(
                f"--val-fraction / --test-fraction: got {self.val_fraction} and {self.test_fraction}, expected values in [0, 1)"
            )
        if self.val_fraction + self.test_fraction >= 1:
            raise IngestError(
                f"--val-fraction + --test-fraction = {self.val_fraction + self.test_fraction}, expected less than 1 (some images must train)"
            )

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["chunks"] = list(self.chunks) if self.chunks is not None else None
        return out


def parse_channel(text: str) -> int | str:
    """``--channel`` value: an index or ``max`` / ``mean``."""
    return int(text) if text.strip().lstrip("-").isdigit() else text.strip().lower()


def parse_chunks(text: str) -> tuple[int, ...]:
    """``--chunks 16,256,256`` -> ``(16, 256, 256)``."""
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise IngestError(f"--chunks: got '{text}', expected sizes such as 256,256 or 16,256,256") from None


# --------------------------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class ImageEntry:
    path: str
    split: str | None = None


@dataclass(frozen=True)
class PairEntry:
    low: str
    high: str
    scale: int = 1
    split: str = "val"


@dataclass(frozen=True)
class Manifest:
    """A dataset description: clean images (with optional splits) and real low / high pairs."""

    images: tuple[ImageEntry, ...] = ()
    pairs: tuple[PairEntry, ...] = ()
    base: Path = field(default_factory=Path)  # paths are relative to this folder

    def as_dict(self) -> dict[str, Any]:
        return {"images": [asdict(e) for e in self.images], "pairs": [asdict(p) for p in self.pairs]}


def _check_split(value: Any, where: str) -> str:
    if value not in SPLITS:
        raise IngestError(f"{where}: split '{value}' is not one of {', '.join(SPLITS)}")
    return str(value)


def load_manifest(path: str | Path) -> Manifest:
    """Read a YAML manifest (``images:`` entries with optional ``split``, ``pairs:`` with ``low``/``high``)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise IngestError(f"manifest {path} does not exist (expected a YAML file with images: and pairs:)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise IngestError(f"manifest {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    return manifest_from_mapping(data, path.parent, f"manifest {path}")


def manifest_from_mapping(data: Any, base: str | Path, where: str = "manifest") -> Manifest:
    """A manifest from its parsed form (``{images: [...], pairs: [...]}``), paths relative to ``base``.

    ``where`` names the manifest in error messages (a file, or a config key such as ``data.manifest``).
    """
    if not isinstance(data, Mapping) or not set(data) <= {"images", "pairs"}:
        found = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise IngestError(f"{where}: found {found}, expected a mapping with keys images and/or pairs")
    images: list[ImageEntry] = []
    for i, item in enumerate(data.get("images") or []):
        at = f"{where}: images[{i}]"
        if isinstance(item, str):
            item = {"path": item}
        if not isinstance(item, Mapping) or "path" not in item or not set(item) <= {"path", "split"}:
            raise IngestError(f"{at}: found {item!r}, expected {{path: ..., split: train|val|test}}")
        split = _check_split(item["split"], at) if item.get("split") is not None else None
        images.append(ImageEntry(str(item["path"]), split))
    pairs: list[PairEntry] = []
    for i, item in enumerate(data.get("pairs") or []):
        at = f"{where}: pairs[{i}]"
        if not isinstance(item, Mapping) or not {"low", "high"} <= set(item) <= {
            "low",
            "high",
            "scale",
            "split",
        }:
            raise IngestError(f"{at}: found {item!r}, expected {{low: ..., high: ..., scale: 1, split: val}}")
        scale = item.get("scale", 1)
        if isinstance(scale, float) and scale.is_integer():
            scale = int(scale)
        if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
            raise IngestError(f"{at}: scale {scale!r} is not a positive integer")
        split = _check_split(item.get("split", "val"), at)
        pairs.append(PairEntry(str(item["low"]), str(item["high"]), scale, split))
    if not images and not pairs:
        raise IngestError(f"{where} names no images and no pairs")
    return Manifest(tuple(images), tuple(pairs), Path(base))


# --------------------------------------------------------------------------------------------- sources


def _is_zarr_dir(path: Path) -> bool:
    return path.is_dir() and (
        path.suffix == ".zarr" or any((path / n).exists() for n in ("zarr.json", ".zgroup", ".zarray"))
    )


def _is_source_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in TIFF_SUFFIXES + RASTER_SUFFIXES


def expand_source(
    given: str, base: Path | None = None, exclude: Sequence[Path] = ()
) -> list[tuple[str, Path]]:
    """Files / zarr stores named by a path, folder or glob, as ``(path as given, resolved path)``, sorted.

    A folder contributes its image files (TIFF, PNG, JPEG) and zarr stores, not its subfolders; files of
    other formats in a folder or glob are ignored, but a file named directly must have a known format.
    """
    base = base or Path.cwd()
    excluded = {p.resolve() for p in exclude}
    joined = Path(given).expanduser()
    full = joined if joined.is_absolute() else base / joined

    def keep(p: Path) -> bool:
        return (
            not p.name.startswith(".")
            and p.resolve() not in excluded
            and (_is_source_file(p) or _is_zarr_dir(p))
        )

    def shown(p: Path) -> str:
        # the path as the user wrote it: relative paths stay relative to the manifest / working folder
        return str(p) if joined.is_absolute() else os.path.relpath(p, base)

    if glob.has_magic(str(given)):
        matches = [Path(m) for m in sorted(glob.glob(str(full), recursive=True))]
        found = [p for p in matches if keep(p)]
        if not found:
            raise IngestError(
                f"'{given}' matches no image (found {len(matches)} paths, expected TIFF / PNG / JPEG files or zarr stores)"
            )
        return [(shown(p), p.resolve()) for p in found]
    if not full.exists():
        raise IngestError(
            f"'{given}' does not exist (expected an image file, a folder, a glob or a zarr store)"
        )
    if _is_zarr_dir(full):
        return [(str(given), full.resolve())]
    if full.is_dir():
        found = [p for p in sorted(full.iterdir()) if keep(p)]
        if not found:
            raise IngestError(
                f"folder '{given}' holds no image (expected TIFF / PNG / JPEG files or zarr stores in it)"
            )
        return [(shown(p), p.resolve()) for p in found]
    if not _is_source_file(full):
        raise IngestError(
            f"'{given}' has an unknown format '{full.suffix}' (expected .tif/.tiff, .png, .jpg/.jpeg or a zarr store)"
        )
    return [(str(given), full.resolve())]


def _stat_source(path: Path) -> dict[str, Any]:
    if path.is_dir():
        size, mtime, count = 0, 0, 0
        for root, _dirs, files in os.walk(path):
            for name in files:
                st = os.stat(os.path.join(root, name))
                size, mtime, count = size + st.st_size, max(mtime, st.st_mtime_ns), count + 1
        return {"path": str(path), "size": size, "mtime_ns": mtime, "files": count}
    st = path.stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def fingerprint(paths: Sequence[Path], options: dict[str, Any]) -> str:
    """SHA-256 of the sources' resolved paths, sizes and mtimes, the options and the ingest version."""
    key = {"version": INGEST_VERSION, "sources": [_stat_source(p) for p in paths], "options": options}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------------------------- readers


class BlockReader(Protocol):
    """Reads a block of a source image in its own axes (numpy basic indexing with slices)."""

    def __getitem__(self, index: tuple[slice, ...]) -> np.ndarray: ...


class _ContiguousReader:
    """An uncompressed array stored contiguously in a file (C order): blocks are read with ``os.pread``.

    A block is read as runs of contiguous bytes (e.g. one band of full rows per plane), straight into the
    result, so memory is bounded by the block and sequential reads stay fast.
    """

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        self.path, self.offset, self.shape, self.dtype = path, offset, shape, dtype

    def __getitem__(self, index: tuple[slice, ...]) -> np.ndarray:
        ranges = [range(*sl.indices(n)) for sl, n in zip(index, self.shape, strict=True)]
        if any(r.step != 1 for r in ranges):
            raise ValueError("only contiguous slices are supported")
        out = np.empty([len(r) for r in ranges], dtype=self.dtype)
        if out.size == 0:
            return out
        # the trailing axes read whole, plus one partial axis before them, form one contiguous run
        k = len(ranges) - 1
        while k > 0 and len(ranges[k]) == self.shape[k]:
            k -= 1
        strides = np.cumprod((self.shape[1:] + (1,))[::-1])[::-1] * self.dtype.itemsize
        run = out.reshape(*out.shape[:k], -1)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for lead in np.ndindex(*out.shape[:k]):
                start = (
                    self.offset
                    + sum((ranges[i][0] + lead[i]) * int(strides[i]) for i in range(k))
                    + ranges[k][0] * int(strides[k])
                )
                view = run[lead].data.cast("B")
                got = os.preadv(fd, [view], start)
                if got != view.nbytes:
                    raise OSError(
                        f"read {got} of {view.nbytes} bytes at offset {start}: the file is truncated"
                    )
        finally:
            os.close(fd)
        return out


class _WholeReader:
    """A decoded image already in memory (PNG / JPEG): blocks are views."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __getitem__(self, index: tuple[slice, ...]) -> np.ndarray:
        return self.array[index]


@dataclass
class SourceImage:
    """One image found in a source: its metadata, read without pixel data, and how to open its pixels."""

    path: Path  # resolved file or store
    source: str  # the path as given (recorded in the manifest)
    stem: str  # base of the image's name
    axes: str  # source axes: tifffile letters (upper case) or tczyx letters (zarr)
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    pixel_size: dict[str, float]  # z / y / x sizes from the metadata, in ``unit``
    unit: str | None
    opener: Callable[[], contextlib.AbstractContextManager[BlockReader]]


class _TiffLog(logging.Handler):
    """Collects tifffile's ERROR records: tifffile logs (not raises) bad IFD offsets of truncated files."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _tiff_errors() -> Iterator[_TiffLog]:
    handler = _TiffLog()
    logger = logging.getLogger("tifffile")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _ome_sizes(xml: str, index: int) -> tuple[dict[str, float], str | None]:
    """Physical sizes of OME image ``index`` from OME-XML, converted to the X unit."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return {}, None
    pixels = [el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"]
    if index >= len(pixels):
        return {}, None
    attrs = pixels[index].attrib
    units = {ax: normalize_unit(attrs.get(f"PhysicalSize{ax.upper()}Unit", "µm"), "OME-XML") for ax in "xyz"}
    unit = units["x"] or units["y"] or units["z"]
    sizes: dict[str, float] = {}
    for ax in "zyx":
        value = attrs.get(f"PhysicalSize{ax.upper()}")
        if value is not None and float(value) > 0:
            sizes[ax] = _convert(float(value), units[ax], unit)
    return sizes, unit


def _tiff_sizes(tf: Any, page: Any) -> tuple[dict[str, float], str | None]:
    """Sizes from ImageJ metadata (``unit``, ``spacing``) and the resolution tags, or from a cm unit."""
    sizes: dict[str, float] = {}
    ij = tf.imagej_metadata or {}
    res_unit = page.tags.get("ResolutionUnit")
    res_unit_value = int(res_unit.value) if res_unit is not None else 1
    unit: str | None
    scale = 1.0
    if ij.get("unit"):
        try:
            unit = normalize_unit(str(ij["unit"]), "ImageJ metadata")
        except IngestError:
            unit = None
    elif res_unit_value == 3:  # centimeter: report micrometres
        unit, scale = "micrometer", 1e4
    elif res_unit_value == 4:  # millimeter (tifffile extension)
        unit, scale = "micrometer", 1e3
    elif res_unit_value == 5:  # micrometer (tifffile extension)
        unit = "micrometer"
    else:  # none, or inch: a display resolution, not a physical pixel size
        return sizes, None
    if unit is None:
        return sizes, None
    for ax, tag in (("x", "XResolution"), ("y", "YResolution")):
        t = page.tags.get(tag)
        if t is not None:
            num, den = t.value if isinstance(t.value, tuple) else (t.value, 1)
            if num > 0 and den > 0:
                sizes[ax] = scale * den / num
    if ij.get("spacing"):
        sizes["z"] = float(ij["spacing"]) * scale
    return sizes, unit


def _tiff_images(path: Path, source: str) -> list[SourceImage]:
    import tifffile

    stem = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    file_size = path.stat().st_size
    images: list[SourceImage] = []
    with _tiff_errors() as log:
        try:
            with tifffile.TiffFile(path) as tf:
                series_list = list(tf.series)
                ome_xml = tf.ome_metadata if tf.is_ome else None
                for index, series in enumerate(series_list):
                    shape = tuple(int(s) for s in series.shape)
                    pages = [p for p in series.pages if p is not None]
                    for page in pages:
                        for off, count in zip(page.dataoffsets, page.databytecounts, strict=False):
                            if count and off + count > file_size:
                                raise IngestError(
                                    f"{path}: TIFF is truncated or corrupt (pixel data at byte {off}+{count} beyond the file's {file_size} bytes)"
                                )
                    if ome_xml:
                        sizes, unit = _ome_sizes(ome_xml, index)
                    else:
                        sizes, unit = _tiff_sizes(tf, series.pages[0] if pages else tf.pages[0])
                    offset = series.dataoffset
                    images.append(
                        SourceImage(
                            path=path,
                            source=source,
                            stem=stem if len(series_list) == 1 else f"{stem}_s{index}",
                            axes=str(series.axes),
                            shape=shape,
                            dtype=np.dtype(series.dtype),
                            pixel_size=sizes,
                            unit=unit,
                            opener=_tiff_opener(path, index, offset, shape, np.dtype(series.dtype)),
                        )
                    )
        except IngestError:
            raise
        except Exception as err:  # tifffile raises many types for broken files
            raise IngestError(f"{path}: not a readable TIFF ({type(err).__name__}: {err})") from None
    if log.messages:
        raise IngestError(f"{path}: TIFF is truncated or corrupt ({log.messages[0]})")
    if not images:
        raise IngestError(f"{path}: not a readable TIFF (no image found in it: corrupt or not a TIFF)")
    return images


def _tiff_opener(
    path: Path, index: int, offset: int | None, shape: tuple[int, ...], dtype: np.dtype[Any]
) -> Callable[[], contextlib.AbstractContextManager[BlockReader]]:
    @contextlib.contextmanager
    def open_tiff() -> Iterator[BlockReader]:
        if offset is not None:  # uncompressed, contiguous: rows read with pread
            yield _ContiguousReader(path, offset, shape, dtype)
            return
        import tifffile

        with tifffile.TiffFile(path) as tf:
            store = tf.series[index].aszarr(level=0)
            try:
                # decodes only the strips / tiles a block touches
                yield cast(BlockReader, zarr.open_array(store, mode="r"))
            finally:
                store.close()

    return open_tiff


def _raster_images(path: Path, source: str) -> list[SourceImage]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode, (width, height) = im.mode, im.size
    except (UnidentifiedImageError, OSError) as err:
        raise IngestError(f"{path}: not a readable PNG / JPEG ({err})") from None
    gray = {"1": "uint8", "L": "uint8", "LA": "uint8", "I;16": "uint16", "I;16B": "uint16", "I;16L": "uint16"}
    gray |= {"I": "int32", "F": "float32"}
    shape: tuple[int, ...]
    if mode in gray:
        axes, shape, dtype = "YX", (height, width), np.dtype(gray[mode])
    else:  # RGB, RGBA (alpha dropped), P (palette), CMYK, YCbCr...: decoded as RGB
        axes, shape, dtype = "YXS", (height, width, 3), np.dtype("uint8")

    @contextlib.contextmanager
    def open_raster() -> Iterator[BlockReader]:
        try:
            with Image.open(path) as im:
                decoded = (
                    im.convert("L") if mode in ("1", "LA") else im if mode in gray else im.convert("RGB")
                )
                array = np.asarray(decoded)
        except (OSError, ValueError) as err:
            raise IngestError(f"{path}: PNG / JPEG is truncated or corrupt ({err})") from None
        if array.shape != shape:
            raise IngestError(f"{path}: decoded shape {array.shape} differs from the header's {shape}")
        yield _WholeReader(array.astype(dtype, copy=False))

    return [SourceImage(path, source, path.stem, axes, shape, dtype, {}, None, open_raster)]


def _zarr_multiscale(ref: ImageRef) -> dict[str, Any] | None:
    """The multiscales entry of the OME-Zarr image holding ``ref`` (None for a bare array)."""
    if not ref.array_path:
        return None
    parent = ref.array_path.rsplit("/", 1)[0] if "/" in ref.array_path else ""
    try:
        attrs: dict[str, Any] = dict(zarr.open_group(ref.store, path=parent, mode="r").attrs)
    except Exception:
        return None
    ms = (attrs.get("ome") or {}).get("multiscales") or attrs.get("multiscales") or []
    return dict(ms[0]) if ms else None


def _zarr_images(path: Path, source: str) -> list[SourceImage]:
    from psr.data.omezarr import discover_images  # imports ome_zarr's writer stack: only when needed

    try:
        refs = discover_images(path)
    except (ValueError, FileNotFoundError, OSError, KeyError) as err:
        raise IngestError(f"{path}: not a readable zarr store ({err})") from None
    stem = path.name.removesuffix(".zarr").removesuffix(".ome")
    images = []
    for ref in refs:

        def opener(ref: ImageRef = ref) -> contextlib.AbstractContextManager[BlockReader]:
            return contextlib.nullcontext(cast(BlockReader, ref.open()))

        ms = _zarr_multiscale(ref)
        unit = None
        for ax in (ms or {}).get("axes", []):
            if isinstance(ax, dict) and ax.get("type") == "space" and ax.get("unit"):
                with contextlib.suppress(IngestError):
                    unit = normalize_unit(str(ax["unit"]), f"{path} metadata")
                break
        # an OME-Zarr image's array path ends in its level (".../s0"): name the image after its group
        parts = [p for p in ref.array_path.split("/") if p]
        name_parts = parts[:-1] if ms is not None else parts
        sizes = dict(ref.pixel_size)
        if unit is None and all(v == 1.0 for v in sizes.values()):
            sizes = {}  # scale 1 without a unit: no physical size known
        images.append(
            SourceImage(
                path=path,
                source=f"{source}/{ref.array_path}" if len(refs) > 1 else source,
                stem="_".join(name_parts) if name_parts else stem,
                axes=ref.axes,
                shape=tuple(ref.shape),
                dtype=np.dtype(ref.dtype),
                pixel_size=sizes,
                unit=unit,
                opener=opener,
            )
        )
    return images


def open_source(path: Path, source: str) -> list[SourceImage]:
    """The images in one file or zarr store (a multi-series TIFF or a zarr collection gives several)."""
    if _is_zarr_dir(path):
        return _zarr_images(path, source)
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return _tiff_images(path, source)
    if suffix in RASTER_SUFFIXES:
        return _raster_images(path, source)
    raise IngestError(f"{path}: unknown format '{suffix}' (expected TIFF, PNG, JPEG or a zarr store)")


# --------------------------------------------------------------------------------------------- layout


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


def _output_letters(img: SourceImage, options: IngestOptions) -> list[str | None]:
    """Per source axis its output letter (None for a dropped size-1 axis), or an error naming the file."""
    if options.axes is not None:
        if len(options.axes) != len(img.shape):
            raise IngestError(
                f"{img.path}: --axes '{options.axes}' has {len(options.axes)} letters but the image has {len(img.shape)} axes (shape {img.shape}, axes '{img.axes}')"
            )
        letters: list[str | None] = list(options.axes)
    else:
        letters = []
        for a in img.axes:
            if a in _TIFF_AXES:
                letters.append(_TIFF_AXES[a])
            elif a in OUTPUT_AXES:
                letters.append(a)
            else:
                letters.append("?")
    out: list[str | None] = []
    for letter, size in zip(letters, img.shape, strict=True):
        out.append(None if size == 1 and letter not in ("y", "x") else letter)
    unknown = [
        (raw, size) for letter, raw, size in zip(out, img.axes, img.shape, strict=True) if letter == "?"
    ]
    if unknown:
        generic = [u for u in unknown if u[0] in _GENERIC_AXES]
        if len(unknown) == 1 and generic and "t" not in out:
            out = ["t" if letter == "?" else letter for letter in out]
        else:
            raw, size = unknown[0]
            raise IngestError(
                f"{img.path}: cannot tell what axis '{raw}' (size {size}) of axes '{img.axes}' shape {img.shape} is; pass --axes with one letter of tczyx per axis"
            )
    present = [a for a in out if a is not None]
    if len(set(present)) != len(present):
        raise IngestError(
            f"{img.path}: axes '{img.axes}' shape {img.shape} map onto repeated axes {''.join(present)}; pass --axes with one letter of tczyx per axis"
        )
    if "y" not in present or "x" not in present:
        raise IngestError(f"{img.path}: axes '{img.axes}' have no y and x (expected an image)")
    return out


def plan_layout(img: SourceImage, options: IngestOptions) -> Layout:
    """Check one source image against the options and decide its output layout (no pixel data read)."""
    if img.dtype.kind not in "biuf":
        raise IngestError(
            f"{img.path}: pixel type {img.dtype} is not supported (expected integers or floats)"
        )
    if any(s == 0 for s in img.shape):
        raise IngestError(f"{img.path}: the image is empty (shape {img.shape}, expected no zero-size axis)")
    letters = _output_letters(img, options)
    channel_axis = letters.index("c") if "c" in letters else None
    channel = options.channel
    if channel_axis is not None:
        n_channels = img.shape[channel_axis]
        if channel is None and options.single_channel:
            kind = "RGB samples" if img.axes[channel_axis] == "S" else "channels"
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
    if channel == "mean" and dtype.kind == "b":
        dtype = np.dtype("uint8")
    # physical sizes: the file's, converted to the requested unit, then the flags
    unit = normalize_unit(options.unit) or img.unit or "micrometer"
    pixel_size = {ax: _convert(v, img.unit, unit) for ax, v in img.pixel_size.items() if ax in order}
    if options.pixel_size is not None:
        pixel_size["y"] = pixel_size["x"] = options.pixel_size
    if options.z_spacing is not None and "z" in order:
        pixel_size["z"] = options.z_spacing
    requested = options.chunks or ()
    chunk_of = dict(DEFAULT_CHUNKS)
    for ax, size in zip("zyx"[-len(requested) :] if requested else "", requested, strict=True):
        chunk_of[ax] = size
    chunks = tuple(min(chunk_of.get(a, 1), s) for a, s in zip(order, shape, strict=True))
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


def read_block(reader: BlockReader, layout: Layout, region: dict[str, slice]) -> np.ndarray:
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
    block = np.asarray(reader[tuple(index)])
    if layout.channel_axis is not None and isinstance(layout.channel, str):
        ax = layout.channel_axis
        if layout.channel == "max":
            block = block.max(axis=ax, keepdims=True)
        else:
            reduced = block.mean(axis=ax, keepdims=True, dtype=np.float64)
            block = _cast(reduced, layout.dtype)
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


def _cast(values: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
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
    return _cast(means, block.dtype)


# --------------------------------------------------------------------------------------------- writing


def _ngff_metadata(name: str, layout: Layout, levels: int) -> dict[str, Any]:
    axes: list[dict[str, Any]] = []
    for a in layout.axes:
        kind = {"t": "time", "c": "channel"}.get(a, "space")
        entry: dict[str, Any] = {"name": a, "type": kind}
        if kind == "space" and layout.unit and a in layout.pixel_size:
            entry["unit"] = layout.unit
        axes.append(entry)
    datasets = []
    for level in range(levels):
        factor = 2**level
        scale, translation = [], []
        for a in layout.axes:
            size = layout.pixel_size.get(a, 1.0)
            f = factor if a in "yx" else 1
            scale.append(size * f)
            translation.append((f - 1) / 2 * size)  # a downsampled pixel's centre
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": scale}]
        if level:
            transforms.append({"type": "translation", "translation": translation})
        datasets.append({"path": f"s{level}", "coordinateTransformations": transforms})
    return {"ome": {"version": "0.5", "multiscales": [{"name": name, "axes": axes, "datasets": datasets}]}}


def _level_shape(shape: tuple[int, ...], axes: str, level: int) -> tuple[int, ...]:
    f = 2**level
    return tuple(-(-s // f) if a in "yx" else s for a, s in zip(axes, shape, strict=True))


def _check_finite(block: np.ndarray, img: SourceImage, layout: Layout, region: dict[str, slice]) -> None:
    if block.dtype.kind != "f" or np.isfinite(block).all():
        return
    bad = np.argwhere(~np.isfinite(block))[0]
    where = {a: int(i) + (region[a].start or 0) for a, i in zip(layout.axes, bad, strict=True)}
    value = block[tuple(bad)]
    raise IngestError(
        f"{img.path}: found {value} at {', '.join(f'{a}={v}' for a, v in where.items())} (expected finite values, no NaN or Inf)"
    )


def write_image(
    root: zarr.Group,
    name: str,
    img: SourceImage,
    layout: Layout,
    levels: int,
    on_rows: Callable[[int, int], None] | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> int:
    """Write one image as a multiscale OME-Zarr group under ``root``, one band of chunk rows at a time.

    Bands come from ``plan_bands``: memory is bounded by ``block_bytes`` (or one chunk row where that is
    larger), never by the image. Returns the bytes written at level 0 (uncompressed).
    """
    group = root.create_group(name, attributes=_ngff_metadata(name, layout, levels))
    arrays = []
    for level in range(levels):
        arrays.append(
            group.create_array(
                f"s{level}",
                shape=_level_shape(layout.shape, layout.axes, level),
                dtype=layout.dtype,
                chunks=tuple(
                    min(c, s)
                    for c, s in zip(
                        layout.chunks, _level_shape(layout.shape, layout.axes, level), strict=True
                    )
                ),
                compressors=ZstdCodec(level=3),
                dimension_names=list(layout.axes),
                fill_value=0,
            )
        )
    bands = plan_bands(layout, levels, block_bytes)
    with img.opener() as reader:
        for done, region in enumerate(bands, start=1):
            try:
                block = read_block(reader, layout, region)
            except IngestError:
                raise
            except Exception as err:
                raise IngestError(
                    f"{img.path}: failed to read pixels ({type(err).__name__}: {err}); the file is truncated or corrupt"
                ) from None
            _check_finite(block, img, layout, region)
            for level, array in enumerate(arrays):
                if level:
                    block = downsample2(block)
                f = 2**level
                target = tuple(
                    slice(region[a].start // f, region[a].start // f + block.shape[i])
                    if a in "yx"
                    else region[a]
                    for i, a in enumerate(layout.axes)
                )
                array[target] = block
            if on_rows is not None:
                on_rows(done, len(bands))
    return math.prod(layout.shape) * layout.dtype.itemsize


def plan_bands(layout: Layout, levels: int, block_bytes: int = BLOCK_BYTES) -> list[dict[str, slice]]:
    """The regions (slices per output axis) an image is converted in, each read and written at once.

    A band spans every column, a whole number of chunks along every other axis, and a row count that keeps
    every pyramid level aligned (a multiple of ``2**(levels-1)``). Bands grow (more rows, then more planes
    along t / c / z) while they stay under ``block_bytes``; the smallest band is one chunk row.
    """
    axes, shape = layout.axes, layout.shape
    size = dict(zip(axes, shape, strict=True))
    chunk = dict(zip(axes, layout.chunks, strict=True))
    outer = [a for a in axes if a not in "yx"]
    extent = {a: chunk[a] for a in outer}
    row_bytes = size["x"] * layout.dtype.itemsize * math.prod(extent.values())
    base = math.lcm(chunk["y"], 2 ** (levels - 1))
    rows = base * max(1, block_bytes // (row_bytes * base))
    if rows >= size["y"]:
        rows = size["y"]
        for a in reversed(outer):  # whole planes fit: take more of the axes nearest to y
            band_bytes = rows * size["x"] * layout.dtype.itemsize * math.prod(extent.values())
            extent[a] = min(extent[a] * max(1, block_bytes // max(band_bytes, 1)), size[a])
            if extent[a] < size[a]:
                break
    ranges = [[slice(s, min(s + extent[a], size[a])) for s in range(0, size[a], extent[a])] for a in outer]
    bands = []
    for outer_index in _product(ranges):
        for y0 in range(0, size["y"], rows):
            region = dict(zip(outer, outer_index, strict=True))
            region["y"] = slice(y0, min(y0 + rows, size["y"]))
            region["x"] = slice(0, size["x"])
            bands.append(region)
    return bands


def _product(ranges: list[list[slice]]) -> Iterator[tuple[slice, ...]]:
    if not ranges:
        yield ()
        return
    for first in ranges[0]:
        for rest in _product(ranges[1:]):
            yield (first, *rest)


# --------------------------------------------------------------------------------------------- planning


@dataclass
class PlannedImage:
    name: str
    image: SourceImage
    layout: Layout
    split: str
    role: str


@dataclass
class _Item:
    """A resolved source file / store with the manifest role and split it was named with."""

    source: str
    path: Path
    split: str | None = None
    role: str = "clean"


_NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")


def sanitize_name(stem: str) -> str:
    """A zarr-safe image name from a file stem: letters, digits, ``._-``; never empty or hidden."""
    name = _NAME_RE.sub("_", stem).strip("._") or "image"
    return name


def _collect(
    sources: Sequence[str | Path] | None, manifest: Manifest | None, exclude: Sequence[Path]
) -> tuple[list[_Item], list[tuple[Path, Path, PairEntry]]]:
    """Expand sources / manifest entries into unique files (later entries override a file's split)."""
    items: dict[Path, _Item] = {}
    pairs: list[tuple[Path, Path, PairEntry]] = []
    if sources is not None:
        for given in sources:
            for shown, path in expand_source(str(given), exclude=exclude):
                items.setdefault(path, _Item(shown, path))
    if manifest is not None:
        for entry in manifest.images:
            for shown, path in expand_source(entry.path, manifest.base, exclude):
                item = items.setdefault(path, _Item(shown, path))
                item.split = entry.split if entry.split is not None else item.split
        for pair in manifest.pairs:
            lows = expand_source(pair.low, manifest.base, exclude)
            highs = expand_source(pair.high, manifest.base, exclude)
            for (low_shown, low), (high_shown, high) in _match_pairs(pair, lows, highs):
                for shown, path, role in ((low_shown, low, "low"), (high_shown, high, "high")):
                    item = items.setdefault(path, _Item(shown, path))
                    if item.role != "clean" and item.role != role:
                        raise IngestError(
                            f"{path} is a '{item.role}' image of one pair and '{role}' of another"
                        )
                    item.role, item.split = role, pair.split
                pairs.append((low, high, pair))
    return list(items.values()), pairs


def _wildcard_key(pattern: str) -> Callable[[Path], str] | None:
    """For a glob whose wildcards are all in the file name: the part of a name its wildcards matched."""
    name = Path(pattern).name
    if glob.has_magic(str(Path(pattern).parent)) or not glob.has_magic(name):
        return None
    magic = [i for i, ch in enumerate(name) if ch in "*?["]
    prefix, suffix = name[: magic[0]], name[name.rfind("*") + 1 :] if "*" in name else ""
    if any(ch in suffix for ch in "?[]"):
        return None
    return lambda p: p.name[len(prefix) : len(p.name) - len(suffix)]


def _match_pairs(
    pair: PairEntry, lows: list[tuple[str, Path]], highs: list[tuple[str, Path]]
) -> list[tuple[tuple[str, Path], tuple[str, Path]]]:
    """Pair the files two globs match by what their wildcards matched (``*-low.tif`` / ``*-high.tif``)."""
    low_key, high_key = _wildcard_key(pair.low), _wildcard_key(pair.high)
    if len(lows) == len(highs) == 1:
        return [(lows[0], highs[0])]
    if low_key is None or high_key is None:
        raise IngestError(
            f"pair low '{pair.low}' / high '{pair.high}' match {len(lows)} and {len(highs)} files; "
            "expected one file each, or globs with wildcards in the file name only (paired by what they match)"
        )
    by_key = {high_key(p): (shown, p) for shown, p in highs}
    low_keys = {low_key(p) for _shown, p in lows}
    missing_high = [low_key(p) for _shown, p in lows if low_key(p) not in by_key]
    missing_low = [k for k in by_key if k not in low_keys]
    if missing_high or missing_low:
        raise IngestError(
            f"pair low '{pair.low}' / high '{pair.high}': "
            + "; ".join(
                part
                for part in (
                    f"no high image for {', '.join(missing_high)}" if missing_high else "",
                    f"no low image for {', '.join(missing_low)}" if missing_low else "",
                )
                if part
            )
            + " (expected every low file to have a high file with the same wildcard part)"
        )
    return [((shown, p), by_key[low_key(p)]) for shown, p in lows]


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
            base = sanitize_name(img.stem)
            name, k = base, 2
            while name in used:
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


# --------------------------------------------------------------------------------------------- entry points


@dataclass(frozen=True)
class IngestResult:
    path: Path
    up_to_date: bool  # the store existed with the same fingerprint: nothing was written
    n_images: int
    bytes: int  # uncompressed bytes of level 0 written


def recorded_fingerprint(path: Path) -> str | None:
    """The ingest fingerprint stored in a store's root attributes, or None when there is none."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            attrs: dict[str, Any] = dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception:
        return None
    value = (attrs.get("psr") or {}).get("ingest", {}).get("fingerprint")
    return str(value) if value else None


class _Progress:
    """A rich progress bar: one row for images, one for the current image's chunk rows."""

    def __init__(self, enabled: bool, n_images: int) -> None:
        self.progress: Any = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self.images = self.progress.add_task("images", total=n_images)
        self.rows = self.progress.add_task("chunk rows", total=1)

    def __enter__(self) -> _Progress:
        if self.progress is not None:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def image(self, name: str) -> Callable[[int, int], None] | None:
        if self.progress is None:
            return None
        self.progress.update(self.rows, completed=0, total=1, description=f"  {name}")

        def rows(done: int, total: int) -> None:
            self.progress.update(self.rows, completed=done, total=total)

        return rows

    def image_done(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.images)


def _write_store(output: Path, the_plan: IngestPlan, levels: int, progress: bool, block_bytes: int) -> int:
    tmp = output.with_name(f".{output.name}.tmp-{uuid.uuid4().hex[:8]}")
    written = 0
    try:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        with _Progress(progress, len(the_plan.images)) as bar:
            for p in the_plan.images:
                written += write_image(
                    root, p.name, p.image, p.layout, levels, bar.image(p.name), block_bytes
                )
                bar.image_done()
        root.attrs.update(the_plan.attributes())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zarr warns that consolidated metadata is not in the v3 spec yet
            zarr.consolidate_metadata(str(tmp))
        if output.exists() and recorded_fingerprint(output) == the_plan.fingerprint:
            # Another process (a parallel job of a sweep) finished the same store meanwhile: keep theirs, which
            # its readers may already be using, rather than swapping it under them.
            shutil.rmtree(tmp, ignore_errors=True)
            return written
        trash = None
        if output.exists() or output.is_symlink():
            trash = output.with_name(f".{output.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(output, trash)
        try:
            os.replace(tmp, output)
        except OSError:
            if trash is not None:
                os.replace(trash, output)  # the previous store is back; this write did not happen
            raise
        if trash is not None:
            if trash.is_dir() and not trash.is_symlink():
                shutil.rmtree(trash, ignore_errors=True)
            else:
                trash.unlink()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written


def ingest(
    sources: Sequence[str | Path] | None,
    output: str | Path,
    *,
    manifest: str | Path | Manifest | None = None,
    options: IngestOptions | None = None,
    overwrite: bool = False,
    progress: bool = False,
    block_bytes: int = BLOCK_BYTES,
) -> IngestResult:
    """Convert ``sources`` (or a manifest's images and pairs) into one OME-Zarr store at ``output``.

    Idempotent: when ``output`` exists with the same fingerprint nothing is written (``up_to_date``); with
    a different one it is an error unless ``overwrite``. Raises ``IngestError`` for any bad input, before
    the store appears.
    """
    options = options or IngestOptions()
    output = Path(output).expanduser()
    items, pairs, fp, recorded = _prepare(sources, manifest, options, exclude=[output])
    if output.exists():
        found = recorded_fingerprint(output)
        if found == fp:
            return IngestResult(output, True, 0, 0)
        if not overwrite:
            why = "was ingested from other sources or options" if found else "is not a psr ingest store"
            raise IngestError(f"output {output} already exists and {why}; pass --overwrite to replace it")
    the_plan = plan(items, pairs, fp, recorded, options)
    output.parent.mkdir(parents=True, exist_ok=True)
    written = _write_store(output, the_plan, options.levels, progress, block_bytes)
    return IngestResult(output, False, len(the_plan.images), written)


def ensure_ingested(sources: Sequence[str], cache_dir: str | Path, **options: Any) -> Path:
    """Ingest ``sources`` once into ``cache_dir/ingest-<hash>.ome.zarr`` and return that path.

    ``options`` are ``IngestOptions`` fields (``pixel_size=0.1``, ``channel="max"``...) plus ``manifest``
    and ``progress``. The hash covers the sources' paths, sizes and mtimes and the options, so an edited
    file or a changed option gives a new store.
    """
    manifest = options.pop("manifest", None)
    progress = bool(options.pop("progress", False))
    block_bytes = int(options.pop("block_bytes", BLOCK_BYTES))
    if "chunks" in options and options["chunks"] is not None:
        options["chunks"] = tuple(options["chunks"])
    unknown = sorted(set(options) - set(IngestOptions.__dataclass_fields__))
    if unknown:
        raise IngestError(
            f"unknown ingest option(s) {', '.join(unknown)} (expected {', '.join(IngestOptions.__dataclass_fields__)})"
        )
    opts = IngestOptions(**options)
    cache = Path(cache_dir).expanduser()
    _items, _pairs, fp, _recorded = _prepare(list(sources), manifest, opts, exclude=[cache])
    path = cache / f"ingest-{fp[:16]}.ome.zarr"
    if path.exists() and recorded_fingerprint(path) == fp:
        return path
    return ingest(
        list(sources),
        path,
        manifest=manifest,
        options=opts,
        overwrite=True,
        progress=progress,
        block_bytes=block_bytes,
    ).path


__all__ = [
    "IngestError",
    "IngestOptions",
    "IngestResult",
    "Manifest",
    "ensure_ingested",
    "expand_source",
    "fingerprint",
    "ingest",
    "load_manifest",
    "parse_channel",
    "parse_chunks",
]
