"""Microscope formats through bioio (the ``formats`` extra): the adapter carries T / Z axes, physical pixel
sizes and channel names into the ImageSource and on into an ingest store; a missing plugin is one error.

The adapter is exercised through bioio-ome-tiff on an OME-TIFF the test writes and through bioio-czi on
Zeiss CZI files written with Zeiss's pylibCZIrw (ND2 and LIF have no writer in Python; they take the same
adapter); skipped without the extra."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from psr.data.ingest import IngestError, ingest
from psr.errors import DataError
from psr.io import formats, open_images
from psr.io.read_bioio import bioio_reader, read_bioio_with

RNG = np.random.default_rng(2)


def _ome_tiff(path: Path) -> np.ndarray:
    data = RNG.integers(0, 4000, (2, 3, 4, 24, 32)).astype(np.uint16)
    tifffile.imwrite(
        path,
        data,
        ome=True,
        metadata={"axes": "TCZYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2, "PhysicalSizeZ": 0.5,
                  "Channel": {"Name": ["DAPI", "GFP", "RFP"]}},
    )  # fmt: skip
    return data


def test_bioio_source_matches_psrs_own_reader(tmp_path: Path) -> None:
    pytest.importorskip("bioio_ome_tiff")
    data = _ome_tiff(tmp_path / "cells.ome.tif")
    (source,) = read_bioio_with("bioio_ome_tiff", tmp_path / "cells.ome.tif", "cells.ome.tif")
    (own,) = open_images(tmp_path / "cells.ome.tif")
    assert (source.name, source.axes, source.shape) == ("cells", "tczyx", data.shape)
    assert source.pixel_size == pytest.approx({"z": 0.5, "y": 0.2, "x": 0.2}) == own.pixel_size
    assert source.unit == own.unit == "micrometer"
    assert source.channel_names == own.channel_names == ("DAPI", "GFP", "RFP")
    with source:
        np.testing.assert_array_equal(
            source.read((1, 2, slice(1, 3), slice(5, 20), 7)), data[1, 2, 1:3, 5:20, 7]
        )


def test_ingest_through_a_bioio_reader_keeps_axes_sizes_and_channel_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("bioio_ome_tiff")
    data = _ome_tiff(tmp_path / "cells.ome.tif")
    via_bioio = formats.Format("OME-TIFF (bioio)", (".tif",), bioio_reader("bioio_ome_tiff"))
    monkeypatch.setattr(formats, "FORMATS", (via_bioio, *formats.FORMATS[1:]))
    out = ingest([tmp_path / "cells.ome.tif"], tmp_path / "s.ome.zarr").path
    group = zarr.open_group(str(out / "cells"), mode="r")
    ome = dict(group.attrs)["ome"]
    (multiscale,) = ome["multiscales"]
    assert [a["name"] for a in multiscale["axes"]] == list("tczyx")
    assert multiscale["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 1.0, 0.5, 0.2, 0.2]
    assert {a.get("unit") for a in multiscale["axes"][2:]} == {"micrometer"}
    assert [c["label"] for c in ome["omero"]["channels"]] == ["DAPI", "GFP", "RFP"]
    np.testing.assert_array_equal(group["s0"][...], data)


def test_a_zeiss_czi_file_reads_with_its_pixel_size_channels_and_z(tmp_path: Path) -> None:
    """A real CZI (Zeiss's own writer): two channels, three Z planes, 0.25 µm pixels and 0.8 µm steps; its
    planes, physical sizes and channel names through psr's reader table, and into an ingest store."""
    pytest.importorskip("bioio_czi")
    pyczi = pytest.importorskip("pylibCZIrw.czi")
    data = RNG.integers(0, 4000, (2, 3, 40, 56)).astype(np.uint16)
    with pyczi.create_czi(str(tmp_path / "scan.czi")) as czi:
        for c in range(2):
            for z in range(3):
                czi.write(data[c, z], plane={"C": c, "Z": z})
        czi.write_metadata(
            document_name="scan",
            channel_names={0: "DAPI", 1: "GFP"},
            scale_x=0.25e-6,
            scale_y=0.25e-6,
            scale_z=0.8e-6,
        )
    (source,) = open_images(tmp_path / "scan.czi")
    assert (source.axes, source.shape) == ("tczyx", (1, 2, 3, 40, 56))
    assert source.pixel_size == pytest.approx({"z": 0.8, "y": 0.25, "x": 0.25})
    assert (source.unit, source.channel_names) == ("micrometer", ("DAPI", "GFP"))
    with source:
        np.testing.assert_array_equal(
            source.read((0, 1, slice(None), slice(5, 20), slice(None))), data[1, :, 5:20]
        )
    out = ingest([tmp_path / "scan.czi"], tmp_path / "s.ome.zarr").path
    ome = dict(zarr.open_group(str(out / "scan"), mode="r").attrs)["ome"]
    scale = ome["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale[-3:] == pytest.approx([0.8, 0.25, 0.25])
    assert [c["label"] for c in ome["omero"]["channels"]] == ["DAPI", "GFP"]


def test_missing_plugin_names_the_package_and_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "scan.czi").write_bytes(b"ZISRAWFILE")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bioio_czi" else real(name, *a)
    )
    with pytest.raises(
        DataError,
        match=r"scan.czi: reading .czi files needs the bioio-czi package.*pip install -e .\.\[formats\]",
    ):
        open_images(tmp_path / "scan.czi")
    with pytest.raises(IngestError, match=r"needs the bioio-czi package"):
        ingest([tmp_path / "scan.czi"], tmp_path / "out.ome.zarr")
    assert not (tmp_path / "out.ome.zarr").exists()


def test_an_unreadable_microscope_file_is_one_error(tmp_path: Path) -> None:
    pytest.importorskip("bioio_czi")
    (tmp_path / "scan.czi").write_bytes(b"not a czi file")
    with pytest.raises(DataError, match=r"scan.czi: not a readable .czi file"):
        open_images(tmp_path / "scan.czi")
