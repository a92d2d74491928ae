"""The degradation ablation: a Hydra multirun over crappifiers x models x seeds, each run cross-evaluated.

``run_ablation`` (and the module-scoped ``ablation_sweep`` fixture) runs a 2 x 2 ablation with tiny settings
as one ``train.py -m`` subprocess; other tests (the dashboard's) can reuse the sweep folder it returns.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from psr.inference.checkpoint import load_checkpoint
from psr.metrics import psnr, ssim
from psr.tasks import crosseval
from psr.tasks.errors import ConfigError
from psr.tasks.train import train
from tests.conftest import CONF, TINY, run_train

CRAPPIFIERS = ["poisson", "pssr_fluo"]
MODELS = ["rcan", "unet"]
VAL_SAMPLES = 2  # TINY's data.val_samples


def ablation_command(sweep_dir: Path, *extra: str) -> list[str]:
    """``train.py -m experiment=degradation_ablation`` on a 2 x 2 grid, one seed, tiny settings."""
    tiny = [o for o in TINY if not o.startswith("logger=")]
    return [
        "-m",
        "experiment=degradation_ablation",
        f"ablation.crappifiers=[{','.join(CRAPPIFIERS)}]",
        f"ablation.models=[{','.join(MODELS)}]",
        "ablation.seeds=[0]",
        *tiny,
        "logger=csv",
        "trainer.max_epochs=1",
        "trainer.enable_model_summary=false",
        f"hydra.sweep.dir={sweep_dir}",
        *extra,
    ]


def run_ablation(sweep_dir: Path, cache_dir: Path) -> Path:
    """Run the tiny 2 x 2 ablation into ``sweep_dir`` (one subprocess); return ``sweep_dir``."""
    run_train(ablation_command(sweep_dir), cache_dir)
    return sweep_dir


@pytest.fixture(scope="module")
def ablation_sweep(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """The sweep folder of one tiny 2 crappifiers x 2 models ablation."""
    return run_ablation(tmp_path_factory.mktemp("ablation") / "sweep", cache_dir)


def summaries(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/summary.json"))}


def test_every_run_of_the_grid_has_its_folder_and_a_full_cross_matrix_row(ablation_sweep: Path) -> None:
    runs = summaries(ablation_sweep)
    assert len(runs) == 4
    grid = {(s["crappifier"], s["model"]) for s in runs.values()}
    assert grid == {(c, m) for c in CRAPPIFIERS for m in MODELS}
    for folder, summary in runs.items():
        # Folder names carry the job number, the model, the crappifier and the seed.
        assert folder.endswith(f"-{summary['model']}-{summary['crappifier']}-seed0")
        assert summary["seed"] == 0 and summary["scale"] == 4
        assert summary["sweep"] == {
            "dir": str(ablation_sweep.resolve()),
            "group": ablation_sweep.name,
            "job_num": int(folder.split("-")[0]),
        }
        assert sorted(summary["cross_eval"]) == sorted(CRAPPIFIERS)
        for scores in summary["cross_eval"].values():
            assert set(scores) == {"psnr", "ssim", "baseline_psnr", "baseline_ssim", "n"}
            assert scores["n"] == VAL_SAMPLES
            assert all(np.isfinite(scores[k]) for k in ("psnr", "ssim", "baseline_psnr", "baseline_ssim"))
        assert summary["real_eval"] == {}
        (entry,) = summary["history"]
        assert entry["epoch"] == 0 and entry["step"] == 2
        assert {"val/psnr", "val/ssim", "val/baseline_psnr", "val/baseline_ssim", "val/loss"} <= set(entry)
        assert np.isfinite(entry["train/loss"])
        assert Path(summary["eval_checkpoint"]).parent.parent == ablation_sweep / folder
    # The same degradations with the same seeds: the baseline of a test degradation is the same in every run.
    for name in CRAPPIFIERS:
        baselines = {round(s["cross_eval"][name]["baseline_psnr"], 4) for s in runs.values()}
        assert len(baselines) == 1
    assert len({s["eval_checkpoint"] for s in runs.values()}) == 4


def _recompute(ckpt: str, crappifier_cfg: dict, scale: int) -> dict[str, float]:
    """Score a checkpoint's generator by hand: its validation patches, the validation seeds, per-image
    PSNR/SSIM of the model and of bilinear upsampling."""
    model = load_checkpoint(ckpt)
    config = model.config
    datamodule = instantiate(OmegaConf.create(config["data"]))
    datamodule.prepare_data()
    datamodule.setup("fit")
    crappifier = instantiate(OmegaConf.create({"scale": scale, "c": crappifier_cfg}).c)
    val_seed = int(config["module"]["val_seed"])
    model_psnr, model_ssim, base_psnr = [], [], []
    for i, clean in enumerate(datamodule.val_dataloader()):
        low = crappifier(clean, torch.Generator().manual_seed(val_seed * 100_003 + i))
        with torch.no_grad():
            pred = model.net(low)
        base = torch.nn.functional.interpolate(low, scale_factor=scale, mode="bilinear", align_corners=False)
        model_psnr += psnr(pred, clean).tolist()
        model_ssim += ssim(pred, clean).tolist()
        base_psnr += psnr(base, clean).tolist()
    return {
        "psnr": float(np.mean(model_psnr)),
        "ssim": float(np.mean(model_ssim)),
        "baseline_psnr": float(np.mean(base_psnr)),
        "n": len(model_psnr),
    }


def test_cross_entries_agree_with_an_independent_recomputation(ablation_sweep: Path) -> None:
    runs = summaries(ablation_sweep)
    summary = next(s for s in runs.values() if s["model"] == "rcan" and s["crappifier"] == "poisson")
    # Own degradation: the checkpoint is the best epoch, so validation itself measured the same numbers.
    own = summary["cross_eval"]["poisson"]
    assert own["psnr"] == pytest.approx(summary["best"]["val/psnr"], abs=1e-4)
    assert own["ssim"] == pytest.approx(summary["best"]["val/ssim"], abs=1e-5)
    assert own["baseline_psnr"] == pytest.approx(summary["best"]["val/baseline_psnr"], abs=1e-4)
    ckpt = summary["eval_checkpoint"]
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)["psr_config"]
    by_hand = _recompute(ckpt, stored["crappifier"], 4)
    for key in ("psnr", "ssim", "baseline_psnr", "n"):
        assert own[key] == pytest.approx(by_hand[key], abs=1e-4)
    # Another degradation: the preset file, read without Hydra's compose API.
    other = OmegaConf.to_container(OmegaConf.load(CONF / "crappifier" / "pssr_fluo.yaml"))
    by_hand = _recompute(ckpt, other, 4)  # type: ignore[arg-type]
    for key in ("psnr", "ssim", "baseline_psnr", "n"):
        assert summary["cross_eval"]["pssr_fluo"][key] == pytest.approx(by_hand[key], abs=1e-4)


def test_the_grid_is_defined_once() -> None:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(
                "train",
                overrides=["experiment=degradation_ablation", "ablation.crappifiers=[camera,gaussian]"],
                return_hydra_config=True,
            )
    finally:
        GlobalHydra.instance().clear()
    assert OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True) == {
        "crappifier": "camera,gaussian",
        "model": "rcan,unet",
        "seed": "0,1",
    }
    assert list(cfg.cross_eval.crappifiers) == ["camera", "gaussian"]
    subdir = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["subdir"]  # type: ignore[index]
    assert subdir.endswith(
        "-${hydra.runtime.choices.crappifier}-seed${seed}${psr.swept:${hydra.overrides.task}}"
    )


def test_a_job_outside_the_grid_is_refused(compose_cfg) -> None:  # noqa: ANN001
    cfg = compose_cfg("experiment=degradation_ablation", "crappifier=gaussian")
    with pytest.raises(ConfigError, match=r"crappifier=gaussian is not in ablation\.crappifiers="):
        crosseval.check_ablation(cfg, {"crappifier": "gaussian", "model": "rcan"})
    cfg = compose_cfg("experiment=degradation_ablation", "seed=7")
    with pytest.raises(ConfigError, match=r"seed=7 is not in ablation\.seeds=\['0', '1'\]"):
        crosseval.check_ablation(cfg, {"crappifier": "poisson", "model": "rcan"})
    crosseval.check_ablation(
        compose_cfg("experiment=degradation_ablation", "seed=1"), {"crappifier": "camera", "model": "unet"}
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "cross_eval.crappifiers=[poisson,nope]",
            "cross_eval.crappifiers names 'nope', which is not a crappifier",
        ),
        ("cross_eval.crappifiers=[poisson,poisson]", "cross_eval.crappifiers lists 'poisson' twice"),
        ("cross_eval.real_pairs=[nope]", "cross_eval.real_pairs names 'nope', which is not a real pair set"),
    ],
)
def test_bad_test_degradations_fail_before_training(compose_cfg, override: str, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match=message):
        train(compose_cfg(override, "data.path=/no/such/store.zarr", "data=zarr"))


def test_plugin_crappifiers_and_real_pairs(compose_cfg, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from tests.crappifiers.test_plugins import MODULE, install_fake_distribution

    monkeypatch.syspath_prepend(str(install_fake_distribution(tmp_path / "site")))
    rng = np.random.default_rng(0)
    for k in range(2):  # two tiny real pairs: low 16² and high 64² (scale 4)
        high = rng.random((64, 64)).astype(np.float32)
        (tmp_path / "low").mkdir(exist_ok=True)
        (tmp_path / "high").mkdir(exist_ok=True)
        tifffile.imwrite(tmp_path / "high" / f"{k}.tif", high)
        tifffile.imwrite(tmp_path / "low" / f"{k}.tif", high.reshape(16, 4, 16, 4).mean((1, 3)))
    try:
        summary = train(
            compose_cfg(
                "trainer.max_epochs=1",
                "cross_eval.crappifiers=[poisson,areabin]",
                "cross_eval.real_pairs=[pairs]",
                f"cross_eval.real_pairs_overrides=['pairs.low={tmp_path / 'low'}','pairs.high={tmp_path / 'high'}']",
            )
        )
    finally:
        sys.modules.pop(MODULE, None)
    assert sorted(summary["cross_eval"]) == ["areabin", "poisson"]
    # The plugin's area binning without noise is what the bilinear baseline sees differently from Poisson.
    assert (
        summary["cross_eval"]["areabin"]["baseline_psnr"] > summary["cross_eval"]["poisson"]["baseline_psnr"]
    )
    real = summary["real_eval"]["pairs"]
    evaluation = json.loads((tmp_path / "run" / "real_eval" / "pairs" / "summary.json").read_text())
    methods = {m["method"]: m for m in evaluation["methods"]}
    assert real == {
        "psnr": pytest.approx(methods["model"]["psnr"]),
        "ssim": pytest.approx(methods["model"]["ssim"]),
        "baseline_psnr": pytest.approx(methods["bilinear"]["psnr"]),
        "baseline_ssim": pytest.approx(methods["bilinear"]["ssim"]),
        "n": 2,
    }
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["real_eval"] == json.loads(json.dumps(summary["real_eval"]))


def test_the_report_of_the_ablation_holds_its_numbers(ablation_sweep: Path, tmp_path: Path) -> None:
    """The acceptance path: the ablation's sweep folder → scripts/report.py's HTML → the same numbers as the
    runs' summary.json files (rendered in headless Chromium when it is installed)."""
    from psr.reporting.dashboard import ablation, collect_runs, write_report
    from tests.reporting.test_dashboard import CHROMIUM, _render

    summaries = [json.loads(p.read_text()) for p in sorted(ablation_sweep.glob("*/summary.json"))]
    assert len(summaries) == len(CRAPPIFIERS) * len(MODELS)
    runs = collect_runs(ablation_sweep)
    for metric in ("psnr", "ssim"):
        matrix = ablation(runs, metric)
        for s in summaries:
            for test, scores in s["cross_eval"].items():
                cell = matrix.cells[(s["model"], s["crappifier"], f"synthetic:{test}")]
                assert cell.mean == pytest.approx(scores[metric], abs=1e-9)
    page = write_report(ablation_sweep)
    if CHROMIUM is None:
        pytest.skip("chromium is not installed: the matrix was checked, the rendering is not")
    dom, errors = _render(page, tmp_path)
    assert errors == []
    cells = [c for c in dom.cells if c["data-metric"] == "psnr" and c["data-role"] == "model"]
    assert len(cells) == len(MODELS) * len(CRAPPIFIERS) * len(CRAPPIFIERS)
    by_key = {
        (s["model"], s["crappifier"], t): v["psnr"] for s in summaries for t, v in s["cross_eval"].items()
    }
    for cell in cells:
        assert cell["text"] == f"{by_key[(cell['data-model'], cell['data-train'], cell['data-test'])]:.2f}"


def test_cross_eval_without_clean_validation_fails_before_training(compose_cfg, tmp_path: Path) -> None:  # noqa: ANN001
    """data.val_fraction=0 leaves no clean validation patch to degrade: one error before any step."""
    cfg = compose_cfg("cross_eval.crappifiers=[poisson]", "data.val_fraction=0", "logger=none")
    with pytest.raises(ConfigError, match=r"degrades clean validation patches, but data=demo has none"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()
