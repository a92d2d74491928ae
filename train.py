"""Train a restoration model: ``python train.py model=rcan crappifier=poisson scale=4``.

Sweeps: ``python train.py -m experiment=degradation_ablation`` (a grid, each run cross-evaluated),
``hydra/launcher=joblib`` (parallel local jobs), ``hydra/launcher=slurm`` (SLURM via submitit).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from psr.tasks import entry
from psr.tasks.crosseval import register_resolvers

# ${psr.grid:[a,b]} → "a,b": sweeps from lists (experiment=degradation_ablation); ${psr.uid:} and
# ${psr.swept:...} name run folders. Needed before Hydra builds the sweeper, i.e. before main runs.
register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from psr.tasks.train import train

    # Bad input, a full disk, SIGTERM: one error line and a non-zero exit (psr/tasks/entry.py).
    summary = entry.run_task(train, cfg)
    metric = cfg.get("optimized_metric")
    value = (summary.get("best") or {}).get(metric) if metric else None
    return float(value) if value is not None else None


if __name__ == "__main__":
    entry.check_overrides()  # unquoted spaces or µ: one error line, not a lexer report
    main()
