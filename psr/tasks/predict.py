"""The prediction task: a composed ``conf/predict.yaml`` in, a restored image on disk out."""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from psr.inference.checkpoint import CheckpointError
from psr.inference.errors import PredictionError
from psr.inference.predict import predict_file
from psr.tasks.errors import ConfigError

log = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    return OmegaConf.to_object(value) if isinstance(value, DictConfig | ListConfig) else value


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Restore ``cfg.input`` with the model of ``cfg.ckpt`` into ``cfg.output``; return the summary.

    Raises ``ConfigError`` (one sentence) for a missing option, an unreadable or foreign checkpoint, an
    input the model cannot take, or an output that cannot be written; nothing is left at the output then.
    """
    for key in ("ckpt", "input", "output"):
        if OmegaConf.is_missing(cfg, key) or cfg.get(key) in (None, ""):
            raise ConfigError(f"{key} has no value; set it on the command line ({key}=...)")
    torch.manual_seed(int(cfg.get("seed", 0)))
    try:
        summary = predict_file(
            str(cfg.ckpt),
            str(cfg.input),
            str(cfg.output),
            device=str(cfg.get("device", "auto")),
            axes=cfg.get("axes"),
            tile=_plain(cfg.tile),
            overlap=_plain(cfg.overlap),
            batch_size=int(cfg.batch_size),
            window=str(cfg.window),
            tta=bool(cfg.tta),
            denormalize=bool(cfg.denormalize),
            channel=_plain(cfg.get("channel")),
            overwrite=bool(cfg.get("overwrite", False)),
            progress=bool(cfg.get("progress", True)),
        )
    except (PredictionError, CheckpointError) as err:
        raise ConfigError(str(err)) from err
    log.info("prediction summary: %s", summary)
    print(summary_line(summary), flush=True)
    return summary


def summary_line(summary: dict[str, Any]) -> str:
    """One line for the user: what was written, its shape, and how fast."""
    shape = "×".join(str(n) for n in summary["output_shape"])
    return (
        f"psr: wrote {summary['output']} ({summary['output_axes']} {shape}, float32, ×{summary['scale']}) from"
        f" {summary['input']} in {summary['seconds']:.1f} s ({summary['megapixels_per_second']:.2f} input Mpx/s,"
        f" {summary['planes']} plane(s) × {summary['tiles_per_plane']} tile(s), {summary['device']}"
        f"{', TTA' if summary['tta'] else ''})"
    )
