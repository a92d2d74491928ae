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


class RandomState(Callback):
    """Save the random streams of a run in its checkpoints and restore them when it resumes, so that a
    resumed run draws the same degradations as the run that was not interrupted (bit-identical on the
    CPU with any ``data.num_workers``, from end-of-epoch and batch-boundary mid-epoch checkpoints; the
    patches themselves depend on ``(seed, epoch, index)`` alone, ``psr.data.patches``; single-process
    runs only: under DDP the checkpoint holds rank 0's streams alone, and each rank keeps its own fresh
    ones).

    Saved: torch's CPU (and CUDA) generators, NumPy's and Python's global generators, and the training
    module's degradation generator (``_train_generator``, from which ``RestorationModule`` draws the
    crappifier's parameters), as tensors and integers so checkpoints still load with ``weights_only=True``.

    Restored in two steps, because Lightning's start-up draws from torch's generator in between: the
    global states as the checkpoint is read (before Lightning creates the training data iterator, which
    draws its base seed, as the next epoch's iterator of the uninterrupted run does); torch's state as it
    is after that iterator (kept at ``on_fit_start``) and the degradation generator at
    ``on_train_start``, after the module's ``on_fit_start`` and the sanity validation drew from them.
    """

    def __init__(self) -> None:
        self._module: L.LightningModule | None = None
        self._degradation: torch.Tensor | None = None
        self._after_iterator: tuple[torch.Tensor, list[torch.Tensor] | None] | None = None
        self._restored = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._module = pl_module

    def state_dict(self) -> dict[str, Any]:
        import random

        import numpy as np

        _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
        version, internal, gauss_next = random.getstate()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": {
                "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached_gaussian": float(cached),
            },
            "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        generator = getattr(self._module, "_train_generator", None)
        if isinstance(generator, torch.Generator):
            state["degradation"] = generator.get_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        import random

        import numpy as np

        trainer = getattr(self._module, "_trainer", None)
        if trainer is not None and trainer.world_size > 1:
            # The checkpoint holds rank 0's streams only: giving them to every rank would make the ranks
            # draw the same degradations. Under DDP each rank keeps its own, freshly seeded streams.
            log.info(
                "random streams not restored: the checkpoint holds one rank's, this run has %d",
                trainer.world_size,
            )
            return
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        saved = state_dict["numpy"]
        keys = saved["keys"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, saved["pos"], saved["has_gauss"], saved["cached_gaussian"]))
        python = state_dict["python"]
        random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
        self._degradation = state_dict.get("degradation")
        self._restored = True

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._restored:
            cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
            self._after_iterator = (torch.get_rng_state(), cuda)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._after_iterator is not None:
            cpu, cuda = self._after_iterator
            torch.set_rng_state(cpu)
            if cuda is not None:
                torch.cuda.set_rng_state_all(cuda)
        generator = getattr(pl_module, "_train_generator", None)
        if self._degradation is not None and isinstance(generator, torch.Generator):
            generator.set_state(self._degradation)
        self._after_iterator, self._degradation, self._restored = None, None, False
