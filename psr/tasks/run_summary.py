"""The figures of a training run: the mean training loss per epoch, the best validation epoch, the
history, and the line printed at the end (what ``summary.json`` holds; read back by
:class:`psr.reporting.summary.RunSummary`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig

from psr.metrics.keys import (
    DEFAULT_MONITOR,
    TRAIN_LOSS,
    VAL_BASELINE_PSNR,
    VAL_BASELINE_SSIM,
    VAL_PSNR,
    VAL_SSIM,
)
from psr.tasks.common import choice


class EpochLossHistory(Callback):
    """The mean training loss of every epoch (``train/loss`` itself is logged per step), from the loss the
    training step returns; ``means`` maps the epoch to it."""

    def __init__(self) -> None:
        self.means: dict[int, float] = {}
        self._sum = 0.0
        self._count = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sum, self._count = 0.0, 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            self._sum += float(loss.detach())
            self._count += 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._count:
            self.means[int(trainer.current_epoch)] = self._sum / self._count


def trainer_fields(trainer: L.Trainer, monitor: str, wall_time: float) -> dict[str, Any]:
    """What any task's summary says of its trainer: steps, epochs, wall time, the best checkpoint by
    ``monitor`` and the last one, and the device."""
    checkpoints = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]
    best_cb = next((cb for cb in checkpoints if cb.monitor == monitor), None)
    last_cb = next((cb for cb in checkpoints if cb.monitor is None), None)
    return {
        "steps": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "wall_time_s": round(wall_time, 1),
        "best_checkpoint": (best_cb.best_model_path or None) if best_cb else None,
        # With no monitor, a checkpoint callback's "best" is simply the latest save.
        "last_checkpoint": (last_cb.best_model_path or None) if last_cb else None,
        "device": str(trainer.strategy.root_device),
    }


def summarise(
    cfg: DictConfig,
    module: Any,
    trainer: L.Trainer,
    wall_time: float,
    train_losses: Mapping[int, float] | None = None,
) -> dict[str, Any]:
    """The run's figures: the best validation epoch by the monitored metric, with its baseline, and the
    validation history (each epoch with its mean training loss, where ``train_losses`` has it)."""
    monitor = str(cfg.module.get("monitor", DEFAULT_MONITOR))
    history: list[dict[str, float]] = list(module.history)
    epochs: list[dict[str, Any]] = []
    for entry in history:
        row: dict[str, Any] = {**entry, "epoch": int(entry["epoch"]), "step": int(entry["step"])}
        if train_losses and int(entry["epoch"]) in train_losses:
            row[TRAIN_LOSS] = float(train_losses[int(entry["epoch"])])
        epochs.append(row)
    best = max(history, key=lambda h: h.get(monitor, float("-inf"))) if history else {}
    return {
        "model": choice(cfg, "model"),
        "crappifier": choice(cfg, "crappifier"),
        "data": choice(cfg, "data"),
        "scale": int(cfg.scale),
        "seed": int(cfg.seed),
        "monitor": monitor,
        "best": best,
        "gain_db": (best[VAL_PSNR] - best[VAL_BASELINE_PSNR]) if best else None,
        # At scale 1 the interpolation baseline is the input itself (the noisy image, for denoising).
        "baseline": str(cfg.module.get("baseline_mode", "bilinear")) if int(cfg.scale) > 1 else "identity",
        **trainer_fields(trainer, monitor, wall_time),
        "torch": torch.__version__,
        "history": epochs,
    }


def gain_line(summary: dict[str, Any]) -> str:
    """One line a user reads at the end of a run: the model against the interpolation baseline."""
    best = summary.get("best") or {}
    if not best:
        return f"psr: no validation ran ({summary['steps']} steps, {summary['wall_time_s']:.0f} s)"
    ckpt = summary.get("best_checkpoint") or summary.get("last_checkpoint") or "not saved"
    return (
        f"psr: val PSNR {best[VAL_PSNR]:.2f} dB vs {summary['baseline']} baseline {best[VAL_BASELINE_PSNR]:.2f} dB"
        f" ({summary['gain_db']:+.2f} dB), SSIM {best[VAL_SSIM]:.3f} vs {best[VAL_BASELINE_SSIM]:.3f};"
        f" {summary['steps']} steps in {summary['wall_time_s']:.0f} s; checkpoint {ckpt}"
    )
