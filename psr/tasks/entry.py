"""What every entry point (train, predict, evaluate, export) does around its task.

``run_task(task, cfg)`` runs a task so that nothing is lost and nothing is silent:

* bad input (``PsrError`` and its subclasses, one sentence already) and storage faults the user can fix
  (a full disk, a folder without write permission) become one ``error: ...`` line on stderr and exit
  code 2, never a traceback;
* SIGTERM (``kill``, SLURM preemption) is handled like Ctrl-C: the task's own clean-up runs, then one
  ``error: ...`` line and exit code 143 (130 for Ctrl-C);
* the run folder is locked from before Hydra writes its ``.hydra/`` copies of the config (the
  ``RunFolderLock`` callback, ``conf/hydra/default.yaml``) until the task ends: a second process given
  the same folder stops with one line instead of overwriting the first one's config, checkpoints and
  summary;
* a failed task leaves no run folder that holds nothing but Hydra's bookkeeping and a log.

It also registers the resolvers the run-folder names use (``conf/hydra/default.yaml``):
``${psr.uid:}``, a short random suffix drawn once per process, so that two runs started in the same
second get different folders; ``${psr.swept:...}``, the swept overrides of a multirun job.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from psr.errors import PsrError
from psr.faults import interrupt_exit_code, interrupt_name, os_error_sentence, stop_on_sigterm

T = TypeVar("T")

LOCK_NAME = ".lock"
# What Hydra and the loggers put in a run folder before the task writes anything of its own.
_BOOKKEEPING = {".hydra", LOCK_NAME}
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")


class RunFolderBusy(PsrError):
    """Another process holds the run folder's lock."""


_UID = secrets.token_hex(3)


# Swept keys the job folder names already show (conf/hydra/default.yaml: <num>-<model>-<crappifier>-seed<seed>).
_NAMED = {"model", "crappifier", "seed"}


