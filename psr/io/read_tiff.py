"""TIFF, OME-TIFF and ImageJ hyperstacks through tifffile: one ``Source`` per series.

Uncompressed, contiguous pixels are read with ``pread`` (rows of a band, no decoding); compressed or tiled
ones through tifffile's zarr store, which decodes only the strips / tiles a block touches. Physical sizes
come from OME-XML (each axis converted to the X unit) or from ImageJ metadata and the resolution tags.
"""

from __future__ import annotations

import contextlib
import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from psr.errors import DataError
from psr.io.source import BlockReader, ContiguousReader, Source
from psr.io.units import convert, normalise_unit

SUFFIXES = (".tif", ".tiff")


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


def _ome_pixels(xml: str, index: int) -> dict[str, str] | None:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    pixels = [el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"]
    return dict(pixels[index].attrib) if index < len(pixels) else None


def ome_sizes(xml: str, index: int) -> tuple[dict[str, float], str | None]:
    """Physical sizes of OME image ``index`` from OME-XML, converted to the X unit."""
    attrs = _ome_pixels(xml, index)
    if attrs is None:
        return {}, None
    units = {ax: normalise_unit(attrs.get(f"PhysicalSize{ax.upper()}Unit", "µm"), "OME-XML") for ax in "xyz"}
    unit = units["x"] or units["y"] or units["z"]
    sizes: dict[str, float] = {}
    for ax in "zyx":
        value = attrs.get(f"PhysicalSize{ax.upper()}")
        if value is not None and float(value) > 0:
            sizes[ax] = convert(float(value), units[ax], unit)
    return sizes, unit


def _ome_channel_names(xml: str, index: int) -> tuple[str, ...]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return ()
    pixels = [el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"]
    if index >= len(pixels):
        return ()
    channels = [el for el in pixels[index] if el.tag.rsplit("}", 1)[-1] == "Channel"]
    names = tuple(str(el.attrib.get("Name", "")) for el in channels)
    return names if all(names) else ()


def tiff_sizes(tf: Any, page: Any) -> tuple[dict[str, float], str | None]:
    """Sizes from ImageJ metadata (``unit``, ``spacing``) and the resolution tags, or from a cm unit."""
    sizes: dict[str, float] = {}
    ij = tf.imagej_metadata or {}
    res_unit = page.tags.get("ResolutionUnit")
    res_unit_value = int(res_unit.value) if res_unit is not None else 1
    unit: str | None
    scale = 1.0
    if ij.get("unit"):
        unit = normalise_unit(str(ij["unit"]), "ImageJ metadata", strict=False)
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


def _stem(path: Path) -> str:
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if path.name.lower().endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def read_tiff(path: Path, source: str) -> list[Source]:
    """The series of a TIFF file, each a ``Source`` (``<stem>_s<k>`` when there are several)."""
    import tifffile

    stem = _stem(path)
    file_size = path.stat().st_size
    images: list[Source] = []
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
                                raise DataError(
                                    f"{path}: TIFF is truncated or corrupt (pixel data at byte {off}+{count} beyond the file's {file_size} bytes)"
                                )
                    if ome_xml:
                        sizes, unit = ome_sizes(ome_xml, index)
                        names = _ome_channel_names(ome_xml, index)
                    else:
                        sizes, unit = tiff_sizes(tf, series.pages[0] if pages else tf.pages[0])
                        names = ()
                    dtype = np.dtype(series.dtype)
                    # pread copies the file's bytes as they are: only for native byte order (a big-endian
                    # TIFF is decoded by tifffile instead)
                    native = dtype.newbyteorder(tf.byteorder).isnative
                    images.append(
                        Source(
                            path=path,
                            name=stem if len(series_list) == 1 else f"{stem}_s{index}",
                            native_axes=str(series.axes),
                            shape=shape,
                            dtype=dtype,
                            pixel_size=sizes,
                            unit=unit,
                            opener=_opener(path, index, series.dataoffset if native else None, shape, dtype),
                            channel_names=names,
                            source=source,
                        )
                    )
        except DataError:
            raise
        except Exception as err:  # tifffile raises many types for broken files
            raise DataError(f"{path}: not a readable TIFF ({type(err).__name__}: {err})") from None
    if log.messages:
        raise DataError(f"{path}: TIFF is truncated or corrupt ({log.messages[0]})")
    if not images:
        raise DataError(f"{path}: not a readable TIFF (no image found in it: corrupt or not a TIFF)")
    return images


def _opener(
    path: Path, index: int, offset: int | None, shape: tuple[int, ...], dtype: np.dtype[Any]
) -> Callable[[], contextlib.AbstractContextManager[BlockReader]]:
    @contextlib.contextmanager
    def open_tiff() -> Iterator[BlockReader]:
        if offset is not None:  # uncompressed, contiguous: rows read with pread
            yield ContiguousReader(path, offset, shape, dtype)
            return
        import tifffile
        import zarr

        with tifffile.TiffFile(path) as tf:
            store = tf.series[index].aszarr(level=0)
            try:
                yield zarr.open_array(store, mode="r")  # decodes only the strips / tiles a block touches
            finally:
                store.close()

    return open_tiff
