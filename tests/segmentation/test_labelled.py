"""The labelled datamodule: pairing, splits, patches, and one clear error per bad mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from psr.data.labelled import LabelError, LabelledDataModule
from psr.data.pairs import PairError


def _module(images: Path, masks: Path, **kwargs) -> LabelledDataModule:  # noqa: ANN003
    settings = {"patch_size": 16, "batch_size": 3, "samples_per_epoch": 6, **kwargs}
    dm = LabelledDataModule(str(images), str(masks), **settings)
    dm.setup("fit")
    return dm


def test_patches_keep_image_and_mask_aligned(labelled_folder) -> None:  # noqa: ANN001
    images, masks = labelled_folder(semantic=True)
    dm = _module(images, masks, classes=2)
    assert [it.name for it in dm.val_items] == ["3"] and len(dm.train_items) == 3
    torch.manual_seed(0)
    seen_rotation = False
    for batch in dm.train_dataloader():
        image, label = batch["image"], batch["label"]
        assert image.shape == (3, 1, 16, 16) and image.dtype == torch.float32
        assert label.shape == (3, 16, 16) and label.dtype == torch.int64
        # The images were drawn from their masks: after flips and rotations they still coincide.
        assert torch.equal(image[:, 0] > 0.5, label.bool())
        seen_rotation = True
    assert seen_rotation
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape == (1, 1, 48, 48) and val["label"].shape == (1, 48, 48)


def test_rows_split_holds_out_the_bottom_of_every_image(labelled_folder) -> None:  # noqa: ANN001
    images, masks = labelled_folder(n=2)
    dm = _module(images, masks, mode="instance", val_split="rows", val_fraction=0.25)
    assert [it.label.shape for it in dm.train_items] == [(36, 48)] * 2
    assert [it.label.shape for it in dm.val_items] == [(12, 48)] * 2
    full = tifffile.imread(masks / "0.tif")
    assert np.array_equal(dm.val_items[0].label, full[36:])  # instance ids passed on unchanged


def test_label_map_maps_raw_values_to_classes(labelled_folder) -> None:  # noqa: ANN001
    images, masks = labelled_folder(semantic=True)
    for path in masks.glob("*.tif"):  # ISBI-style: 255 background, 0 foreground
        tifffile.imwrite(path, np.where(tifffile.imread(path) > 0, 0, 255).astype(np.uint8))
    dm = _module(images, masks, label_map={0: 1, 255: 0})
    item = dm.train_items[0]
    assert set(np.unique(item.label)) == {0, 1}
    assert np.array_equal(item.image[0] > 0.5, item.label == 1)


def _break(masks: Path, name: str, value: np.ndarray) -> None:
    tifffile.imwrite(masks / name, value)


@pytest.mark.parametrize(
    ("bad", "settings", "message"),
    [
        (np.zeros((40, 48), np.uint8), {}, "are [40, 48] but image"),
        (np.full((48, 48), 0.5, np.float32), {}, "non-integer values"),
        (np.full((48, 48), 3, np.uint8), {}, "class value(s) [3] but classes=2"),
        (np.full((48, 48), -1, np.int16), {}, "negative values"),
        (np.full((48, 48), 7, np.uint8), {"label_map": {0: 0, 1: 1}}, "values [7] that data.label_map"),
        (np.zeros((2, 48, 48), np.uint8), {}, "expected one 2D plane"),
    ],
)
def test_bad_masks_fail_before_training_naming_the_file(labelled_folder, bad, settings, message) -> None:  # noqa: ANN001
    images, masks = labelled_folder(semantic=True)
    _break(masks, "2.tif", bad)
    with pytest.raises(LabelError) as err:
        _module(images, masks, **settings)
    assert message in str(err.value) and "2.tif" in str(err.value)


def test_missing_masks_and_tiny_images_are_errors(labelled_folder) -> None:  # noqa: ANN001
    images, masks = labelled_folder(semantic=True)
    (masks / "1.tif").unlink()
    with pytest.raises(PairError, match="no mask of the same name"):
        _module(images, masks)
    with pytest.raises(PairError, match="holds 4 image"):
        _module(images, masks, match="order")
    images, masks = labelled_folder(semantic=True)
    tifffile.imwrite(masks / "1.tif", np.zeros((48, 48), np.uint8))
    with pytest.raises(LabelError, match="smaller than data.patch_size=64"):
        _module(images, masks, patch_size=64)


def _epoch(dm: LabelledDataModule, epoch: int) -> list[dict[str, torch.Tensor]]:
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]  # what Lightning does at each epoch start
    return list(loader)


def test_training_patches_come_from_the_seed_alone(labelled_folder) -> None:  # noqa: ANN001
    """The same patches with any number of loader workers and any global torch seed; a new epoch or
    another data.seed draws others."""
    images, masks = labelled_folder(semantic=True)
    torch.manual_seed(0)
    inline = _epoch(_module(images, masks, classes=2, seed=3), 1)
    torch.manual_seed(1)
    workers = _epoch(_module(images, masks, classes=2, seed=3, num_workers=2), 1)
    assert len(inline) == len(workers) == 2
    for a, b in zip(inline, workers, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    other_epoch = _epoch(_module(images, masks, classes=2, seed=3), 2)
    other_seed = _epoch(_module(images, masks, classes=2, seed=4), 1)
    assert not torch.equal(inline[0]["image"], other_epoch[0]["image"])
    assert not torch.equal(inline[0]["image"], other_seed[0]["image"])
