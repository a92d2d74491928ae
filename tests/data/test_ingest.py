"""Ingest: TIFF / PNG / zarr sources -> one OME-Zarr store with a manifest, chunked, atomic, idempotent.

Round trips, the manifest, idempotence and bounded memory; bad inputs, interrupts, the command line's exit
code, real data and a store another job finished meanwhile are in ``test_ingest_bad_inputs.py``, which
shares this module's ``RNG`` and helpers.
"""

from __future__ import annotations

import json
import os
import tracemalloc
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from psr.data import ingest as ingest_mod
from psr.data.ingest import IngestError, IngestOptions, ensure_ingested, ingest, plan_bands
from psr.io.omezarr import discover_images
from psr.io.source import ContiguousReader

RNG = np.random.default_rng(0)


def _read_back(store: Path, name: str) -> tuple[np.ndarray, Any]:
    """The image's level 0 as read by discover_images (and zarr), checked against the ome_zarr reader."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr_models.v05.image import Image as NgffImage

    refs = {r.array_path.split("/")[0]: r for r in discover_images(store)}
    ref = refs[name]
    values = ref.open()[...]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nodes = list(Reader(parse_url(str(store / name)))())
        NgffImage.from_zarr(zarr.open_group(str(store / name), mode="r"))  # validates NGFF 0.5 metadata
    node = nodes[0]
    np.testing.assert_array_equal(np.asarray(node.data[0]), values)
    assert "".join(ax["name"] for ax in node.metadata["axes"]) == ref.axes
    scale = node.metadata["coordinateTransformations"][0][0]["scale"]
    assert {a: s for a, s in zip(ref.axes, scale, strict=True) if a in "zyx"} == ref.pixel_size
    # level 1: Y and X halved by 2x2 means
    level1 = np.asarray(node.data[1])
    expected = values.reshape(*values.shape[:-2], values.shape[-2] // 2, 2, values.shape[-1] // 2, 2)
    if values.shape[-2] % 2 == 0 and values.shape[-1] % 2 == 0:
        mean = expected.mean(axis=(-3, -1))
        np.testing.assert_allclose(level1, mean if values.dtype.kind == "f" else np.rint(mean), atol=1e-5)
    return values, ref


def _units(store: Path, name: str) -> set[str]:
    attrs = dict(zarr.open_group(str(store / name), mode="r").attrs)
    return {ax["unit"] for ax in attrs["ome"]["multiscales"][0]["axes"] if "unit" in ax}


def _no_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".zarr" in p.name)


# --------------------------------------------------------------------------------------------- round trips


def test_png_uint8_2d(tmp_path: Path) -> None:
    image = RNG.integers(0, 255, (40, 48), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "cells 01.png")
    out = ingest([tmp_path / "cells 01.png"], tmp_path / "out.ome.zarr")
    values, ref = _read_back(out.path, "cells_01")
    np.testing.assert_array_equal(values, image)
    assert (ref.axes, ref.dtype, values.dtype) == ("yx", "uint8", np.uint8)
    assert ref.pixel_size == {"y": 1.0, "x": 1.0} and _units(out.path, "cells_01") == set()


def test_tiff_uint16_2d_and_resolution_in_cm(tmp_path: Path) -> None:
    image = RNG.integers(0, 65535, (64, 50), dtype=np.uint16)
    # 40000 pixels per cm = 0.25 µm pixels
    tifffile.imwrite(tmp_path / "a.tif", image, resolution=(40000, 40000), resolutionunit="CENTIMETER")
    out = ingest([tmp_path / "a.tif"], tmp_path / "out.ome.zarr")
    values, ref = _read_back(out.path, "a")
    np.testing.assert_array_equal(values, image)
    assert ref.axes == "yx" and ref.dtype == "uint16"
    assert ref.pixel_size == pytest.approx({"y": 0.25, "x": 0.25})
    assert _units(out.path, "a") == {"micrometer"}
    assert zarr.open_group(str(out.path), mode="r")["a/s0"].chunks == (64, 50)  # clamped to the shape


def test_tiff_float32_3d_with_flag_sizes(tmp_path: Path) -> None:
    image = RNG.random((20, 34, 36), dtype=np.float32)
    tifffile.imwrite(tmp_path / "vol.tif", image, metadata={"axes": "ZYX"})
    opts = IngestOptions(pixel_size=0.1, z_spacing=0.3, chunks=(8, 16, 16))
    out = ingest([tmp_path / "vol.tif"], tmp_path / "out.ome.zarr", options=opts, block_bytes=4096)
    values, ref = _read_back(out.path, "vol")
    np.testing.assert_array_equal(values, image)
    assert (ref.axes, ref.dtype) == ("zyx", "float32")
    assert ref.pixel_size == {"z": 0.3, "y": 0.1, "x": 0.1}
    assert ref.open().chunks == (8, 16, 16)


def test_imagej_hyperstack_tzcyx(tmp_path: Path) -> None:
    image = RNG.integers(0, 4000, (2, 3, 2, 32, 40), dtype=np.uint16)
    tifffile.imwrite(
        tmp_path / "hyper.tif",
        image,
        imagej=True,
        resolution=(1 / 0.2, 1 / 0.2),
        metadata={"spacing": 0.5, "unit": "um", "axes": "TZCYX"},
    )
    out = ingest([tmp_path / "hyper.tif"], tmp_path / "out.ome.zarr", block_bytes=1)
    values, ref = _read_back(out.path, "hyper")
    assert ref.axes == "tczyx"  # NGFF order
    np.testing.assert_array_equal(values, np.transpose(image, (0, 2, 1, 3, 4)))
    assert ref.pixel_size == pytest.approx({"z": 0.5, "y": 0.2, "x": 0.2})
    assert ref.open().chunks == (1, 1, 3, 32, 40)


def test_ome_tiff_physical_size_converted_to_one_unit(tmp_path: Path) -> None:
    image = RNG.integers(0, 255, (4, 32, 32), dtype=np.uint8)
    tifffile.imwrite(
        tmp_path / "stack.ome.tif",
        image,
        metadata={
            "axes": "ZYX",
            "PhysicalSizeX": 0.11,
            "PhysicalSizeY": 0.11,
            "PhysicalSizeZ": 400,
            "PhysicalSizeZUnit": "nm",
        },
    )
    out = ingest([tmp_path / "stack.ome.tif"], tmp_path / "out.ome.zarr")
    values, ref = _read_back(out.path, "stack")
    np.testing.assert_array_equal(values, image)
    assert ref.axes == "zyx"
    assert ref.pixel_size == pytest.approx({"z": 0.4, "y": 0.11, "x": 0.11})
    assert _units(out.path, "stack") == {"micrometer"}
    # --unit converts the metadata; flags override it
    out = ingest(
        [tmp_path / "stack.ome.tif"], tmp_path / "nm.ome.zarr", options=IngestOptions(unit="nm", z_spacing=50)
    )
    _, ref = _read_back(out.path, "stack")
    assert ref.pixel_size == pytest.approx({"z": 50, "y": 110, "x": 110})
    assert _units(out.path, "stack") == {"nanometer"}


@pytest.mark.parametrize("channel", ["max", "mean", 1])
def test_rgb_png_channel_reduction(tmp_path: Path, channel: int | str) -> None:
    rgb = RNG.integers(0, 255, (32, 36, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "lut.png")
    out = ingest([tmp_path / "lut.png"], tmp_path / "out.ome.zarr", options=IngestOptions(channel=channel))
    values, ref = _read_back(out.path, "lut")
    expected = {
        "max": rgb.max(axis=2),
        "mean": np.rint(rgb.mean(axis=2)).astype(np.uint8),
        1: rgb[..., 1],
    }[channel]
    np.testing.assert_array_equal(values, expected)
    assert (ref.axes, ref.dtype) == ("yx", "uint8")


def test_rgb_kept_as_channels_without_channel_flag(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 255, (32, 36, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb)  # axes YXS
    out = ingest([tmp_path / "rgb.tif"], tmp_path / "out.ome.zarr")
    values, ref = _read_back(out.path, "rgb")
    assert ref.axes == "cyx"
    np.testing.assert_array_equal(values, np.moveaxis(rgb, -1, 0))


def test_existing_zarr_array_and_ome_zarr(tmp_path: Path, write_zarr: Any) -> None:
    image = RNG.integers(-500, 500, (2, 40, 44), dtype=np.int16)
    src = write_zarr(image, "raw.zarr")
    first = ingest([src], tmp_path / "first.ome.zarr", options=IngestOptions(pixel_size=0.5))
    values, ref = _read_back(first.path, "raw")
    np.testing.assert_array_equal(values, image)
    assert (ref.axes, ref.dtype, ref.pixel_size) == ("cyx", "int16", {"y": 0.5, "x": 0.5})
    # an OME-Zarr store (our own output) ingests again with its sizes and unit
    again = ingest([first.path], tmp_path / "again.ome.zarr")
    values, ref = _read_back(again.path, "raw")
    np.testing.assert_array_equal(values, image)
    assert ref.pixel_size == {"y": 0.5, "x": 0.5} and _units(again.path, "raw") == {"micrometer"}


def test_generic_pages_become_t_and_axes_flag(tmp_path: Path) -> None:
    pages = RNG.integers(0, 255, (5, 32, 32), dtype=np.uint8)
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tw:
        for page in pages:
            tw.write(page, metadata=None)  # plain multi-page TIFF: axes 'IYX'
    out = ingest([tmp_path / "pages.tif"], tmp_path / "t.ome.zarr")
    assert discover_images(out.path)[0].axes == "tyx"
    out = ingest([tmp_path / "pages.tif"], tmp_path / "z.ome.zarr", options=IngestOptions(axes="zyx"))
    values, ref = _read_back(out.path, "pages")
    assert ref.axes == "zyx"
    np.testing.assert_array_equal(values, pages)


def test_folder_glob_names_unique_and_sanitised(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        tifffile.imwrite(tmp_path / folder / "img #1.tif", RNG.integers(0, 9, (20, 20), dtype=np.uint8))
    (tmp_path / "a" / "notes.txt").write_text("not an image")  # ignored inside a folder
    out = ingest([tmp_path / "a", str(tmp_path / "b" / "*.tif")], tmp_path / "out.ome.zarr")
    assert sorted(r.array_path.split("/")[0] for r in discover_images(out.path)) == ["img_1", "img_1_2"]


# --------------------------------------------------------------------------------------------- manifest


def _write_tiffs(folder: Path, names: list[str], shape: tuple[int, ...] = (32, 32)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        tifffile.imwrite(folder / name, RNG.integers(0, 255, shape, dtype=np.uint8))


def test_manifest_splits_roles_pairs_and_consolidation(tmp_path: Path) -> None:
    _write_tiffs(tmp_path / "clean", ["001_a.tif", "002_a.tif", "010_a.tif"])
    _write_tiffs(tmp_path / "low", ["x.tif"], (32, 32))
    _write_tiffs(tmp_path / "high", ["x.tif"], (64, 64))
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "images:\n"
        '  - {path: "clean/*.tif", split: train}\n'
        '  - {path: "clean/010_*.tif", split: test}\n'
        "pairs:\n"
        '  - {low: "low/x.tif", high: "high/x.tif", scale: 2, split: val}\n'
    )
    out = ingest(None, tmp_path / "ds.ome.zarr", manifest=manifest)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = zarr.open_consolidated(str(out.path), mode="r")
    psr = dict(root.attrs)["psr"]
    assert psr["manifest"] == {
        "version": 1,
        "images": {
            "001_a": {"source": "clean/001_a.tif", "split": "train", "role": "clean"},
            "002_a": {"source": "clean/002_a.tif", "split": "train", "role": "clean"},
            "010_a": {"source": "clean/010_a.tif", "split": "test", "role": "clean"},
            "x": {"source": "low/x.tif", "split": "val", "role": "low"},
            "x_2": {"source": "high/x.tif", "split": "val", "role": "high"},
        },
        "pairs": [{"low": "x", "high": "x_2", "scale": 2, "split": "val"}],
    }
    assert set(psr["ingest"]) == {"fingerprint", "options"} and len(psr["ingest"]["fingerprint"]) == 64
    # consolidated metadata lists every image group and array; readers still find the NGFF images
    meta = json.loads((out.path / "zarr.json").read_text())["consolidated_metadata"]["metadata"]
    assert {"001_a", "001_a/s0", "001_a/s1", "x_2/s0"} <= set(meta)
    assert len(discover_images(out.path)) == 5
    images = ["001_a", "002_a", "010_a", "x", "x_2"]
    assert sorted(root.group_keys()) == sorted(["OME", *images])  # OME/ lists the images for viewers
    assert sorted(dict(root["OME"].attrs)["ome"]["series"]) == images


def test_flag_splits_are_by_image_and_seeded(tmp_path: Path) -> None:
    _write_tiffs(tmp_path / "in", [f"{i:02d}.tif" for i in range(10)])

    def splits(seed: int, name: str) -> dict[str, str]:
        opts = IngestOptions(val_fraction=0.2, test_fraction=0.1, seed=seed, levels=1)
        out = ingest([tmp_path / "in"], tmp_path / name, options=opts)
        images = dict(zarr.open_group(str(out.path), mode="r").attrs)["psr"]["manifest"]["images"]
        return {k: v["split"] for k, v in images.items()}

    a, b, c = splits(0, "a.zarr"), splits(0, "b.zarr"), splits(1, "c.zarr")
    assert a == b and a != c
    assert sorted(a.values()).count("val") == 2 and list(a.values()).count("test") == 1


def test_pair_globs_match_by_wildcard_part(tmp_path: Path) -> None:
    _write_tiffs(tmp_path / "low", ["b-low.tif", "a-low.tif", "c-low.tif"])
    _write_tiffs(tmp_path / "high", ["a-high.tif", "b-high.tif", "d-high.tif"])
    manifest = tmp_path / "m.yaml"
    manifest.write_text('pairs:\n  - {low: "low/*-low.tif", high: "high/*-high.tif"}\n')
    with pytest.raises(IngestError, match="no high image for c; no low image for d"):
        ingest(None, tmp_path / "out.ome.zarr", manifest=manifest)
    (tmp_path / "low" / "c-low.tif").unlink()
    (tmp_path / "high" / "d-high.tif").unlink()
    out = ingest(None, tmp_path / "out.ome.zarr", manifest=manifest)
    pairs = dict(zarr.open_group(str(out.path), mode="r").attrs)["psr"]["manifest"]["pairs"]
    assert [(p["low"], p["high"], p["split"]) for p in pairs] == [
        ("a-low", "a-high", "val"),
        ("b-low", "b-high", "val"),
    ]


def test_pair_shapes_inconsistent_with_scale(tmp_path: Path) -> None:
    _write_tiffs(tmp_path / "low", ["p.tif"], (32, 32))
    _write_tiffs(tmp_path / "high", ["p.tif"], (60, 64))
    manifest = tmp_path / "m.yaml"
    manifest.write_text("pairs:\n  - {low: low/p.tif, high: high/p.tif, scale: 2}\n")
    with pytest.raises(IngestError, match=r"high/p.tif.*\(60, 64\).*expected high shape \(64, 64\)"):
        ingest(None, tmp_path / "out.ome.zarr", manifest=manifest)
    assert _no_leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------- idempotence


def _snapshot(store: Path) -> dict[str, int]:
    return {str(p.relative_to(store)): p.stat().st_mtime_ns for p in store.rglob("*")}


def test_rerun_is_idempotent_and_overwrite_replaces(tmp_path: Path) -> None:
    _write_tiffs(tmp_path / "in", ["a.tif", "b.tif"])
    out = tmp_path / "out.ome.zarr"
    first = ingest([tmp_path / "in"], out)
    before = _snapshot(out)
    second = ingest([tmp_path / "in"], out)
    assert second.up_to_date and not first.up_to_date and _snapshot(out) == before
    with pytest.raises(IngestError, match="already exists.*--overwrite"):
        ingest([tmp_path / "in"], out, options=IngestOptions(pixel_size=0.2))
    assert _snapshot(out) == before
    # a touched source changes the fingerprint as well
    os.utime(tmp_path / "in" / "a.tif", ns=(1, 1))
    with pytest.raises(IngestError, match="already exists"):
        ingest([tmp_path / "in"], out)
    third = ingest([tmp_path / "in"], out, options=IngestOptions(pixel_size=0.2), overwrite=True)
    assert not third.up_to_date
    assert discover_images(out)[0].pixel_size == {"y": 0.2, "x": 0.2}
    assert _no_leftovers(tmp_path) == ["out.ome.zarr"]


def test_ensure_ingested_caches_by_fingerprint(tmp_path: Path, cache_dir: Path) -> None:
    _write_tiffs(tmp_path / "in", ["a.tif"])
    cache = cache_dir / "ingest-test"
    path = ensure_ingested([str(tmp_path / "in")], cache, channel="max", chunks=[128, 128])
    assert path.parent == cache and path.name.startswith("ingest-") and path.name.endswith(".ome.zarr")
    before = _snapshot(path)
    assert ensure_ingested([str(tmp_path / "in")], cache, channel="max", chunks=[128, 128]) == path
    assert _snapshot(path) == before
    other = ensure_ingested([str(tmp_path / "in")], cache, pixel_size=0.3)
    assert other != path and discover_images(other)[0].pixel_size == {"y": 0.3, "x": 0.3}
    with pytest.raises(IngestError, match="unknown ingest option"):
        ensure_ingested([str(tmp_path / "in")], cache, pixelsize=0.3)


# --------------------------------------------------------------------------------------------- bounded memory


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_large_tiff_converts_in_bounded_memory(tmp_path: Path, compression: str | None) -> None:
    """A 16 MB TIFF written page by page converts with a peak far below its size (1 MB bands)."""
    path = tmp_path / "big.tif"
    planes, size = 32, 512
    with tifffile.TiffWriter(path) as tw:
        for i in range(planes):
            page = np.full((size, size), i, dtype=np.uint16) + RNG.integers(
                0, 50, (size, size), dtype=np.uint16
            )
            if compression:  # compressed strips: read through tifffile's zarr store
                tw.write(page, compression=compression, rowsperstrip=64, metadata=None)
            else:  # uncompressed and contiguous: read through short-lived memory maps
                tw.write(page, contiguous=True)
    file_bytes = planes * size * size * 2
    opts = IngestOptions(axes="zyx", chunks=(4, 128, 128))
    # A small file of the same kind first: the modules ingest imports on first use (zarr codecs,
    # tifffile's store) are allocated once per process and are not the conversion's memory.
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, np.zeros((2, 64, 64), np.uint16), compression=compression, metadata=None)
    ingest([small], tmp_path / "small.ome.zarr", options=IngestOptions(axes="zyx", chunks=(1, 64, 64)))
    tracemalloc.start()
    try:
        out = ingest([path], tmp_path / "big.ome.zarr", options=opts, block_bytes=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < file_bytes / 4, f"peak {peak / 1e6:.1f} MB for a {file_bytes / 1e6:.0f} MB image"
    arr = discover_images(out.path)[0].open()
    assert arr.shape == (planes, size, size)
    np.testing.assert_array_equal(arr[17], tifffile.imread(path, key=17))


@pytest.mark.parametrize(
    "index",
    [
        (slice(1, 3), slice(0, 5), slice(2, 9), slice(0, 11)),  # a band of full rows per plane
        (slice(0, 4), slice(0, 5), slice(0, 9), slice(0, 11)),  # everything: one run
        (slice(2, 3), slice(1, 4), slice(3, 4), slice(2, 7)),  # partial columns
    ],
)
def test_contiguous_reader_reads_blocks(tmp_path: Path, index: tuple[slice, ...]) -> None:
    data = RNG.integers(0, 60000, (4, 5, 9, 11)).astype(">u2")  # big-endian, as some TIFFs store it
    path = tmp_path / "raw.bin"
    path.write_bytes(b"x" * 17 + data.tobytes())
    reader = ContiguousReader(path, 17, data.shape, data.dtype)
    np.testing.assert_array_equal(reader[index], data[index])


def test_bands_bound_reads_and_align_levels() -> None:
    layout = ingest_mod.Layout(
        axes="tzyx",
        shape=(3, 40, 1000, 700),
        dtype=np.dtype("uint16"),
        source_to_output=("t", "z", "y", "x"),
        channel_axis=None,
        channel=None,
        pixel_size={},
        unit=None,
        chunks=(1, 16, 256, 256),
    )
    bands = plan_bands(layout, levels=2, block_bytes=8 << 20)
    covered = np.zeros(layout.shape[:3], dtype=np.int32)
    for band in bands:
        rows = band["y"].stop - band["y"].start
        planes = (band["t"].stop - band["t"].start) * (band["z"].stop - band["z"].start)
        assert planes * rows * 700 * 2 <= max(8 << 20, 16 * 256 * 700 * 2)
        assert band["y"].start % 256 == 0 and band["z"].start % 16 == 0 and band["x"] == slice(0, 700)
        covered[band["t"], band["z"], band["y"]] += 1
    assert (covered == 1).all()  # every pixel exactly once
    small = plan_bands(layout, levels=2, block_bytes=1)
    assert all(b["y"].stop - b["y"].start <= 256 for b in small)
