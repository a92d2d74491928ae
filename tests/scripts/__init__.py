"""Tests of the command-line tools in ``scripts/``, loaded from their files with ``load_script``."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from tests.conftest import ROOT


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` as the module ``name`` (registered first: dataclasses look their
    module up while the file executes)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
