"""Train a restoration model: ``python train.py model=rcan crappifier=poisson scale=4``.

Sweeps: ``python train.py -m experiment=degradation_ablation`` (a grid, each run cross-evaluated),
``hydra/launcher=joblib`` (parallel local jobs), ``hydra/launcher=slurm`` (SLURM via submitit).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from psr.tasks.crosseval import register_resolvers  # noqa: E402

# ${psr.grid:[a,b]} → "a,b": sweeps from lists (experiment=degradation_ablation); needed before Hydra
# builds the sweeper, i.e. before main runs.
register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from psr.tasks.errors import ConfigError
    from psr.tasks.train import train

    try:
        summary = train(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    metric = cfg.get("optimized_metric")
    value = (summary.get("best") or {}).get(metric) if metric else None
    return float(value) if value is not None else None


if __name__ == "__main__":
    main()
