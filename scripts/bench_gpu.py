"""psr on one GPU, one command, one Markdown report: ``python scripts/bench_gpu.py [--out report.md]``.

Steps, each in its own subprocess with its own timeout (a failing or overrunning step is reported and
the next one runs; the training models share one process, and a fresh one takes the models still to do
after a failure), within a total ``--budget`` of seconds (default 300; steps that no longer fit are
reported as skipped). They run in the order (a), (c), (d), (b), training taking what the budget leaves. The
report is rewritten after every step, so an outer timeout leaves the steps done so far.

(a) **Crappifiers**: the device's copy bandwidth (``y.copy_(x)`` of the batch, bytes read + written per
    second), then every ``conf/crappifier/*.yaml`` preset on a ``--batch`` × 1 × ``--size``² float32 batch
    (default 256 × 1024², 1 GiB): best of 3 after a warm-up; GB/s = (input + output bytes) / time, a lower
    bound on the memory traffic, and that as a percentage of the copy bandwidth.
(b) **Training**: for each of ``--models`` (default rcan, care_unet, unet) a real Lightning fit as
    ``train.py`` builds it (``psr.tasks.train.build``: the loader settings it picks from the machine,
    ``trainer=gpu``: bf16-mixed) on the demo data, patch 128, batch 32, ×4, for ``--train-seconds``
    (default 25) after ``--warmup-steps`` (default 20) steps: patches/s, the share of the step time the training loop
    spent waiting for the next batch (time inside the loader iterator's ``next``), the GPU's busy share
    (``torch.cuda.utilization()``, else ``nvidia-smi``, sampled in a thread; n/a without either), peak
    GPU memory and peak RSS (the training process; the largest loader worker).
(c) **Prediction**: ``scripts/bench_predict.py``'s ``run_benchmark`` (its code, imported): rcan, a
    ``--predict-size``² (default 4096) uint16 image ×4 to OME-Zarr: input Mpx/s, GPU busy, peak memory.
(d) **Live restoration**: the same ``run_benchmark`` on a ``--live-frames``-frame (default 32) time series
    of ``--live-size``² (default 2048) at ×1 with care_unet and rcan, to TIFF: frames/s (the issue's
    targets: ≥ 30 with care_unet, ≥ 10 with rcan), GPU busy, peak memory.

``--quick`` is a CPU rehearsal with tiny sizes (batch 4 × 64², 2 s of training per model on 4 demo
images of 256², prediction of 256², 4 live frames of 128² with care_unet only); under two minutes on a 2-core machine. Runs from a source tree:
``PYTHONPATH=$PWD python scripts/bench_gpu.py`` with torch, lightning, hydra-core, omegaconf, zarr,
numcodecs, ome-zarr (+ dask), scipy, scikit-image, tifffile and segmentation-models-pytorch (unet only);
no W&B (``WANDB_MODE=disabled``, ``logger=none``), no optuna, no albumentations.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("WANDB_MODE", "disabled")

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
if str(SCRIPTS) not in sys.path:  # loaded from its file (the tests): the steps module sits next to it
    sys.path.append(str(SCRIPTS))

from bench_gpu_steps import MARK, STEPS  # noqa: E402

# --------------------------------------------------------------------------------------------------
# The parent: plan, run each step in a subprocess, write the report.
# --------------------------------------------------------------------------------------------------


def run_step(kind: str, params: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
    """Run one step in a subprocess; returns the results it printed (a training step prints one per
    model), then ``{"error": ...}`` when it failed or ran out of time."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "WANDB_MODE": "disabled",
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", kind, "--params", json.dumps(params)]
    started = time.perf_counter()
    error: str | None = None
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        stdout, stderr = proc.stdout, proc.stderr
        if proc.returncode != 0:
            tail = (stderr or stdout).strip().splitlines()[-3:]
            error = f"exit code {proc.returncode}: " + " / ".join(tail)[-400:]
    except subprocess.TimeoutExpired as err:
        stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        error = f"timed out after {timeout:.0f} s"
    wall = time.perf_counter() - started
    results = [json.loads(line[len(MARK) :]) for line in stdout.splitlines() if line.startswith(MARK)]
    for result in results:
        result.setdefault("wall_s", wall)
    if error is not None or not results:
        results.append({"error": error or "no result printed", "wall_s": wall})
    return results


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f} %"


