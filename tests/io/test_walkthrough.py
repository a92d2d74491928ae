"""The README's "From a microscope file to napari" walkthrough, step by step through the ``psr`` command:
``psr ingest`` a microscope file, ``psr train`` on the store, open the store with the napari plugin's
reader, restore another image with the widget's core (``restore_array``: napari's Qt is not needed) and
with ``psr predict``; the pixel size and channel name of the file reach the checkpoint and both outputs.

The microscope files are Zeiss CZI files the test writes with Zeiss's own pylibCZIrw (installed with
bioio-czi, in the ``formats`` and ``dev`` extras) and psr reads through bioio-czi; skipped without them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from psr.inference.checkpoint import load_checkpoint
from psr.napari.reader import napari_get_reader
from psr.napari.restore import restore_array
from tests.test_cli import run_psr

TRAIN = [
    "data=zarr",
    "data.path=scans.ome.zarr",
    "scale=2",
    "model=edsr",
    "model.n_feats=4",
    "model.n_blocks=1",
    "data.patch_size=32",
    "data.batch_size=2",
    "data.samples_per_epoch=4",
    "data.val_samples=2",
    "data.num_workers=0",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "logger=none",
]


def _scan(path: Path, seed: int) -> np.ndarray:
    """A one-channel CZI with a physical pixel size (0.1 µm) and a channel name, as a Zeiss microscope
    writes it."""
    pyczi = pytest.importorskip("pylibCZIrw.czi")
    yy, xx = np.mgrid[:64, :64]
    clean = 1500 + 1000 * np.sin(yy / (4.0 + seed)) * np.cos(xx / 6.0)
    data = np.random.default_rng(seed).poisson(clean).astype(np.uint16)
    with pyczi.create_czi(str(path)) as czi:
        czi.write(data, plane={"C": 0})
        czi.write_metadata(document_name=path.stem, channel_names={0: "GFP"}, scale_x=0.1e-6, scale_y=0.1e-6)
    return data


def test_microscope_file_to_napari(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("bioio_czi")
    monkeypatch.chdir(tmp_path)
    Path("raw").mkdir()
    for k in range(3):
        _scan(Path(f"raw/scan{k}.czi"), k)
    another = _scan(Path("another.czi"), 7)

    # 1. psr ingest
    code, out, err = run_psr(capsys, "ingest", "raw", "-o", "scans.ome.zarr")
    assert code == 0 and out.startswith("wrote 3 images"), err
    # 2. psr train on the store: the checkpoint records the file's pixel size and channel name
    code, out, err = run_psr(capsys, "train", *TRAIN, "hydra.run.dir=run")
    assert code == 0, err
    ckpt = Path(json.loads(Path("run/summary.json").read_text())["best_checkpoint"])
    model = load_checkpoint(ckpt)
    assert model.image.pixel_size == pytest.approx({"y": 0.1, "x": 0.1})
    assert (model.image.unit, model.image.channel_names) == ("micrometer", ("GFP",))
    # 3. the napari plugin's reader opens the store: one layer per image, at the physical pixel size
    reader = napari_get_reader("scans.ome.zarr")
    assert reader is not None
    layers = reader("scans.ome.zarr")
    assert len(layers) == 3 and all(kwargs["scale"] == [0.1, 0.1] for _, kwargs, _ in layers)
    # 4. the widget restores another image, opened in napari without a scale (napari's default of 1)
    restored = restore_array(ckpt, another, tile=32, overlap=8, device="cpu")
    assert restored.data.shape == (128, 128) and np.isfinite(restored.data).all()
    assert restored.input_scale == pytest.approx((0.2, 0.2)) and restored.unit == "micrometer"
    assert restored.scale == pytest.approx((0.1, 0.1))
    # 5. psr predict: the output carries the pixel size (input's / scale) and the channel name
    tifffile.imwrite("plain.tif", another)  # no metadata: the checkpoint's pixel size is used
    for source in ("another.czi", "plain.tif"):
        code, out, err = run_psr(
            capsys, "predict", f"ckpt={ckpt}", f"input={source}", f"output={source}.ome.zarr", "device=cpu"
        )
        assert code == 0, err
        ome = dict(zarr.open_group(f"{source}.ome.zarr", mode="r").attrs)["ome"]
        transform = ome["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]
        expected = [0.05, 0.05] if source == "another.czi" else [0.1, 0.1]
        assert transform["scale"][-2:] == pytest.approx(expected), source  # (t, c, z,) y, x
        assert [c["label"] for c in ome["omero"]["channels"]] == ["GFP"]
