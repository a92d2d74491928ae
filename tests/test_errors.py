"""One error family: every exception psr defines for bad input is a ``PsrError``, which every entry point
turns into one ``error:`` line and exit 2."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import psr
from psr.tasks.entry import run_task

PSR = Path(psr.__file__).parent


def _class_bases() -> dict[str, list[str]]:
    """Every class psr defines, ``module.Class`` → the names of its bases, read from the source (importing
    every module would load optional packages, and some of them crash beside a live Qt application)."""
    classes: dict[str, list[str]] = {}
    for path in sorted(PSR.rglob("*.py")):
        module = ".".join(path.relative_to(PSR.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                classes[f"{module}.{node.name}"] = [ast.unparse(base).split(".")[-1] for base in node.bases]
    return classes


def test_every_value_error_psr_defines_is_a_psr_error() -> None:
    classes = _class_bases()
    family = {"PsrError", "ConfigError", "DataError"}
    members = [name for name, bases in classes.items() if family & set(bases)]
    assert len(members) >= 12  # the walk found psr's error classes, not nothing
    outside = [name for name, bases in classes.items() if "ValueError" in bases]
    assert outside == ["psr.errors.PsrError"]  # the family's root; every other error derives from it


def test_an_entry_point_turns_any_psr_error_into_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from psr.inference.checkpoint import CheckpointError

    def task(_cfg: object) -> None:
        raise CheckpointError("checkpoint x.ckpt is not a psr checkpoint (expected one written by train.py)")

    with pytest.raises(SystemExit) as exit_info:
        run_task(task, None)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: checkpoint x.ckpt is not a psr checkpoint (expected one written by train.py)"
    ]
