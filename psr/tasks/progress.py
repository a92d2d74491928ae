"""Training progress a user can see where a progress bar cannot show: in ``train.log`` and on a console
that is not a terminal (output redirected to a file, a batch job, ``make``).

``ProgressLog`` logs one line at the start (how many steps the run will take), one every ``every_s``
seconds (step, epoch, loss, speed, time left), one after each validation (the monitored metric) and,
after the first epoch, how long the whole run will take at that speed. On a terminal the lines go to
the log file only: the progress bar already shows them there.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelSummary
from lightning.pytorch.utilities.model_summary import get_human_readable_count

log = logging.getLogger("psr.progress")


def duration(seconds: float) -> str:
    """``1 h 02 min``, ``4 min 05 s``, ``12 s``."""
    if not math.isfinite(seconds):
        return "unknown"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


class _NotOnConsole(logging.Filter):
    """Keep ``psr.progress`` records off a terminal's console handler (the progress bar is there)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(log.name)


def keep_progress_off_terminal() -> None:
    """On a terminal, drop progress lines from the console handlers (file handlers keep them)."""
    if not sys.stdout.isatty():
        return
    for handler in logging.getLogger().handlers:
        console = isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
        if console and not any(isinstance(f, _NotOnConsole) for f in handler.filters):
            handler.addFilter(_NotOnConsole())


class ProgressLog(Callback):
    """Periodic one-line progress in the log: step, epoch, loss, steps/s and time left.

    ``every_s``: seconds between lines (the first comes after ``every_s`` too); 0 logs every step.
    """

    def __init__(self, every_s: float = 30.0) -> None:
        if every_s < 0:
            raise ValueError(f"callbacks.progress_log.every_s={every_s}: expected 0 or more seconds")
        self.every_s = float(every_s)
        self._start = self._last = 0.0
        self._start_step = 0
        self._loss: float | None = None
        self._told_total = False

    @staticmethod
    def _total_steps(trainer: L.Trainer) -> float:
        try:
            return float(trainer.estimated_stepping_batches)
        except Exception:  # noqa: BLE001 - an iterable dataset without a length
            return math.inf

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        keep_progress_off_terminal()
        self._start = self._last = time.monotonic()
        self._start_step = int(trainer.global_step)
        total = self._total_steps(trainer)
        per_epoch = trainer.num_training_batches
        epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs >= 0 else None
        parts = [f"{total:.0f} optimiser steps" if math.isfinite(total) else "an open-ended number of steps"]
        if isinstance(per_epoch, int | float) and math.isfinite(per_epoch):
            parts.append(f"{int(per_epoch)} batches per epoch")
        if epochs is not None:
            parts.append(f"{epochs} epoch(s)")
        resumed = f", resuming at step {self._start_step}" if self._start_step else ""
        log.info("training: %s%s; a time estimate follows the first epoch", ", ".join(parts), resumed)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            self._loss = float(loss.detach())
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        log.info(self.line(trainer, now))

    def line(self, trainer: L.Trainer, now: float) -> str:
        """``step 120/256 (47%), epoch 1/2, loss 0.0123, 1.90 steps/s, 1 min 12 s left``."""
        step = int(trainer.global_step)
        total = self._total_steps(trainer)
        done = step - self._start_step
        rate = done / (now - self._start) if now > self._start and done > 0 else 0.0
        of_total = f"/{total:.0f} ({100 * step / total:.0f}%)" if math.isfinite(total) and total > 0 else ""
        epochs = (
            f"/{trainer.max_epochs}" if trainer.max_epochs is not None and trainer.max_epochs >= 0 else ""
        )
        loss = f", loss {self._loss:.4g}" if self._loss is not None else ""
        left = f", {duration((total - step) / rate)} left" if rate > 0 and math.isfinite(total) else ""
        return f"step {step}{of_total}, epoch {trainer.current_epoch + 1}{epochs}{loss}, {rate:.2f} steps/s{left}"

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._told_total:
            return
        self._told_total = True
        now = time.monotonic()
        total = self._total_steps(trainer)
        done = int(trainer.global_step) - self._start_step
        if done <= 0 or not math.isfinite(total):
            return
        per_step = (now - self._start) / done
        log.info(
            "first epoch: %d steps in %s; the run's %d steps will take about %s in all (%s left)",
            done,
            duration(now - self._start),
            int(total),
            duration(per_step * (total - self._start_step)),
            duration(per_step * (total - int(trainer.global_step))),
        )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if metrics:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()))
            log.info(
                "validation after step %d (epoch %d): %s",
                trainer.global_step,
                trainer.current_epoch + 1,
                shown,
            )


class ModelLine(ModelSummary):
    """Lightning's model summary as one log line (so it reaches ``train.log``), without the FLOPs column
    that Lightning cannot count for these models (it printed "Total FLOPs: 0")."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int = 0,
        **summarize_kwargs: Any,
    ) -> None:
        columns = dict(summary_data)
        parts = [
            f"{name.strip()} {kind.strip()} {params.strip()}"
            for name, kind, params in zip(
                columns.get("Name", []), columns.get("Type", []), columns.get("Params", []), strict=False
            )
        ]
        log.info(
            "model: %s; %s parameters (%s trainable), %.1f MB",
            ", ".join(parts),
            get_human_readable_count(int(total_parameters)),
            get_human_readable_count(int(trainable_parameters)),
            model_size,
        )
