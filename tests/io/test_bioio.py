"""Microscope formats through bioio (the ``formats`` extra): the adapter carries T / Z axes, physical pixel
sizes and channel names into the ImageSource and on into an ingest store; a missing plugin is one error.

CZI / ND2 / LIF cannot be written from Python, so the adapter is exercised through bioio-ome-tiff on an
OME-TIFF the test writes (the same code path every bioio plugin takes); skipped without the extra."""

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


def test_missing_plugin_names_the_package_and_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "scan.czi").write_bytes(b"ZISRAWFILE")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bioio_czi" else real(name, *a)
    )
    with pytest.raises(
        DataError, match=r"scan.czi: reading .czi files needs the bioio-czi package.*psr\[formats\]"
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
