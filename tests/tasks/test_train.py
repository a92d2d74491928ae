"""End-to-end tests of the training task: every model and crappifier trains, errors are clear."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from psr.io.omezarr import write_ome_zarr_collection
from psr.tasks.errors import ConfigError
from psr.tasks.train import train
from tests.conftest import ROOT, config_names

FDR = "debug=fdr"


@pytest.fixture(scope="module")
def volume_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small 3D images (c, z, y, x) for the 3D models."""
    rng = np.random.default_rng(0)
    images = [rng.random((1, 8, 64, 64)).astype(np.float32) for _ in range(2)]
    return write_ome_zarr_collection(tmp_path_factory.mktemp("vol") / "vol.ome.zarr", images, "czyx")


def data_for(compose_cfg, model: str, volume_store: Path) -> list[str]:  # noqa: ANN001
    """3D models train on 3D patches of a volume store; 2D models on the default demo data."""
    if int(getattr(instantiate(compose_cfg(f"model={model}").model), "spatial_dims", 2)) != 3:
        return []
    return [
        "data=zarr",
        f"data.path={volume_store}",  # 3D patches: data.spatial_dims follows model.dims
        "data.patch_size=[4,32,32]",
        "data.num_workers=0",
    ]


@pytest.mark.parametrize("model", config_names("model"))
def test_every_model_trains_with_the_default_crappifier(compose_cfg, model: str, volume_store: Path) -> None:  # noqa: ANN001
    summary = train(compose_cfg(f"model={model}", FDR, *data_for(compose_cfg, model, volume_store)))
    assert summary["steps"] == 1
    assert np.isfinite(summary["best"]["val/psnr"])


@pytest.mark.parametrize("crappifier", config_names("crappifier"))
def test_every_crappifier_trains_with_the_default_model(compose_cfg, crappifier: str) -> None:  # noqa: ANN001
    summary = train(compose_cfg(f"crappifier={crappifier}", FDR))
    assert summary["crappifier"] == crappifier
    assert np.isfinite(summary["best"]["val/baseline_psnr"])


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_scale_is_defined_once(compose_cfg, scale: int) -> None:  # noqa: ANN001
    cfg = compose_cfg(f"scale={scale}")
    assert instantiate(cfg.crappifier).scale == scale
    assert instantiate(cfg.model).scale == scale
    assert cfg.data.scale == scale


@pytest.mark.parametrize(
    "override",
    [
        f"{group}={name}"
        for group in (
            "logger",
            "trainer",
            "loss",
            "module",
            "discriminator",
            "gan_loss",
            "callbacks",
            "experiment",
            "debug",
        )
        for name in config_names(group)
    ],
)
def test_every_config_composes_and_instantiates(compose_cfg, override: str) -> None:  # noqa: ANN001
    cfg = compose_cfg(override)
    keys = ["crappifier", "model", "loss", "trainer"]
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        keys.remove("trainer")  # composes here; instantiating it needs the GPU it asks for
    keys += [key for key in ("discriminator", "gan_loss") if cfg.get(key)]
    for key in keys:
        assert instantiate(cfg[key]) is not None
    for node in (cfg.get("callbacks") or {}).values():
        assert instantiate(node) is not None


def test_run_writes_summary_checkpoints_and_panels(compose_cfg, tmp_path: Path) -> None:  # noqa: ANN001
    cfg = compose_cfg("trainer.max_epochs=2", "logger=csv")
    summary = train(cfg)
    run = tmp_path / "run"
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert summary["steps"] == 4 and summary["epochs"] == 2
    for key in ("val/psnr", "val/ssim", "val/baseline_psnr", "val/baseline_ssim"):
        assert np.isfinite(summary["best"][key])
    assert summary["gain_db"] == pytest.approx(
        summary["best"]["val/psnr"] - summary["best"]["val/baseline_psnr"]
    )
    assert sorted(p.name for p in (run / "panels").glob("*.png")) == ["val_epoch000.png", "val_epoch001.png"]
    assert (run / "csv" / "metrics.csv").read_text().count("val/psnr") >= 1
    ckpt = torch.load(summary["best_checkpoint"], map_location="cpu", weights_only=True)
    assert ckpt["psr_config"]["model"]["_target_"] == "psr.models.rcan.RCAN"
    assert ckpt["psr_config"]["scale"] == 4
    assert Path(summary["last_checkpoint"]).is_file()
    # The validation history, each epoch with its mean training loss; no sweep, no cross-evaluation.
    assert [(h["epoch"], h["step"]) for h in summary["history"]] == [(0, 2), (1, 4)]
    assert all(np.isfinite(h["train/loss"]) and np.isfinite(h["val/loss"]) for h in summary["history"])
    assert summary["best"] in [{k: v for k, v in h.items() if k != "train/loss"} for h in summary["history"]]
    assert summary["sweep"] == {"dir": None, "group": None, "job_num": None}
    assert summary["cross_eval"] == {} and summary["real_eval"] == {}


