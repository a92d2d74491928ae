"""Tiled-prediction throughput and peak memory: ``python scripts/bench_predict.py [--size 8192] [--tile 512]``.

Writes a synthetic ``size``² uint16 image as a zarr array chunk by chunk (never whole in memory), builds a
psr checkpoint with random weights for each model config (``--models unet rcan``, composed like
``train.py model=<name>``), and runs ``psr.inference.predict.predict_file`` on it once per model, each in
its own subprocess so that the peak resident memory (``ru_maxrss``) is that model's alone. Prints a
Markdown table: input megapixels per second (wall time of the whole prediction: statistics, tiles,
normalising and writing the output) and peak RSS. ``--size 2048`` is a quick check.
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
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MARK = "BENCH-RESULT "


def synthetic_image(path: Path, size: int, chunk: int = 1024) -> Path:
    """A ``size``² uint16 fluorescence-like image (smooth structure + Poisson noise), one chunk at a time."""
    import zarr

    arr = zarr.create_array(
        str(path), shape=(size, size), chunks=(chunk, chunk), dtype="uint16", fill_value=0
    )
    for y0 in range(0, size, chunk):
        for x0 in range(0, size, chunk):
            yy, xx = np.mgrid[y0 : min(y0 + chunk, size), x0 : min(x0 + chunk, size)].astype(np.float32)
            signal = (
                200 + 800 * (np.sin(yy / 23.0) * np.cos(xx / 31.0)) ** 2 + 300 * np.sin((xx + yy) / 7.0) ** 8
            )
            rng = np.random.default_rng([y0, x0])
            arr[y0 : y0 + chunk, x0 : x0 + chunk] = np.minimum(rng.poisson(signal), 65535).astype(np.uint16)
    return path


def build_checkpoint(model: str, path: Path, scale: int) -> Path:
    """A psr checkpoint of ``conf/model/<model>.yaml`` at ``scale`` with random weights."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train", overrides=[f"model={model}", f"scale={scale}", "logger=none", "paths.output_dir=unused"]
        )
    GlobalHydra.instance().clear()
    torch.manual_seed(0)
    net = instantiate(cfg.model)
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    config = OmegaConf.to_container(cfg, resolve=True)
    torch.save({"state_dict": state, "psr_config": config, "psr_generator": "net"}, path)
    return path


def worker(args: argparse.Namespace) -> None:
    """One model's prediction in this process; prints its summary and peak RSS as one JSON line."""
    import torch

    from psr.inference.predict import predict_file

    if args.threads:
        torch.set_num_threads(args.threads)
    summary = predict_file(
        args.ckpt,
        args.input,
        args.output,
        device=args.device,
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch_size,
        progress=args.progress,
    )
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    summary["peak_rss_gib"] = rss_kib / 2**20
    summary["threads"] = torch.get_num_threads()
    print(MARK + json.dumps(summary), flush=True)


def run_model(model: str, args: argparse.Namespace, image: Path, work: Path) -> dict[str, Any]:
    ckpt = build_checkpoint(model, work / f"{model}.ckpt", args.scale)
    output = work / f"{model}.{args.output_format}"
    command = [
        sys.executable,
        __file__,
        "--worker",
        "--ckpt",
        str(ckpt),
        "--input",
        str(image),
        "--output",
        str(output),
        "--tile",
        str(args.tile),
        "--overlap",
        str(args.overlap),
        "--batch-size",
        str(args.batch_size),
        "--device",
        args.device,
        "--threads",
        str(args.threads),
    ]
    if args.progress:
        command.append("--progress")
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"error: the {model} run failed with exit code {result.returncode}")
    line = next(line for line in result.stdout.splitlines() if line.startswith(MARK))
    summary: dict[str, Any] = json.loads(line[len(MARK) :])
    summary["process_seconds"] = time.perf_counter() - started
    summary["output_bytes"] = (
        sum(f.stat().st_size for f in output.rglob("*") if f.is_file())
        if output.is_dir()
        else output.stat().st_size
    )
    shutil.rmtree(output, ignore_errors=True) if output.is_dir() else output.unlink(missing_ok=True)
    return summary


def table(rows: list[tuple[str, dict[str, Any]]], args: argparse.Namespace) -> str:
    lines = [
        "| model | input | output | tiles | wall s | input Mpx/s | output Mpx/s | peak RSS GiB |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for model, s in rows:
        out_shape = "×".join(str(n) for n in s["output_shape"])
        out_mpx = s["input_megapixels"] * s["scale"] ** 2
        lines.append(
            f"| `{model}` | {args.size}² | {out_shape} | {s['tiles_per_plane']} | {s['seconds']:.0f} |"
            f" {s['megapixels_per_second']:.3f} | {out_mpx / s['seconds']:.2f} | {s['peak_rss_gib']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=8192, help="image side in pixels (default 8192)")
    parser.add_argument("--tile", type=int, default=512, help="tile side in input pixels (default 512)")
    parser.add_argument("--overlap", type=int, default=32, help="tile overlap in input pixels (default 32)")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass (default 4)")
    parser.add_argument(
        "--models", nargs="+", default=["unet", "rcan"], help="model configs (default unet rcan)"
    )
    parser.add_argument("--scale", type=int, default=4, help="super-resolution factor (default 4)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads in the worker (0: torch's default)"
    )
    parser.add_argument("--output-format", default="ome.zarr", choices=["ome.zarr", "tif"])
    parser.add_argument(
        "--workdir", default=None, help="where the image and outputs go (default: a temp folder)"
    )
    parser.add_argument("--progress", action="store_true", help="show each run's progress bar")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ckpt", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    work = Path(tempfile.mkdtemp(prefix="psr-bench-predict-", dir=args.workdir))
    try:
        started = time.perf_counter()
        image = synthetic_image(work / "input.zarr", args.size)
        print(
            f"synthetic {args.size}² uint16 input written in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
        rows = []
        for model in args.models:
            summary = run_model(model, args, image, work)
            print(
                f"{model}: {summary['seconds']:.0f} s, {summary['megapixels_per_second']:.3f} input Mpx/s,"
                f" peak RSS {summary['peak_rss_gib']:.2f} GiB, output {summary['output_bytes'] / 2**30:.2f} GiB",
                file=sys.stderr,
            )
            rows.append((model, summary))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    device = rows[0][1]["device"] if rows else args.device
    print(f"`{shlex.join(['python', 'scripts/bench_predict.py', *sys.argv[1:]])}`\n")
    print(
        f"{args.size}² uint16 zarr input, tile {args.tile}, overlap {args.overlap}, batch {args.batch_size},"
        f" ×{args.scale}, output {args.output_format} float32; {device}, {rows[0][1]['threads'] if rows else '?'}"
        f" torch threads, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}\n"
    )
    print(table(rows, args))


if __name__ == "__main__":
    main()
