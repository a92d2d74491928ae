"""Evaluate a trained model: ``python evaluate.py ckpt=<checkpoint> [data=crappified|pairs|hagen|confocal_fmd]``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from psr.tasks import entry  # also registers the run-folder resolvers


# The evaluation has its own config tree: its `data` group (crappified, pairs, ready-made real sets) is
# not the training `data` group of conf/data.
@hydra.main(version_base="1.3", config_path="conf/evaluate", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from psr.tasks.evaluate import evaluate

    if cfg.get("evaluate_task") == "segment":  # task=segment: psr/tasks/segment_eval.py
        from psr.tasks.segment_eval import evaluate_segmentation as evaluate
    # Bad input, a full disk, SIGTERM: one error line and a non-zero exit (psr/tasks/entry.py).
    entry.run_task(evaluate, cfg)
    print(f"psr: evaluation written to {entry.hydra_run_dir()}", flush=True)


if __name__ == "__main__":
    entry.check_overrides()  # unquoted spaces or µ: one error line, not a lexer report
    main()
