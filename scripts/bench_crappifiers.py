"""Throughput of psr's batched torch crappifiers against a per-image NumPy/SciPy/scikit-image reference.

For every preset in ``conf/crappifier/*.yaml`` this prints the throughput, in megapixels of clean input
per second, of

(a) psr's implementation: the preset composed with Hydra exactly as the tests do it
    (``compose("train", overrides=["crappifier=<name>", "paths.output_dir=<tmp>", "scale=4"])``), then
    ``crappifier(x, generator)`` on the whole batch (default 32 x 1 x 512 x 512 float32) with one
    ``torch.Generator`` seeded once;
(b) the same operators, in the same order and with the same parameters, written the way PSSR and CSBDeep
    write their data generators: a Python loop over the images, each cast to float64, with
    ``skimage.util.random_noise`` for Gaussian / local-variance / salt-and-pepper noise (PSSR),
    ``numpy.random.Generator.poisson(x * photons) / photons`` for a photon budget,
    ``skimage.transform.resize`` (order 1 / 3, no anti-aliasing) for bilinear / bicubic downsampling,
    ``skimage.measure.block_reduce(np.mean)`` for area binning, slicing for point subsampling,
    ``scipy.ndimage.gaussian_filter`` / ``scipy.ndimage.convolve`` for Gaussian blur,
    ``scipy.signal.fftconvolve(mode="same")`` for a PSF (CSBDeep) and a NumPy camera chain; per-sample
    random parameters are drawn with NumPy per image.

The reference is the baseline psr replaces: PSSR and CSBDeep degrade one image at a time on the CPU
with these library calls, so the ratio is what batching on torch buys. The reference pipeline is
built generically from the instantiated torch operator tree (``Chain``, ``RandomApply``, ``OneOf``,
``RandomOrder``, ``MultiFrame`` and the leaf operators, whose attributes it reads), so it degrades with
the very parameters of the preset; a leaf operator without a NumPy mapping is an error, never skipped.
It runs on the CPU in one process, with whatever threading NumPy/SciPy use by default (none for these
calls). Because it is per image anyway, only ``--ref-images`` images are timed and the rate is
scaled to megapixels per second.

Timing: ``torch.set_num_threads(os.cpu_count())`` (or ``--threads``), one warm-up call each, then the best of
``--repeats`` calls (``time.perf_counter``; CUDA is synchronised around each call), psr's and the
reference's interleaved so that both see the same load on a shared machine. The clean input is
uniform noise in [0, 1) (the cost of Poisson sampling depends on the intensities, so results on sparse
fluorescence images may differ somewhat). ``--check`` instead runs each preset once on a flat 0.5 image
with both implementations and checks that the per-image output shapes agree and that the mean
intensities agree within 5 % (relative): a guard against the reference doing different work.

Usage::

    .venv/bin/python scripts/bench_crappifiers.py [--batch 32] [--size 512] [--repeats 3]
        [--ref-images 8] [--presets a,b,c] [--device cpu|cuda] [--scale 4] [--threads N] [--check]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import scipy
import skimage
import torch
from torch import nn

# The NumPy reference and the shared Hydra composition are modules next to this file: scripts/ is on
# sys.path when the script runs, not when another script or a test loads it from its file.
SCRIPTS = Path(__file__).resolve().parent
if str(SCRIPTS) not in sys.path:
    sys.path.append(str(SCRIPTS))

from _bench_common import CONF, compose_train  # noqa: E402
from bench_crappifiers_reference import RefOp, build_reference, run_reference  # noqa: E402

# --------------------------------------------------------------------------------------------------
# Presets, timing and reporting.
# --------------------------------------------------------------------------------------------------


def preset_names() -> list[str]:
    return sorted(p.stem for p in (CONF / "crappifier").glob("*.yaml"))


def compose_crappifier(name: str, scale: int, output_dir: str) -> nn.Module:
    """Compose ``train`` with ``crappifier=<name>`` as the tests do, and instantiate the crappifier."""
    import hydra

    cfg = compose_train([f"crappifier={name}", f"paths.output_dir={output_dir}", f"scale={scale}"])
    return hydra.utils.instantiate(cfg.crappifier)


def best_times(
    fns: Sequence[Callable[[], object]], repeats: int, syncs: Sequence[Callable[[], None]]
) -> list[float]:
    """Best of ``repeats`` wall-clock times of each of ``fns`` after one warm-up call each. The calls are
    interleaved (all of ``fns`` once, ``repeats`` times) so that the implementations compared see the
    same load on a shared machine."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, sync, own in zip(fns, syncs, times, strict=True):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            own.append(time.perf_counter() - t0)
    return [min(t) for t in times]


