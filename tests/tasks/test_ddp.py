"""DDP on the CPU (gloo): two ranks train one job of a multirun in the job's own folder; rank 0 writes.

Lightning starts rank 1 by running ``train.py`` again; ``psr.tasks.train`` hands it the job's own
overrides and folder (a multirun's ``sys.argv`` would otherwise start the whole sweep again).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.conftest import TINY, run_train


def test_two_cpu_ranks_train_one_multirun_job_in_its_folder(tmp_path: Path, cache_dir: Path) -> None:
    sweep = tmp_path / "sweep"
    tiny = [o for o in TINY if not o.startswith(("logger=", "data.val_samples"))]
    result = run_train(
        [
            "-m",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.max_epochs=1",
            "trainer.enable_model_summary=false",
            *tiny,
            "data.val_samples=4",
            "logger=csv",
            "cross_eval.crappifiers=[poisson]",
            "seed=3",
            f"hydra.sweep.dir={sweep}",
        ],
        cache_dir,
    )
    (run,) = [p for p in sweep.iterdir() if p.is_dir()]  # one job, one folder: no sweep started again
    assert run.name == "0-rcan-poisson-seed3"
    # Both ranks ran, in this folder: rank 1 (started by Lightning) logs to its own file here.
    rank1 = (run / "train_ddp_process_1.log").read_text()
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in rank1
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in (run / "train.log").read_text()
    # Rank 0 alone evaluates and writes the summary (one gain line on the shared stdout).
    assert "cross_eval poisson" not in rank1
    assert result.stdout.count("psr: val PSNR") == 1
    summary = json.loads((run / "summary.json").read_text())
    # 4 training samples in batches of 2 split over 2 ranks: one step per epoch (two on one process).
    assert summary["steps"] == 1
    assert summary["sweep"]["job_num"] == 0 and summary["sweep"]["dir"] == str(sweep.resolve())
    # Rank 0 scores the whole validation set after training, not its DDP shard.
    assert summary["cross_eval"]["poisson"]["n"] == 4
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "best-epoch000-step1.ckpt",
        "last.ckpt",
    ]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["psr_config"]["trainer"]["devices"] == 2
