"""Fourier ring correlation (FRC): resolution from two images, or from one by a checkerboard split.

The FRC between two images of the same field of view with independent noise is the normalised
cross-correlation of their spectra over rings of equal spatial frequency (Saxton & Baumeister, J.
Microsc. 127, 1982; van Heel, Ultramicroscopy 21, 1987):

    FRC(r) = Σ_{k ∈ r} Re(F₁(k) F₂*(k)) / sqrt(Σ_{k ∈ r} |F₁(k)|² · Σ_{k ∈ r} |F₂(k)|²)

It is near 1 where both images share signal and drops to noise level (±1/√n for n samples in a ring)
where they do not. The resolution is the frequency where the curve crosses a threshold, here either the
fixed 1/7 ≈ 0.143 or the half-bit curve ``(0.2071 + 1.9102/√n) / (1.2071 + 0.9102/√n)`` (van Heel &
Schatz, "Fourier shell correlation threshold criteria", J. Struct. Biol. 151, 250-262, 2005; n is the
number of Fourier samples in the ring), as in Nieuwenhuizen et al., Nature Methods 10, 557 (2013).

Frequencies are in cycles per pixel of the image (0.5 is the Nyquist frequency); a crossing at ``f``
means a resolution of ``1/f`` pixels, ``pixel_size/f`` in physical units. Rings are
``1/min(Y, X)`` cycles/pixel wide, centred on multiples of that width, up to the Nyquist frequency of
the shorter axis (corner frequencies beyond it are left out).

One-image FRC (:func:`checkerboard_frc`, Koho et al., "Fourier ring correlation simplifies image
restoration in fluorescence microscopy", Nature Communications 10, 3103, 2019): the image is split into
its (even row, even column) and (odd, odd) pixels, and into the two other diagonal sub-images (even, odd)
and (odd, even); the FRC of each diagonal pair is computed and the two curves averaged. Noise that is
independent from pixel to pixel (shot and read noise) is independent between the sub-images, so they act
as two acquisitions. Two corrections of the frequency axis map the result onto the image's own:

- each sub-image samples the image every 2 pixels along Y and X, so a frequency of ``f`` cycles per
  sub-image pixel is ``f/2`` cycles per image pixel (the one-image curve ends at 0.25);
- the two sub-images of a pair are offset by one pixel along a diagonal (√2 pixels, half a sub-image
  pixel in Y and X). Left alone, that offset multiplies the correlation at radius ``f`` by about
  ``J₀(2π·√2·f)`` and pulls the curve down at high frequency; Koho et al. compensate it by an empirical
  rescaling of the resolution (miplib). Here the offset is removed exactly by the Fourier shift theorem
  (a phase ramp on the second spectrum), which is exact for structure below the sub-image Nyquist.

The √2 of the diagonal offset is thus handled in the phase, not by rescaling the frequency axis by √2:
that rescaling fits a quincunx split (pixels with i + j even / odd, a 45°-rotated lattice of spacing √2),
not this one. The tests check the one-image cut-off against the two-image one on band-limited images.
The split needs noise that is independent between neighbouring pixels: the output of a restoration
network is spatially correlated, so its one-image FRC tells how smooth it is, not its resolution.

Subsampling also spreads the same signal over 4× the spectrum area while white noise stays flat, so
the one-image curve reports a lower SNR per ring than two full acquisitions: on images whose spectrum
rolls off gradually it crosses the threshold at a somewhat lower frequency (a conservative resolution).

An apodisation window (``window``: ``"hann"``, the default, ``"hamming"``, ``"tukey"`` with α = 0.25, or
``None``) tapers the image edges so the discontinuity at the borders of a non-periodic image, identical
in both images, does not leak correlated power along the frequency axes (Nieuwenhuizen et al. 2013);
Hann leaks least next to a sharp spectral edge (cut-offs within 5 % in the tests, Tukey up to 9 %).

Everything is batched torch: images ``(*batch, Y, X)``, curves ``(*batch, R)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

Window = Literal["tukey", "hann", "hamming"] | None
Criterion = Literal["1/7", "half-bit"]

ONE_SEVENTH = 1.0 / 7.0
TUKEY_ALPHA = 0.25


@dataclass(frozen=True)
class FRCCurve:
    """An FRC curve per image.

    Attributes:
        frequency: ``(R,)`` ring centres in cycles per pixel of the image (0.5 = Nyquist).
        correlation: ``(*batch, R)`` the FRC per ring, in [-1, 1].
        n_pixels: ``(R,)`` Fourier samples per ring (of the images that were correlated), for the
            half-bit threshold.
    """

    frequency: torch.Tensor
    correlation: torch.Tensor
    n_pixels: torch.Tensor

    def threshold(self, criterion: Criterion = "1/7") -> torch.Tensor:
        """The threshold curve ``(R,)``: a constant 1/7, or van Heel & Schatz's half-bit curve."""
        if criterion == "1/7":
            return torch.full_like(self.frequency, ONE_SEVENTH)
        if criterion == "half-bit":
            return half_bit_threshold(self.n_pixels).to(self.frequency)
        raise ValueError(f"FRC criterion must be '1/7' or 'half-bit', got {criterion!r}")


