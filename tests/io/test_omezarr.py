"""The streaming OME-Zarr writer and psr's stores, validated by ome-zarr-models (NGFF 0.5): pyramids built
while streaming, omero channel metadata, and an ingest store whose root viewers can open."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from psr.data.ingest import IngestOptions, ingest
from psr.inference.writers import OmeZarrSink, OutputGeometry
from psr.io.writer import OmeZarrWriter, auto_levels, downsample2

models = pytest.importorskip("ome_zarr_models")
from ome_zarr_models.v05.bioformats2raw import BioFormats2RawAttrs  # noqa: E402
from ome_zarr_models.v05.image import Image  # noqa: E402

RNG = np.random.default_rng(1)


def test_streamed_pyramid_equals_the_whole_image_downsampled(tmp_path: Path) -> None:
    data = RNG.integers(0, 4000, (2, 70, 52)).astype(np.uint16)  # odd sizes: edges round up
    group = zarr.open_group(str(tmp_path / "img.zarr"), mode="w", zarr_format=3)
    writer = OmeZarrWriter(
        group, "cyx", data.shape, data.dtype, name="img", levels=3, chunks=(1, 16, 16),
        pixel_size={"y": 0.2, "x": 0.2}, unit="micrometer", channel_names=("DAPI", "GFP"),
    )  # fmt: skip
    for y0 in range(0, 70, 16):  # bands of 16 rows, as ingest streams them
        writer.write({"y": slice(y0, min(y0 + 16, 70))}, data[:, y0 : y0 + 16])
    writer.close()
    expected = data
    for level in range(3):
        np.testing.assert_array_equal(group[f"s{level}"][...], expected)
        expected = downsample2(expected)
    image = Image.from_zarr(group)  # raises when the metadata is not valid NGFF 0.5
    (multiscale,) = image.attributes.ome.multiscales
    scales = [d.coordinateTransformations[0].scale for d in multiscale.datasets]
    assert scales == [[1.0, 0.2, 0.2], [1.0, 0.4, 0.4], [1.0, 0.8, 0.8]]
    omero = dict(group.attrs)["ome"]["omero"]
    assert [c["label"] for c in omero["channels"]] == ["DAPI", "GFP"]
    for k, channel in enumerate(omero["channels"]):
        window = channel["window"]
        assert data[k].min() <= window["start"] < window["end"] <= data[k].max()
        assert (window["min"], window["max"]) == (0, 65535)
    with pytest.raises(ValueError, match="not aligned"):
        writer.write({"y": slice(3, 5)}, data[:, 3:5])


def test_ingest_store_root_is_a_collection_viewers_open(tmp_path: Path) -> None:
    stack = RNG.integers(0, 255, (3, 2, 40, 48)).astype(np.uint8)
    tifffile.imwrite(
        tmp_path / "cells.ome.tif",
        stack,
        ome=True,
        metadata={"axes": "ZCYX", "PhysicalSizeX": 0.1, "PhysicalSizeY": 0.1, "PhysicalSizeZ": 0.4,
                  "Channel": {"Name": ["nuclei", "membrane"]}},
    )  # fmt: skip
    tifffile.imwrite(tmp_path / "plain.tif", stack[0, 0])
    out = ingest([tmp_path / "cells.ome.tif", tmp_path / "plain.tif"], tmp_path / "s.ome.zarr").path
    root = zarr.open_group(str(out), mode="r")
    attrs = dict(root.attrs)
    BioFormats2RawAttrs.model_validate(attrs["ome"])  # the root is an OME-Zarr entity
    series = dict(root["OME"].attrs)["ome"]["series"]
    assert sorted(series) == sorted(attrs["psr"]["manifest"]["images"]) == ["cells", "plain"]
    for name in series:
        Image.from_zarr(root[name])
    cells = dict(root["cells"].attrs)["ome"]
    assert [a["name"] for a in cells["multiscales"][0]["axes"]] == ["c", "z", "y", "x"]
    assert cells["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [
        1.0, 0.4, 0.1, 0.1,
    ]  # fmt: skip
    assert [c["label"] for c in cells["omero"]["channels"]] == ["nuclei", "membrane"]
    np.testing.assert_array_equal(root["cells/s0"][...], stack.transpose(1, 0, 2, 3))


def test_an_image_named_like_the_listing_group_is_renamed(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "OME.tif", np.zeros((32, 32), np.uint8))
    out = ingest([tmp_path / "OME.tif"], tmp_path / "s.zarr", options=IngestOptions(levels=1)).path
    assert list(dict(zarr.open_group(str(out)).attrs)["psr"]["manifest"]["images"]) == ["OME_2"]


def test_prediction_sink_writes_a_valid_pyramid(tmp_path: Path) -> None:
    geometry = OutputGeometry("tyx", (2, 600, 520), "yx", {"y": 0.05, "x": 0.05}, "micrometer")
    assert auto_levels(geometry.shape, geometry.axes) == 3 and auto_levels((64, 64), "yx") == 1
    values = RNG.random((2, 1, 600, 520), dtype=np.float32)
    sink = OmeZarrSink(tmp_path / "p.ome.zarr", geometry, "p", {"psr": {"input": "x"}}, channel_names=["GFP"])
    for t in range(2):
        for block in geometry.blocks():
            sink.write({"t": t}, block, values[t][(slice(None), *block)])
    sink.close()
    group = zarr.open_group(str(tmp_path / "p.ome.zarr"), mode="r")
    Image.from_zarr(group)
    assert [group[str(k)].shape for k in range(3)] == [(2, 600, 520), (2, 300, 260), (2, 150, 130)]
    np.testing.assert_allclose(group["1"][...], downsample2(values[:, 0]), rtol=1e-6)
    assert dict(group.attrs)["psr"] == {"input": "x"}
    assert [c["label"] for c in dict(group.attrs)["ome"]["omero"]["channels"]] == ["GFP"]
    # ome-zarr-py's reader (napari-ome-zarr's) sees the three levels
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    (node,) = list(Reader(parse_url(str(tmp_path / "p.ome.zarr")))())[:1]
    assert [tuple(level.shape) for level in node.data] == [(2, 600, 520), (2, 300, 260), (2, 150, 130)]
