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
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
GiB = 2**30


# --------------------------------------------------------------------------------------------------
# Synthetic stores
# --------------------------------------------------------------------------------------------------


def on_disk_bytes(path: Path) -> int:
    """Bytes a folder occupies on disk (allocated blocks of every file under it)."""
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


def noisy_frames(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` distinct ``size``² uint16 frames: phantom structure times 8, with Poisson shot noise."""
    from psr.data.phantoms import PhantomSpec, render_phantom

    rng = np.random.default_rng(seed)
    spec = PhantomSpec(size=size)
    frames = []
    for i in range(n):
        expected = render_phantom(seed, 1000 + i, spec).astype(np.float32) * 8.0
        frames.append(np.minimum(rng.poisson(expected), 65535).astype(np.uint16))
    return frames


def _block(frames: Sequence[np.ndarray], rng: np.random.Generator, depth: int) -> np.ndarray:
    """A ``(depth, S, S)`` block; each plane a random rotation, flip and roll of one of the frames.

    Planes are drawn independently: shifted copies of one plane inside a 3D chunk would let zstd find
    their noise again and compress the chunk to a fraction of what a real volume takes.
    """
    planes = []
    for _ in range(depth):
        frame = np.rot90(frames[int(rng.integers(len(frames)))], int(rng.integers(4)))
        if rng.random() < 0.5:
            frame = frame[::-1]
        planes.append(np.roll(frame, tuple(int(v) for v in rng.integers(0, frame.shape[0], 2)), (0, 1)))
    return np.stack(planes)


@dataclass(frozen=True)
class StoreInfo:
    path: str
    images: int
    image_shape: tuple[int, ...]
    chunks: tuple[int, ...]
    raw_bytes: int
    disk_bytes: int


def write_store(
    path: Path,
    image_shape: tuple[int, ...],
    chunks: tuple[int, ...],
    frames: Sequence[np.ndarray],
    *,
    n_images: int | None = None,
    target_bytes: int | None = None,
    seed: int = 0,
) -> StoreInfo:
    """A zarr group of uint16 images ``(1, Y, X)`` (axes cyx) or ``(1, Z, Y, X)`` (czyx), zstd, written
    block by block under a temporary name and renamed when complete.

    Writes ``n_images`` images, or as many as it takes for the store to reach ``target_bytes`` on disk.
    Y and X must be multiples of the frame size, Z a multiple of the chunk depth.
    """
    import zarr
    from zarr.codecs import ZstdCodec

    if (n_images is None) == (target_bytes is None):
        raise ValueError("write_store needs exactly one of n_images and target_bytes")
    size = frames[0].shape[0]
    depth_chunk = chunks[1] if len(image_shape) == 4 else 1
    depth = image_shape[1] if len(image_shape) == 4 else 1
    if image_shape[-1] % size or image_shape[-2] % size or depth % depth_chunk:
        raise ValueError(f"image shape {image_shape} does not tile into {size}² frames and chunks {chunks}")
    rng = np.random.default_rng(seed)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    root = zarr.open_group(str(tmp), mode="w")
    disk = 0
    count = 0
    try:
        while (n_images is not None and count < n_images) or (
            target_bytes is not None and disk < target_bytes
        ):
            name = f"img_{count:05d}"
            arr = root.create_array(
                name, shape=image_shape, chunks=chunks, dtype="uint16", compressors=ZstdCodec(level=3)
            )
            for z0 in range(0, depth, depth_chunk):
                for y0 in range(0, image_shape[-2], size):
                    for x0 in range(0, image_shape[-1], size):
                        block = _block(frames, rng, depth_chunk)
                        if len(image_shape) == 4:
                            arr[0, z0 : z0 + depth_chunk, y0 : y0 + size, x0 : x0 + size] = block
                        else:
                            arr[0, y0 : y0 + size, x0 : x0 + size] = block[0]
            disk += on_disk_bytes(tmp / name)
            count += 1
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return StoreInfo(
        str(path),
        count,
        image_shape,
        chunks,
        count * int(np.prod(image_shape)) * 2,
        on_disk_bytes(path),
    )


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


def compose_train(overrides: Sequence[str]) -> Any:
    """``conf/train.yaml`` composed as ``train.py`` would, without Hydra's run-time node."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("train", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


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


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def _size(n: float) -> str:
    """Bytes as GiB, MiB or KiB, whichever reads best."""
    for unit, scale in (("GiB", GiB), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}" if n < 10 * scale else f"{n / scale:.1f} {unit}"
    return f"{n / 1024:.0f} KiB"


def _num(v: float) -> str:
    """A rate with three significant figures (no spurious decimals on large values)."""
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


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
