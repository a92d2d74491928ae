"""Noise operators: photon shot noise, read noise, PSSR's signal-dependent noise, hot/dead pixels, a
camera model, quantisation and spatially correlated noise, each with per-sample parameters."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from psr.crappifiers.base import Crappifier, Param, Range, broadcast_to, check_batch, probability
from psr.crappifiers.optics import convolve, gaussian_taps


class PoissonNoise(Crappifier):
    """Photon shot noise: ``counts ~ Poisson(photons · x)``, returned as ``counts / photons``.

    ``photons`` is the expected photon count at intensity 1, the photon budget (BioSR spans mean counts
    15–600; CSBDeep). A range draws one budget per sample, log-uniformly unless ``log_uniform=False``.
    ``mix`` blends ``(1 − m)·x + m·noisy`` per sample, PSSR2's spread of noise intensities (PSSR2 uses
    ``photons=255``: Poisson on a 0–255 scale). Negative intensities count as zero photons. With
    ``mix=1`` the output has mean ``x`` and variance ``x / photons``.
    """

    def __init__(self, photons: Range = (10.0, 100.0), log_uniform: bool = True, mix: Range = 1.0) -> None:
        super().__init__()
        self.photons = Param.parse(
            photons, "PoissonNoise photons", minimum=0.0, exclusive_min=True, log=log_uniform
        )
        self.mix = Param.parse(mix, "PoissonNoise mix", minimum=0.0, maximum=1.0)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_batch(x, "PoissonNoise")
        photons = broadcast_to(self.photons.sample(x.shape[0], generator, x.device), x).float()
        counts = torch.poisson(x.float().clamp_min(0) * photons, generator=generator)
        noisy = counts / photons
        if not (self.mix.fixed and self.mix.low == 1.0):
            m = broadcast_to(self.mix.sample(x.shape[0], generator, x.device), x).float()
            noisy = (1 - m) * x.float() + m * noisy
        return noisy.to(x.dtype)


class GaussianNoise(Crappifier):
    """Additive Gaussian (read) noise with standard deviation ``sigma`` in normalised intensity units.

    Defaults follow Real-ESRGAN's range σ ∈ [1, 30] / 255; PSSR's EM variant uses σ = 0.15 and PSSR2
    σ = 13 / 255. ``clip_min`` clips from below (0: a detector that cannot go negative; CSBDeep).
    """

    def __init__(self, sigma: Range = (1 / 255, 30 / 255), clip_min: float | None = None) -> None:
        super().__init__()
        self.sigma = Param.parse(sigma, "GaussianNoise sigma", minimum=0.0)
        self.clip_min = clip_min

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_batch(x, "GaussianNoise")
        sigma = broadcast_to(self.sigma.sample(x.shape[0], generator, x.device), x)
        out = x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return out.clamp_min(self.clip_min) if self.clip_min is not None else out


def correlation_taps(sigma: float) -> torch.Tensor:
    """1D Gaussian taps of width ``sigma`` px with unit energy (``Σ k² = 1``): filtering white noise by them
    along Y and along X keeps its variance and gives it the lag-``l`` correlation ``Σ k_i k_{i+l}``.
    ``sigma = 0`` is the single tap ``[1]`` (white noise)."""
    if not (sigma >= 0 and math.isfinite(sigma)):
        raise ValueError(f"correlation sigma must be finite and >= 0, got {sigma!r}")
    if sigma == 0:
        return torch.ones(1, dtype=torch.float64)
    k = gaussian_taps(torch.tensor([sigma], dtype=torch.float64), 2 * max(1, math.ceil(3 * sigma)) + 1)[0]
    return k / k.square().sum().sqrt()


class CorrelatedNoise(Crappifier):
    """Spatially correlated noise: the noise that ``steps`` add (e.g. ``PoissonNoise`` then
    ``GaussianNoise``) filtered along Y and X by :func:`correlation_taps` of width ``sigma`` px.

    A colour camera's demosaicking, a camera's on-chip binning or denoising, or an interpolating
    resampler leave pixel noise correlated with its neighbours (FMD's widefield frames: lag-1 correlation
    about 0.6). The filter has unit energy, so white noise keeps its variance: the steps' parameters keep
    their meaning (photons, read σ) and only the noise's spectrum changes; the signal passes unfiltered.
    ``scripts/calibrate_noise.py`` measures ``sigma`` from raw frames (``psr.metrics.noise``). The
    steps must keep the image size (noise, not resampling).
    """

    taps: torch.Tensor

    def __init__(self, steps: Sequence[Crappifier], sigma: float = 0.7) -> None:
        super().__init__()
        from psr.crappifiers.compose import Chain

        self.noise = Chain(list(steps))
        if self.noise.scale != 1:
            raise ValueError(
                f"CorrelatedNoise steps must keep the image size; they downsample by {self.noise.scale}"
            )
        self.sigma = float(sigma)
        self.register_buffer("taps", correlation_taps(self.sigma).float(), persistent=False)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_batch(x, "CorrelatedNoise")
        noisy = self.noise(x, generator)
        if tuple(noisy.shape) != tuple(x.shape):
            raise ValueError(
                f"CorrelatedNoise steps changed the shape {tuple(x.shape)} to {tuple(noisy.shape)}"
            )
        if self.taps.numel() == 1:
            return noisy
        k = self.taps.to(device=x.device, dtype=noisy.dtype)
        noise = convolve(noisy - x, k.view(1, -1), "CorrelatedNoise")
        return x + convolve(noise, k.view(-1, 1), "CorrelatedNoise")


def gaussian_smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian filter over Y and X (each Z plane of 3D batches), reflecting borders."""
    k = gaussian_taps(torch.tensor([sigma], device=x.device), 2 * max(1, math.ceil(3 * sigma)) + 1)[0]
    out = convolve(x, k.view(1, -1), "gaussian_smooth")
    return convolve(out, k.view(-1, 1), "gaussian_smooth")


