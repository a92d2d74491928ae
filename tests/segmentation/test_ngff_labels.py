"""Labelled data in one OME-Zarr store: masks in each image's NGFF labels/ group, read by data=labelled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from psr.data.labelled import LabelError, LabelledDataModule, load_labelled
from psr.data.labelled_store import write_labelled_store
from psr.data.pairs import PairError
from tests.segmentation.conftest import discs


def _store(tmp_path: Path, n: int = 3) -> tuple[Path, list[np.ndarray], list[np.ndarray]]:
    labels = [discs(40, 3, i).astype(np.uint16) for i in range(n)]
    images = [
        (20 + 100 * (m > 0) + np.random.default_rng(i).normal(0, 5, m.shape)).astype(np.float32)
        for i, m in enumerate(labels)
    ]
    path = write_labelled_store(tmp_path / "set.ome.zarr", [f"img{i}" for i in range(n)], images, labels)
    return path, images, labels


def test_masks_round_trip_through_the_labels_group(tmp_path: Path) -> None:
    path, _, labels = _store(tmp_path)
    items = load_labelled(str(path), None, mode="instance")
    assert [it.name for it in items] == ["set/img0/s0", "set/img1/s0", "set/img2/s0"]
    for item, label in zip(items, labels, strict=True):
        np.testing.assert_array_equal(item.label, label)
        assert item.image.shape == (1, 40, 40)
    # the labels are not images of their own, and a semantic read maps them through the usual checks
    with pytest.raises(LabelError, match="class value"):
        load_labelled(str(path), None, mode="semantic", classes=2)
    attrs = json.loads((path / "img0" / "labels" / "zarr.json").read_text())["attributes"]
    assert attrs["ome"]["labels"] == ["masks"]
    label_attrs = json.loads((path / "img0" / "labels" / "masks" / "zarr.json").read_text())["attributes"]
    assert label_attrs["ome"]["image-label"]["source"]["image"] == "../../"


def test_the_store_is_valid_ngff(tmp_path: Path) -> None:
    models = pytest.importorskip("ome_zarr_models.v05")
    import zarr

    path, _, _ = _store(tmp_path, n=1)
    image = models.Image.from_zarr(zarr.open_group(str(path / "img0"), mode="r"))
    labels = models.Labels.from_zarr(zarr.open_group(str(path / "img0" / "labels"), mode="r"))
    label = models.ImageLabel.from_zarr(zarr.open_group(str(path / "img0" / "labels" / "masks"), mode="r"))
    assert image.attributes.ome.multiscales and labels.attributes.ome.labels == ["masks"]
    assert label.attributes.ome.image_label is not None


def test_the_datamodule_reads_the_labels_group(tmp_path: Path) -> None:
    path, _, _ = _store(tmp_path, n=4)
    dm = LabelledDataModule(
        str(path), None, mode="instance", patch_size=16, batch_size=2, samples_per_epoch=4
    )
    dm.setup("fit")
    assert len(dm.train_items) + len(dm.val_items) == 4
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 1, 16, 16) and batch["label"].shape == (2, 16, 16)


def test_missing_labels_are_one_clear_error(tmp_path: Path, labelled_folder) -> None:  # noqa: ANN001
    images, _ = labelled_folder(n=1)
    with pytest.raises(PairError, match="data.labels is null"):
        load_labelled(str(images), None)
    path, _, _ = _store(tmp_path, n=1)
    with pytest.raises(PairError, match="expected data.label_name to be one of them"):
        load_labelled(str(path), None, mode="instance", label_name="cells")
    with pytest.raises(LabelError, match="expected one integer"):
        write_labelled_store(
            tmp_path / "bad.ome.zarr", ["a"], [np.zeros((8, 8))], [np.zeros((8, 9), np.uint8)]
        )
    assert not (tmp_path / "bad.ome.zarr").exists()


def test_ingested_images_and_masks_train_from_one_store(tmp_path: Path, labelled_folder) -> None:  # noqa: ANN001
    """Files in, one OME-Zarr store with labels/ out; data=labelled reads the same images and masks."""
    from psr.data.labelled_store import ingest_labelled

    images, masks = labelled_folder(n=3, semantic=True)
    store = ingest_labelled(str(images), str(masks), tmp_path / "labelled.ome.zarr", pixel_size=0.5)
    from_files = load_labelled(str(images), str(masks), classes=2)
    from_store = load_labelled(str(store), None, classes=2)
    assert [it.name for it in from_store] == ["labelled/0/s0", "labelled/1/s0", "labelled/2/s0"]
    for a, b in zip(from_files, from_store, strict=True):
        np.testing.assert_array_equal(a.label, b.label)
        np.testing.assert_allclose(a.image, b.image, atol=1e-6)
    scale = json.loads((store / "0" / "labels" / "masks" / "zarr.json").read_text())["attributes"]["ome"]
    assert scale["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [0.5, 0.5]


def test_psr_ingest_labels_writes_the_store_data_labelled_reads(
    tmp_path: Path,
    labelled_folder,  # noqa: ANN001
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``psr ingest IMAGES --labels MASKS -o STORE``: the same images and masks as the files; an existing
    store is kept without --overwrite, replaced with it; a bad mask is one error line and no store."""
    import tifffile

    from psr.cli import main

    def psr(*args: str) -> int:
        try:
            return int(main(list(args)) or 0)
        except SystemExit as exit_:
            return int(exit_.code or 0)

    images, masks = labelled_folder(n=3, semantic=True)
    out = tmp_path / "seg.ome.zarr"
    argv = [
        "ingest",
        str(images),
        "--labels",
        str(masks),
        "-o",
        str(out),
        "--pixel-size",
        "500",
        "--unit",
        "nm",
    ]
    assert psr(*argv) == 0
    assert f"to {out}" in capsys.readouterr().out
    from_files = load_labelled(str(images), str(masks), classes=2)
    from_store = load_labelled(str(out), None, classes=2)
    for a, b in zip(from_files, from_store, strict=True):
        np.testing.assert_array_equal(a.label, b.label)
    scale = json.loads((out / "0" / "labels" / "masks" / "zarr.json").read_text())["attributes"]["ome"]
    got = scale["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert got == pytest.approx([0.5, 0.5])  # 500 nm in the store's micrometres

    assert psr(*argv) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    tifffile.imwrite(masks / "1.tif", np.zeros((10, 10), np.uint8))  # not the image's size
    assert psr(*argv, "--overwrite") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "[10, 10]" in err
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".seg")] == []  # no temporary left
    assert len(load_labelled(str(out), None, classes=2)) == 3  # the earlier store is intact
