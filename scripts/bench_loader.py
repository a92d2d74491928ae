"""Data-loading throughput and memory: ``python scripts/bench_loader.py [--quick] [--skip-rss] [--big-gb 12]``.

Three measurements, all in one run so that the ratios between them hold on a shared machine:

1. **Loader rate.** Clean patches per second delivered by ``ZarrDataModule.train_dataloader()`` (the very
   ``DataLoader`` the trainer iterates, collation included) with 0, 1 and 2 workers, for 2D 256² patches
   (16 images of 2048², chunks 1×256×256) and 3D 16×128² patches (4 volumes of 64×1024², chunks
   1×16×128×128), batch 16, augmentation on. Stores are generated first (uint16, zstd); the first 3
   batches (worker start-up, first chunk reads) are not timed, the next ``--batches`` (default 40) are.
2. **Loader against the default training step.** The default ``make train`` config (``conf/train.yaml``:
   ``data=demo``, patch 64, batch 16, RCAN ×4, Poisson crappifier) on the CPU (``trainer=cpu``), built with
   ``psr.tasks.train.build`` as ``train.py`` does. Consumption rate: Lightning training steps fed from
   batches held in memory (degradation, forward, backward, optimiser step; no data loading), steps/s ×
   batch. Loader rate: the demo datamodule's training loader with ``num_workers`` from ``conf/data/demo.yaml``.
   The ratio loader / consumption above 1 means the loader keeps up; the same training steps fed by the
   real loader (``loader-fed``) show it directly.
3. **Peak memory against dataset size.** ``train.py data=zarr data.path=<store> trainer=cpu logger=none``
   for a few dozen steps (two epochs, validation and checkpoints included) in a subprocess, on a small
   store (``--small-gb``) and on one several times larger than the run's memory (``--big-gb``). The peak
   is the sum of RSS (and of PSS, which counts pages shared between the trainer and its forked loader
   workers once) over the whole process tree, polled with psutil. Store sizes are measured on disk.

Stores are written chunk by chunk (never a whole image in memory) under ``--workdir`` (default: a new
temporary folder) and deleted at the end unless ``--keep``. Content: fluorescence-like phantoms
(``psr.data.phantoms``) with Poisson noise at up to ~20k counts, which zstd compresses only ~1.45×; to
keep generation cheap, each block of an image is a random rotation, flip and roll of one of a few noisy
frames (zarr compresses every chunk on its own, so the repetition saves no disk). ``--quick`` shrinks
everything for the test; ``--out`` also writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# The stores and the measurements are modules next to this file: scripts/ is on sys.path when the script
# runs, not when a test loads it from its file.
SCRIPTS = Path(__file__).resolve().parent
if str(SCRIPTS) not in sys.path:
    sys.path.append(str(SCRIPTS))

from bench_loader_runs import (  # noqa: E402
    LoaderCase,
    _num,
    peak_tree_memory,  # noqa: F401 - the tests call it from here
    rss_run,
    run_default,
    run_loader_cases,
)
from bench_loader_stores import GiB, noisy_frames, on_disk_bytes, write_store  # noqa: E402, F401

# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def _size(n: float) -> str:
    """Bytes as GiB, MiB or KiB, whichever reads best."""
    for unit, scale in (("GiB", GiB), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}" if n < 10 * scale else f"{n / scale:.1f} {unit}"
    return f"{n / 1024:.0f} KiB"


def tables(report: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    workers = report["workers"]
    lines = [
        "Training loader (`ZarrDataModule.train_dataloader()`, collation included), patches/s:",
        "",
        "| patches | store | batch | " + " | ".join(f"{w} workers" for w in workers) + " |",
        "|---|---|---:|" + "---:|" * len(workers),
    ]
    for case in report["stores"]:
        rates = {r["workers"]: r for r in report["loader"] if r["case"] == case["name"]}
        patch = "×".join(str(p) for p in case["patch"])
        shape = "×".join(str(s) for s in case["image_shape"][1:])
        chunks = "×".join(str(c) for c in case["chunks"][1:])
        lines.append(
            f"| {case['name']} {patch} | {case['images']} × {shape} uint16, chunks {chunks},"
            f" {_size(case['disk_bytes'])} on disk | {case['batch_size']} | "
            + " | ".join(_num(rates[w]["patches_per_s"]) for w in workers)
            + " |"
        )
    d = report["default"]
    lines += [
        "",
        f"Default training config (data=demo, patch {d['patch_size']}, batch {d['batch_size']}, {d['model']}"
        f" ×{d['scale']}, trainer=cpu, {d['torch_threads']} torch threads):",
        "",
        "| | patches/s | steps/s |",
        "|---|---:|---:|",
        f"| loader, {d['workers']} worker(s) as in conf/data/demo.yaml | {_num(d['loader']['patches_per_s'])} |"
        f" {_num(d['loader']['patches_per_s'] / d['batch_size'])} |",
        f"| training steps on batches held in memory (consumption) | {_num(d['consumption']['patches_per_s'])} |"
        f" {_num(d['consumption']['steps_per_s'])} |",
        f"| training steps fed by the loader | {_num(d['loader_fed']['patches_per_s'])} |"
        f" {_num(d['loader_fed']['steps_per_s'])} |",
        f"| **loader / consumption** | **{_num(d['ratio'])}×** | |",
        f"| loader-fed / in-memory training rate | {d['fed_over_memory']:.2f} | |",
    ]
    if report.get("rss"):
        lines += [
            "",
            "Peak memory of `train.py data=zarr trainer=cpu` (whole process tree: trainer + loader workers):",
            "",
            "| store on disk | images | steps | processes | wall s | peak RSS sum | peak PSS sum | store / peak RSS |",
            "|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in report["rss"]:
            shape = "×".join(str(s) for s in r["image_shape"][1:])
            lines.append(
                f"| {_size(r['store_disk_bytes'])} | {r['images']} × {shape} | {r['steps']} |"
                f" {r['processes']:.0f} | {r['seconds']:.0f} | {_size(r['peak_rss_bytes'])} |"
                f" {_size(r['peak_pss_bytes'])} | {r['store_disk_bytes'] / r['peak_rss_bytes']:.2g} |"
            )
    return "\n".join(lines)


def write_json(path: Path, report: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, path)


@dataclass(frozen=True)
class Sizes:
    """Everything ``--quick`` shrinks."""

    frame: int
    n_frames: int
    image_2d: int
    n_images_2d: int
    chunk_2d: int
    patch_2d: int
    volume: tuple[int, int]
    n_volumes: int
    chunk_3d: tuple[int, int]
    patch_3d: tuple[int, int]
    batch: int
    warmup: int
    batches: int
    train_warmup: int
    train_steps: int
    demo_overrides: tuple[str, ...]
    rss_image: int
    rss_steps: int


FULL = Sizes(
    frame=1024,
    n_frames=4,
    image_2d=2048,
    n_images_2d=16,
    chunk_2d=256,
    patch_2d=256,
    volume=(64, 1024),
    n_volumes=4,
    chunk_3d=(16, 128),
    patch_3d=(16, 128),
    batch=16,
    warmup=3,
    batches=40,
    train_warmup=3,
    train_steps=25,
    demo_overrides=(),
    rss_image=8192,
    rss_steps=32,
)
QUICK = Sizes(
    frame=64,
    n_frames=2,
    image_2d=128,
    n_images_2d=4,
    chunk_2d=64,
    patch_2d=64,
    volume=(16, 64),
    n_volumes=2,
    chunk_3d=(8, 32),
    patch_3d=(8, 32),
    batch=4,
    warmup=1,
    batches=3,
    train_warmup=1,
    train_steps=2,
    demo_overrides=("data.n_images=3", "data.image_size=64", "data.patch_size=32", "data.batch_size=2"),
    rss_image=256,
    rss_steps=4,
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny stores and few batches (for the test)")
    parser.add_argument("--skip-rss", action="store_true", help="skip the peak-memory training runs")
    parser.add_argument(
        "--big-gb", type=float, default=12.0, help="on-disk size of the large store in GiB (default 12)"
    )
    parser.add_argument(
        "--small-gb", type=float, default=1.0, help="on-disk size of the small store in GiB (default 1)"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="loader workers to time")
    parser.add_argument("--batches", type=int, default=None, help="timed loader batches (default 40)")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads for the training steps and the train.py runs (0: torch's default)",
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    parser.add_argument("--workdir", default=None, help="where stores go (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated stores")
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="paths.cache_dir for the demo store (default: the config's, as `make train` uses)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.batches is not None:
        if args.batches < 1:
            print(f"error: --batches must be at least 1, got {args.batches}", file=sys.stderr)
            sys.exit(2)
        sizes = Sizes(**{**asdict(sizes), "batches": args.batches})
    if args.workdir is not None:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="psr-bench-loader-", dir=args.workdir))
    small_bytes = int(args.small_gb * GiB) if not args.quick else 2 * 2**20
    big_bytes = int(args.big_gb * GiB) if not args.quick else 8 * 2**20
    if not args.skip_rss:
        free = shutil.disk_usage(work).free
        if free < 1.1 * (small_bytes + big_bytes) + GiB:
            shutil.rmtree(work, ignore_errors=True)
            print(
                f"error: --workdir {work.parent} has {free / GiB:.1f} GiB free; --big-gb {args.big_gb} and"
                f" --small-gb {args.small_gb} need about {1.1 * (small_bytes + big_bytes) / GiB + 1:.1f} GiB",
                file=sys.stderr,
            )
            sys.exit(2)
    if args.threads < 0:
        print(f"error: --threads must be 0 (torch's default) or more, got {args.threads}", file=sys.stderr)
        sys.exit(2)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    started = time.perf_counter()
    report: dict[str, Any] = {
        "command": shlex.join(
            ["python", "scripts/bench_loader.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "workers": list(args.workers),
        "quick": args.quick,
    }
    try:
        t0 = time.perf_counter()
        frames = noisy_frames(sizes.n_frames, sizes.frame)
        print(
            f"{sizes.n_frames} noisy {sizes.frame}² frames in {time.perf_counter() - t0:.0f} s",
            file=sys.stderr,
        )
        s = sizes
        store_2d = write_store(
            work / "bench-2d.zarr",
            (1, s.image_2d, s.image_2d),
            (1, s.chunk_2d, s.chunk_2d),
            frames,
            n_images=s.n_images_2d,
        )
        store_3d = write_store(
            work / "bench-3d.zarr",
            (1, s.volume[0], s.volume[1], s.volume[1]),
            (1, s.chunk_3d[0], s.chunk_3d[1], s.chunk_3d[1]),
            frames,
            n_images=s.n_volumes,
            seed=1,
        )
        cases = [
            LoaderCase("2D", store_2d, (s.patch_2d, s.patch_2d), 2, s.batch),
            LoaderCase("3D", store_3d, (s.patch_3d[0], s.patch_3d[1], s.patch_3d[1]), 3, s.batch),
        ]
        report["stores"] = [
            {"name": c.name, "patch": list(c.patch), "batch_size": c.batch_size, **asdict(c.store)}
            for c in cases
        ]
        report["loader"] = run_loader_cases(cases, args.workers, s.warmup, s.batches)

        overrides = list(s.demo_overrides)
        if args.cache_dir is not None or args.quick:
            overrides.append(f"paths.cache_dir={args.cache_dir or work / 'cache'}")
        report["default"] = run_default(overrides, s.train_warmup, s.train_steps, s.batches, work)

        if not args.skip_rss:
            # Two validation batches per epoch: the run is about memory, not about validation time.
            extra = ["data.patch_size=64", "data.val_samples=4"] if args.quick else ["data.val_samples=32"]
            rows = []
            for label, target in (("small", small_bytes), ("big", big_bytes)):
                t0 = time.perf_counter()
                store = write_store(
                    work / f"rss-{label}.zarr",
                    (1, s.rss_image, s.rss_image),
                    (1, s.chunk_2d, s.chunk_2d),
                    frames,
                    target_bytes=target,
                    seed=2,
                )
                print(
                    f"{label} store: {store.images} images, {store.disk_bytes / GiB:.2f} GiB on disk,"
                    f" written in {time.perf_counter() - t0:.0f} s",
                    file=sys.stderr,
                )
                rows.append(rss_run(store, label, s.rss_steps, work, extra, args.threads))
                if not args.keep:
                    shutil.rmtree(store.path, ignore_errors=True)
            report["rss"] = rows
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"stores kept under {work}", file=sys.stderr)
    report["seconds"] = time.perf_counter() - started
    report["load_average"] = [load_before[0], os.getloadavg()[0]]
    print(f"`{report['command']}`\n")
    print(
        f"{report['cpus']} CPUs ({report['processor']}), load average {load_before[0]:.1f} at the start and"
        f" {report['load_average'][1]:.1f} at the end; {report['seconds']:.0f} s in all.\n"
    )
    print(tables(report))
    if args.out is not None:
        write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
