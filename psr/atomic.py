"""Atomic file writes: a file appears complete under its name, or not at all.

Every output psr writes (summaries, metrics, reports, figures, presets) goes through ``write_atomic`` or
``atomic_path``: the content is written to a temporary file beside the target (same folder, so the rename
is atomic), given the usual permissions (``0o666`` minus the umask, unlike ``mkstemp``'s private files) and
renamed over the target; on any failure the temporary file is removed and the target is left as it was.
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
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=f"{target.suffix}.tmp", dir=target.parent)
    os.close(fd)
    staged = Path(tmp).with_suffix("")  # ".name-XXXX.json": the real suffix last
    try:
        os.replace(tmp, staged)
        yield staged
        os.chmod(staged, 0o666 & ~_umask())
        os.replace(staged, target)
    finally:
        for leftover in (tmp, staged):
            if os.path.exists(leftover):
                os.remove(leftover)


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
    return Path(path)
