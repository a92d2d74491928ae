"""The working folder's ``conf/`` on Hydra's search path: presets a user writes there (``psr
fit-crappifier`` and ``psr calibrate-noise`` write to ``./conf/crappifier/`` by default) are choices of
``psr train`` run from that folder, e.g. ``crappifier=fitted_mine`` for ``./conf/crappifier/fitted_mine.yaml``.

Appended after psr's own configs, so a built-in name (and the primary ``train.yaml``) keeps its meaning;
skipped where ``./conf`` is missing or is psr's own config folder (running from a source checkout).
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

PROVIDER = "psr-working-folder"


def _folder(entry: str) -> Path | None:
    return Path(entry.removeprefix("file://")).resolve() if entry.startswith("file://") else None


class WorkingFolderConfPlugin(SearchPathPlugin):
    """Append ``file://<working folder>/conf`` when that folder exists and is not already searched."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        conf = Path.cwd() / "conf"
        if not conf.is_dir():
            return
        searched = {_folder(element.path) for element in search_path.get_path() if element.path}
        if conf.resolve() not in searched:
            search_path.append(provider=PROVIDER, path=f"file://{conf.resolve()}")
