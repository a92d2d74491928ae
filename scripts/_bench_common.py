"""What the bench scripts share: the repository's paths and ``conf/train.yaml`` composed as ``train.py``
composes it.

Not a command: ``bench_loader.py``, ``bench_gpu.py`` and ``bench_crappifiers.py`` import it from the folder
they sit in (``scripts/``, on ``sys.path`` when a script runs, and put there when a test loads a script
from its file).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def compose_train(overrides: Sequence[str]) -> Any:
    """``conf/train.yaml`` composed as ``train.py`` would, without Hydra's run-time node."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("train", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()
