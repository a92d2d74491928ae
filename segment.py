"""Train a segmentation model: ``python segment.py experiment=sstem_membranes`` (see ``conf/segment.yaml``)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from psr.tasks import entry  # also registers the run-folder resolvers


@hydra.main(version_base="1.3", config_path="conf", config_name="segment")
def main(cfg: DictConfig) -> float | None:
    from psr.tasks.segment import segment

    # Bad labels or settings, a full disk, SIGTERM: one error line and a non-zero exit (psr/tasks/entry.py).
    summary = entry.run_task(segment, cfg)
    metric = cfg.get("optimized_metric")
    value = (summary.get("best") or {}).get(metric) if metric else None
    return float(value) if value is not None else None


if __name__ == "__main__":
    entry.check_overrides()  # unquoted spaces or µ: one error line, not a lexer report
    main()