@dataclass(frozen=True)
class FRCResolution:
    """Where an FRC curve crosses a threshold, per image ``(*batch,)``.

    Attributes:
        frequency: crossing frequency in cycles per pixel (linear interpolation between rings); the
            last ring's frequency when the curve never crosses (``crossed`` False: the resolution is
            limited by the sampling, not measured).
        pixels: ``1 / frequency``, the resolution in pixels.
        physical: ``pixel_size / frequency`` in the pixel size's unit, ``None`` without a pixel size.
        crossed: whether the curve dropped below the threshold at all.
    """

    frequency: torch.Tensor
    pixels: torch.Tensor
    physical: torch.Tensor | None
    crossed: torch.Tensor


def half_bit_threshold(n_pixels: torch.Tensor) -> torch.Tensor:
    """van Heel & Schatz (2005) half-bit threshold for rings of ``n_pixels`` Fourier samples."""
    root = n_pixels.double().clamp_min(1).sqrt()
    return (0.2071 + 1.9102 / root) / (1.2071 + 0.9102 / root)


def _window_1d(n: int, window: Window, dtype: torch.dtype) -> torch.Tensor:
    if window == "hann":
        return torch.hann_window(n, periodic=False, dtype=dtype)
    if window == "hamming":
        return torch.hamming_window(n, periodic=False, dtype=dtype)
    if window == "tukey":
        # Flat in the middle, a raised-cosine taper over TUKEY_ALPHA/2 of the length at each end.
        x = torch.linspace(0.0, 1.0, n, dtype=dtype)
        edge = TUKEY_ALPHA / 2
        w = torch.ones(n, dtype=dtype)
        rising = x < edge
        falling = x > 1 - edge
        w[rising] = 0.5 * (1 - torch.cos(math.pi * x[rising] / edge))
        w[falling] = 0.5 * (1 - torch.cos(math.pi * (1 - x[falling]) / edge))
        return w
    raise ValueError(f"FRC window must be 'tukey', 'hann', 'hamming' or None, got {window!r}")


def _apodise(x: torch.Tensor, window: Window) -> torch.Tensor:
    """Multiply ``(N, Y, X)`` by a separable window (after removing each image's mean, so the window
    does not turn a bright background into a correlated low-frequency bump)."""
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    if window is None:
        return x
    wy = _window_1d(x.shape[-2], window, x.dtype)
    wx = _window_1d(x.shape[-1], window, x.dtype)
    return x * (wy[:, None] * wx[None, :]).to(x.device)


