"""evaluate.py task=segment: a segmentation checkpoint scores high, low, restored and classical images."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from psr.tasks.errors import ConfigError
from psr.tasks.segment_eval import evaluate_segmentation
from tests.conftest import CONF
from tests.segmentation.conftest import discs


def _checkpoint(path: Path, config: dict, zero: bool = False) -> Path:
    torch.manual_seed(0)
    net = instantiate(OmegaConf.create(config["model"]))
    state = {f"net.{k}": (torch.zeros_like(v) if zero else v) for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "psr_config": config, "psr_generator": "net"}, path)
    return path


@pytest.fixture
def seg_ckpt(trained_discs) -> Path:  # noqa: ANN001
    """A CARE U-Net trained to segment disc instances (three classes), as segment.py stores it."""
    return trained_discs[1]


@pytest.fixture
def identity_ckpt(tmp_path: Path) -> Path:
    """A residual CARE U-Net at scale 1 with zero weights: it returns its input."""
    model = OmegaConf.load(CONF / "model" / "care_unet.yaml")
    model.scale, model.n_filter_base = 1, 4
    config = {"model": OmegaConf.to_container(model), "data": {"percentiles": [1.0, 99.8]}, "scale": 1}
    return _checkpoint(tmp_path / "identity.ckpt", config, zero=True)


@pytest.fixture
def compose_eval(tmp_path: Path) -> Iterator:
    def _compose(*overrides: str):  # noqa: ANN202
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF / "evaluate"), version_base="1.3"):
            return compose(
                "evaluate",
                overrides=[
                    "task=segment",
                    "logger=none",
                    "device=cpu",
                    f"output_dir={tmp_path / 'out'}",
                    *overrides,
                ],
            )

    yield _compose
    GlobalHydra.instance().clear()


def _pairs(tmp_path: Path) -> tuple[Path, Path]:
    low, high = tmp_path / "low", tmp_path / "high"
    low.mkdir()
    high.mkdir()
    for i in range(2):
        clean = 20 + 100 * (discs(40, 4, i) > 0)
        noise = np.random.default_rng(i).normal(0, 30, clean.shape)
        tifffile.imwrite(high / f"{i}.tif", clean.astype(np.float32))
        tifffile.imwrite(low / f"{i}.tif", (clean + noise).astype(np.float32))
    return low, high


def test_pairs_are_scored_against_the_high_quality_segmentation(
    compose_eval, seg_ckpt, identity_ckpt, tmp_path
) -> None:  # noqa: ANN001
    low, high = _pairs(tmp_path)
    cfg = compose_eval(
        f"seg_ckpt={seg_ckpt}",
        f"ckpt={identity_ckpt}",
        "data=pairs",
        f"pairs.low={low}",
        f"pairs.high={high}",
        "classical=[gaussian]",
        "gaussian_sigmas=[1.0,2.0]",
    )
    summary = evaluate_segmentation(cfg)
    assert summary["reference"] == "high-quality segmentation" and summary["n_images"] == 2
    methods = {m["method"]: m for m in summary["methods"]}
    assert list(methods) == ["low", "restored", "gaussian"]  # high is the reference itself
    # The identity "restoration" segments exactly like the raw image.
    for key in ("iou", "dice", "pixel_accuracy", "f1"):
        assert methods["restored"][key] == pytest.approx(methods["low"][key])
    assert summary["gaussian_sigma"] in (1.0, 2.0) and summary["best_classical"] == "gaussian"
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk["methods"][0]["method"] == "low"
    rows = (tmp_path / "out" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 3 and rows[0].startswith("image,method,iou")
    assert len(list((tmp_path / "out" / "figures").glob("*.png"))) == 2


def test_labelled_images_are_degraded_and_scored_against_their_labels(
    compose_eval,
    seg_ckpt,
    labelled_folder,
    tmp_path,  # noqa: ANN001
) -> None:
    images, masks = labelled_folder(n=2)
    same = evaluate_segmentation(
        compose_eval(
            f"seg_ckpt={seg_ckpt}",
            f"segment.images={images}",
            f"segment.labels={masks}",
            "segment.crappifier=none",
            "segment.scale=1",
            "figures=false",
        )
    )
    methods = {m["method"]: m for m in same["methods"]}
    assert same["reference"] == "labels" and list(methods)[:2] == ["high", "low"]
    # crappifier=none at scale 1 changes nothing: the low image segments like the high one.
    assert methods["low"]["iou"] == pytest.approx(methods["high"]["iou"])
    shrunk = evaluate_segmentation(
        compose_eval(
            f"seg_ckpt={seg_ckpt}",
            f"segment.images={images}",
            f"segment.labels={masks}",
            "segment.crappifier=none",
            "segment.scale=2",
            "figures=false",
        )
    )
    assert [m["method"] for m in shrunk["methods"]] == ["high", "low", "bicubic"]
    assert shrunk["scale"] == 2


def test_wrong_checkpoints_and_missing_degradation_are_config_errors(
    compose_eval,
    seg_ckpt,
    identity_ckpt,
    labelled_folder,  # noqa: ANN001
) -> None:
    images, masks = labelled_folder(n=2)
    with pytest.raises(ConfigError, match="not a segmentation checkpoint"):
        evaluate_segmentation(compose_eval(f"seg_ckpt={identity_ckpt}", f"segment.images={images}"))
    with pytest.raises(ConfigError, match="set segment.crappifier"):
        evaluate_segmentation(
            compose_eval(f"seg_ckpt={seg_ckpt}", f"segment.images={images}", f"segment.labels={masks}")
        )
    with pytest.raises(ConfigError, match="seg_ckpt has no value"):
        evaluate_segmentation(compose_eval(f"segment.images={images}"))


def test_crappifier_presets_come_from_the_packaged_conf(
    compose_eval,
    seg_ckpt,
    labelled_folder,
    tmp_path,
    monkeypatch,  # noqa: ANN001
) -> None:
    """segment.crappifier names a preset of psr's conf/ as psr/_app carries it (psr.tasks.crosseval.CONF_DIR),
    not of a conf/ next to the source: an installed psr evaluates from any folder."""
    from psr.tasks import crosseval

    conf = tmp_path / "installed_conf"
    (conf / "crappifier").mkdir(parents=True)
    (conf / "crappifier" / "mine.yaml").write_text((CONF / "crappifier" / "none.yaml").read_text())
    monkeypatch.setattr(crosseval, "CONF_DIR", conf)
    images, masks = labelled_folder(n=1)
    common = (f"seg_ckpt={seg_ckpt}", f"segment.images={images}", f"segment.labels={masks}", "figures=false")
    summary = evaluate_segmentation(compose_eval(*common, "segment.crappifier=mine", "segment.scale=1"))
    assert summary["crappifier"] == "mine" and summary["n_images"] == 1
    with pytest.raises(ConfigError, match="segment.crappifier=pssr_em is not a preset"):
        evaluate_segmentation(compose_eval(*common, "segment.crappifier=pssr_em"))


def test_the_segmentation_table_goes_to_wandb_offline(
    compose_eval,
    seg_ckpt,
    tmp_path,
    monkeypatch,  # noqa: ANN001
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    low, high = _pairs(tmp_path)
    summary = evaluate_segmentation(
        compose_eval(
            f"seg_ckpt={seg_ckpt}",
            "data=pairs",
            f"pairs.low={low}",
            f"pairs.high={high}",
            "classical=[]",
            "logger=wandb",
            "figures=false",
        )
    )
    assert summary["wandb"] == "offline"
    runs = list((tmp_path / "out" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["wandb"] == "offline"
