"""``scripts/bench_crappifiers.py``'s per-image NumPy/SciPy/scikit-image reference: one builder per psr
crappifier operator type, each degrading one ``(C, Y, X)`` float64 sample the way PSSR and CSBDeep write
their data generators, and ``build_reference``, which maps a whole instantiated operator tree (an
operator without a mapping is an error, never skipped).

Not a command: ``bench_crappifiers.py`` imports it (see its docstring for how the two are compared).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.ndimage as ndi
from scipy.signal import fftconvolve
from skimage.measure import block_reduce
from skimage.transform import resize
from skimage.util import random_noise
from torch import nn

from psr import crappifiers as cr
from psr.crappifiers.base import Param

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


def _ref_correlated_noise(op: cr.CorrelatedNoise) -> RefOp:
    inner = build_reference(op.noise)
    taps = op.taps.detach().cpu().double().numpy()

    def fn(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noise = inner(img, rng) - img
        if taps.size > 1:  # the noise filtered along X, then Y (reflecting borders, as psr)
            noise = ndi.correlate1d(noise, taps, axis=-1, mode="reflect")
            noise = ndi.correlate1d(noise, taps, axis=-2, mode="reflect")
        return img + noise

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
    cr.CorrelatedNoise: _ref_correlated_noise,
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
            "add one to REFERENCE in scripts/bench_crappifiers_reference.py"
        )
    return builder(op)


def run_reference(ref: RefOp, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Degrade ``(N, C, Y, X)`` float32 one image at a time in float64, as PSSR / CSBDeep do."""
    outs = []
    for img in x:
        outs.append(ref(img.astype(np.float64), rng).astype(np.float32))
    return np.stack(outs)
