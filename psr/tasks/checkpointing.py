"""Checkpoints that are complete or absent, and a resumable one when a run is stopped.

``AtomicCheckpointIO``: Lightning's checkpoint writer, but each checkpoint is serialised in memory (as
Lightning does), written to a temporary file beside its name, flushed to the disk and renamed
(``psr.atomic``): a full disk or a kill leaves the previous checkpoint, never a truncated one, and no
temporary file. ``SaveOnInterrupt`` writes ``last.ckpt`` when Ctrl-C or SIGTERM (SLURM preemption)
stops training, so ``ckpt_path=<run>/checkpoints/last.ckpt`` resumes at the step it stopped.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from psr.atomic import write_atomic

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic and durable (write, fsync, rename).

    Remote paths (``s3://``...) keep Lightning's own writer. An ``OSError`` names the checkpoint.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_atomic(Path(path), buffer.getbuffer())


def _last_checkpoint_path(trainer: L.Trainer) -> Path | None:
    """Where the run's ``last.ckpt`` goes: the folder of its monitor-less checkpoint callback."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor is None and callback.dirpath:
            name = callback.filename or "last"
            return Path(callback.dirpath) / f"{name}{callback.FILE_EXTENSION}"
    return None


class SaveOnInterrupt(Callback):
    """On Ctrl-C or SIGTERM during ``fit``, save a resumable checkpoint as ``last.ckpt`` (the run's
    monitor-less checkpoint), once; ``saved`` is its path, ``signal`` ``Ctrl-C`` or ``SIGTERM``.

    Lightning stops at the next batch boundary on SIGTERM (``SIGTERMException``); Ctrl-C interrupts at
    once. Either way the checkpoint holds the model, optimiser and loop state of the last finished step.
    """

    def __init__(self) -> None:
        self.saved: Path | None = None
        self.signal: str | None = None
        self.step: int | None = None

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if isinstance(exception, SIGTERMException):
            self.signal = "SIGTERM"
        elif isinstance(exception, KeyboardInterrupt):
            from psr.faults import interrupt_name

            self.signal = interrupt_name(exception)
        else:
            return
        path = _last_checkpoint_path(trainer)
        if path is None or trainer.global_step == 0:
            return
        try:
            trainer.save_checkpoint(path)
        except OSError as err:  # a full disk: the previous last.ckpt stays as it was
            log.error("could not save %s after %s: %s", path, self.signal, err)
            return
        self.saved, self.step = path, int(trainer.global_step)
        log.info("%s: saved %s at step %d", self.signal, path, self.step)
