"""The reader table: which function reads which file, by suffix.

Adding a format is one reader function (``(path, source) -> list[Source]``) and one line here; the
round-trip tests in ``tests/io`` are parametrised over this table's writable formats.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from psr.errors import DataError
from psr.io.read_bioio import bioio_reader
from psr.io.read_raster import read_raster
from psr.io.read_tiff import read_tiff
from psr.io.read_zarr import is_zarr, read_zarr
from psr.io.source import Source

Reader = Callable[[Path, str], list[Source]]


@dataclass(frozen=True)
class Format:
    """One file format: its name, file suffixes (lower case) and reader function."""

    name: str
    suffixes: tuple[str, ...]
    read: Reader


FORMATS: tuple[Format, ...] = (
    Format("TIFF / OME-TIFF / ImageJ", (".tif", ".tiff"), read_tiff),
    Format("PNG / JPEG", (".png", ".jpg", ".jpeg"), read_raster),
    Format("zarr / OME-Zarr", (".zarr",), read_zarr),
    Format("CZI (Zeiss, bioio-czi)", (".czi",), bioio_reader("bioio_czi")),
    Format("ND2 (Nikon, bioio-nd2)", (".nd2",), bioio_reader("bioio_nd2")),
    Format("LIF (Leica, bioio-lif)", (".lif",), bioio_reader("bioio_lif")),
)
SUFFIXES = tuple(s for f in FORMATS for s in f.suffixes)
FILE_SUFFIXES = tuple(s for f in FORMATS if f.read is not read_zarr for s in f.suffixes)


def format_names() -> str:
    """The readable formats, for messages: ``.tif/.tiff, .png/.jpg/.jpeg, ...``."""
    return ", ".join("/".join(f.suffixes) for f in FORMATS)


def image_stem(name: str) -> str | None:
    """``name`` without its image suffix (``.ome.tif`` and ``.ome.zarr`` count as one), or ``None`` when it
    ends in no suffix of the reader table."""
    lower = name.lower()
    for suffix in sorted({*SUFFIXES, *(f".ome{s}" for s in SUFFIXES)}, key=len, reverse=True):
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def find_format(path: Path) -> Format | None:
    """The format of ``path`` (a zarr folder whatever its name), or ``None``."""
    if is_zarr(path):
        return next(f for f in FORMATS if f.read is read_zarr)
    suffix = path.suffix.lower()
    return next((f for f in FORMATS if suffix in f.suffixes), None)


def is_image(path: Path) -> bool:
    """Whether ``path`` is a file of a known format or a zarr store."""
    return is_zarr(path) or (path.is_file() and path.suffix.lower() in FILE_SUFFIXES)


def open_images(path: str | Path, source: str | None = None) -> list[Source]:
    """Every image of a file or store (a multi-series TIFF, a multi-scene CZI or a zarr collection gives
    several), metadata only: pixels are read by ``Source.read``. ``source`` is the path as the user gave it.

    Raises ``DataError`` naming the file for a missing file, an unknown format or an unreadable one.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path} does not exist (expected an image file or a zarr store)")
    found = find_format(path)
    if found is None:
        raise DataError(
            f"{path} has an unknown format '{path.suffix}' (expected {format_names()} or a zarr store)"
        )
    return found.read(path, source if source is not None else str(path))


def open_image(path: str | Path) -> Source:
    """The one image of a file or store; ``DataError`` when it holds several."""
    images = open_images(path)
    if len(images) != 1:
        names = ", ".join(i.name for i in images[:4])
        raise DataError(f"{path} holds {len(images)} images ({names}{', ...' if len(images) > 4 else ''})")
    return images[0]
