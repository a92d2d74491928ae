"""Fourier ring correlation: cut-off of band-limited images, one-image vs two-image, thresholds."""

from __future__ import annotations

import math

import pytest
import torch

from psr.metrics import FRCCurve, checkerboard_frc, frc_curve, frc_resolution, half_bit_threshold


def band_limited_pair(size: int, cutoff: float, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two noise realisations of white noise low-passed by a sharp disc of radius ``cutoff`` (cycles/px)."""
    gen = torch.Generator().manual_seed(seed)
    white = torch.randn(size, size, generator=gen, dtype=torch.float64)
    f = torch.fft.fftfreq(size, dtype=torch.float64)
    disc = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2) <= cutoff
    signal = torch.fft.ifft2(torch.fft.fft2(white) * disc).real
    signal = signal / signal.std()
    a = signal + noise * torch.randn(size, size, generator=gen, dtype=torch.float64)
    b = signal + noise * torch.randn(size, size, generator=gen, dtype=torch.float64)
    return a, b


@pytest.mark.parametrize("window", [None, "hann"])
@pytest.mark.parametrize(("cutoff", "seed"), [(0.15, 0), (0.2, 1)])
def test_two_image_frc_recovers_the_cutoff(cutoff: float, seed: int, window: str | None) -> None:
    a, b = band_limited_pair(512, cutoff, noise=0.3, seed=seed)
    curve = frc_curve(a, b, window=window)  # type: ignore[arg-type]
    for criterion in ("1/7", "half-bit"):
        res = frc_resolution(curve, criterion)  # type: ignore[arg-type]
        assert bool(res.crossed)
        assert float(res.frequency) == pytest.approx(cutoff, rel=0.05)
        assert float(res.pixels) == pytest.approx(1 / cutoff, rel=0.05)


@pytest.mark.parametrize("cutoff", [0.15, 0.2])
def test_checkerboard_frc_agrees_with_the_two_image_frc(cutoff: float) -> None:
    a, b = band_limited_pair(512, cutoff, noise=0.3, seed=2)
    two = frc_resolution(frc_curve(a, b)).frequency
    one = frc_resolution(checkerboard_frc(a)).frequency
    assert float(one) == pytest.approx(float(two), rel=0.05)
    assert float(one) == pytest.approx(cutoff, rel=0.05)


def test_checkerboard_frc_stops_at_the_sub_image_nyquist() -> None:
    """Structure finer than 4 px cannot be seen by a split into every other pixel: the curve ends at 0.25
    cycles/px without crossing, and the resolution is reported as that bound."""
    a, _ = band_limited_pair(256, 0.3, noise=0.3, seed=3)
    curve = checkerboard_frc(a)
    assert float(curve.frequency[-1]) == pytest.approx(0.25)
    res = frc_resolution(curve, "1/7", pixel_size=0.1)
    assert not bool(res.crossed)
    assert float(res.pixels) == pytest.approx(4.0)
    assert res.physical is not None and float(res.physical) == pytest.approx(0.4)


def test_identical_images_correlate_fully_and_noise_does_not() -> None:
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 64, 80, generator=gen)
    same = frc_curve(x, x, window=None)
    assert same.correlation.shape == (2, 3, 33)
    assert torch.allclose(same.correlation[..., 1:], torch.ones(1, dtype=torch.float64))
    res = frc_resolution(same, "half-bit", pixel_size=0.5)
    assert res.pixels.shape == (2, 3) and not res.crossed.any()
    assert torch.allclose(res.pixels, torch.full((2, 3), 2.0, dtype=torch.float64))  # the Nyquist bound
    noise = frc_curve(torch.randn(512, 512, generator=gen), torch.randn(512, 512, generator=gen))
    assert abs(float(noise.correlation[1:].mean())) < 0.02
    above = noise.correlation[1:] > noise.threshold("half-bit")[1:]
    assert float(above.double().mean()) < 0.05  # independent noise stays under the half-bit curve


def test_half_bit_threshold_follows_van_heel_and_schatz() -> None:
    n = torch.tensor([1.0, 100.0, 1e12])
    t = half_bit_threshold(n)
    assert float(t[0]) == pytest.approx((0.2071 + 1.9102) / (1.2071 + 0.9102))
    assert float(t[1]) == pytest.approx((0.2071 + 0.19102) / (1.2071 + 0.09102))
    assert float(t[2]) == pytest.approx(0.2071 / 1.2071, abs=1e-5)  # the half-bit SNR level, ≈ 0.1716
    curve = FRCCurve(torch.linspace(0, 0.5, 5), torch.zeros(5), n.new_tensor([1, 8, 16, 24, 32]))
    assert torch.allclose(curve.threshold("1/7"), torch.full((5,), 1 / 7))
    with pytest.raises(ValueError, match="criterion"):
        curve.threshold("1/2")  # type: ignore[arg-type]


def test_frc_rejects_bad_input() -> None:
    x = torch.rand(32, 32)
    with pytest.raises(ValueError, match="equal shapes"):
        frc_curve(x, x[:16])
    with pytest.raises(ValueError, match="NaN"):
        frc_curve(x, torch.full_like(x, math.nan))
    with pytest.raises(ValueError, match="at least 16"):
        checkerboard_frc(x[:8, :8])
    with pytest.raises(ValueError, match="window"):
        frc_curve(x, x, window="kaiser")  # type: ignore[arg-type]
