"""Pixel size, unit and channel names travel from the training images through the checkpoint into
predictions (OME-Zarr and ImageJ TIFF), and watch mode sees every suffix of the reader table."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr

from psr.inference.checkpoint import load_checkpoint
from psr.inference.images import open_input
from psr.inference.predict import predict_image
from psr.inference.watch import watch_folder
from psr.io import FORMATS, image_stem
from psr.io.metadata import CHECKPOINT_KEY, ImageMetadata, common
from psr.models.edsr import EDSR

MODEL = {"_target_": "psr.models.edsr.EDSR", "in_channels": 1, "out_channels": 1, "scale": 2, "n_feats": 4, "n_blocks": 1}  # fmt: skip
TRAINED = ImageMetadata({"y": 0.05, "x": 0.05}, "micrometer", ("GFP",))


def _checkpoint(path: Path, image: ImageMetadata | None) -> Path:
    torch.manual_seed(0)
    net = EDSR(**{k: v for k, v in MODEL.items() if k != "_target_"})
    ckpt = {
        "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
        "psr_config": {"model": MODEL, "scale": 2, "data": {"percentiles": [1.0, 99.8]}},
    }
    if image is not None:
        ckpt[CHECKPOINT_KEY] = image.to_dict()
    torch.save(ckpt, path)
    return path


def _image(path: Path, pixel: float | None = None) -> Path:
    data = np.random.default_rng(0).integers(0, 4000, (24, 28), dtype=np.uint16)
    if pixel is None:
        tifffile.imwrite(path, data)
    else:
        tifffile.imwrite(path, data, imagej=True, resolution=(1 / pixel, 1 / pixel), metadata={"unit": "um"})
    return path


def _zarr_scale_and_labels(path: Path) -> tuple[list[float], str | None, list[str]]:
    ome = dict(zarr.open_group(str(path), mode="r").attrs)["ome"]
    (multiscale,) = ome["multiscales"]
    scale = multiscale["datasets"][0]["coordinateTransformations"][0]["scale"]
    unit = multiscale["axes"][-1].get("unit")
    return scale, unit, [c["label"] for c in ome["omero"]["channels"]]


def test_metadata_round_trip_and_what_images_share() -> None:
    assert ImageMetadata.from_dict(TRAINED.to_dict()) == TRAINED
    assert ImageMetadata.from_dict(None) == ImageMetadata() and not ImageMetadata()
    # a size without a unit is no physical size; malformed entries are dropped
    assert ImageMetadata.from_dict({"pixel_size": {"x": 0.1}, "unit": None}).pixel_size == {}
    assert ImageMetadata.from_dict({"pixel_size": {"x": -1, "q": 2}, "unit": "um"}).pixel_size == {}
    nm = ImageMetadata({"y": 50.0, "x": 50.0}, "nanometer", ("GFP",))
    assert common([TRAINED, nm]) == TRAINED  # 50 nm is 0.05 µm
    other = ImageMetadata({"y": 0.1, "x": 0.1}, "micrometer", ("RFP",))
    assert common([TRAINED, other]) == ImageMetadata()
    assert common([TRAINED, ImageMetadata()]).pixel_size == {}


def test_image_stem_knows_every_suffix_of_the_reader_table() -> None:
    for fmt in FORMATS:
        for suffix in fmt.suffixes:
            assert image_stem(f"scan{suffix.upper()}") == "scan", suffix
    assert image_stem("cells.ome.tif") == image_stem("cells.ome.zarr") == "cells"
    assert image_stem("notes.txt") is None and image_stem(".czi") is None


def test_checkpoint_pixel_size_goes_to_an_input_without_one(tmp_path: Path) -> None:
    model = load_checkpoint(_checkpoint(tmp_path / "m.ckpt", TRAINED))
    assert model.image == TRAINED and model.input_image.pixel_size == {"y": 0.1, "x": 0.1}
    with open_input(_image(tmp_path / "plain.tif")) as image:
        summary = predict_image(model, image, tmp_path / "out.ome.zarr")
    assert summary["pixel_size"] == {"y": 0.05, "x": 0.05} and summary["unit"] == "micrometer"
    scale, unit, labels = _zarr_scale_and_labels(tmp_path / "out.ome.zarr")
    assert scale == [0.05, 0.05] and unit == "micrometer" and labels == ["GFP"]
    with open_input(tmp_path / "plain.tif") as image:
        predict_image(model, image, tmp_path / "out.tif")
    with tifffile.TiffFile(tmp_path / "out.tif") as tif:
        meta = tif.imagej_metadata or {}
        x_resolution = tif.pages[0].tags["XResolution"].value
    assert meta["unit"] == "um" and np.atleast_1d(meta["Labels"]).tolist() == ["GFP"]
    assert x_resolution[0] / x_resolution[1] == pytest.approx(1 / 0.05)


def test_input_pixel_size_wins_and_a_mismatch_is_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = load_checkpoint(_checkpoint(tmp_path / "m.ckpt", TRAINED))
    caplog.set_level(logging.WARNING, "psr.inference.images")
    with open_input(_image(tmp_path / "same.tif", 0.1)) as image:
        assert predict_image(model, image, tmp_path / "same.ome.zarr")["pixel_size"] == {"y": 0.05, "x": 0.05}
    assert not caplog.records
    with open_input(_image(tmp_path / "coarse.tif", 0.4)) as image:
        summary = predict_image(model, image, tmp_path / "coarse.ome.zarr")
    assert summary["pixel_size"] == {"y": 0.2, "x": 0.2}  # its own, divided by the scale
    (record,) = caplog.records
    assert "coarse.tif has pixel size y=0.4, x=0.4 micrometer" in record.getMessage()
    assert "inputs of y=0.1, x=0.1 micrometer" in record.getMessage()


def test_an_old_checkpoint_keeps_the_pixel_grid(tmp_path: Path) -> None:
    model = load_checkpoint(_checkpoint(tmp_path / "old.ckpt", None))
    with open_input(_image(tmp_path / "plain.tif")) as image:
        summary = predict_image(model, image, tmp_path / "out.ome.zarr")
    assert summary["pixel_size"] == {"y": 0.5, "x": 0.5} and summary["unit"] is None
    assert _zarr_scale_and_labels(tmp_path / "out.ome.zarr")[2] == ["out.ome.zarr"]


def test_watch_mode_sees_microscope_formats(tmp_path: Path) -> None:
    """A .czi appears beside a TIFF: watch mode picks up both (the CZI is reported, naming its reader
    when bioio-czi is missing or the file unreadable); before, it ignored every bioio suffix."""
    model = load_checkpoint(_checkpoint(tmp_path / "m.ckpt", TRAINED))
    folder = tmp_path / "incoming"
    folder.mkdir()
    _image(folder / "a.tif")
    (folder / "scan.czi").write_bytes(b"ZISRAWFILE" + bytes(64))
    summary = watch_folder(model, folder, tmp_path / "restored", interval=0.05, timeout=0.3)
    assert summary["files"] == 1 and (tmp_path / "restored" / "a.tif").is_file()
    assert summary["skipped"] == [str(folder / "scan.czi")]