class LocalVarianceNoise(Crappifier):
    """PSSR's signal-dependent Gaussian noise: variance ``k · Gσ(x)`` (Gσ: a Gaussian filter of width σ).

    PSSR: EM ``k = 0.05, sigma = 3``; fluorescence ``k = 0.5, sigma = 5``, on images scaled to [0, 1]
    and clipped to [0, 1] afterwards (``clip_min``, ``clip_max``; ``None`` leaves a side open).
    """

    def __init__(
        self, k: Range = 0.05, sigma: float = 3.0, clip_min: float | None = 0.0, clip_max: float | None = 1.0
    ) -> None:
        super().__init__()
        self.k = Param.parse(k, "LocalVarianceNoise k", minimum=0.0)
        if not sigma > 0:
            raise ValueError(f"LocalVarianceNoise sigma must be > 0, got {sigma!r}")
        self.sigma = float(sigma)
        self.clip_min, self.clip_max = clip_min, clip_max

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_batch(x, "LocalVarianceNoise")
        k = broadcast_to(self.k.sample(x.shape[0], generator, x.device), x)
        variance = (k * gaussian_smooth(x, self.sigma)).clamp_min(0)
        out = x + variance.sqrt() * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if self.clip_min is not None or self.clip_max is not None:
            out = out.clamp(self.clip_min, self.clip_max)
        return out


class SaltPepper(Crappifier):
    """Hot and dead pixels: a fraction ``salt`` set to ``salt_value``, ``pepper`` to ``pepper_value``.

    PSSR's fluorescence crappifier uses 0.5 % salt and 0.5 % pepper.
    """

    def __init__(
        self, salt: Range = 0.005, pepper: Range = 0.005, salt_value: float = 1.0, pepper_value: float = 0.0
    ) -> None:
        super().__init__()
        self.salt = Param.parse(salt, "SaltPepper salt", minimum=0.0, maximum=1.0)
        self.pepper = Param.parse(pepper, "SaltPepper pepper", minimum=0.0, maximum=1.0)
        if self.salt.high + self.pepper.high > 1:
            raise ValueError("SaltPepper salt + pepper must not exceed 1")
        self.salt_value, self.pepper_value = float(salt_value), float(pepper_value)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_batch(x, "SaltPepper")
        salt = broadcast_to(self.salt.sample(x.shape[0], generator, x.device), x)
        pepper = broadcast_to(self.pepper.sample(x.shape[0], generator, x.device), x)
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        out = torch.where(u < salt, torch.full_like(x, self.salt_value), x)
        return torch.where((u >= salt) & (u < salt + pepper), torch.full_like(x, self.pepper_value), out)


