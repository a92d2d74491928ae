"""``scripts/bench_loader.py``'s measurements: the training loader's rate on the synthetic stores, the
default ``train.py`` config's training steps fed from memory and from its loader, and the peak memory of
a ``train.py`` run's whole process tree.

Not a command: ``bench_loader.py`` imports it (see its docstring for what each measurement means).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _bench_common import ROOT, compose_train
from bench_loader_stores import GiB, StoreInfo


def _num(v: float) -> str:
    """A rate with three significant figures (no spurious decimals on large values)."""
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


# --------------------------------------------------------------------------------------------------
# 1. Loader rate
# --------------------------------------------------------------------------------------------------


def loader_rate(datamodule: Any, warmup: int, batches: int) -> dict[str, float]:
    """Patches per second of ``datamodule.train_dataloader()`` over ``batches`` batches after ``warmup``.

    The datamodule's ``samples_per_epoch`` must cover ``(warmup + batches) * batch_size``.
    """
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    iterator = iter(loader)
    for _ in range(warmup):
        next(iterator)
    patches = 0
    started = time.perf_counter()
    for _ in range(batches):
        patches += int(next(iterator).shape[0])
    seconds = time.perf_counter() - started
    del iterator, loader  # shuts the workers down
    return {"patches": patches, "seconds": seconds, "patches_per_s": patches / seconds}


@dataclass(frozen=True)
class LoaderCase:
    name: str
    store: StoreInfo
    patch: tuple[int, ...]
    spatial_dims: int
    batch_size: int


def run_loader_cases(
    cases: Sequence[LoaderCase], workers: Sequence[int], warmup: int, batches: int
) -> list[dict[str, Any]]:
    from psr.data.zarr import ZarrDataModule

    rows = []
    for case in cases:
        for n in workers:
            dm = ZarrDataModule(
                case.store.path,
                patch_size=list(case.patch),
                scale=4,
                spatial_dims=case.spatial_dims,
                batch_size=case.batch_size,
                samples_per_epoch=case.batch_size * (warmup + batches),
                num_workers=n,
                augment=True,
            )
            result = loader_rate(dm, warmup, batches)
            row: dict[str, Any] = {
                "case": case.name,
                "patch": list(case.patch),
                "batch_size": case.batch_size,
                "workers": n,
            }
            row.update(result)
            row["megavoxels_per_s"] = result["patches_per_s"] * float(np.prod(case.patch)) / 1e6
            print(
                f"loader {case.name} workers={n}: {_num(result['patches_per_s'])} patches/s", file=sys.stderr
            )
            rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------------
# 2. The default config: consumption rate of training steps against the loader rate
# --------------------------------------------------------------------------------------------------


def timed_fit(cfg: Any, parts: dict[str, Any], warmup: int, steps: int, data: Any) -> dict[str, float]:
    """Run ``warmup + steps`` real Lightning training steps and time the last ``steps`` of them.

    ``data`` is a ``LightningDataModule`` or a training ``DataLoader``. The clock starts when training
    step ``warmup - 1`` ends and stops when the last one ends, so it spans fetching, the on-device
    degradation, forward, backward and the optimiser step of ``steps`` steps.
    """
    import lightning as L
    from hydra.utils import instantiate

    class StepClock(L.Callback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
            self.ends.append(time.perf_counter())

    clock = StepClock()
    module = instantiate(
        cfg.module, net=parts["net"], crappifier=parts["crappifier"], loss=parts["loss"], panel_dir=None
    )
    trainer = instantiate(
        cfg.trainer,
        logger=False,
        callbacks=[clock],
        max_steps=warmup + steps,
        max_epochs=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    if isinstance(data, L.LightningDataModule):
        trainer.fit(module, datamodule=data)
    else:
        trainer.fit(module, train_dataloaders=data)
    if len(clock.ends) != warmup + steps:
        raise RuntimeError(f"expected {warmup + steps} training steps, the trainer ran {len(clock.ends)}")
    seconds = clock.ends[-1] - clock.ends[warmup - 1]
    batch = int(cfg.data.batch_size)
    return {
        "steps": steps,
        "seconds": seconds,
        "steps_per_s": steps / seconds,
        "patches_per_s": steps * batch / seconds,
    }


def run_default(
    overrides: Sequence[str], warmup: int, steps: int, loader_batches: int, work: Path
) -> dict[str, Any]:
    """Loader rate, consumption rate and loader-fed training rate of the default ``train.py`` config."""
    import lightning as L
    import torch
    from hydra.utils import instantiate
    from torch.utils.data import DataLoader

    from psr.tasks.train import build

    for name in ("lightning.pytorch", "lightning.fabric"):  # start-up banners and tips: not figures
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*(val_dataloader|on_after_batch_transfer|LeafSpec).*")

    cfg = compose_train(
        [
            "logger=none",
            "trainer=cpu",
            f"paths.output_dir={work / 'default-run'}",
            *overrides,
        ]
    )
    batch = int(cfg.data.batch_size)
    workers = int(cfg.data.num_workers)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    # The loader exactly as configured, with just enough samples for the timed batches.
    demo = instantiate(cfg.data, samples_per_epoch=batch * (warmup + loader_batches))
    demo.prepare_data()
    loader = loader_rate(demo, warmup, loader_batches)
    print(f"loader default workers={workers}: {_num(loader['patches_per_s'])} patches/s", file=sys.stderr)

    parts = build(cfg)  # what train.py builds: crappifier, net, datamodule (set up), loss
    datamodule = parts["datamodule"]
    datamodule.samples_per_epoch = batch * (warmup + steps)
    datamodule.num_workers = 0
    held = [b.clone() for b in datamodule.train_dataloader()]  # clean batches, read once
    datamodule.num_workers = workers
    consumption = timed_fit(cfg, parts, warmup, steps, DataLoader(held, batch_size=None))  # type: ignore[arg-type]
    print(f"training in memory: {_num(consumption['patches_per_s'])} patches/s", file=sys.stderr)
    fed = timed_fit(cfg, parts, warmup, steps, datamodule)
    print(f"training loader-fed: {_num(fed['patches_per_s'])} patches/s", file=sys.stderr)
    return {
        "data": str(cfg.data._target_).rsplit(".", 1)[-1],
        "patch_size": int(cfg.data.patch_size),
        "batch_size": batch,
        "workers": workers,
        "model": str(cfg.model._target_).rsplit(".", 1)[-1],
        "scale": int(cfg.scale),
        "torch_threads": torch.get_num_threads(),
        "loader": loader,
        "consumption": consumption,
        "loader_fed": fed,
        "ratio": loader["patches_per_s"] / consumption["patches_per_s"],
        "fed_over_memory": fed["patches_per_s"] / consumption["patches_per_s"],
    }


# --------------------------------------------------------------------------------------------------
# 3. Peak memory of a training run
# --------------------------------------------------------------------------------------------------


def peak_tree_memory(
    command: Sequence[str], log: Path, interval: float = 0.1, **popen: Any
) -> dict[str, float]:
    """Run ``command`` (output to ``log``) and poll its whole process tree; return the peaks of the summed
    RSS and PSS in bytes, the most processes seen at once, the wall time and the exit code."""
    import psutil

    peak_rss = peak_pss = 0
    most = 0
    started = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, **popen)
        root = psutil.Process(proc.pid)
        polls = 0
        while proc.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            rss = pss = 0
            alive = 0
            for p in tree:
                try:
                    if polls % 5 == 0:  # PSS reads smaps_rollup: slower, so every fifth poll
                        full = p.memory_full_info()
                        rss += full.rss
                        pss += full.pss
                    else:
                        rss += p.memory_info().rss
                    alive += 1
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            peak_rss = max(peak_rss, rss)
            if polls % 5 == 0:
                peak_pss = max(peak_pss, pss)
            most = max(most, alive)
            polls += 1
            time.sleep(interval)
        code = proc.wait()
    return {
        "peak_rss_bytes": float(peak_rss),
        "peak_pss_bytes": float(peak_pss),
        "processes": float(most),
        "seconds": time.perf_counter() - started,
        "returncode": float(code),
    }


def rss_run(
    store: StoreInfo, label: str, steps: int, work: Path, extra: Sequence[str], threads: int = 0
) -> dict[str, Any]:
    """``train.py`` on ``store`` for ``steps`` steps over two epochs; its tree's peak memory.

    ``threads`` > 0 sets the run's torch threads (``OMP_NUM_THREADS``); 0 keeps torch's default.
    """
    run_dir = work / f"run-{label}"
    batch = 16
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "data=zarr",
        f"data.path={store.path}",
        "logger=none",
        "trainer=cpu",
        "trainer.max_epochs=2",
        f"data.samples_per_epoch={batch * max(1, steps // 2)}",
        f"data.batch_size={batch}",
        f"hydra.run.dir={run_dir}",
        f"paths.cache_dir={work / 'cache'}",
        "+trainer.enable_progress_bar=false",
        *extra,
    ]
    log = work / f"train-{label}.log"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
    result = peak_tree_memory(command, log, cwd=ROOT, env=env)
    if result["returncode"] != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"error: the training run on the {label} store failed:\n{tail}")
    summary = json.loads((run_dir / "summary.json").read_text())
    print(
        f"rss {label}: store {store.disk_bytes / GiB:.2f} GiB, peak tree RSS"
        f" {result['peak_rss_bytes'] / GiB:.2f} GiB, {summary['steps']} steps in {result['seconds']:.0f} s",
        file=sys.stderr,
    )
    return {
        "store": label,
        "images": store.images,
        "image_shape": list(store.image_shape),
        "store_disk_bytes": store.disk_bytes,
        "store_raw_bytes": store.raw_bytes,
        "steps": int(summary["steps"]),
        **result,
    }
