"""Noise operators: photon shot noise and additive read noise, per-sample parameters."""

from __future__ import annotations

import torch

from psr.crappifiers.base import Crappifier, Range, as_range, broadcast_to, check_batch, sample_per_item


class PoissonNoise(Crappifier):
    """Photon shot noise: ``counts ~ Poisson(photons · x)``, returned as ``counts / photons``.

    ``photons`` is the expected photon count at intensity 1 (the photon budget; BioSR spans mean counts
    of 15–600, CSBDeep). A ``[low, high]`` range draws one budget per sample, log-uniformly by default
    so low-light and bright samples are equally represented. Negative intensities (possible after
    percentile normalisation) count as zero photons. The output has mean ``x`` and variance
    ``x / photons``.
    """

    def __init__(self, photons: Range = (10.0, 100.0), log_uniform: bool = True) -> None:
        super().__init__()
        self.photons = as_range(photons, "PoissonNoise photons", minimum=0.0, exclusive=True)
        self.log_uniform = bool(log_uniform)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_batch(x, "PoissonNoise")
        photons = sample_per_item(self.photons, x.shape[0], generator, x.device, log_uniform=self.log_uniform)
        scale = broadcast_to(photons, x)
        rate = (x.clamp_min(0) * scale).float()
        counts = torch.poisson(rate, generator=generator)
        return (counts / scale.float()).to(x.dtype)


class GaussianNoise(Crappifier):
    """Additive Gaussian (read) noise with standard deviation ``sigma`` in normalised intensity units.

    Defaults follow the range of Real-ESRGAN (σ ∈ [1, 30] / 255); PSSR's EM variant uses σ = 0.15.
    ``clip_min`` optionally clips the result from below (0 models a detector that cannot go negative).
    """

    def __init__(self, sigma: Range = (1 / 255, 30 / 255), clip_min: float | None = None) -> None:
        super().__init__()
        self.sigma = as_range(sigma, "GaussianNoise sigma", minimum=0.0)
        self.clip_min = clip_min

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_batch(x, "GaussianNoise")
        sigma = broadcast_to(sample_per_item(self.sigma, x.shape[0], generator, x.device), x)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        out = x + sigma * noise
        if self.clip_min is not None:
            out = out.clamp_min(self.clip_min)
        return out
