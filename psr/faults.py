"""Faults from outside the program, turned into what a user can act on.

``stop_on_sigterm()`` makes SIGTERM (what ``kill``, SLURM preemption and container shutdowns send) behave
like Ctrl-C: a ``KeyboardInterrupt`` in the main thread, so the clean-up that Ctrl-C already runs (staged
outputs removed, checkpoints saved) runs for it too. ``os_error_sentence`` turns the storage errors a
user can fix (a full disk, a folder without write permission, a read-only file system) into one sentence
naming the path and what is needed. Usable without Hydra: ingest, prediction and training share them.
"""

from __future__ import annotations

import errno
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType


class Terminated(KeyboardInterrupt):
    """The ``KeyboardInterrupt`` raised for SIGTERM: handled like Ctrl-C, told apart in messages."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"signal {signal.Signals(signum).name}")


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Terminated`` (a ``KeyboardInterrupt``) in the main thread.

    Outside the main thread (where Python cannot set handlers) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def default_sigterm() -> Iterator[None]:
    """Within the block SIGTERM has its default handler again, so that a library that installs its own
    only when none is set (Lightning's trainer: it stops at the next batch boundary) takes over."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupt_name(err: BaseException) -> str:
    """``SIGTERM`` for a ``Terminated``, else ``Ctrl-C``."""
    return "SIGTERM" if isinstance(err, Terminated) else "Ctrl-C"


def interrupt_exit_code(err: BaseException) -> int:
    """The shell's convention: 128 + the signal number (143 for SIGTERM, 130 for Ctrl-C)."""
    return 128 + (signal.SIGTERM if isinstance(err, Terminated) else signal.SIGINT)


_ADVICE = {
    errno.ENOSPC: "free some space on that disk, or write elsewhere",
    errno.EDQUOT: "free some of your disk quota, or write elsewhere",
    errno.EACCES: "write somewhere you may write, or get write permission there",
    errno.EPERM: "write somewhere you may write, or get write permission there",
    errno.EROFS: "that file system is read-only: write elsewhere",
}


def os_error_sentence(err: BaseException) -> str | None:
    """One sentence for a storage fault the user can fix (ENOSPC, EDQUOT, EACCES, EPERM, EROFS), naming
    the path when the error carries one; ``None`` for any other error."""
    if not isinstance(err, OSError) or err.errno not in _ADVICE:
        return None
    reason = (err.strerror or os.strerror(err.errno)).rstrip(".")
    path = err.filename
    where = f" writing {Path(os.fsdecode(path)).absolute()}" if path else ""
    return f"{reason[:1].lower()}{reason[1:]}{where}; {_ADVICE[err.errno]}"


def storage_fault(err: BaseException) -> OSError | None:
    """The storage fault the user can fix (see ``os_error_sentence``) that caused ``err``, found in its
    chain of causes (a library that wraps the ``OSError`` of a full disk in its own exception type), or
    ``None``."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _ADVICE:
            return current
        current = current.__cause__ or current.__context__
    return None
