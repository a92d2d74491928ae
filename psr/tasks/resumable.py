"""What the training tasks (``train.py``, ``segment.py``) do around Lightning's ``fit`` so that a run
can be stopped and resumed without losing anything.

* ``check_resume`` / ``check_fits``: the checkpoint given as ``ckpt_path`` is one of this run's model,
  module, scale and channels, with this run's tensor names and shapes; one sentence naming what differs,
  before Lightning reads it;
* ``trainer_extras``: atomic checkpoints (``AtomicCheckpointIO``, unless the trainer config brings its
  own plugins) and no progress bar on a console that is not a terminal (``ProgressLog`` prints lines);
* ``interruptible``: Ctrl-C and SIGTERM (SLURM preemption) stop at a batch boundary, ``SaveOnInterrupt``
  saves ``last.ckpt``, and the entry point's error line says which checkpoint resumes the run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from omegaconf import DictConfig

from psr.faults import Terminated, default_sigterm
from psr.tasks.checkpointing import AtomicCheckpointIO, SaveOnInterrupt
from psr.tasks.errors import ConfigError


def check_resume(ckpt_path: str, run_config: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint to resume from is a psr training checkpoint of this run's model, scale and
    channels (one sentence naming what differs, else); read before any data is."""
    from psr.inference.checkpoint import CheckpointError, check_resumable

    try:
        return check_resumable(ckpt_path, run_config)
    except CheckpointError as err:
        raise ConfigError(str(err)) from err


def check_fits(ckpt: dict[str, Any], ckpt_path: str, run_config: dict[str, Any], module: Any) -> None:
    """The checkpoint's tensors have this run's names and shapes (before Lightning loads them)."""
    from psr.inference.checkpoint import CheckpointError
    from psr.inference.checkpoint import check_fits as _check_fits

    try:
        _check_fits(ckpt, ckpt_path, run_config, {k: v.shape for k, v in module.state_dict().items()})
    except CheckpointError as err:
        raise ConfigError(str(err)) from err


def trainer_extras(cfg: DictConfig) -> dict[str, Any]:
    """Keyword arguments for the ``Trainer`` beside the config's own: atomic checkpoints unless
    ``trainer.plugins`` is set (then those decide); the progress bar only on a terminal unless
    ``trainer.enable_progress_bar`` is set (in a file the bar is noise; ``ProgressLog`` writes lines)."""
    extra: dict[str, Any] = {} if cfg.trainer.get("plugins") else {"plugins": [AtomicCheckpointIO()]}
    if "enable_progress_bar" not in cfg.trainer:
        extra["enable_progress_bar"] = sys.stdout.isatty()
    return extra


@contextmanager
def interruptible(interrupt: SaveOnInterrupt) -> Iterator[None]:
    """Run ``fit`` with Lightning's SIGTERM handling (stop at the next batch boundary) instead of the
    entry point's; turn the way Lightning ends on Ctrl-C or SIGTERM (``sys.exit(1)``, a
    ``SIGTERMException``) into a ``KeyboardInterrupt`` that says which ``last.ckpt`` resumes the run."""
    try:
        with default_sigterm():
            yield
    except (SystemExit, KeyboardInterrupt) as err:
        if interrupt.signal is None:
            raise
        stopped: KeyboardInterrupt = Terminated() if interrupt.signal == "SIGTERM" else KeyboardInterrupt()
        if interrupt.saved is not None:
            stopped.kept = (  # type: ignore[attr-defined]
                f"saved {interrupt.saved} at step {interrupt.step}: resume with ckpt_path={interrupt.saved}"
            )
        raise stopped from err
