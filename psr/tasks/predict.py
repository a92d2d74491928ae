"""The prediction task: a composed ``conf/predict.yaml`` in, a restored image on disk out (or, with
``watch=true``, every image that appears in a folder, restored as it appears)."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from psr.inference.checkpoint import CheckpointError, load_checkpoint
from psr.inference.errors import PredictionError
from psr.inference.predict import DEFAULT_MEMORY_BUDGET, predict_file, resolve_device, watch_folder
from psr.tasks.errors import ConfigError

log = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    return OmegaConf.to_object(value) if isinstance(value, DictConfig | ListConfig) else value


def _options(cfg: DictConfig) -> dict[str, Any]:
    """``predict_image``'s options from the config."""
    return {
        "tile": _plain(cfg.tile),
        "overlap": _plain(cfg.overlap),
        "batch_size": _plain(cfg.get("batch_size", "auto")),
        "window": str(cfg.window),
        "tta": bool(cfg.tta),
        "denormalize": bool(cfg.denormalize),
        "channel": _plain(cfg.get("channel")),
        "overwrite": bool(cfg.get("overwrite", False)),
        "progress": bool(cfg.get("progress", True)),
        "memory_budget": _plain(cfg.get("memory_budget", DEFAULT_MEMORY_BUDGET)),
        "compile": bool(cfg.get("compile", False)),
    }


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Restore ``cfg.input`` with the model of ``cfg.ckpt`` into ``cfg.output``; return the summary.

    With ``watch=true``, ``input`` and ``output`` are folders: each image that appears in ``input`` is
    restored into ``output`` until ``watch_timeout`` seconds pass without one (``watch_folder``).
    Raises ``ConfigError`` (one sentence) for a missing option, an unreadable or foreign checkpoint, an
    input the model cannot take, or an output that cannot be written; nothing is left at the output then.
    """
    for key in ("ckpt", "input", "output"):
        if OmegaConf.is_missing(cfg, key) or cfg.get(key) in (None, ""):
            raise ConfigError(f"{key} has no value; set it on the command line ({key}=...)")
    torch.manual_seed(int(cfg.get("seed", 0)))
    try:
        if bool(cfg.get("watch", False)):
            return _watch(cfg)
        summary = predict_file(
            str(cfg.ckpt),
            str(cfg.input),
            str(cfg.output),
            device=str(cfg.get("device", "auto")),
            axes=cfg.get("axes"),
            **_options(cfg),
        )
    except (PredictionError, CheckpointError) as err:
        raise ConfigError(str(err)) from err
    except OSError as err:  # a full disk, an unwritable folder: name the output (writes name no file)
        if err.filename is None and err.errno is not None:
            raise OSError(err.errno, err.strerror or os.strerror(err.errno), str(cfg.output)) from err
        raise
    log.info("prediction summary: %s", summary)
    print(summary_line(summary), flush=True)
    return summary


def _watch(cfg: DictConfig) -> dict[str, Any]:
    model = load_checkpoint(str(cfg.ckpt), resolve_device(str(cfg.get("device", "auto"))))
    options = _options(cfg)
    options["progress"] = False  # one log line per file instead
    summary = watch_folder(
        model,
        str(cfg.input),
        str(cfg.output),
        suffix=str(cfg.get("watch_suffix", ".tif")),
        interval=float(cfg.get("watch_interval", 0.5)),
        timeout=float(cfg.get("watch_timeout", 60)),
        axes=cfg.get("axes"),
        **options,
    )
    print(
        f"psr: watched {summary['input']}: restored {summary['files']} file(s), {summary['frames']} frame(s)"
        f" into {summary['output']} ({summary['frames_per_second']:.2f} frames/s while predicting"
        f"{', ' + str(len(summary['skipped'])) + ' skipped' if summary['skipped'] else ''})",
        flush=True,
    )
    return summary


def summary_line(summary: dict[str, Any]) -> str:
    """One line for the user: what was written, its shape, and how fast."""
    shape = "×".join(str(n) for n in summary["output_shape"])
    series = f", {summary['frames_per_second']:.2f} frames/s" if summary["planes"] > 1 else ""
    return (
        f"psr: wrote {summary['output']} ({summary['output_axes']} {shape}, float32, ×{summary['scale']}) from"
        f" {summary['input']} in {summary['seconds']:.1f} s ({summary['megapixels_per_second']:.2f} input Mpx/s,"
        f" {summary['output_megapixels_per_second']:.2f} output Mpx/s{series},"
        f" {summary['planes']} plane(s) × {summary['tiles_per_plane']} tile(s), batch {summary['batch_size']},"
        f" {summary['device']}{', TTA' if summary['tta'] else ''})"
    )
