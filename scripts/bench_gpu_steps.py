"""``scripts/bench_gpu.py``'s steps: what each step process runs (``bench_gpu.py --step <kind>``) and the
measuring helpers they share (the GPU's busy share, peak memory, best-of timing).

Not a command: ``bench_gpu.py`` imports it (see its docstring for what each step measures).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _bench_common import compose_train

SCRIPTS = Path(__file__).resolve().parent
MARK = "BENCH-GPU-RESULT "
GIB = 2**30


# --------------------------------------------------------------------------------------------------
# Measuring helpers (run inside the step processes).
# --------------------------------------------------------------------------------------------------


class UtilSampler:
    """Samples the GPU's busy percentage every ``period`` seconds in a thread: ``torch.cuda.utilization``
    (NVML), else ``nvidia-smi``; ``mean(t0, t1)`` averages the samples taken in that window (None: no
    CUDA or no way to ask)."""

    def __init__(self, period: float = 0.1) -> None:
        self.period = period
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.read: Callable[[], float] | None = None

    def __enter__(self) -> UtilSampler:
        import torch

        if not torch.cuda.is_available():
            return self
        index = torch.cuda.current_device()
        try:
            torch.cuda.utilization(index)
            self.read = lambda: float(torch.cuda.utilization(index))
        except Exception:  # noqa: BLE001 - no pynvml / amdsmi: try nvidia-smi
            cmd = [
                "nvidia-smi",
                f"--id={index}",
                "--query-gpu=utilization.gpu",
                "--format=csv,noheader,nounits",
            ]

            def smi() -> float:
                return float(
                    subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=True).stdout
                )

            try:
                smi()
                self.read, self.period = smi, max(self.period, 0.25)
            except Exception:  # noqa: BLE001 - report n/a
                return self
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        assert self.read is not None
        while not self.stop.wait(self.period):
            try:
                self.samples.append((time.perf_counter(), self.read()))
            except Exception:  # noqa: BLE001 - a failed sample is skipped
                continue

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()

    def mean(self, t0: float = 0.0, t1: float = float("inf")) -> float | None:
        values = [v for t, v in self.samples if t0 <= t <= t1]
        return sum(values) / len(values) / 100.0 if values else None


def peak_rss_gib() -> tuple[float, float]:
    """Peak resident memory of this process and of its largest finished child (loader workers), GiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return own, child


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_time(fn: Callable[[], object], device: Any, repeats: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


# --------------------------------------------------------------------------------------------------
# Steps.
# --------------------------------------------------------------------------------------------------


def step_crappifiers(p: dict[str, Any]) -> dict[str, Any]:
    """Copy bandwidth and every preset's GB/s on one batch."""
    import torch

    sys.path.insert(0, str(SCRIPTS))
    from bench_crappifiers import compose_crappifier, preset_names

    device = torch.device(p["device"])
    shape = (p["batch"], 1, p["size"], p["size"])
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(device)
    y = torch.empty_like(x)
    nbytes = x.numel() * x.element_size()
    copy_s = _best_time(lambda: y.copy_(x), device, repeats=5)
    copy_gbs = 2 * nbytes / copy_s / 1e9
    gen = torch.Generator(device=device).manual_seed(0)
    rows: list[dict[str, Any]] = []
    work = tempfile.mkdtemp(prefix="psr-bench-gpu-crap-")
    for name in preset_names():
        try:
            crappifier = compose_crappifier(name, p["scale"], work).to(device).eval()
            out: list[Any] = []

            def run(c: Any = crappifier, out: list[Any] = out) -> None:
                with torch.inference_mode():
                    out[:] = [c(x, gen)]

            seconds = _best_time(run, device)
            moved = nbytes + out[0].numel() * out[0].element_size()
            gbs = moved / seconds / 1e9
            rows.append(
                {
                    "preset": name,
                    "ms": 1e3 * seconds,
                    "mpx_s": x.numel() / seconds / 1e6,
                    "gb_s": gbs,
                    "pct_copy": 100 * gbs / copy_gbs,
                }
            )
            del out[:]
        except Exception as err:  # noqa: BLE001 - one preset failing is a row, not the end
            rows.append({"preset": name, "error": f"{type(err).__name__}: {err}"[:200]})
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {
        "device": _device_name(device),
        "shape": list(shape),
        "copy_gb_s": copy_gbs,
        "rows": rows,
        "peak_gpu_gib": torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None,
        "peak_rss_gib": peak_rss_gib()[0],
    }


def _device_name(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads)"


class _TimedIterable:
    """A training loader whose iterator adds the time spent in ``next`` (waiting for a batch) to ``waits``,
    stamped with the time it ended, so that the wait inside a window can be summed."""

    def __init__(self, loader: Any, waits: list[tuple[float, float]]) -> None:
        self.loader, self.waits = loader, waits

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Any:
        it = iter(self.loader)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            t1 = time.perf_counter()
            self.waits.append((t1, t1 - t0))
            yield batch


def step_train(p: dict[str, Any]) -> None:
    """Timed Lightning fits of ``p["models"]`` in turn, in this one process (imports, CUDA start-up and the
    demo data paid once); each model's result is printed as soon as it is measured, a failure as an
    ``error`` result, so the parent keeps what finished even if this process is killed."""
    import gc
    import logging
    import warnings

    import torch

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*(val_dataloader|on_after_batch_transfer|LeafSpec|workers).*")
    for model in p["models"]:
        started = time.perf_counter()
        try:
            result = _train_one(model, p)
        except Exception as err:  # noqa: BLE001 - reported, and the next model runs
            result = {"error": f"{type(err).__name__}: {err}"[:300]}
        result.update(model=model, wall_s=time.perf_counter() - started)
        print(MARK + json.dumps(result), flush=True)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _train_one(model: str, p: dict[str, Any]) -> dict[str, Any]:
    import lightning as L
    import torch
    from hydra.utils import instantiate

    from psr.tasks import train as train_task

    started = time.perf_counter()
    cfg = compose_train([f"model={model}", *p["overrides"]])
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    threads = train_task.set_threads(cfg)
    parts = train_task.build(cfg)  # the loader settings train.py picks, the demo data made once
    built = time.perf_counter()
    datamodule = parts["datamodule"]
    waits: list[tuple[float, float]] = []
    plain_loader = datamodule.train_dataloader
    datamodule.train_dataloader = lambda: _TimedIterable(plain_loader(), waits)
    ends: list[float] = []
    warmup, seconds = int(p["warmup_steps"]), float(p["seconds"])

    class Clock(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
            ends.append(time.perf_counter())
            if len(ends) > warmup and ends[-1] - ends[warmup - 1] >= seconds:
                trainer.should_stop = True

    module = instantiate(
        cfg.module, net=parts["net"], crappifier=parts["crappifier"], loss=parts["loss"], panel_dir=None
    )
    trainer = instantiate(
        cfg.trainer,
        logger=False,
        callbacks=[Clock()],
        max_steps=-1,
        max_epochs=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    device = torch.device("cuda" if train_task.uses_cuda(cfg) else "cpu")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with UtilSampler() as gpu:
        trainer.fit(module, datamodule=datamodule)
    fitted = time.perf_counter()
    if len(ends) <= warmup:
        raise RuntimeError(f"only {len(ends)} steps ran; expected more than the {warmup} warm-up steps")
    t0, t1 = ends[warmup - 1], ends[-1]
    steps = len(ends) - warmup
    waited = sum(w for t, w in waits if t0 < t <= t1)
    own, child = peak_rss_gib()
    return {
        "device": _device_name(device),
        "precision": str(cfg.trainer.get("precision")),
        "loader": {k: getattr(datamodule, k, None) for k in train_task.LOADER_KEYS},
        "threads": threads or torch.get_num_threads(),
        "batch": int(cfg.data.batch_size),
        "patch": int(cfg.data.patch_size),
        "steps": steps,
        "seconds": t1 - t0,
        "patches_per_s": steps * int(cfg.data.batch_size) / (t1 - t0),
        "data_wait": waited / (t1 - t0),
        "gpu_busy": gpu.mean(t0, t1),
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / GIB if device.type == "cuda" else None,
        "peak_rss_gib": own,
        "worker_rss_gib": child if datamodule.num_workers else None,
        # Where the rest of the wall time went: building (config, data, model) and the fit's start-up
        # (workers, CUDA, warm-up steps) before the timed window; after it, the fit's end.
        "build_s": built - started,
        "startup_s": t0 - built,
        "teardown_s": fitted - t1,
    }


def step_predict(p: dict[str, Any]) -> dict[str, Any]:
    """``bench_predict.run_benchmark`` (each model in its own subprocess there)."""
    sys.path.insert(0, str(SCRIPTS))
    from bench_predict import run_benchmark

    results = run_benchmark(
        p["models"],
        size=p["size"],
        scale=p["scale"],
        tile=p["tile"],
        device=p["device"],
        output_format="ome.zarr",
        workdir=p["workdir"],
    )
    return {"size": p["size"], "scale": p["scale"], "results": results}


def step_live(p: dict[str, Any]) -> dict[str, Any]:
    """``bench_predict.run_benchmark`` on a time series at ×1, frame by frame, to TIFF."""
    sys.path.insert(0, str(SCRIPTS))
    from bench_predict import run_benchmark

    results = run_benchmark(
        p["models"],
        size=p["size"],
        scale=1,
        tile=p["tile"],
        frames=p["frames"],
        device=p["device"],
        output_format="tif",
        workdir=p["workdir"],
    )
    return {"size": p["size"], "frames": p["frames"], "results": results}


STEPS: dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]] = {
    "crappifiers": step_crappifiers,
    "train": step_train,
    "predict": step_predict,
    "live": step_live,
}
