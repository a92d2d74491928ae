"""Rebuild a trained generator from a psr checkpoint alone.

A psr checkpoint stores the resolved run configuration (``psr_config``), the name of the submodule that
holds the generator to deploy (``psr_generator``: ``net``, or ``ema_net`` for GAN runs), the weights, and
the training images' pixel size, unit and channel names (``psr_image``, ``psr.io.metadata``). Nothing pickled: checkpoints load with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from psr.errors import PsrError
from psr.io.metadata import CHECKPOINT_KEY, ImageMetadata
from psr.models.protocol import Generator, check_generator


class CheckpointError(PsrError):
    """A file that is not a readable psr checkpoint, or whose generator does not fit the model."""


@dataclass
class LoadedModel:
    """A generator ready for inference and what prediction needs to know about its training.

    ``image`` describes the high-quality training images (the model's output grid): their pixel size,
    unit and channel names, empty for checkpoints that predate it or data without them."""

    net: nn.Module
    config: dict[str, Any]
    path: Path
    image: ImageMetadata = field(default_factory=ImageMetadata)

    def __post_init__(self) -> None:
        check_generator(self.net, f"the model of {self.path}")  # scale, channels, dims: read below

    @property
    def scale(self) -> int:
        return int(cast(Generator, self.net).scale)

    @property
    def in_channels(self) -> int:
        return int(cast(Generator, self.net).in_channels)

    @property
    def out_channels(self) -> int:
        return int(cast(Generator, self.net).out_channels)

    @property
    def spatial_dims(self) -> int:
        return int(cast(Generator, self.net).spatial_dims)

    @property
    def input_image(self) -> ImageMetadata:
        """What an input should look like: the training images' pixel size, ``scale`` times coarser in
        Y and X (a super-resolution model's input)."""
        return self.image.scaled({"y": self.scale, "x": self.scale})

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
    image = ImageMetadata.from_dict(ckpt.get(CHECKPOINT_KEY))
    return LoadedModel(net=net.to(device), config=config, path=Path(path), image=image)


def _model_name(config: dict[str, Any]) -> str:
    return str((config.get("model") or {}).get("_target_", "an unknown model")).rsplit(".", 1)[-1]


def check_resumable(path: str | Path, run_config: dict[str, Any]) -> dict[str, Any]:
    """Check, before Lightning reads it, that ``path`` is a psr training checkpoint this run can resume.

    ``run_config`` is the resolved config of the run that resumes. Raises ``CheckpointError`` with one
    sentence naming what differs: a file that is not a checkpoint, a weights-only or foreign checkpoint
    (no training state, no ``psr_config``), another model or training module, another scale, other
    channels. Returns the checkpoint dictionary (for ``check_fits``).
    """
    ckpt = read_checkpoint(path)
    if "pytorch-lightning_version" not in ckpt or "loops" not in ckpt:
        raise CheckpointError(
            f"ckpt_path={path} holds weights but no training state; resume from a last.ckpt or best-*.ckpt"
            " that train.py or segment.py wrote"
        )
    config = ckpt.get("psr_config")
    if not isinstance(config, dict) or "model" not in config:
        raise CheckpointError(
            f"ckpt_path={path} was not written by psr's train.py or segment.py (it carries no"
            " psr_config); resume from a psr checkpoint, or start a new run without ckpt_path"
        )
    theirs, ours = config.get("model") or {}, run_config.get("model") or {}
    if theirs.get("_target_") != ours.get("_target_"):
        raise CheckpointError(
            f"ckpt_path={path} holds model {_model_name(config)} but this run trains model"
            f" {_model_name(run_config)}; resume with the checkpoint's model or start a new run"
        )
    their_module = (config.get("module") or {}).get("_target_")
    our_module = (run_config.get("module") or {}).get("_target_")
    if their_module and our_module and their_module != our_module:
        raise CheckpointError(
            f"ckpt_path={path} was trained by {str(their_module).rsplit('.', 1)[-1]} but this run uses"
            f" {str(our_module).rsplit('.', 1)[-1]}; resume with the checkpoint's module (module=...)"
        )
    settings = (
        ("scale", config.get("scale", theirs.get("scale")), run_config.get("scale", ours.get("scale"))),
        ("model.in_channels", theirs.get("in_channels"), ours.get("in_channels")),
        ("model.out_channels", theirs.get("out_channels"), ours.get("out_channels")),
    )
    for option, stored, mine in settings:
        if stored is not None and mine is not None and stored != mine:
            raise CheckpointError(
                f"ckpt_path={path} was trained with {option}={stored} but this run has {option}={mine};"
                f" resume with {option}={stored} or start a new run"
            )
    return ckpt


def check_fits(
    ckpt: dict[str, Any], path: str | Path, run_config: dict[str, Any], shapes: dict[str, torch.Size]
) -> None:
    """Check that the weights of ``ckpt`` (a ``check_resumable`` result) have the names and shapes of
    ``shapes`` (the resuming LightningModule's ``state_dict``); one sentence naming a tensor, else."""
    stored = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items() if hasattr(v, "shape")}
    expected = {k: tuple(v) for k, v in shapes.items()}
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(stored) if expected[k] != stored[k])
    if mismatched:
        key = mismatched[0]
        raise CheckpointError(
            f"ckpt_path={path} does not fit this run's {_model_name(run_config)}: {key} has shape"
            f" {list(stored[key])} in the checkpoint but {list(expected[key])} here ({len(mismatched)}"
            " tensor(s) differ); resume with the checkpoint's model settings"
        )
    if missing or unexpected:
        key = (missing or unexpected)[0]
        where = "is missing from the checkpoint" if missing else "is in the checkpoint but not in this run"
        raise CheckpointError(
            f"ckpt_path={path} does not fit this run's {_model_name(run_config)}: {key} {where}"
            f" ({len(missing)} missing, {len(unexpected)} unexpected tensor(s)); resume with the"
            " checkpoint's model settings"
        )
