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
import math
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
import scipy.ndimage as ndi
import skimage
import torch
from scipy.signal import fftconvolve
from skimage.measure import block_reduce
from skimage.transform import resize
from skimage.util import random_noise
from torch import nn

from psr import crappifiers as cr
from psr.crappifiers.base import Param

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

RefOp = Callable[[np.ndarray, np.random.Generator], np.ndarray]
"""One sample's degradation: ``(C, Y, X)`` float64 and a NumPy generator in, degraded ``(C, Y', X')`` out."""


# --------------------------------------------------------------------------------------------------
# The per-image NumPy reference, one builder per operator type.
# --------------------------------------------------------------------------------------------------


def _draw(param: Param, rng: np.random.Generator) -> float:
    """One value of a psr ``Param`` for one image: fixed, uniform or log-uniform (as ``Param.sample``)."""
    if param.fixed:
        return param.low
    u = rng.random()
    if param.log:
        return math.exp(math.log(param.low) + u * (math.log(param.high) - math.log(param.low)))
    return param.low + u * (param.high - param.low)


def _per_plane(img: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply a 2D function to each channel of a ``(C, Y, X)`` sample."""
    if img.shape[0] == 1:
        return fn(img[0])[None]
    return np.stack([fn(plane) for plane in img])


def _ref_downsample(op: cr.Downsample) -> RefOp:
    f, mode, anti_aliasing = op.factor, op.mode, op.antialias

    def plane(p: np.ndarray) -> np.ndarray:
        if f == 1:
            return p
        if mode == "area":
            return block_reduce(p, (f, f), np.mean)
        if mode == "nearest":  # one pixel per block, the block centre (as psr)
            return p[f // 2 :: f, f // 2 :: f]
        order = 1 if mode == "bilinear" else 3
        return resize(p, (p.shape[0] // f, p.shape[1] // f), order=order, anti_aliasing=anti_aliasing)

    return lambda img, rng: _per_plane(img, plane)


def _ref_gaussian_blur(op: cr.GaussianBlur) -> RefOp:
    r = op.kernel_size // 2
    coords = np.arange(-r, r + 1, dtype=np.float64)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    isotropic = op.aspect.fixed and op.aspect.low == 1.0

    def fn(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        sigma = max(_draw(op.sigma, rng), 1e-3)
        if isotropic:  # separable, same radius and reflecting border as psr's kernel; no rotation to draw
            return _per_plane(img, lambda p: ndi.gaussian_filter(p, sigma, mode="mirror", radius=r))
        aspect = _draw(op.aspect, rng)
        theta = _draw(op.rotation, rng)
        u = xx * math.cos(theta) + yy * math.sin(theta)
        v = -xx * math.sin(theta) + yy * math.cos(theta)
        kernel = np.exp(-0.5 * ((u / sigma) ** 2 + (v / (sigma * aspect)) ** 2))
        kernel /= kernel.sum()
        return _per_plane(img, lambda p: ndi.convolve(p, kernel, mode="mirror"))

    return fn


def _ref_psf(op: cr.OpticalPSF | cr.PSFFromFile) -> RefOp:
    kernel = op.kernel.detach().cpu().numpy().astype(np.float64)
    if kernel.ndim != 2:
        raise NotImplementedError(
            f"No NumPy reference for {type(op).__name__} with a 3D PSF (2D batches only)"
        )
    # CSBDeep: fftconvolve(mode="same"), i.e. zero borders where psr reflects; the cost is the same.
    return lambda img, rng: _per_plane(img, lambda p: fftconvolve(p, kernel, mode="same"))


def _ref_poisson(op: cr.PoissonNoise) -> RefOp:
    blend = not (op.mix.fixed and op.mix.low == 1.0)

    def fn(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        photons = _draw(op.photons, rng)
        noisy = rng.poisson(np.clip(img, 0, None) * photons) / photons
        if blend:  # PSSR2: (1 - m) x + m Poisson(x)
            m = _draw(op.mix, rng)
            noisy = (1 - m) * img + m * noisy
        return noisy

    return fn


def _ref_gaussian_noise(op: cr.GaussianNoise) -> RefOp:
    def fn(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        sigma = _draw(op.sigma, rng)
        out = random_noise(img, mode="gaussian", mean=0.0, var=sigma**2, rng=rng, clip=False)
        return out if op.clip_min is None else np.maximum(out, op.clip_min)

    return fn


def _ref_local_variance(op: cr.LocalVarianceNoise) -> RefOp:
    r = max(1, math.ceil(3 * op.sigma))

    def fn(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        k = _draw(op.k, rng)
        smooth = _per_plane(img, lambda p: ndi.gaussian_filter(p, op.sigma, mode="mirror", radius=r))
        # PSSR adds 1e-10: random_noise needs strictly positive variances.
        local_vars = np.maximum(k * smooth, 1e-10)
        out = random_noise(img, mode="localvar", local_vars=local_vars, rng=rng, clip=False)
        if op.clip_min is not None or op.clip_max is not None:
            out = np.clip(out, op.clip_min, op.clip_max)
        return out

    return fn


def _ref_salt_pepper(op: cr.SaltPepper) -> RefOp:
    def fn(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        salt, pepper = _draw(op.salt, rng), _draw(op.pepper, rng)
        amount = salt + pepper
        if amount == 0:
            return img
        if op.salt_value == 1.0 and op.pepper_value == 0.0 and img.min() >= 0:
            # PSSR's random_noise; s&p sets salt to 1 and pepper to 0 for non-negative images.
            return random_noise(
                img, mode="s&p", amount=amount, salt_vs_pepper=salt / amount, rng=rng, clip=False
            )
        u = rng.random(img.shape)
        out = np.where(u < salt, op.salt_value, img)
        return np.where((u >= salt) & (u < amount), op.pepper_value, out)

    return fn


def _ref_camera(op: cr.Camera) -> RefOp:
    def fn(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        photons = _draw(op.photons, rng)
        expected = np.clip(img, 0, None) * (photons * op.qe) + op.dark
        electrons = rng.poisson(expected).astype(np.float64)
        if op.em_gain > 1:
            electrons = rng.gamma(electrons, op.em_gain)
        electrons = np.minimum(electrons, op.full_well)
        electrons += op.read_noise * rng.standard_normal(electrons.shape)
        adu = np.clip(np.round(electrons / op.adc_gain + op.offset), 0, op.max_adu)
        if not op.normalize:
            return adu
        return (adu - op.offset) / (photons * op.qe * op.em_gain / op.adc_gain)

    return fn


def _ref_quantize(op: cr.Quantize) -> RefOp:
    span = op.high - op.low

    def fn(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        q = np.round((np.clip(img, op.low, op.high) - op.low) / span * op.levels)
        return q / op.levels * span + op.low

    return fn


def _ref_scan_line_jitter(op: cr.ScanLineJitter) -> RefOp:
    def fn(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        amp = _draw(op.shift, rng)
        h, w = img.shape[-2:]
        yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")

        def plane(p: np.ndarray) -> np.ndarray:
            offsets = amp * rng.standard_normal(h)
            coords = np.stack([yy, xx - offsets[:, None]])
            return ndi.map_coordinates(p, coords, order=1, mode="nearest")

        return _per_plane(img, plane)

    return fn


def _ref_bleaching(op: cr.Bleaching) -> RefOp:
    if op.axis != "channel":
        raise NotImplementedError("No NumPy reference for Bleaching along z (2D batches only)")

    def fn(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        rate = _draw(op.rate, rng)
        return img * np.exp(-rate * np.arange(img.shape[0]))[:, None, None]

    return fn


def _ref_background(op: cr.Background) -> RefOp:
    def fn(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        offset, amp = _draw(op.offset, rng), _draw(op.gradient, rng)
        theta = 2 * math.pi * rng.random()
        h, w = img.shape[-2:]
        ramp = (
            math.cos(theta) * np.linspace(-0.5, 0.5, w)[None, :]
            + math.sin(theta) * np.linspace(-0.5, 0.5, h)[:, None]
        )
        ramp = amp * ramp / max(np.abs(ramp).max(), 1e-12) / 2
        return img + offset + ramp

    return fn


def _ref_chain(op: cr.Chain) -> RefOp:
    steps = [build_reference(step) for step in op.steps]

    def fn(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for step in steps:
            img = step(img, rng)
        return img

    return fn


def _ref_random_apply(op: cr.RandomApply) -> RefOp:
    inner, p = build_reference(op.op), op.p
    return lambda img, rng: inner(img, rng) if rng.random() < p else img


def _ref_one_of(op: cr.OneOf) -> RefOp:
    options = [build_reference(o) for o in op.ops]
    weights = op.weights.detach().cpu().double().numpy()
    weights = weights / weights.sum()
    return lambda img, rng: options[rng.choice(len(options), p=weights)](img, rng)


def _ref_random_order(op: cr.RandomOrder) -> RefOp:
    options = [build_reference(o) for o in op.ops]

    def fn(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for i in rng.permutation(len(options)):
            img = options[i](img, rng)
        return img

    return fn


def _ref_multi_frame(op: cr.MultiFrame) -> RefOp:
    inner = build_reference(op.op)  # each frame is its own sample: own parameters and noise
    return lambda img, rng: np.concatenate([inner(img[t : t + 1], rng) for t in range(img.shape[0])])


REFERENCE: dict[type[nn.Module], Callable[[nn.Module], RefOp]] = {
    cr.Downsample: _ref_downsample,
    cr.GaussianBlur: _ref_gaussian_blur,
    cr.OpticalPSF: _ref_psf,
    cr.PSFFromFile: _ref_psf,
    cr.PoissonNoise: _ref_poisson,
    cr.GaussianNoise: _ref_gaussian_noise,
    cr.LocalVarianceNoise: _ref_local_variance,
    cr.SaltPepper: _ref_salt_pepper,
    cr.Camera: _ref_camera,
    cr.Quantize: _ref_quantize,
    cr.ScanLineJitter: _ref_scan_line_jitter,
    cr.Bleaching: _ref_bleaching,
    cr.Background: _ref_background,
    cr.Chain: _ref_chain,
    cr.RandomApply: _ref_random_apply,
    cr.OneOf: _ref_one_of,
    cr.RandomOrder: _ref_random_order,
    cr.MultiFrame: _ref_multi_frame,
}  # type: ignore[dict-item]


def build_reference(op: nn.Module) -> RefOp:
    """The NumPy reference of a psr operator tree; raises for any operator without a mapping.

    Types are matched exactly, so a subclass (which may change ``forward``) is never mistaken for its base.
    """
    builder = REFERENCE.get(type(op))
    if builder is None:
        raise NotImplementedError(
            f"No NumPy reference for crappifier operator {type(op).__module__}.{type(op).__qualname__}; "
            "add one to REFERENCE in scripts/bench_crappifiers.py"
        )
    return builder(op)


def run_reference(ref: RefOp, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Degrade ``(N, C, Y, X)`` float32 one image at a time in float64, as PSSR / CSBDeep do."""
    outs = []
    for img in x:
        outs.append(ref(img.astype(np.float64), rng).astype(np.float32))
    return np.stack(outs)


# --------------------------------------------------------------------------------------------------
# Presets, timing and reporting.
# --------------------------------------------------------------------------------------------------


def preset_names() -> list[str]:
    return sorted(p.stem for p in (CONF / "crappifier").glob("*.yaml"))


def compose_crappifier(name: str, scale: int, output_dir: str) -> nn.Module:
    """Compose ``train`` with ``crappifier=<name>`` as the tests do, and instantiate the crappifier."""
    import hydra
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train", overrides=[f"crappifier={name}", f"paths.output_dir={output_dir}", f"scale={scale}"]
        )
    GlobalHydra.instance().clear()
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
