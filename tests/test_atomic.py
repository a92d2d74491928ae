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
