"""One error family: every exception psr defines for bad input is a ``PsrError``, which every entry point
turns into one ``error:`` line and exit 2."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import psr
from psr.errors import PsrError
from psr.tasks.entry import run_task


def _psr_value_errors() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(psr.__path__, "psr."):
        if info.name.startswith(("psr.napari", "psr._app")):
            continue  # the plugin needs napari; _app holds the entry-point links
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, ValueError) and obj.__module__ == info.name:
                found[f"{info.name}.{name}"] = obj
    return list(found.values())


def test_every_value_error_psr_defines_is_a_psr_error() -> None:
    classes = _psr_value_errors()
    assert len(classes) >= 12  # the walk found psr's error classes, not nothing
    assert [c.__qualname__ for c in classes if not issubclass(c, PsrError)] == []


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