def machine_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _num(value: float) -> str:
    """Three significant digits or so, without scientific notation."""
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--batch", type=int, default=32, help="images per torch batch (default 32)")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (default 512)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls, best kept (default 3)")
    parser.add_argument(
        "--ref-images", type=int, default=8, help="images timed for the per-image reference (default 8)"
    )
    parser.add_argument(
        "--presets", default="", help="comma-separated presets (default: all in conf/crappifier)"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device of psr's torch path")
    parser.add_argument("--scale", type=int, default=4, help="the super-resolution factor (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the input and of both generators")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads (default 0: one per logical CPU; 1 is steadier on a shared machine)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="sanity check (shapes, means on a flat 0.5 image) instead of timing",
    )
    args = parser.parse_args(argv)
    available = preset_names()
    args.presets = [p.strip() for p in args.presets.split(",") if p.strip()] or available
    unknown = sorted(set(args.presets) - set(available))
    if unknown:
        parser.error(f"unknown presets {unknown}; available: {', '.join(available)}")
    if args.threads < 0:
        parser.error("--threads must be >= 0 (0: one per logical CPU)")
    if min(args.batch, args.size, args.repeats, args.ref_images, args.scale) < 1:
        parser.error("--batch, --size, --repeats, --ref-images and --scale must be >= 1")
    if args.size % args.scale:
        parser.error(f"--size {args.size} must be divisible by --scale {args.scale}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    device = torch.device(args.device)
    sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    n_ref = min(args.ref_images, args.batch)
    shape = (args.batch, 1, args.size, args.size)
    output_dir = str(Path(tempfile.gettempdir()) / "psr-bench-crappifiers")

    # Build every preset and its reference first, so a missing mapping fails before any timing.
    presets = {}
    for name in args.presets:
        crappifier = compose_crappifier(name, args.scale, output_dir).to(device).eval()
        presets[name] = (crappifier, build_reference(crappifier))

    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(
        f"# {machine_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), numpy {np.__version__}, scipy {scipy.__version__}, "
        f"scikit-image {skimage.__version__}; psr on {device.type}{gpu}; batch {'×'.join(map(str, shape))} float32"
    )
    if args.check:
        print(
            f"# --check: a flat 0.5 image through psr (whole batch) and the per-image NumPy reference "
            f"({n_ref} images); PASS: same per-image output shape and mean intensities within 5 % relative"
        )
        return check(presets, args, device, n_ref)
    print(
        f"# psr: whole batch, best of {args.repeats} after 1 warm-up; per-image NumPy reference on the CPU: "
        f"{n_ref} of the images timed (best of {args.repeats} after 1 warm-up), scaled to Mpx/s; "
        f"Mpx = clean input pixels, scale {args.scale}"
    )

    gen = torch.Generator(device=device).manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(args.seed))
    x_ref = x[:n_ref].numpy()
    x = x.to(device)
    px = x[0].numel()

    header = "| preset | psr torch (Mpx/s) | per-image NumPy (Mpx/s) | speed-up |"
    rule = "|---|---:|---:|---:|"
    if device.type == "cuda":
        header += " psr GB/s (approx.) |"
        rule += "---:|"
    print()
    print(header)
    print(rule)
    for name, (crappifier, ref) in presets.items():
        out: list[torch.Tensor] = []

        def run_torch(crappifier: nn.Module = crappifier, out: list[torch.Tensor] = out) -> None:
            with torch.inference_mode():
                out[:] = [crappifier(x, gen)]

        def run_ref(ref: RefOp = ref) -> None:
            run_reference(ref, x_ref, rng)

        t_torch, t_ref = best_times([run_torch, run_ref], args.repeats, [sync, lambda: None])
        mpx_torch = args.batch * px / t_torch / 1e6
        mpx_ref = n_ref * px / t_ref / 1e6
        row = f"| {name} | {_num(mpx_torch)} | {_num(mpx_ref)} | {_num(mpx_torch / mpx_ref)}× |"
        if device.type == "cuda":
            moved = x.numel() * x.element_size() + out[0].numel() * out[0].element_size()
            row += f" {moved / t_torch / 1e9:.0f} |"
        print(row, flush=True)
    print()
    if device.type == "cuda":
        print(
            "# GB/s = (input bytes + output bytes) / time, a lower bound on the memory traffic (intermediates "
            "not counted); compare approximately with the card's memory bandwidth."
        )
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    return 0


def check(
    presets: dict[str, tuple[nn.Module, RefOp]], args: argparse.Namespace, device: torch.device, n_ref: int
) -> int:
    """Flat 0.5 image through both: per-image shapes equal and means within 5 % relative."""
    gen = torch.Generator(device=device).manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    flat = torch.full((args.batch, 1, args.size, args.size), 0.5)
    failed = 0
    print()
    for name, (crappifier, ref) in presets.items():
        with torch.inference_mode():
            y = crappifier(flat.to(device), gen).cpu()
        y_ref = run_reference(ref, flat[:n_ref].numpy(), rng)
        same_shape = tuple(y.shape[1:]) == y_ref.shape[1:]
        m_torch, m_ref = y.double().mean().item(), float(y_ref.astype(np.float64).mean())
        rel = abs(m_ref - m_torch) / max(abs(m_torch), 1e-12)
        ok = same_shape and rel <= 0.05
        failed += not ok
        print(
            f"{name}: {'PASS' if ok else 'FAIL'}  shape psr {tuple(y.shape[1:])} / reference {y_ref.shape[1:]}; "
            f"mean psr {m_torch:.4f} / reference {m_ref:.4f} (relative difference {rel:.2%})"
        )
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
