"""Tiled-prediction throughput, GPU use and peak memory:
``python scripts/bench_predict.py [--size 4096] [--scale 4] [--tile 512] [--models unet rcan]``;
``python scripts/bench_predict.py --live`` measures frames/s on a 2048² time series (care_unet and rcan, ×1).

Writes a synthetic uint16 image (``size``², or ``frames`` × ``size``² for a time series) as a zarr array
chunk by chunk, builds a psr checkpoint with random weights for each model config (``conf/model/<name>``
at ``scale``), and runs ``psr.inference.predict.predict_image`` on it once per model, each in its own
subprocess so that the peak resident memory (``ru_maxrss``) is that model's alone. A small warm-up
prediction with the same tile and batch runs first (CUDA context, cuDNN autotuning, ``torch.compile``),
untimed. Reports input and output megapixels per second and frames/s (wall time of the whole prediction:
statistics, tiles, blending, normalising and writing the output), the GPU's busy fraction (sampled from
``torch.cuda.utilization()`` in a thread; ``n/a`` without CUDA or NVML), peak RSS and peak GPU memory.

Needs only torch, numpy, zarr, numcodecs, ome-zarr, tifffile, hydra-core / omegaconf and the psr source
tree on ``PYTHONPATH`` (segmentation-models-pytorch for ``unet``). Other scripts import ``run_benchmark``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MARK = "BENCH-RESULT "
LIVE_MODELS = ("care_unet", "rcan")


def synthetic_image(path: Path, size: int, frames: int = 0, chunk: int = 1024) -> Path:
    """A ``size``² uint16 fluorescence-like image (smooth structure + Poisson noise), or a ``(frames, size,
    size)`` time series when ``frames`` > 0 (its structure drifting), written one chunk at a time."""
    import zarr

    shape = (frames, size, size) if frames else (size, size)
    chunks = (1, chunk, chunk) if frames else (chunk, chunk)
    arr = zarr.create_array(str(path), shape=shape, chunks=chunks, dtype="uint16", fill_value=0)
    for t in range(max(frames, 1)):
        for y0 in range(0, size, chunk):
            for x0 in range(0, size, chunk):
                yy, xx = np.mgrid[y0 : min(y0 + chunk, size), x0 : min(x0 + chunk, size)].astype(np.float32)
                xx += 3.0 * t
                signal = (
                    200
                    + 800 * (np.sin(yy / 23.0) * np.cos(xx / 31.0)) ** 2
                    + 300 * np.sin((xx + yy) / 7.0) ** 8
                )
                rng = np.random.default_rng([t, y0, x0])
                block = np.minimum(rng.poisson(signal), 65535).astype(np.uint16)
                index = (
                    (t, slice(y0, y0 + chunk), slice(x0, x0 + chunk))
                    if frames
                    else (slice(y0, y0 + chunk), slice(x0, x0 + chunk))
                )
                arr[index] = block
    return path


def build_checkpoint(model: str, path: Path, scale: int) -> Path:
    """A psr checkpoint of ``conf/model/<model>.yaml`` at ``scale`` with random weights (the model's
    config and the training percentiles: all prediction reads)."""
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config = OmegaConf.create(
        {
            "scale": scale,
            "data": {"percentiles": [1.0, 99.8]},
            "model": OmegaConf.load(ROOT / "conf" / "model" / f"{model}.yaml"),
        }
    )
    torch.manual_seed(0)
    net = instantiate(config.model)
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    plain = OmegaConf.to_container(config, resolve=True)
    torch.save({"state_dict": state, "psr_config": plain, "psr_generator": "net"}, path)
    return path


class GpuSampler:
    """Samples ``torch.cuda.utilization()`` (percent of time a kernel ran, via NVML) every ``period``
    seconds in a thread; ``busy`` is the mean fraction, or None without CUDA or NVML."""

    def __init__(self, period: float = 0.05) -> None:
        self.period, self.samples = period, []  # type: ignore[var-annotated]
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        import torch

        if torch.cuda.is_available():
            try:
                torch.cuda.utilization()
            except Exception:  # noqa: BLE001 - no NVML (pynvml) here: report n/a
                return self
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
        return self

    def _run(self) -> None:
        import torch

        while not self.stop.wait(self.period):
            self.samples.append(torch.cuda.utilization())

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()

    @property
    def busy(self) -> float | None:
        return float(np.mean(self.samples)) / 100.0 if self.samples else None


def worker(params: dict[str, Any]) -> dict[str, Any]:
    """One model's prediction in this process: warm up, then time ``predict_image``; returns its summary
    with ``gpu_busy``, ``peak_rss_gib`` and ``peak_gpu_gib``."""
    import torch

    from psr.inference.checkpoint import load_checkpoint
    from psr.inference.images import open_input
    from psr.inference.predict import predict_image, resolve_device

    if params["threads"]:
        torch.set_num_threads(params["threads"])
    device = resolve_device(params["device"])
    model = load_checkpoint(params["ckpt"], device)
    options = {
        "tile": params["tile"],
        "overlap": params["overlap"],
        "batch_size": params["batch_size"],
        "memory_budget": params["memory_budget"],
        "compile": params["compile"],
        "progress": params["progress"],
    }
    axes = "tyx" if params["frames"] else None
    if params["warmup"]:
        with open_input(params["warmup"], axes) as image:
            predict_image(model, image, params["warmup_output"], **options, overwrite=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with GpuSampler() as gpu, open_input(params["input"], axes) as image:
        summary = predict_image(model, image, params["output"], **options)
    summary["gpu_busy"] = gpu.busy
    summary["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    summary["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    summary["threads"] = torch.get_num_threads()
    return summary


def run_benchmark(
    models: Sequence[str] = ("unet", "rcan"),
    *,
    size: int = 4096,
    scale: int = 4,
    tile: int = 512,
    overlap: int = 32,
    batch_size: int | str = "auto",
    frames: int = 0,
    device: str = "auto",
    threads: int = 0,
    output_format: str = "ome.zarr",
    memory_budget: str = "2GB",
    compile: bool = False,  # noqa: A002 - predict's option name
    warmup: bool = True,
    workdir: str | Path | None = None,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """Benchmark tiled prediction of a synthetic ``size``² uint16 image (a ``frames``-long time series
    when ``frames`` > 0) with random-weight ``models`` at ``scale``; each model runs in a subprocess.

    Returns ``{model: summary}``; each summary is ``predict_image``'s (``seconds``, ``planes``,
    ``tiles_per_plane``, ``batch_size``, ``accumulator``, ``device``, ``input_megapixels``,
    ``output_megapixels``, ``megapixels_per_second`` (input), ``output_megapixels_per_second``,
    ``frames_per_second``, ``output_shape``, ...) plus ``gpu_busy`` (mean fraction of time the GPU ran a
    kernel, or None), ``peak_rss_gib``, ``peak_gpu_gib`` (None on the CPU), ``threads``,
    ``process_seconds`` (the subprocess, model building and warm-up included) and ``output_bytes``.
    Raises ``RuntimeError`` when a model's run fails.
    """
    work = Path(tempfile.mkdtemp(prefix="psr-bench-predict-", dir=workdir))
    results: dict[str, dict[str, Any]] = {}
    try:
        image = synthetic_image(work / "input.zarr", size, frames)
        warm = None
        if warmup:
            warm_size = min(size, 4 * tile)
            warm = synthetic_image(work / "warmup.zarr", warm_size, min(frames, 2))
        for model in models:
            ckpt = build_checkpoint(model, work / f"{model}.ckpt", scale)
            output = work / f"{model}.{output_format}"
            params = {
                "ckpt": str(ckpt),
                "input": str(image),
                "output": str(output),
                "warmup": str(warm) if warm else None,
                "warmup_output": str(work / f"warmup-{model}.{output_format}"),
                "tile": tile,
                "overlap": overlap,
                "batch_size": batch_size,
                "memory_budget": memory_budget,
                "compile": compile,
                "frames": frames,
                "device": device,
                "threads": threads,
                "progress": progress,
            }
            started = time.perf_counter()
            result = subprocess.run(
                [sys.executable, __file__, "--worker", json.dumps(params)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
                check=False,
                env={
                    **os.environ,
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                },
            )
            if result.returncode != 0:
                raise RuntimeError(f"the {model} run failed with exit code {result.returncode}")
            line = next(line for line in result.stdout.splitlines() if line.startswith(MARK))
            summary: dict[str, Any] = json.loads(line[len(MARK) :])
            summary["process_seconds"] = time.perf_counter() - started
            summary["output_bytes"] = (
                sum(f.stat().st_size for f in output.rglob("*") if f.is_file())
                if output.is_dir()
                else output.stat().st_size
            )
            shutil.rmtree(output, ignore_errors=True) if output.is_dir() else output.unlink(missing_ok=True)
            results[model] = summary
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def _busy(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f} %"


def table(results: dict[str, dict[str, Any]], size: int) -> str:
    lines = [
        "| model | input | output | planes | tiles | batch | accumulator | wall s | input Mpx/s | output Mpx/s"
        " | frames/s | GPU busy | peak RSS GiB | peak GPU GiB |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, s in results.items():
        out_shape = "×".join(str(n) for n in s["output_shape"])
        gpu = "n/a" if s["peak_gpu_gib"] is None else f"{s['peak_gpu_gib']:.2f}"
        lines.append(
            f"| `{model}` | {size}² | {out_shape} | {s['planes']} | {s['tiles_per_plane']} | {s['batch_size']} |"
            f" {s['accumulator']} | {s['seconds']:.2f} | {s['megapixels_per_second']:.3f} |"
            f" {s['output_megapixels_per_second']:.2f} | {s['frames_per_second']:.2f} | {_busy(s['gpu_busy'])} |"
            f" {s['peak_rss_gib']:.2f} | {gpu} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--size", type=int, default=None, help="image side in pixels (default 4096; --live 2048)"
    )
    parser.add_argument(
        "--scale", type=int, default=None, help="super-resolution factor (default 4; --live 1)"
    )
    parser.add_argument(
        "--tile", type=int, default=None, help="tile side in input pixels (default 512; --live 1024)"
    )
    parser.add_argument("--overlap", type=int, default=32, help="tile overlap in input pixels (default 32)")
    parser.add_argument("--batch-size", default="auto", help="tiles per forward pass, or auto (default)")
    parser.add_argument(
        "--models", nargs="+", default=None, help="model configs (default unet rcan; --live care_unet rcan)"
    )
    parser.add_argument("--live", action="store_true", help="frames/s on a time series of --frames frames")
    parser.add_argument("--frames", type=int, default=None, help="time-series length (default 0; --live 32)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads in the worker (0: torch's default)"
    )
    parser.add_argument("--output-format", default="ome.zarr", choices=["ome.zarr", "tif"])
    parser.add_argument("--memory-budget", default="2GB", help="predict's memory_budget (default 2GB)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument(
        "--no-warmup", action="store_true", help="time the first prediction, warm-up included"
    )
    parser.add_argument(
        "--workdir", default=None, help="where the image and outputs go (default: a temp folder)"
    )
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--progress", action="store_true", help="show each run's progress bar")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(MARK + json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    live = args.live
    size = args.size or (2048 if live else 4096)
    scale = args.scale or (1 if live else 4)
    tile = args.tile or (1024 if live else 512)
    frames = args.frames if args.frames is not None else (32 if live else 0)
    models = args.models or list(LIVE_MODELS if live else ("unet", "rcan"))
    batch = int(args.batch_size) if str(args.batch_size).isdigit() else args.batch_size
    try:
        results = run_benchmark(
            models,
            size=size,
            scale=scale,
            tile=tile,
            overlap=args.overlap,
            batch_size=batch,
            frames=frames,
            device=args.device,
            threads=args.threads,
            output_format=args.output_format,
            memory_budget=args.memory_budget,
            compile=args.compile,
            warmup=not args.no_warmup,
            workdir=args.workdir,
            progress=args.progress,
        )
    except RuntimeError as err:
        raise SystemExit(f"error: {err}") from err
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    first = next(iter(results.values()))
    print(f"`{shlex.join(['python', 'scripts/bench_predict.py', *sys.argv[1:]])}`\n")
    what = f"{frames} × {size}²" if frames else f"{size}²"
    print(
        f"{what} uint16 zarr input, tile {tile}, overlap {args.overlap}, ×{scale}, output {args.output_format}"
        f" float32, memory_budget {args.memory_budget}{', compiled' if args.compile else ''}; {first['device']},"
        f" {first['threads']} torch threads, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}\n"
    )
    print(table(results, size))


if __name__ == "__main__":
    main()
