"""Rebuild a trained generator from a psr checkpoint alone.

A psr checkpoint stores the resolved run configuration (``psr_config``), the name of the submodule that
holds the generator to deploy (``psr_generator``: ``net``, or ``ema_net`` for GAN runs) and the weights.
Nothing pickled: checkpoints load with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn


class CheckpointError(ValueError):
    """A file that is not a readable psr checkpoint, or whose generator does not fit the model."""


@dataclass
class LoadedModel:
    """A generator ready for inference and what prediction needs to know about its training."""

    net: nn.Module
    config: dict[str, Any]
    path: Path

    @property
    def scale(self) -> int:
        return int(getattr(self.net, "scale", self.config.get("scale", 1)))

    @property
    def in_channels(self) -> int:
        return int(getattr(self.net, "in_channels", 1))

    @property
    def out_channels(self) -> int:
        return int(getattr(self.net, "out_channels", 1))

    @property
    def spatial_dims(self) -> int:
        return int(getattr(self.net, "spatial_dims", 2))

    @property
    def percentiles(self) -> tuple[float, float]:
        """The normalisation percentiles the training data used (``data.percentiles``)."""
        low, high = (self.config.get("data") or {}).get("percentiles", (1.0, 99.8))
        return float(low), float(high)

    @property
    def input_smoothing(self) -> float:
        """σ (pixels) of the Gaussian applied before a raw input's percentiles are taken
        (``data.input_smoothing``, ``psr.data.normalise``); 0 for checkpoints that predate it."""
        return float((self.config.get("data") or {}).get("input_smoothing", 0.0))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a psr checkpoint dictionary (weights only), with one clear error for anything else."""
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; expected a .ckpt written by psr's train.py")
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated zip, pickle, random bytes: all "not a checkpoint"
        raise CheckpointError(
            f"checkpoint {path} is not a readable PyTorch checkpoint ({type(err).__name__})"
        ) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(
            f"checkpoint {path} has no state_dict; expected a .ckpt written by psr's train.py"
        )
    return ckpt


def generator_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The deployable generator's weights (``psr_generator``: ``net`` or ``ema_net``), prefix removed."""
    prefix = f"{ckpt.get('psr_generator', 'net')}."
    return {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}


def load_state_into(net: nn.Module, weights: dict[str, torch.Tensor], source: str | Path) -> int:
    """Copy ``weights`` into ``net`` strictly; a clear error names what does not match."""
    expected = net.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(weights) if expected[k].shape != weights[k].shape)
    if missing or unexpected or mismatched:
        detail = (missing or unexpected or mismatched)[:3]
        raise CheckpointError(
            f"checkpoint {source}: its generator does not match the model "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(mismatched)} differently shaped tensors,"
            f" e.g. {detail})"
        )
    net.load_state_dict(weights, strict=True)
    return len(weights)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the generator of a psr checkpoint from its stored config and load its weights (eval mode)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    ckpt = read_checkpoint(path)
    config = ckpt.get("psr_config")
    if not isinstance(config, dict) or "model" not in config:
        raise CheckpointError(
            f"checkpoint {path} carries no psr_config; expected a checkpoint written by psr's train.py"
        )
    try:
        net = instantiate(OmegaConf.create(config["model"]))
    except Exception as err:  # noqa: BLE001 - report which model could not be built
        raise CheckpointError(
            f"checkpoint {path}: cannot rebuild its model {config['model'].get('_target_')}: {err}"
        ) from err
    load_state_into(net, generator_state(ckpt), path)
    net.eval().requires_grad_(False)
    return LoadedModel(net=net.to(device), config=config, path=Path(path))