def _gib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _num(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _prediction_section(
    title: str,
    step: dict[str, Any] | None,
    header: str,
    cells: Callable[[dict[str, Any], dict[str, Any]], str],
) -> list[str]:
    """A ``run_benchmark`` step's report lines: one row per model, ``cells(step, summary)`` giving the
    columns between the model's name and its GPU busy share and peak memory."""
    lines = ["", title]
    if step is None:
        return [*lines, "not run (time budget)"]
    if "error" in step:
        return [*lines, f"failed: {step['error']}"]
    lines += ["", header, "|---|" + "---:|" * (header.count("|") - 2)]
    for model, s in step["results"].items():
        lines.append(
            f"| {model} {cells(step, s)} {_pct(s.get('gpu_busy'))} | {_gib(s.get('peak_gpu_gib'))} |"
            f" {_gib(s.get('peak_rss_gib'))} |"
        )
    return lines


def report(header: list[str], results: dict[str, dict[str, Any]], plan: list[tuple[str, str]]) -> str:
    lines = [*header, ""]
    crap = results.get("crappifiers")
    lines.append("## (a) Crappifier presets")
    if crap is None:
        lines.append("not run")
    elif "error" in crap:
        lines.append(f"failed: {crap['error']}")
    else:
        shape = "×".join(str(n) for n in crap["shape"])
        lines += [
            f"{crap['device']}; batch {shape} float32; device copy bandwidth {_num(crap['copy_gb_s'])} GB/s "
            f"(read + write). Best of 3 after a warm-up; GB/s = (input + output bytes) / time. "
            f"Peak GPU memory {_gib(crap['peak_gpu_gib'])} GiB, peak RSS {_gib(crap['peak_rss_gib'])} GiB.",
            "",
            "| preset | ms | Mpx/s | GB/s | % of copy |",
            "|---|---:|---:|---:|---:|",
        ]
        for row in crap["rows"]:
            if "error" in row:
                lines.append(f"| {row['preset']} | failed: {row['error']} | | | |")
            else:
                lines.append(
                    f"| {row['preset']} | {row['ms']:.1f} | {_num(row['mpx_s'])} | {_num(row['gb_s'])} |"
                    f" {row['pct_copy']:.1f} |"
                )
    lines += ["", "## (b) Training (demo data, loader settings as train.py picks them)"]
    train_rows = [(key, results.get(key)) for kind, key in plan if kind == "train"]
    lines += [
        "",
        "| model | device | precision | batch × patch | loader | steps | patches/s | waiting for data |"
        " GPU busy | peak GPU GiB | peak RSS GiB (worker) | build + start-up s |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, r in train_rows:
        model = key.split(":", 1)[1]
        if r is None:
            lines.append(f"| {model} | not run (time budget) | | | | | | | | | | |")
        elif "error" in r:
            lines.append(f"| {model} | failed: {r['error']} | | | | | | | | | | |")
        else:
            ld = r["loader"]
            loader = (
                f"{ld['num_workers']} workers, pin {ld['pin_memory']}, persistent {ld['persistent_workers']}, "
                f"prefetch {ld['prefetch_factor']}"
            )
            lines.append(
                f"| {model} | {r['device']} | {r['precision']} | {r['batch']} × {r['patch']}² | {loader} |"
                f" {r['steps']} in {r['seconds']:.1f} s | {_num(r['patches_per_s'])} | {_pct(r['data_wait'])} |"
                f" {_pct(r['gpu_busy'])} | {_gib(r['peak_gpu_gib'])} | {_gib(r['peak_rss_gib'])}"
                f" ({_gib(r['worker_rss_gib'])}) | {r['build_s']:.0f} + {r['startup_s']:.0f} |"
            )
    lines += _prediction_section(
        "## (c) Prediction (scripts/bench_predict.py's run_benchmark, to OME-Zarr)",
        results.get("predict"),
        "| model | input | scale | wall s | input Mpx/s | output Mpx/s | GPU busy | peak GPU GiB | peak RSS GiB |",
        lambda p, s: (
            f"| {p['size']}² | {p['scale']} | {s['seconds']:.2f} | {s['megapixels_per_second']:.2f} |"
            f" {s['output_megapixels_per_second']:.1f} |"
        ),
    )
    lines += _prediction_section(
        "## (d) Live restoration (a time series at ×1, frame by frame, to TIFF)",
        results.get("live"),
        "| model | frames | frames/s | GPU busy | peak GPU GiB | peak RSS GiB |",
        lambda p, s: f"| {p['frames']} × {p['size']}² | {_num(s['frames_per_second'])} |",
    )
    lines += ["", "## Steps", "", "| step | wall s | status |", "|---|---:|---|"]
    for _, key in plan:
        r = results.get(key)
        status = "skipped (time budget)" if r is None else ("failed" if "error" in r else "ok")
        wall = f"{r['wall_s']:.0f}" if r and "wall_s" in r else ""
        lines.append(f"| {key} | {wall} | {status} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a CPU rehearsal with tiny sizes (< 2 min)")
    parser.add_argument("--out", default=None, help="also write the Markdown report to this file")
    parser.add_argument("--budget", type=float, default=None, help="total seconds (default 300; --quick 115)")
    parser.add_argument("--batch", type=int, default=None, help="crappifier batch (default 256; --quick 4)")
    parser.add_argument(
        "--size", type=int, default=None, help="crappifier image side (default 1024; --quick 64)"
    )
    parser.add_argument("--models", nargs="+", default=["rcan", "care_unet", "unet"], help="training models")
    parser.add_argument(
        "--train-seconds", type=float, default=None, help="timed training per model (default 25; --quick 2)"
    )
    parser.add_argument(
        "--warmup-steps", type=int, default=None, help="untimed steps first (default 20; --quick 1)"
    )
    parser.add_argument(
        "--predict-size", type=int, default=None, help="prediction image side (default 4096; --quick 256)"
    )
    parser.add_argument(
        "--live-size", type=int, default=None, help="live time-series frame side (default 2048; --quick 128)"
    )
    parser.add_argument(
        "--live-frames", type=int, default=None, help="live time-series length (default 32; --quick 4)"
    )
    parser.add_argument("--skip", nargs="*", default=[], choices=["crappifiers", "train", "predict", "live"])
    parser.add_argument(
        "--workdir", default=None, help="demo data and prediction files (default: a temp folder)"
    )
    parser.add_argument("--step", default=None, choices=sorted(STEPS), help=argparse.SUPPRESS)
    parser.add_argument("--params", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick

    def pick(value: Any, full: Any, tiny: Any) -> Any:
        return value if value is not None else (tiny if quick else full)

    args.budget = pick(args.budget, 300.0, 115.0)
    args.batch = pick(args.batch, 256, 4)
    args.size = pick(args.size, 1024, 64)
    args.train_seconds = pick(args.train_seconds, 25.0, 2.0)
    args.warmup_steps = pick(args.warmup_steps, 20, 1)
    args.predict_size = pick(args.predict_size, 4096, 256)
    args.live_size = pick(args.live_size, 2048, 128)
    args.live_frames = pick(args.live_frames, 32, 4)
    sizes = (args.batch, args.size, args.predict_size, args.warmup_steps, args.live_size, args.live_frames)
    if min(sizes) < 1 or args.train_seconds <= 0:
        parser.error(
            "--batch, --size, --predict-size, --warmup-steps, --live-size, --live-frames and --train-seconds"
            " must be positive"
        )
    if args.size % 4:
        parser.error(f"--size {args.size} must be divisible by the scale 4")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.step is not None:
        result = STEPS[args.step](json.loads(args.params or "{}"))
        if result is not None:
            print(MARK + json.dumps(result), flush=True)
        return 0
    import torch

    started = time.perf_counter()
    cuda = torch.cuda.is_available() and not args.quick
    device = "cuda" if cuda else "cpu"
    work = Path(args.workdir or tempfile.mkdtemp(prefix="psr-bench-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    trainer = "trainer=gpu" if cuda else "trainer=cpu"
    per_model = (
        45.0 if cuda else 15.0
    )  # building, workers, CUDA start-up and warm-up besides the timed window
    data = [f"paths.cache_dir={work / 'cache'}"]
    if args.quick:
        data += ["data.n_images=4", "data.image_size=256", "data.patch_size=64", "data.batch_size=8"]
    else:
        data += ["data.patch_size=128", "data.batch_size=32"]
    plan: list[tuple[str, str]] = []
    params: dict[str, dict[str, Any]] = {}
    timeouts: dict[str, float] = {}
    if "crappifiers" not in args.skip:
        plan.append(("crappifiers", "crappifiers"))
        params["crappifiers"] = {"device": device, "batch": args.batch, "size": args.size, "scale": 4}
        timeouts["crappifiers"] = 60.0 if cuda else 30.0
    if "train" not in args.skip:
        plan += [("train", f"train:{model}") for model in args.models]
        params["train"] = {
            "overrides": ["scale=4", "logger=none", trainer, f"paths.output_dir={work / 'run'}", *data],
            "seconds": args.train_seconds,
            "warmup_steps": args.warmup_steps,
        }
    if "predict" not in args.skip:
        plan.append(("predict", "predict"))
        params["predict"] = {
            "models": ["rcan"],
            "size": args.predict_size,
            "scale": 4,
            "tile": 512 if args.predict_size >= 1024 else 128,
            "device": device,
            "workdir": str(work),
        }
        timeouts["predict"] = 90.0 if cuda else 45.0
    if "live" not in args.skip:
        plan.append(("live", "live"))
        params["live"] = {
            "models": ["care_unet"] if args.quick else ["care_unet", "rcan"],
            "size": args.live_size,
            "frames": args.live_frames,
            "tile": 1024 if args.live_size >= 1024 else args.live_size,
            "device": device,
            "workdir": str(work),
        }
        timeouts["live"] = 90.0 if cuda else 45.0
    header = [
        "# psr GPU benchmark" + (" (--quick: CPU rehearsal, tiny sizes)" if args.quick else ""),
        "",
        f"{platform.node()}: {os.cpu_count()} logical CPUs; Python {platform.python_version()}, torch "
        f"{torch.__version__}, CUDA device: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}; "
        f"runs on {device}. Budget {args.budget:.0f} s; each step in its own process with its own timeout "
        "(the training models share one; a fresh one takes over after a failure).",
        f"command: {shlex.join([sys.executable, *sys.argv])}",
    ]
    results: dict[str, dict[str, Any]] = {}
    text = report(header, results, plan)

    def left() -> float:
        return args.budget - (time.perf_counter() - started)

    def write() -> None:
        nonlocal text
        text = report(header, results, plan)
        if args.out:
            Path(args.out).write_text(text)

    # Prediction before training: the training models share what the budget leaves.
    order = [kind for kind in ("crappifiers", "predict", "live", "train") if any(k == kind for k, _ in plan)]
    for kind in order:
        if kind == "train":
            # All models in one process (imports, CUDA and the demo data once); after a crash or a
            # timeout a fresh process takes the models still to do.
            todo = list(args.models)
            while todo and left() >= 20:
                timeout = min(left(), (40.0 if cuda else 20.0) + len(todo) * (args.train_seconds + per_model))
                print(f"train {todo}: running (timeout {timeout:.0f} s)", file=sys.stderr, flush=True)
                for result in run_step("train", {**params["train"], "models": todo}, timeout):
                    model = result.get("model", todo[0])
                    results[f"train:{model}"] = result
                    if "error" in result:
                        print(f"train:{model}: {result['error']}", file=sys.stderr, flush=True)
                    if model in todo:
                        todo.remove(model)
                write()
            continue
        if left() < 10:
            print(f"{kind}: skipped, {left():.0f} s of the budget left", file=sys.stderr, flush=True)
            continue
        print(f"{kind}: running (timeout {min(timeouts[kind], left()):.0f} s)", file=sys.stderr, flush=True)
        results[kind] = run_step(kind, params[kind], min(timeouts[kind], left()))[0]
        if "error" in results[kind]:
            print(f"{kind}: {results[kind]['error']}", file=sys.stderr, flush=True)
        write()
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
