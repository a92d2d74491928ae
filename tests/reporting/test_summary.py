"""The typed run summary, and the dashboard's templates shipped as package data."""

from __future__ import annotations

import fnmatch
import math
import tomllib
from pathlib import Path

import pytest

from psr.reporting.render import template
from psr.reporting.summary import NotARunSummary, RunSummary

ROOT = Path(__file__).resolve().parents[2]


def _training_summary() -> dict:
    """A summary shaped as ``psr.tasks.train.summarise`` writes it, plus the sections added after training."""
    best = {"epoch": 3, "step": 40, "val/psnr": 27.5, "val/baseline_psnr": 24.0, "val/ssim": 0.81}
    return {
        "model": "rcan",
        "crappifier": "poisson",
        "data": "demo",
        "scale": 4,
        "seed": 1,
        "monitor": "val/psnr",
        "best": best,
        "gain_db": 3.5,
        "baseline": "bilinear",
        "steps": 40,
        "epochs": 4,
        "wall_time_s": 12.3,
        "best_checkpoint": "checkpoints/best.ckpt",
        "last_checkpoint": None,
        "device": "cpu",
        "torch": "2.5",
        "history": [best, {**best, "epoch": 2, "val/psnr": float("nan")}],
        "cross_eval": {"gaussian": {"psnr": 25.0, "baseline_psnr": 22.0, "n": 4}},
        "real_eval": {},
        "test": {"test/psnr": 26.0},
        "sweep": {"dir": "x", "group": None, "job_num": 7},
        "wandb": None,
        "crappifier_config": {"_target_": "psr.crappifiers.PoissonNoise", "photons": [20.0, 200.0]},
    }


def test_a_training_summary_reads_typed() -> None:
    run = RunSummary.from_dict(_training_summary())
    assert (run.model, run.crappifier, run.data, run.scale, run.seed) == ("rcan", "poisson", "demo", 4, 1)
    assert run.best["val/psnr"] == 27.5 and run.gain_db == 3.5
    assert run.job_num == 7 and run.best_checkpoint == "checkpoints/best.ckpt" and run.last_checkpoint is None
    assert run.cross_eval == {"gaussian": {"psnr": 25.0, "baseline_psnr": 22.0, "n": 4.0}}
    assert run.real_eval == {} and run.test == {"test/psnr": 26.0}
    assert run.crappifier_config == {"_target_": "psr.crappifiers.PoissonNoise", "photons": [20.0, 200.0]}
    assert run.history is not None and "val/psnr" not in run.history[1]  # NaN dropped
    assert all(math.isfinite(v) for row in run.history for v in row.values())


def test_absent_sections_are_none_and_defaults_fill_in() -> None:
    run = RunSummary.from_dict({"model": "unet", "crappifier": "none"})
    assert run.history is None and run.cross_eval is None and run.seed is None
    assert run.monitor == "val/psnr" and run.baseline == "bilinear" and run.best == {}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"best": [1, 2]}, "'best' is list; expected an object of numbers"),
        ({"history": {"a": 1}}, "'history' is dict; expected a list of objects"),
        ({"cross_eval": {"gaussian": 3}}, "'cross_eval.gaussian' is int; expected an object of numbers"),
        ({"model": 3}, "'model' is 3; expected a name"),
        ({"crappifier_config": "poisson"}, "'crappifier_config' is str; expected an object"),
    ],
)
def test_a_wrong_type_names_its_key(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        RunSummary.from_dict({**_training_summary(), **change})


def test_an_evaluation_summary_is_not_a_run(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    path.write_text('{"checkpoint": "a.ckpt", "methods": []}')
    with pytest.raises(NotARunSummary):
        RunSummary.read(path)
    path.write_text('{"model": ')
    with pytest.raises(ValueError, match="is not valid JSON"):
        RunSummary.read(path)


def test_every_template_is_package_data() -> None:
    """An installed psr has the page's templates: each file in templates/ matches a package-data glob."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["psr.reporting"]
    folder = ROOT / "psr" / "reporting" / "templates"
    files = sorted(p.relative_to(folder.parent).as_posix() for p in folder.iterdir())
    assert files == ["templates/dashboard.css", "templates/dashboard.html", "templates/dashboard.js"]
    for name in files:
        assert any(fnmatch.fnmatch(name, g) for g in globs), name
    page = template("dashboard.html")
    assert "@CSS@" in page and "@JS@" in page and "@DATA@" in page
