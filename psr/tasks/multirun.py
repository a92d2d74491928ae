"""A training job inside a Hydra multirun: its sweep folder and W&B group, and the DDP relaunch that must
start this job alone rather than the whole sweep again."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf, read_write


def sweep_job() -> tuple[Path | None, int | None]:
    """The sweep folder and job number when this job is part of a Hydra multirun, else ``(None, None)``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None, None
    return Path(str(hydra_cfg.sweep.dir)).resolve(), int(hydra_cfg.job.num)


def sweep_info(cfg: DictConfig) -> dict[str, Any]:
    """``{"dir", "group", "job_num"}``: the multirun's folder, this job's number in it, and the group its
    runs share on W&B (``logger.wandb.group`` when set, else the sweep folder's name; ``None`` outside a
    multirun)."""
    sweep_dir, job_num = sweep_job()
    explicit = OmegaConf.select(cfg, "logger.wandb.group", default=None)
    group = str(explicit) if explicit else (sweep_dir.name if sweep_dir is not None else None)
    return {"dir": str(sweep_dir) if sweep_dir is not None else None, "group": group, "job_num": job_num}


@contextmanager
def ddp_children_run_this_job(trainer: L.Trainer) -> Iterator[None]:
    """Make Lightning's DDP relaunch (``strategy=ddp``) start this job alone, in this job's folder.

    Lightning starts ranks 1… by running the script again with ``sys.argv`` plus
    ``hydra.run.dir=<HydraConfig run.dir>``. In a single run that is this run's folder. In a multirun
    ``sys.argv`` holds ``-m`` and the whole grid, and ``run.dir`` is not the job's folder: every child
    would start the sweep again. For the duration of ``fit`` the children are given this job's own
    overrides (a single run) and its folder instead.
    """
    from hydra.core.hydra_config import HydraConfig

    launcher = getattr(trainer.strategy, "launcher", None)
    sweep_dir, _ = sweep_job()
    if sweep_dir is None or type(launcher).__name__ != "_SubprocessScriptLauncher":
        yield
        return
    hydra_cfg = HydraConfig.instance().cfg  # the masked copy {"hydra": ...} the job sees
    assert isinstance(hydra_cfg, DictConfig)
    node = hydra_cfg.hydra
    keep = ("hydra.searchpath", "hydra.job.config", "hydra.verbose", "hydra.job_logging", "hydra/job_logging")
    hydra_overrides = [o for o in node.overrides.hydra if o.split("=", 1)[0].lstrip("+~").startswith(keep)]
    saved_argv, saved_dir = list(sys.argv), str(node.run.dir)
    with read_write(node.run):
        node.run.dir = str(node.runtime.output_dir)
    # hydra.mode=RUN: a job of a sweep config that sets MULTIRUN itself (hparams_search=optuna) must not
    # start the sweep again in every child rank.
    sys.argv = [sys.argv[0], *node.overrides.task, *hydra_overrides, "hydra.mode=RUN"]
    try:
        yield
    finally:
        sys.argv = saved_argv
        with read_write(node.run):
            node.run.dir = saved_dir