def _rings(shape: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Ring index of every Fourier sample of a ``(Y, X)`` spectrum (``R`` for samples beyond Nyquist),
    the ring centres in cycles per pixel, and the ring count ``R``."""
    ny, nx = shape
    width = 1.0 / min(ny, nx)
    n_rings = min(ny, nx) // 2 + 1
    fy = torch.fft.fftfreq(ny, dtype=torch.float64, device=device)
    fx = torch.fft.fftfreq(nx, dtype=torch.float64, device=device)
    radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    index = torch.floor(radius / width + 0.5).long()
    index = torch.where(index < n_rings, index, torch.full_like(index, n_rings))
    centres = torch.arange(n_rings, dtype=torch.float64, device=device) * width
    return index.flatten(), centres, n_rings


def _frc(
    a: torch.Tensor, b: torch.Tensor, window: Window, shift: tuple[float, float] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FRC of ``(N, Y, X)`` pairs: ``(correlation (N, R), centres (R,), n_pixels (R,))``.

    ``shift`` (in pixels, Y and X) is the offset of ``b``'s sampling grid relative to ``a``'s: ``b`` is
    ``a``'s scene sampled at ``position + shift``; it is undone with a phase ramp on ``b``'s spectrum.
    """
    fa = torch.fft.fft2(_apodise(a.double(), window))
    fb = torch.fft.fft2(_apodise(b.double(), window))
    ny, nx = a.shape[-2:]
    if shift is not None:
        fy = torch.fft.fftfreq(ny, dtype=torch.float64, device=a.device)
        fx = torch.fft.fftfreq(nx, dtype=torch.float64, device=a.device)
        phase = -2 * math.pi * (fy[:, None] * shift[0] + fx[None, :] * shift[1])
        fb = fb * torch.polar(torch.ones_like(phase), phase)
    index, centres, n_rings = _rings((ny, nx), a.device)
    n = a.shape[0]

    def ring_sum(values: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(n, n_rings + 1, dtype=torch.float64, device=a.device)
        return out.index_add_(1, index, values.reshape(n, -1))[:, :n_rings]

    num = ring_sum((fa * fb.conj()).real)
    den = ring_sum(fa.real**2 + fa.imag**2) * ring_sum(fb.real**2 + fb.imag**2)
    correlation = num / den.sqrt().clamp_min(1e-300)
    counts = torch.bincount(index, minlength=n_rings + 1)[:n_rings].double()
    return correlation, centres, counts


def _as_batch(x: torch.Tensor, name: str) -> tuple[torch.Tensor, tuple[int, ...]]:
    if x.dim() < 2:
        raise ValueError(f"{name} expects images (*batch, Y, X), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: the image holds NaN or Inf values")
    lead = tuple(x.shape[:-2])
    return x.reshape(-1, *x.shape[-2:]), lead


def frc_curve(a: torch.Tensor, b: torch.Tensor, window: Window = "hann") -> FRCCurve:
    """The FRC between two images of the same field of view, ``(*batch, Y, X)`` each, per image.

    Needs at least 8 pixels along Y and X. The images must have independent noise for the curve to
    measure resolution (two acquisitions, or a prediction and its ground truth, where it measures up to
    which frequency the prediction agrees with the truth).
    """
    if a.shape != b.shape:
        raise ValueError(f"frc_curve needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    fa, lead = _as_batch(a, "frc_curve")
    fb, _ = _as_batch(b, "frc_curve")
    if min(fa.shape[-2:]) < 8:
        raise ValueError(f"frc_curve needs at least 8 pixels along Y and X, got {tuple(a.shape[-2:])}")
    correlation, centres, counts = _frc(fa, fb, window)
    return FRCCurve(centres, correlation.reshape(*lead, -1), counts)


def checkerboard_frc(image: torch.Tensor, window: Window = "hann") -> FRCCurve:
    """One-image FRC of ``(*batch, Y, X)`` by the diagonal checkerboard split (Koho et al. 2019).

    The average of FRC((even, even), (odd, odd)) and FRC((even, odd), (odd, even)), each pair aligned by
    its half-pixel diagonal offset; frequencies are in cycles per pixel of ``image`` (up to 0.25, the
    sub-images' Nyquist). An odd last row or column is dropped. Needs at least 16 pixels along Y and X.
    See the module docstring for the corrections of the frequency axis.
    """
    x, lead = _as_batch(image, "checkerboard_frc")
    if min(x.shape[-2:]) < 16:
        raise ValueError(
            f"checkerboard_frc needs at least 16 pixels along Y and X, got {tuple(image.shape[-2:])}"
        )
    ny, nx = (x.shape[-2] // 2) * 2, (x.shape[-1] // 2) * 2
    x = x[:, :ny, :nx]
    ee, oo = x[:, 0::2, 0::2], x[:, 1::2, 1::2]
    eo, oe = x[:, 0::2, 1::2], x[:, 1::2, 0::2]
    # (odd, odd) samples the scene half a sub-image pixel further along Y and X than (even, even);
    # (odd, even) is half a pixel further along Y and half a pixel back along X than (even, odd).
    first, centres, counts = _frc(ee, oo, window, shift=(0.5, 0.5))
    second, _, _ = _frc(eo, oe, window, shift=(0.5, -0.5))
    correlation = 0.5 * (first + second)
    return FRCCurve(centres / 2, correlation.reshape(*lead, -1), counts)


def _smooth(curve: torch.Tensor, width: int) -> torch.Tensor:
    """Moving average of ``(N, R)`` over ``width`` rings (odd), edges replicated."""
    if width <= 1:
        return curve
    pad = width // 2
    padded = F.pad(curve[:, None], (pad, pad), mode="replicate")
    kernel = torch.full((1, 1, width), 1.0 / width, dtype=curve.dtype, device=curve.device)
    return F.conv1d(padded, kernel)[:, 0]


def frc_resolution(
    curve: FRCCurve,
    criterion: Criterion = "1/7",
    pixel_size: float | None = None,
    smooth: int | None = None,
) -> FRCResolution:
    """Where ``curve`` first drops below the ``criterion`` threshold, per image.

    The curve is first smoothed by a moving average over ``smooth`` rings (odd; default
    ``2·(R // 200) + 1``: no smoothing below 200 rings, 11 rings for a 2048² image) to keep single noisy rings from
    deciding the crossing; ring 0 (the mean) is skipped. The crossing is interpolated linearly between the
    last ring above and the first ring below the threshold.
    """
    corr = curve.correlation.double()
    lead = tuple(corr.shape[:-1])
    corr = corr.reshape(-1, corr.shape[-1])
    n_rings = corr.shape[-1]
    width = 2 * (n_rings // 200) + 1 if smooth is None else int(smooth)
    if width < 1 or width % 2 == 0:
        raise ValueError(f"frc_resolution smooth must be a positive odd number of rings, got {smooth}")
    # Ring 0 (the mean, removed before the transform) is left out of the moving average.
    smoothed = torch.cat([corr[:, :1], _smooth(corr[:, 1:], width)], dim=1)
    diff = smoothed - curve.threshold(criterion).double()[None, :]
    freq = curve.frequency.double()
    below = diff[:, 1:] < 0
    crossed = below.any(dim=1)
    first = torch.where(
        crossed, below.double().argmax(dim=1) + 1, torch.full_like(crossed, n_rings - 1, dtype=torch.long)
    )
    prev = (first - 1).clamp_min(0)
    d0 = diff.gather(1, prev[:, None])[:, 0]
    d1 = diff.gather(1, first[:, None])[:, 0]
    t = torch.where(d0 > 0, d0 / (d0 - d1).clamp_min(1e-300), torch.ones_like(d0)).clamp(0, 1)
    f = torch.where(crossed, freq[prev] + t * (freq[first] - freq[prev]), freq[-1].expand_as(d0))
    f = f.clamp_min(1e-12)
    pixels = 1.0 / f
    physical = pixels * float(pixel_size) if pixel_size is not None else None
    return FRCResolution(
        frequency=f.reshape(lead),
        pixels=pixels.reshape(lead),
        physical=physical.reshape(lead) if physical is not None else None,
        crossed=crossed.reshape(lead),
    )