def _swept(task_overrides: Sequence[str]) -> str:
    """``-key=value,...``: this job's values of the overrides the multirun sweeps over (comma lists,
    ranges, globs on the command line, or ``hydra.sweeper.params``), except those the folder name shows
    already; ``""`` when there are none. Safe in a file name, at most 120 characters."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    keys: set[str] = set()
    for arg in sys.argv[1:]:
        if arg.startswith("-") or "=" not in arg:
            continue  # Hydra's flags (-m ...)
        with contextlib.suppress(Exception):  # argv that is not Hydra's (a test runner)
            keys |= {o.get_key_element() for o in parser.parse_overrides([arg]) if o.is_sweep_override()}
    try:
        from hydra.core.hydra_config import HydraConfig

        params = HydraConfig.get().sweeper.get("params") or {}
        keys |= {str(k) for k in params}
    except (ValueError, AttributeError):
        pass
    keys -= _NAMED
    chosen = [str(o) for o in task_overrides if str(o).split("=", 1)[0].lstrip("+~") in keys]
    text = ",".join(sorted(chosen, key=lambda o: o.split("=", 1)[0]))
    safe = re.sub(r"[^\w.,=+\-]", "_", text)[:120]
    return f"-{safe}" if safe else ""


def register_resolvers() -> None:
    """Register ``psr.uid`` and ``psr.swept`` (idempotent); entry points call it before Hydra starts."""
    if not OmegaConf.has_resolver("psr.uid"):
        OmegaConf.register_new_resolver("psr.uid", lambda: _UID)
    if not OmegaConf.has_resolver("psr.swept"):
        OmegaConf.register_new_resolver("psr.swept", lambda overrides: _swept(list(overrides)))


def check_overrides(argv: Sequence[str] | None = None) -> None:
    """Before Hydra parses the command line: an override it cannot parse (a value with spaces or
    non-ASCII characters such as µ or ä, unquoted) becomes one ``error:`` line naming it and showing the
    quoting that works, and exit code 2 (instead of Hydra's ``LexerNoViableAltException`` report)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for arg in sys.argv[1:] if argv is None else argv:
        if arg.startswith("-") or "=" not in arg:
            continue  # Hydra's own flags (-m, --config-name x ...)
        try:
            parser.parse_overrides([arg])
        except OverrideParseException:
            key, _, value = arg.partition("=")
            fail(
                f"cannot parse the override {arg!r}: quote a value with spaces, non-ASCII or special"
                f" characters, e.g. '{key}=\"{value}\"' in the shell (single quotes around, double"
                " quotes inside)"
            )


def hydra_run_dir() -> Path | None:
    """The run folder Hydra made for this job, or ``None`` (no Hydra, or a task that writes no folder)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
    except ValueError:
        return None
    if hydra_cfg.output_subdir is None:  # predict, export: no run folder
        return None
    runtime = hydra_cfg.runtime
    output_dir = OmegaConf.select(runtime, "output_dir", default=None, throw_on_missing=False)  # type: ignore[arg-type]
    if not output_dir or output_dir == "???":  # composed without running a job (tests, notebooks)
        return None
    return Path(str(output_dir)).absolute()


def is_secondary_rank() -> bool:
    """Whether this process is a DDP / SLURM rank other than the first (it shares rank 0's run folder)."""
    for name in _RANK_VARIABLES:
        value = os.environ.get(name, "0")
        if value.isdigit() and int(value) > 0:
            return True
    return False


# The run folders this process holds locked, with the descriptor of each ``.lock``. A second flock on a
# new descriptor of the same file would conflict with this process's own lock, so a folder locked early
# (RunFolderLock, before Hydra writes .hydra/) is not locked again by run_task.
_HELD: dict[Path, int] = {}


def acquire_lock(folder: Path) -> bool:
    """Lock ``folder`` (``<folder>/.lock``, exclusive, released when the process ends, even on
    ``kill -9``). Returns ``False`` when this process holds it already or cannot lock (not POSIX, a
    secondary rank); raises ``RunFolderBusy`` when another process holds it."""
    folder = Path(os.path.abspath(folder))  # as Hydra spells runtime.output_dir
    if folder in _HELD or is_secondary_rank():
        return False
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return False
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as err:
        os.close(fd)
        raise RunFolderBusy(
            f"run folder {folder} is in use by another running psr process; wait for it to finish or"
            " pick another folder (hydra.run.dir=...)"
        ) from err
    _HELD[folder] = fd
    return True


def release_lock(folder: Path) -> None:
    """Release this process's lock on ``folder`` (nothing when it holds none)."""
    fd = _HELD.pop(Path(os.path.abspath(folder)), None)
    if fd is None:
        return
    import fcntl

    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@contextmanager
def run_lock(folder: Path | None) -> Iterator[None]:
    """Hold the lock on ``folder`` while the block runs (see ``acquire_lock``), then release it, also
    when it was taken before the block (by ``RunFolderLock``); raise ``RunFolderBusy`` when another
    process holds it. Secondary ranks and ``None`` skip it."""
    if folder is None:
        yield
        return
    acquire_lock(folder)
    try:
        yield
    finally:
        release_lock(folder)


class RunFolderLock(Callback):
    """Hydra callback (``hydra.callbacks``): lock a single run's folder before Hydra writes its
    ``.hydra/`` copies of the config, so that a second process given the same ``hydra.run.dir`` stops
    with one line before it overwrites anything of the first run. ``run_task`` keeps the lock until the
    task ends. Multirun jobs are locked by ``run_task`` (their folders hold the job number and a
    per-process suffix)."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        if OmegaConf.select(config, "hydra.output_subdir", default=None) is None:
            return  # predict, export: no run folder
        folder = OmegaConf.select(config, "hydra.run.dir", default=None)
        if not folder:
            return
        try:
            acquire_lock(Path(str(folder)))
        except RunFolderBusy as err:
            fail(str(err))  # the folder is the other process's: leave it alone

    def on_run_end(self, config: Any, **kwargs: Any) -> None:
        folder = OmegaConf.select(config, "hydra.run.dir", default=None)
        if folder:
            release_lock(Path(str(folder)))


def holds_results(folder: Path) -> bool:
    """Whether ``folder`` holds anything beyond Hydra's ``.hydra``, the lock, log files and empty folders."""
    for path in folder.iterdir():
        if path.name in _BOOKKEEPING or (path.is_file() and path.suffix == ".log"):
            continue
        if path.is_dir() and not path.is_symlink():
            if holds_results(path):
                return True
            continue
        return True
    return False


def remove_if_empty(folder: Path | None) -> bool:
    """Remove a run folder that holds no results (see ``holds_results``); never the working folder or
    one above it. Returns whether it was removed."""
    import shutil

    if folder is None or not folder.is_dir():
        return False
    cwd = Path.cwd().absolute()
    if folder == cwd or folder in cwd.parents or holds_results(folder):
        return False
    shutil.rmtree(folder, ignore_errors=True)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", folder.parent.name):
        with contextlib.suppress(
            OSError
        ):  # the date folder (outputs/runs/<date>), if this run was its only one
            folder.parent.rmdir()
    return True


def fail(message: str, code: int = 2) -> None:
    """Print ``error: <message>`` on stderr and exit with ``code``."""
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def run_task(task: Callable[[Any], T], cfg: Any, *, expected: tuple[type[BaseException], ...] = ()) -> T:
    """Run ``task(cfg)`` as an entry point: one ``error:`` line and a non-zero exit for the faults in
    this module's docstring, the run folder locked while it runs and removed after a failure that left
    nothing in it. ``expected`` are the exception types whose message is already one sentence for the
    user, besides ``PsrError`` (every psr error is). An interrupt may carry ``kept``, a sentence on what
    was saved (training: the ``last.ckpt`` to resume from)."""
    expected = (PsrError, *expected)  # every psr error is one sentence for the user
    folder = hydra_run_dir()
    locked = False
    try:
        with stop_on_sigterm(), run_lock(folder):
            locked = True
            return task(cfg)
    except RunFolderBusy as err:
        fail(str(err))  # the folder is the other process's: leave it alone
    except KeyboardInterrupt as err:
        kept = getattr(err, "kept", None) or _kept(folder, locked)
        fail(f"interrupted by {interrupt_name(err)}; {kept}", interrupt_exit_code(err))
    except OSError as err:
        sentence = os_error_sentence(err)
        if sentence is None:
            _kept(folder, locked)
            raise
        fail(f"{sentence}; {_kept(folder, locked)}")
    except expected as err:
        _kept(folder, locked)
        fail(str(err))
    except Exception:
        _kept(folder, locked)
        raise
    raise AssertionError("unreachable")  # fail() exits


def _kept(folder: Path | None, locked: bool) -> str:
    """After a failure: remove the run folder when it holds nothing; say what is left."""
    if folder is None or not locked or is_secondary_rank():
        return "no output was written"
    if remove_if_empty(folder):
        return "no output was written"
    return f"what was written is in {folder}"


# Registered on import too, like crosseval's ${psr.grid:}: code that composes the configs without the
# entry points (tests, notebooks) resolves the run-folder names as well.
register_resolvers()
