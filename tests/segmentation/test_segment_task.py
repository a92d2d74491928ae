"""segment.py's task end to end on tiny data: the composed config, the run's outputs, bad labels, and the
real-data recipes (skipped where ../shared/data is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from psr.tasks.errors import ConfigError
from psr.tasks.segment import segment
from tests.conftest import ROOT, SHARED_DATA, config_names

TINY = [
    "data.patch_size=32",
    "data.batch_size=2",
    "data.samples_per_epoch=4",
    "data.num_workers=0",
    "model=care_unet",
    "model.n_filter_base=8",
    "trainer.max_epochs=2",
    "trainer.accelerator=cpu",
    "logger=none",
]
# The recipes of segment.py: experiments that select module=segmentation.
SEGMENT_EXPERIMENTS = [
    n
    for n in config_names("experiment")
    if "override /module: segmentation" in (ROOT / "conf" / "experiment" / f"{n}.yaml").read_text()
]


def _cfg(compose_cfg, *overrides: str):  # noqa: ANN001, ANN202
    return compose_cfg(*TINY, *overrides, tiny=False, config_name="segment")


def test_instance_run_writes_summary_checkpoints_and_panels(
    compose_cfg, labelled_folder, tmp_path: Path
) -> None:  # noqa: ANN001
    images, masks = labelled_folder()
    summary = segment(_cfg(compose_cfg, f"data.images={images}", f"data.labels={masks}", "mode=instance"))
    run = tmp_path / "run"
    assert json.loads((run / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["steps"] == 4 and summary["mode"] == "instance" and summary["val_images"] == ["3"]
    assert summary["classes"] == ["background", "interior", "boundary"]
    for key in ("val/iou", "val/dice", "val/iou/boundary", "val/f1", "val/ap"):
        assert 0.0 <= summary["best"][key] <= 1.0
    assert [h["epoch"] for h in summary["history"]] == [0, 1]
    assert sorted(p.name for p in (run / "panels").glob("*.png")) == ["val_epoch000.png", "val_epoch001.png"]
    ckpt = torch.load(summary["best_checkpoint"], map_location="cpu", weights_only=True)
    model = ckpt["psr_config"]["model"]
    assert (model["out_channels"], model["scale"], model["residual"]) == (3, 1, False)


def test_crappifier_trains_a_robust_model_on_the_label_grid(compose_cfg, labelled_folder) -> None:  # noqa: ANN001
    images, masks = labelled_folder(semantic=True)
    cfg = _cfg(
        compose_cfg,
        f"data.images={images}",
        f"data.labels={masks}",
        "crappifier=pssr_em",
        "scale=4",
        "trainer.max_epochs=1",
    )
    assert cfg.crappifier.steps[1].factor == 4
    summary = segment(cfg)
    assert summary["crappifier"] == "pssr_em" and np.isfinite(summary["best"]["val/loss"])
    assert "val/f1" not in summary["best"]  # semantic without a boundary class: no instances


@pytest.mark.parametrize(
    ("override", "message"),
    [("classes=3", "data: labels"), ("data.val_fraction=1.5", "val_fraction")],
)
def test_bad_settings_fail_before_training(compose_cfg, labelled_folder, tmp_path, override, message) -> None:  # noqa: ANN001
    images, masks = labelled_folder(semantic=True)
    tifffile.imwrite(masks / "1.tif", np.full((48, 48), 3, np.uint8))  # class 3 of 2 (or 3)
    with pytest.raises(ConfigError, match=message):
        segment(_cfg(compose_cfg, f"data.images={images}", f"data.labels={masks}", override))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_model_without_a_class_output_is_a_config_error(compose_cfg, labelled_folder) -> None:  # noqa: ANN001
    images, masks = labelled_folder(semantic=True)
    with pytest.raises(ConfigError, match="model.dims=3"):
        segment(_cfg(compose_cfg, f"data.images={images}", f"data.labels={masks}", "model.dims=3"))


@pytest.mark.parametrize("name", SEGMENT_EXPERIMENTS)
def test_segmentation_recipes_compose(compose_cfg, name: str) -> None:  # noqa: ANN001
    cfg = compose_cfg(f"experiment={name}", tiny=False, config_name="segment")
    assert cfg.module._target_.endswith("SegmentationModule")
    assert cfg.data.mode == cfg.module.mode
    assert str(cfg.data.images).startswith("../shared/data/")


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED_DATA / "clean" / "isbi2012_em_sstem").is_dir(), reason="no shared data")
def test_sstem_membranes_trains_end_to_end(compose_cfg, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.chdir(ROOT)  # the recipe names ../shared/data relative to the project root
    cfg = _cfg(compose_cfg, "experiment=sstem_membranes", "data.val_samples=1", "trainer.max_epochs=1")
    summary = segment(cfg)
    assert summary["val_images"] == ["24"]
    ckpt = torch.load(summary["last_checkpoint"], map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["class_names"] == ["cell", "membrane"]
    best = summary["best"]
    assert 0 <= best["val/iou/membrane"] <= 1 and 0 < best["val/iou/cell"] <= 1
    # Every true cell of slice 24 (the regions between its membranes) was matched or missed.
    from PIL import Image

    from psr.metrics.segmentation import regions_of

    mask = np.asarray(Image.open(SHARED_DATA / "clean" / "isbi2012_em_sstem" / "train_label" / "24.png"))
    assert best["val/tp"] + best["val/fn"] == regions_of((mask == 0).astype(np.int64), exclude=1).max() > 50
