"""Evaluate a trained model: ``python evaluate.py ckpt=<checkpoint> [data=crappified|pairs|hagen|confocal_fmd]``."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


# The evaluation has its own config tree: its `data` group (crappified, pairs, ready-made real sets) is
# not the training `data` group of conf/data.
@hydra.main(version_base="1.3", config_path="conf/evaluate", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from psr.tasks.errors import ConfigError
    from psr.tasks.evaluate import evaluate

    try:
        evaluate(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