def sample_gamma(shape_k: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Gamma(k, 1) samples for a tensor of shapes ``k`` (0 gives 0), by Marsaglia & Tsang (2000).

    Vectorised rejection: each round redraws only the rejected entries (acceptance > 95 % for k ≥ 1);
    k < 1 uses Gamma(k + 1) · U^(1/k).
    """
    k = shape_k.float()
    boost = k < 1
    a = torch.where(boost, k + 1, k).clamp_min(1e-6)
    d = a - 1 / 3
    c = 1 / torch.sqrt(9 * d)
    out = torch.zeros_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    while bool(todo.any()):
        idx = todo.nonzero(as_tuple=True)
        n = idx[0].numel()
        z = torch.randn(n, generator=generator, device=a.device)
        u = torch.rand(n, generator=generator, device=a.device)
        di, ci = d[idx], c[idx]
        v = (1 + ci * z) ** 3
        ok = (v > 0) & (
            torch.log(u.clamp_min(1e-30)) < 0.5 * z * z + di - di * v + di * torch.log(v.clamp_min(1e-30))
        )
        accepted = tuple(i[ok] for i in idx)
        out[accepted] = (di * v)[ok]
        todo[accepted] = False
    if bool(boost.any()):
        u = torch.rand(out.shape, generator=generator, device=a.device).clamp_min(1e-30)
        out = torch.where(boost, out * u ** (1 / k.clamp_min(1e-6)), out)
    return torch.where(k > 0, out, torch.zeros_like(out))


class Camera(Crappifier):
    """A camera chain after microsim: photons → electrons → (EM gain) → read noise → ADC counts.

    Per pixel: ``photons · x`` expected photons (``photons``: the budget at intensity 1, per sample),
    detected with quantum efficiency ``qe``; plus dark current ``dark_current`` (e⁻/px/s) × ``exposure``
    (s) and clock-induced charge ``cic`` (e⁻/px); Poisson statistics; EM gain ~ Gamma(k = electrons,
    θ = ``em_gain``) when ``em_gain > 1``; clipped at ``full_well`` e⁻; Gaussian read noise
    ``read_noise`` e⁻; ADC gain ``full_well / (2^bits − 1)`` e⁻/ADU plus ``offset`` ADU, rounded and
    saturated at ``2^bit_depth − 1``. With ``normalize`` the ADU are mapped back to the input's intensity
    scale (offset removed, divided by the expected ADU at intensity 1) so that models train on
    comparable units; otherwise the raw ADU are returned.
    """

    def __init__(
        self,
        photons: Range = (20.0, 200.0),
        qe: float = 0.8,
        dark_current: float = 0.001,
        exposure: float = 0.1,
        cic: float = 0.0,
        em_gain: float = 1.0,
        read_noise: float = 1.5,
        full_well: float = 30000.0,
        bit_depth: int = 12,
        offset: float = 100.0,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.photons = Param.parse(photons, "Camera photons", minimum=0.0, exclusive_min=True, log=True)
        self.qe = probability(qe, "Camera qe")
        for name, value in (
            ("dark_current", dark_current),
            ("exposure", exposure),
            ("cic", cic),
            ("read_noise", read_noise),
            ("offset", offset),
        ):
            if value < 0:
                raise ValueError(f"Camera {name} must be >= 0, got {value!r}")
        if em_gain < 1:
            raise ValueError(f"Camera em_gain must be >= 1 (1: no EM gain), got {em_gain!r}")
        if not full_well > 0:
            raise ValueError(f"Camera full_well must be > 0, got {full_well!r}")
        if int(bit_depth) != bit_depth or not 1 <= bit_depth <= 32:
            raise ValueError(f"Camera bit_depth must be an integer in [1, 32], got {bit_depth!r}")
        self.dark = dark_current * exposure + cic
        self.em_gain, self.read_noise, self.full_well = float(em_gain), float(read_noise), float(full_well)
        self.max_adu = float(2 ** int(bit_depth) - 1)
        self.adc_gain = self.full_well / self.max_adu
        self.offset = float(offset)
        self.normalize = normalize

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_batch(x, "Camera")
        photons = broadcast_to(self.photons.sample(x.shape[0], generator, x.device), x).float()
        expected = x.float().clamp_min(0) * photons * self.qe + self.dark
        electrons = torch.poisson(expected, generator=generator)
        if self.em_gain > 1:
            electrons = sample_gamma(electrons, generator) * self.em_gain
        electrons = electrons.clamp_max(self.full_well)
        electrons = electrons + self.read_noise * torch.randn(
            electrons.shape, generator=generator, device=x.device, dtype=electrons.dtype
        )
        adu = torch.round(electrons / self.adc_gain + self.offset).clamp(0, self.max_adu)
        if not self.normalize:
            return adu.to(x.dtype)
        per_unit = photons * self.qe * self.em_gain / self.adc_gain
        return ((adu - self.offset) / per_unit).to(x.dtype)


class Quantize(Crappifier):
    """Round to ``2^bits`` levels over ``[low, high]`` (clipping outside): 8- or 16-bit storage."""

    def __init__(self, bits: int = 8, low: float = 0.0, high: float = 1.0) -> None:
        super().__init__()
        if int(bits) != bits or not 1 <= bits <= 24:
            raise ValueError(f"Quantize bits must be an integer in [1, 24], got {bits!r}")
        if not high > low:
            raise ValueError(f"Quantize needs high > low, got [{low}, {high}]")
        self.levels = float(2 ** int(bits) - 1)
        self.low, self.high = float(low), float(high)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_batch(x, "Quantize")
        span = self.high - self.low
        q = torch.round((x.clamp(self.low, self.high) - self.low) / span * self.levels)
        return q / self.levels * span + self.low
