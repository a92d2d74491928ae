"""What every task shares: quiet logs, a config group's choice, required values and instantiation with
one-sentence errors, atomic JSON, and the blank-patch check of a degradation."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from psr.atomic import write_atomic
from psr.tasks.errors import ConfigError


def quiet_duplicate_logs() -> None:
    """Lightning adds its own console handler; under Hydra the root handlers already print (and file) it."""
    root = logging.getLogger()
    if root.handlers:
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).handlers.clear()
    warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\)")
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropAdverts) for f in rank_zero.filters):
        rank_zero.addFilter(_DropAdverts())


class _DropAdverts(logging.Filter):
    """Drop Lightning's product tips, and its note that psr's one-line model summary replaces its own,
    from the run log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "Tip:" not in message and "Skipping setting a default `ModelSummary`" not in message


def choice(cfg: DictConfig, group: str) -> str:
    """The command-line choice of a config group (e.g. ``rcan``), when Hydra recorded it."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return str(HydraConfig.get().runtime.choices.get(group, group))
    except (ValueError, AttributeError):
        return str(cfg.get(group, {}).get("_target_", group)).rsplit(".", 1)[-1]


def select_required(cfg: DictConfig, key: str) -> Any:
    """``cfg[key]`` (dotted), a missing mandatory value as one ``ConfigError`` naming the key."""
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=True)
    except MissingMandatoryValue as err:
        raise ConfigError(f"{key} has no value; set it on the command line ({key}=...)") from err


def plain(value: Any) -> Any:
    """A config node as plain Python (lists, dicts); anything else as it is."""
    return OmegaConf.to_object(value) if OmegaConf.is_config(value) else value


def instantiate_node(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` whose failures become one ``ConfigError`` naming the config key."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__ or err
        raise ConfigError(f"{key}: {cause}") from err
    except MissingMandatoryValue as err:
        raise ConfigError(
            f"{err.full_key or key} has no value; set it on the command line ({err.full_key}=...)"
        ) from err


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON under a temporary name, then rename: never a half-written summary."""
    write_atomic(path, json.dumps(value, indent=2) + "\n")


def patch_shape(patch_sizes: Sequence[int]) -> list[int]:
    """The spatial shape of one patch: a single size is a square (2D) patch."""
    return list(patch_sizes) * 2 if len(patch_sizes) == 1 else list(patch_sizes)


def check_blank_patch(crappifier: Any, what: str, patch: Sequence[int], channels: int, scale: int) -> None:
    """Degrade one blank patch ``(1, channels, *patch)`` before any data is read: a kernel larger than the
    patch, or a pipeline whose output is not the patch divided by ``scale`` in Y and X, fails here as one
    ``ConfigError`` that starts with ``what`` (the config key naming the crappifier)."""
    if not patch:
        return
    shape = (1, channels, *patch)
    try:
        with torch.no_grad():
            out = crappifier(torch.full(shape, 0.5), torch.Generator().manual_seed(0))
    except ValueError as err:
        raise ConfigError(f"{what} on a {list(shape[2:])} patch: {err}") from err
    expected = (*shape[:-2], shape[-2] // scale, shape[-1] // scale)
    if tuple(out.shape) != expected:
        raise ConfigError(
            f"{what} turns a patch of shape {list(shape)} into {list(out.shape)};"
            f" expected {list(expected)} (the patch divided by the scale {scale})"
        )
