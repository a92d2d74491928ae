"""Where fitted and calibrated crappifier presets go, and how ``psr train`` then finds them.

A preset is written to ``conf/crappifier/<name>.yaml`` under the working folder (never into the
installed package); Hydra searches the working folder's ``conf/`` too (``hydra_plugins/psr_user_conf``),
so ``psr train crappifier=<name>`` run from that folder picks it up.
"""

from __future__ import annotations

from pathlib import Path

USER_PRESETS = Path("conf") / "crappifier"
"""Presets of the working folder, relative to it."""


def user_preset(name: str) -> Path:
    """``conf/crappifier/<name>.yaml`` of the working folder."""
    return USER_PRESETS / f"{name}.yaml"


def find_preset(name: str, packaged: Path) -> Path:
    """The preset YAML ``name`` stands for: a path as given when it ends in ``.yaml``, else the working
    folder's ``conf/crappifier/<name>.yaml`` where it exists, else psr's own in ``packaged``."""
    if name.endswith((".yaml", ".yml")):
        return Path(name)
    mine = user_preset(name)
    return mine if mine.is_file() else packaged / f"{name}.yaml"


def usage(out: Path) -> str:
    """How to train with the preset written to ``out``, for the tool's last line."""
    folder = out.absolute().parent
    stem = out.stem
    if folder == (Path.cwd() / USER_PRESETS).absolute():
        return f"use it as crappifier={stem} (psr train run from this folder finds conf/crappifier/)"
    if folder.name == "crappifier":
        return (
            f"use it as crappifier={stem} with 'hydra.searchpath=[file://{folder.parent}]', or run psr train"
            f" from {folder.parent.parent}"
        )
    return f"use it as crappifier={stem} once it is in conf/crappifier/ of the folder psr train runs from"
