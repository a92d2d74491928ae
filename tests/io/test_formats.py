"""psr.io's reader table: a round trip through every format the tests can write, blocks read by region, and
the reader-table contract (a new format needs a reader, a table line and a case here)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from psr.errors import DataError
from psr.io import FORMATS, ImageSource, open_image, open_images, psr_axes
from psr.io.source import ContiguousReader

RNG = np.random.default_rng(0)


def _tiff(path: Path, data: np.ndarray) -> dict[str, object]:
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.25),
        metadata={"axes": "TZYX", "unit": "um", "spacing": 0.5},
    )
    return {"axes": "tzyx", "pixel_size": {"x": 0.25, "y": 0.25, "z": 0.5}, "unit": "micrometer"}


def _ome_tiff(path: Path, data: np.ndarray) -> dict[str, object]:
    tifffile.imwrite(
        path,
        data,
        ome=True,
        compression="zlib",  # compressed: read through tifffile's zarr store, not pread
        metadata={"axes": "TZYX", "PhysicalSizeX": 120.0, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 120.0,
                  "PhysicalSizeYUnit": "nm", "PhysicalSizeZ": 0.3, "PhysicalSizeZUnit": "µm"},
    )  # fmt: skip
    return {"axes": "tzyx", "pixel_size": {"x": 120.0, "y": 120.0, "z": 300.0}, "unit": "nanometer"}


def _png(path: Path, data: np.ndarray) -> dict[str, object]:
    Image.fromarray(data[0, 0].astype(np.uint16)).save(path)
    return {"axes": "yx", "pixel_size": {}, "unit": None, "plane": (0, 0)}


def _zarr(path: Path, data: np.ndarray) -> dict[str, object]:
    from psr.io.omezarr import write_ome_zarr_collection

    write_ome_zarr_collection(path, [data], "tzyx", names=["img"], pixel_size={"z": 2.0, "y": 0.5, "x": 0.5})
    return {"axes": "tzyx", "pixel_size": {"x": 0.5, "y": 0.5, "z": 2.0}, "unit": "micrometer"}


# one writer per format of the table that plain Python can write; bioio formats are tested in test_bioio.py
WRITERS: dict[str, Callable[[Path, np.ndarray], dict[str, object]]] = {
    "x.tif": _tiff,
    "x.ome.tiff": _ome_tiff,
    "x.png": _png,
    "x.ome.zarr": _zarr,
}
BIOIO_SUFFIXES = {".czi", ".nd2", ".lif"}


def test_every_format_of_the_table_is_tested() -> None:
    tested = (
        {Path(name).suffix for name in WRITERS} | BIOIO_SUFFIXES | {".jpg", ".jpeg"}
    )  # JPEG: lossy, tested below
    for fmt in FORMATS:
        assert set(fmt.suffixes) <= tested, f"{fmt.name} has no round-trip case in tests/io"


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_round_trip(tmp_path: Path, name: str) -> None:
    data = RNG.integers(0, 60000, (2, 3, 20, 24)).astype(np.uint16)
    expected = WRITERS[name](tmp_path / name, data)
    source = open_image(tmp_path / name)
    assert isinstance(source, ImageSource)
    plane = expected.get("plane", ())
    want = data[plane] if plane else data
    assert (source.axes, source.shape, source.dtype) == (expected["axes"], want.shape, np.dtype("uint16"))
    assert source.pixel_size == pytest.approx(expected["pixel_size"])
    assert source.unit == expected["unit"]
    with source:
        np.testing.assert_array_equal(source.read(), want)
        region = tuple([1] * (len(want.shape) - 2) + [slice(3, 17, 2), slice(5, 9)])
        np.testing.assert_array_equal(source.read(region), want[region])


def test_jpeg_and_rgb_png_are_read_as_channels(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 255, (16, 20, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(np.dstack([rgb, np.full((16, 20), 7, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.jpg", quality=100)
    with open_image(tmp_path / "c.png") as png, open_image(tmp_path / "rgba.png") as rgba:
        assert png.axes == "yxc" and png.channel_names == ("red", "green", "blue")
        np.testing.assert_array_equal(png.read(), rgb)
        np.testing.assert_array_equal(rgba.read(), rgb)  # alpha is transparency, not signal
    with open_image(tmp_path / "g.jpg") as jpg:
        assert jpg.axes == "yx" and np.abs(jpg.read().astype(int) - rgb[..., 0]).mean() < 3


def test_multi_series_tiff_gives_one_source_per_series(tmp_path: Path) -> None:
    with tifffile.TiffWriter(tmp_path / "two.tif") as tw:
        tw.write(np.zeros((8, 9), np.uint8), metadata=None)
        tw.write(np.ones((5, 6), np.uint8), metadata=None)
    names = [(s.name, s.shape) for s in open_images(tmp_path / "two.tif")]
    assert names == [("two_s0", (8, 9)), ("two_s1", (5, 6))]


def test_unknown_and_missing_files_are_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a.xyz").write_bytes(b"?")
    with pytest.raises(DataError, match=r"a.xyz has an unknown format '.xyz' \(expected .tif/.tiff"):
        open_images(tmp_path / "a.xyz")
    with pytest.raises(DataError, match="nothere.tif does not exist"):
        open_images(tmp_path / "nothere.tif")
    (tmp_path / "bad.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(DataError, match="bad.tif: not a readable TIFF"):
        open_images(tmp_path / "bad.tif")


@pytest.mark.parametrize(
    "index",
    [
        (1, slice(0, 5), slice(2, 9), slice(0, 11)),  # an integer plane
        (slice(0, 4), 2, slice(None, None, 3), slice(1, None, 2)),  # strided: through a memory map
        (slice(2, 3), slice(1, 4), slice(3, 4), slice(2, 7)),  # partial columns
    ],
)
def test_contiguous_reader_reads_any_basic_index(tmp_path: Path, index: tuple[slice | int, ...]) -> None:
    data = RNG.integers(0, 60000, (4, 5, 9, 11)).astype(">u2")
    path = tmp_path / "raw.bin"
    path.write_bytes(b"x" * 17 + data.tobytes())
    np.testing.assert_array_equal(ContiguousReader(path, 17, data.shape, data.dtype)[index], data[index])


def test_native_axes_map_to_psr_letters() -> None:
    assert psr_axes("TZCYXS") == "tzcyxq"  # RGB samples of a multi-channel image are not a second c
    assert psr_axes("QYX") == "qyx" and psr_axes("YXS") == "yxc" and psr_axes("tczyx") == "tczyx"
