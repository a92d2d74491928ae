"""Train a segmentation model: ``python segment.py experiment=sstem_membranes`` (see ``conf/segment.yaml``)."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="segment")
def main(cfg: DictConfig) -> float | None:
    from psr.tasks.errors import ConfigError
    from psr.tasks.segment import segment

    try:
        summary = segment(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    metric = cfg.get("optimized_metric")
    value = (summary.get("best") or {}).get(metric) if metric else None
    return float(value) if value is not None else None


if __name__ == "__main__":
    main()
