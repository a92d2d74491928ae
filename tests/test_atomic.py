"""psr.atomic: outputs appear complete, with the usual permissions, or not at all."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from psr.atomic import atomic_path, write_atomic


def test_write_atomic_replaces_the_file_with_umask_permissions(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "summary.json"
    old = os.umask(0o022)
    try:
        write_atomic(target, "{}\n")
        write_atomic(target, b"[1]\n")
    finally:
        os.umask(old)
    assert target.read_text() == "[1]\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # not mkstemp's private 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["summary.json"]


def test_a_failure_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.suffix == ".html" and tmp.parent == tmp_path  # writers that pick a format by suffix
        tmp.write_text("half")
        raise RuntimeError("writer crashed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_durable_replace_flushes_every_file_and_folder_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A staged OME-Zarr store or export: each chunk file and each folder reaches the disk before the
    store gets its name, and the parent's entry after."""
    import psr.atomic

    staged = tmp_path / ".store.tmp"
    (staged / "0" / "c").mkdir(parents=True)
    for name in ("zarr.json", "0/zarr.json", "0/c/0", "0/c/1"):
        (staged / name).write_text(name)
    target = tmp_path / "store.zarr"
    flushed: list[tuple[str, bool]] = []
    real = psr.atomic._fsync
    monkeypatch.setattr(
        psr.atomic, "_fsync", lambda path: (flushed.append((str(path), target.exists())), real(path))
    )
    psr.atomic.durable_replace(staged, target)
    before = {Path(p).relative_to(staged).as_posix() for p, moved in flushed if not moved}
    assert before == {".", "0", "0/c", "zarr.json", "0/zarr.json", "0/c/0", "0/c/1"}
    assert flushed[-1] == (str(tmp_path), True)  # the parent's entry, after the rename
    assert (target / "0" / "c" / "1").read_text() == "0/c/1" and not staged.exists()


def test_storage_fault_finds_a_full_disk_an_exporter_wrapped() -> None:
    import errno

    from psr.faults import storage_fault

    full = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise full
        except OSError as err:
            raise RuntimeError("ONNX export of RCAN failed") from err
    except RuntimeError as wrapped:
        assert storage_fault(wrapped) is full
    assert storage_fault(RuntimeError("shape mismatch")) is None
    assert storage_fault(OSError(errno.EIO, "I/O error")) is None  # not one the user can fix by a path
