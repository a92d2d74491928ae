"""Experiment loggers: W&B that falls back to offline by itself, CSV, or none."""

from __future__ import annotations

import netrc
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

WANDB_DEFAULT_URL = "https://api.wandb.ai"


def _has_wandb_key(host: str) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wandb_mode() -> str:
    """``WANDB_MODE`` when set; else ``online`` only with an API key and a reachable server, else ``offline``.

    Without this check W&B either prompts for a key or, with a key but no network, waits ~90 s.
    """
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    url = urlparse(os.environ.get("WANDB_BASE_URL", WANDB_DEFAULT_URL))
    host = url.hostname or ""
    if not _has_wandb_key(host):
        return "offline"
    port = url.port or (443 if url.scheme == "https" else 80)
    return "online" if _reachable(host, port) else "offline"


def keep_wandb_files_in(run_dir: Path) -> None:
    """Point every W&B folder at the run folder so a run leaves nothing elsewhere."""
    wandb_dir = run_dir / "wandb"  # W&B writes its run files under WANDB_DIR/wandb
    wandb_dir.mkdir(parents=True, exist_ok=True)
    os.environ["WANDB_DIR"] = str(run_dir)
    for var, sub in (
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_DATA_DIR", "data"),
        ("WANDB_CONFIG_DIR", "config"),
    ):
        os.environ[var] = str(wandb_dir / sub)
    os.environ.setdefault("WANDB_SILENT", "true")


def build_loggers(
    cfg: DictConfig | None, run_dir: Path, run_config: dict[str, Any], group: str | None = None
) -> list[Logger]:
    """Instantiate every logger under ``cfg`` (a mapping name → config); W&B goes offline when it must.

    ``group`` is the W&B group of a W&B logger whose config leaves ``group`` null: the jobs of one
    multirun share it (the sweep folder's name), so W&B shows them together.
    """
    loggers: list[Logger] = []
    if not cfg:
        return loggers
    for node in cfg.values():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        overrides: dict[str, Any] = {}
        if str(node._target_).endswith("WandbLogger"):
            keep_wandb_files_in(run_dir)
            mode = wandb_mode()
            if mode == "disabled":
                continue
            overrides["offline"] = mode == "offline"
            if node.get("group") is None and group:
                overrides["group"] = group
        logger = instantiate(node, **overrides)
        logger.log_hyperparams(run_config)
        loggers.append(logger)
    return loggers


def wandb_run_info(loggers: list[Logger]) -> dict[str, Any] | None:
    """What the W&B run of ``loggers`` was created with (id, group, tags, job type, mode), or ``None``."""
    import sys

    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    if run is None or not any(type(logger).__name__ == "WandbLogger" for logger in loggers):
        return None
    return {
        "id": str(run.id),
        "name": str(run.name),
        "group": run.group or None,
        "tags": [str(t) for t in run.tags or ()],
        "job_type": run.job_type or None,
        "mode": "offline" if run.offline else "online",
        "dir": str(run.dir),
    }


def finish_wandb(failed: bool) -> None:
    """Close the W&B run (if any) so the next job of a multirun starts a new one."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)


def to_plain(cfg: DictConfig) -> dict[str, Any]:
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    return {str(k): v for k, v in container.items()}
