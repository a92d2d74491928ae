"""Launchers of a multirun: parallel local jobs (joblib), SLURM (submitit, composed only), and W&B per job.

``parallel_sweep`` runs two jobs at once with ``hydra/launcher=joblib`` and the W&B logger offline.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import wandb
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from psr.tasks.train import train
from tests.conftest import CONF, TINY, run_train


@pytest.fixture(scope="module")
def parallel_sweep(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """Two seeds as two parallel joblib jobs, logging to W&B offline; the sweep folder."""
    sweep = tmp_path_factory.mktemp("joblib") / "sweep"
    tiny = [o for o in TINY if not o.startswith("logger=")]
    run_train(
        [
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "seed=0,1",
            *tiny,
            "logger=wandb",
            "trainer.max_epochs=1",
            "trainer.enable_model_summary=false",
            f"hydra.sweep.dir={sweep}",
        ],
        cache_dir,
        wandb_mode="offline",
    )
    return sweep


def _runs(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))}


def test_joblib_jobs_finish_in_distinct_folders(parallel_sweep: Path) -> None:
    runs = _runs(parallel_sweep)
    assert sorted(runs) == ["0-rcan-poisson-seed0", "1-rcan-poisson-seed1"]
    assert [s["seed"] for s in runs.values()] == [0, 1]
    assert [s["sweep"]["job_num"] for s in runs.values()] == [0, 1]
    checkpoints = [Path(s["best_checkpoint"]) for s in runs.values()]
    assert [c.parent.parent.name for c in checkpoints] == sorted(runs)
    assert all(c.is_file() for c in checkpoints)


def test_jobs_of_a_multirun_never_share_a_wandb_run(parallel_sweep: Path) -> None:
    runs = _runs(parallel_sweep)
    ids = {}
    for folder, summary in runs.items():
        (offline,) = (parallel_sweep / folder / "wandb").glob("offline-run-*")
        run_id = offline.name.rsplit("-", 1)[1]
        ids[folder] = run_id
        # What the W&B run was created with, read from the live run before it finished.
        info = summary["wandb"]
        assert info["id"] == run_id
        assert info["mode"] == "offline"
        assert info["group"] == parallel_sweep.name == summary["sweep"]["group"]
        assert info["tags"] == ["rcan", "poisson", "x4", f"seed{summary['seed']}"]
        assert info["job_type"] == "train"
        assert info["name"] == f"train-rcan-poisson-x4-seed{summary['seed']}"
        assert Path(info["dir"]).is_relative_to(parallel_sweep / folder)
    assert len(set(ids.values())) == 2


def test_an_explicit_wandb_group_wins(compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("WANDB_MODE", "offline")
    summary = train(compose_cfg("logger=wandb", "logger.wandb.group=my-ablation", "debug=fdr"))
    assert wandb.run is None
    assert summary["wandb"]["group"] == summary["sweep"]["group"] == "my-ablation"
    assert summary["sweep"]["dir"] is None and summary["sweep"]["job_num"] is None
    assert summary["wandb"]["tags"] == ["rcan", "poisson", "x4", "seed42"]


def test_slurm_launcher_follows_the_ddp_trainer() -> None:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(
                "train",
                overrides=[
                    "hydra/launcher=slurm",
                    "trainer=ddp",
                    "trainer.devices=4",
                    "trainer.num_nodes=2",
                    "hydra.launcher.partition=gpu",
                    "hydra.sweep.dir=/sweeps/s1",
                ],
                return_hydra_config=True,
            )
    finally:
        GlobalHydra.instance().clear()
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert isinstance(launcher, dict)
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (2, 4, 4)
    assert launcher["partition"] == "gpu"
    assert launcher["submitit_folder"] == "/sweeps/s1/.submitit/%j"
    slurm = instantiate(cfg.hydra.launcher)  # builds the launcher; nothing is submitted
    assert isinstance(slurm, get_class(launcher["_target_"]))
    assert slurm.params["tasks_per_node"] == 4 and slurm.params["nodes"] == 2
    trainer = instantiate(cfg.trainer, accelerator="cpu", devices=1, num_nodes=1)
    assert type(trainer.strategy).__name__ == "DDPStrategy"