def test_resume_continues_the_step_count(compose_cfg, tmp_path: Path) -> None:  # noqa: ANN001
    first = train(compose_cfg("trainer.max_epochs=1"))
    assert first["steps"] == 2
    last = first["last_checkpoint"]
    resumed = train(compose_cfg("trainer.max_epochs=3", f"ckpt_path={last}"))
    assert resumed["steps"] == 6
    assert resumed["epochs"] == 3
    # The validation history of the first run is carried over by the checkpoint.
    assert [h["epoch"] for h in resumed_history(resumed)] == [0, 1, 2]


def resumed_history(summary: dict) -> list[dict]:
    ckpt = torch.load(summary["last_checkpoint"], map_location="cpu", weights_only=True)
    return ckpt["psr_history"]


def _nan_store(tmp_path: Path) -> Path:
    bad = np.full((1, 64, 64), np.nan, np.float32)
    good = np.random.default_rng(0).random((1, 64, 64)).astype(np.float32)
    return write_ome_zarr_collection(tmp_path / "nan.ome.zarr", [good, bad], "cyx")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.patch_size=30"], "data.patch_size=30 is not divisible by the scale 4"),
        (["model.scale=2"], "model.scale=2 but crappifier=poisson downsamples by 4"),
        (["data=zarr", "data.path=/no/such/store.zarr"], "data path '/no/such/store.zarr' does not exist"),
        (["crappifier.steps.1.photons=-5"], "photons must be > 0"),
        (["model.in_channels=3"], "the data has 1 channel"),
        (
            ["model.dims=3", "data.spatial_dims=2"],
            "model=rcan takes 3D inputs but data=demo gives 2D patches",
        ),
        (["ckpt_path=/no/such.ckpt"], "ckpt_path=/no/such.ckpt does not exist"),
    ],
)
def test_bad_config_fails_before_training(compose_cfg, overrides: list[str], message: str) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        train(compose_cfg(*overrides))


def test_missing_vgg_weights_fail_before_training(compose_cfg, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    with pytest.raises(ConfigError, match="loss=perceptual: .*vgg19"):
        train(compose_cfg("loss=perceptual"))
    with pytest.raises(ConfigError, match="vgg19"):
        train(compose_cfg("module=gan", "discriminator=patchgan", "module.perceptual_weight=1.0"))


def test_all_nan_image_fails_before_training(compose_cfg, tmp_path: Path) -> None:  # noqa: ANN001
    store = _nan_store(tmp_path)
    with pytest.raises(ConfigError, match="img_001.* is all NaN"):
        train(compose_cfg("data=zarr", f"data.path={store}", "data.patch_size=32", "data.num_workers=0"))


def test_wandb_runs_offline_in_the_run_folder_and_always_finishes(
    compose_cfg, tmp_path: Path, monkeypatch
) -> None:  # noqa: ANN001
    import wandb

    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    train(compose_cfg("logger=wandb", FDR))
    assert wandb.run is None
    offline = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(offline) == 1

    # A failing run still closes its W&B run, so the next job of a multirun gets a new one.
    from psr.modules.restoration import RestorationModule

    def boom(self, batch, batch_idx):  # noqa: ANN001, ANN202
        raise RuntimeError("boom")

    monkeypatch.setattr(RestorationModule, "training_step", boom)
    with pytest.raises(RuntimeError, match="boom"):
        train(compose_cfg("logger=wandb", FDR))
    assert wandb.run is None
    assert len(list((tmp_path / "run" / "wandb").glob("offline-run-*"))) == 2


def _run_cli(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PSR_CACHE_DIR": str(cache), "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_cli_config_error_is_one_sentence_and_exit_code_2(tmp_path: Path, cache_dir: Path) -> None:
    result = _run_cli(
        "data.patch_size=30", "logger=none", f"hydra.run.dir={tmp_path / 'run'}", cache=cache_dir
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: data.patch_size=30 is not divisible by the scale 4: pick a patch size that is a multiple of 4"
    ]
    assert "Traceback" not in result.stderr


def test_cli_unknown_choice_lists_the_options(tmp_path: Path, cache_dir: Path) -> None:
    result = _run_cli("model=nope", f"hydra.run.dir={tmp_path / 'run'}", cache=cache_dir)
    assert result.returncode != 0
    assert "Could not find 'model/nope'" in result.stderr
    for name in config_names("model"):
        assert name in result.stderr.split("Available options in 'model'")[1]


def test_multi_frame_model_trains_on_frame_windows(compose_cfg, tmp_path: Path) -> None:  # noqa: ANN001
    """PSSR multi-frame: 5 neighbouring frames in, the centre frame out."""
    rng = np.random.default_rng(0)
    stacks = [rng.random((7, 1, 64, 64)).astype(np.float32) for _ in range(2)]
    store = write_ome_zarr_collection(tmp_path / "movie.ome.zarr", stacks, "tcyx")
    summary = train(
        compose_cfg(
            "data=zarr",
            f"data.path={store}",
            "data.frames=5",
            "data.patch_size=32",
            "data.num_workers=0",
            "model.in_channels=5",
            "crappifier=pssr_fluo",
            "trainer.max_epochs=1",
        )
    )
    assert np.isfinite(summary["best"]["val/psnr"]) and np.isfinite(summary["best"]["val/baseline_psnr"])
