"""The working folder's ``conf/`` on Hydra's search path: presets a user writes there (``psr
fit-crappifier`` and ``psr calibrate-noise`` write to ``./conf/crappifier/`` by default) are choices of
``psr train`` run from that folder, e.g. ``crappifier=fitted_mine`` for ``./conf/crappifier/fitted_mine.yaml``.

Appended after psr's own configs, so a built-in name (and the primary ``train.yaml``) keeps its meaning.
Only for the applications composed from psr's root config tree (train, predict, export, preview,
segment): ``evaluate`` has a tree of its own (``conf/evaluate``) whose keys (``logger``, ``data``) are not
the training groups, so the working folder's groups must not appear there. Skipped where ``./conf`` is
missing or is psr's own config folder (running from a source checkout).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

PROVIDER = "psr-working-folder"


def _folder(entry: str) -> Path | None:
    """The folder of a search-path entry: ``file://<dir>`` or a bare directory (as ``hydra.main`` gives
    the application's own); ``None`` for other schemes (``pkg://``, plugin sources)."""
    if entry.startswith("file://"):
        return Path(entry.removeprefix("file://")).resolve()
    return None if "://" in entry else Path(entry).resolve()


def psr_conf() -> Path | None:
    """psr's own root config folder (``psr/_app/conf``), found without importing psr."""
    spec = importlib.util.find_spec("psr")
    if spec is None or not spec.submodule_search_locations:
        return None
    return (Path(next(iter(spec.submodule_search_locations))) / "_app" / "conf").resolve()


class WorkingFolderConfPlugin(SearchPathPlugin):
    """Append ``file://<working folder>/conf`` when the application is composed from psr's root config
    tree and that folder exists and is not already searched."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        conf = Path.cwd() / "conf"
        if not conf.is_dir():
            return
        searched = {_folder(element.path) for element in search_path.get_path() if element.path}
        own = psr_conf()
        if own is None or own not in searched or conf.resolve() in searched:
            return
        search_path.append(provider=PROVIDER, path=f"file://{conf.resolve()}")
