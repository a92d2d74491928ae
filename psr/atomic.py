"""Atomic file writes: a file appears complete under its name, or not at all.

Every output psr writes (summaries, metrics, reports, figures, presets) goes through ``write_atomic`` or
``atomic_path``: the content is written to a temporary file beside the target (same folder, so the rename
is atomic), given the usual permissions (``0o666`` minus the umask, unlike ``mkstemp``'s private files),
flushed to the disk (``fsync``) and renamed over the target, and the folder's entry is flushed too: after a
crash or a power cut the target is the old file or the new one, never a truncated mix. On any failure (a
full disk, Ctrl-C) the temporary file is removed and the target is left as it was; an ``OSError`` names
the target.

Outputs that are folders or are staged by their own writers (OME-Zarr stores, predictions, export
packages) are moved into place by ``durable_replace``: every file and folder of the staged output is
flushed to the disk before the rename, and the parent folder after it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; renamed to ``path`` when the block succeeds.

    The temporary name keeps ``path``'s suffix, so writers that pick a format from it (matplotlib) work.
    """
    target = Path(path)
    tmp = staged = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.stem}-", suffix=f"{target.suffix}.tmp", dir=target.parent
        )
        os.close(fd)
        staged = Path(tmp).with_suffix("")  # ".name-XXXX.json": the real suffix last
        os.replace(tmp, staged)
        yield staged
        os.chmod(staged, 0o666 & ~_umask())
        _fsync(staged)
        os.replace(staged, target)
        _fsync(target.parent)
    except OSError as err:
        if err.errno is None:
            raise
        # Name the target, not the temporary (errors from write() name no file at all).
        raise OSError(err.errno, err.strerror or os.strerror(err.errno), str(target)) from err
    finally:
        for leftover in (tmp, staged):
            if leftover is not None and os.path.exists(leftover):
                os.remove(leftover)


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's) content to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: str | bytes | bytearray | memoryview) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        if not isinstance(data, str):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
    return Path(path)


def fsync_tree(path: str | os.PathLike[str]) -> None:
    """Flush a file, or every file and folder under a folder (deepest first), to the disk."""
    root = Path(path)
    if root.is_symlink() or not root.exists():
        return
    if root.is_dir():
        for folder, _, files in os.walk(root, topdown=False):
            for name in files:
                file = Path(folder) / name
                if not file.is_symlink():
                    _fsync(file)
            _fsync(Path(folder))
    else:
        _fsync(root)


def durable_replace(staged: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Move a finished ``staged`` file or folder to ``target`` (``os.replace``) so that after a crash or
    a power cut ``target`` is complete or absent: ``staged`` is flushed to the disk first, the parent
    folder's entry after the rename."""
    fsync_tree(staged)
    os.replace(staged, target)
    _fsync(Path(target).absolute().parent)
