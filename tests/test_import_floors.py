"""The import plan: psr's packages stand on floors and import only from floors below their own (or from
themselves), at module level or inside functions, so the package graph has no circles and the ground floor
can be imported alone. The floors are written in README.md (Layout); a new package gets a floor here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PSR = Path(__file__).resolve().parents[1] / "psr"
FLOORS: dict[str, int] = {
    "errors": 0,
    "atomic": 0,
    "faults": 0,
    "io": 1,
    "crappifiers": 1,
    "models": 1,
    "data": 2,
    "metrics": 3,
    "calibration": 4,
    "inference": 4,
    "reporting": 4,
    "modules": 5,
    "export": 5,
    "napari": 5,
    "tasks": 6,
    "_app": 7,
    "cli": 7,
}


def _package(path: Path) -> str:
    parts = path.relative_to(PSR).with_suffix("").parts
    return parts[0]


def _imported_packages(path: Path) -> list[tuple[str, int]]:
    """The psr packages ``path`` imports (module level or in functions), with line numbers."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "psr" and len(parts) > 1:
                found.append((parts[1], node.lineno))
    return found


SOURCES = sorted(p for p in PSR.rglob("*.py") if p.name != "__init__.py" or p.parent != PSR)


def test_every_package_has_a_floor() -> None:
    packages = {_package(p) for p in SOURCES}
    assert packages == set(FLOORS), f"give each package a floor: {sorted(packages ^ set(FLOORS))}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PSR)))
def test_imports_go_down_the_floors(path: Path) -> None:
    own = _package(path)
    upward = [
        f"line {line}: psr.{target} (floor {FLOORS.get(target)})"
        for target, line in _imported_packages(path)
        if target != own and FLOORS.get(target, 99) >= FLOORS[own]
    ]
    assert not upward, f"psr.{own} (floor {FLOORS[own]}) imports from its floor or above: {upward}"


def test_the_ground_floor_imports_alone() -> None:
    import subprocess
    import sys

    code = "import sys, psr.errors, psr.atomic, psr.faults; print(sorted(m for m in sys.modules if m.startswith('psr.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['psr.atomic', 'psr.errors', 'psr.faults']"
