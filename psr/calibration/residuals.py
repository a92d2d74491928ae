"""The distance of a crappifier to real low/high pairs: reading and cropping the pairs, residual statistics
(histogram quantiles and radial amplitude spectrum) and their distance. ``psr.calibration.fitting``
explains the method and searches a preset's parameters with it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from psr.crappifiers.base import Crappifier
from psr.data.normalise import normalise_percentile
from psr.data.pairs import ChannelChoice, channel_header, list_images, match_pairs, read_planes
from psr.errors import PsrError
from psr.metrics.care import fit_affine

N_QUANTILES = 512
N_RINGS = 24


class FitError(PsrError):
    """Bad input for a fit: one sentence naming the file or key, what was found and what was expected."""


# --------------------------------------------------------------------------------------------------
# Real pairs: reading, normalising, cropping.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairSource:
    """Where the pairs come from, as in the ``pairs`` section of ``conf/evaluate/data/*.yaml``."""

    low: list[str]
    high: list[str]
    match: str = "order"
    strip: tuple[str, ...] = ()
    allow_unmatched: bool = False
    channel: ChannelChoice = None
    names: tuple[str, str] = ("low", "high")  # how error messages name the two settings


def pair_source_from_config(path: Path, root: Path) -> PairSource:
    """The ``pairs`` section of an evaluation data config (plain YAML), paths made relative to ``root``."""
    if not path.is_file():
        raise FitError(f"pair set config {path} does not exist; expected a file with a pairs section")
    with path.open() as f:
        doc = yaml.safe_load(f)
    pairs = doc.get("pairs") if isinstance(doc, dict) else None
    if not isinstance(pairs, dict) or "low" not in pairs or "high" not in pairs:
        raise FitError(
            f"{path} has no pairs section with low and high; expected pairs: {{low: ..., high: ...}}"
        )

    def paths(value: Any, key: str) -> list[str]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(v, str) for v in items):
            raise FitError(f"{path}: pairs.{key} is {value!r}; expected a path or a list of paths")
        return [str(root / v) if not Path(v).is_absolute() else v for v in items]

    return PairSource(
        low=paths(pairs["low"], "low"),
        high=paths(pairs["high"], "high"),
        match=str(pairs.get("match", "order")),
        strip=tuple(str(s) for s in pairs.get("strip") or ()),
        allow_unmatched=bool(pairs.get("allow_unmatched", False)),
        channel=pairs.get("channel"),
        names=(f"{path.name}: pairs.low", f"{path.name}: pairs.high"),
    )


def read_pairs(source: PairSource) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, low, high)`` per 2D plane of every pair, ``(Y, X)`` float32, one pair in memory at a time.

    All files are listed, matched and their shapes checked (from the headers) before any pixel is read;
    a plane of a multi-plane image (a TIFF stack, channels with ``channel=None``) is a pair of its own.
    """
    lows = list_images(source.low, source.names[0])
    highs = list_images(source.high, source.names[1])
    matched, _ = match_pairs(lows, highs, source.match, source.strip, source.allow_unmatched)
    for name, lo, hi in matched:
        lo_shape, _ = channel_header(*lo.header(), source.channel, str(lo.path))
        hi_shape, _ = channel_header(*hi.header(), source.channel, str(hi.path))
        if lo_shape != hi_shape:
            raise FitError(
                f"pair {name}: the low image {lo.path} has shape {list(lo_shape)} but the high image"
                f" {hi.path} has {list(hi_shape)}; fitting needs pairs on the same pixel grid"
            )
    for name, lo, hi in matched:
        low, labels = read_planes(lo, source.channel, 2, 1)
        high, _ = read_planes(hi, source.channel, 2, 1)
        if low.shape != high.shape:  # headers agreed, pixels did not (e.g. a PNG palette expanded)
            raise FitError(
                f"pair {name}: the low image {lo.path} reads as {list(low.shape)} planes but the high image"
                f" {hi.path} as {list(high.shape)}; fitting needs pairs on the same pixel grid"
            )
        for i, label in enumerate(labels):
            yield (f"{name}[{label}]" if label else name), low[i, 0], high[i, 0]


@dataclass(frozen=True)
class ResidualStats:
    """What the distance compares: residual quantiles ``(Q,)``, its mean |value|, its ring spectrum ``(R,)``
    and the share of the frequencies in each ring ``(R,)``."""

    quantiles: torch.Tensor
    scale: float
    spectrum: torch.Tensor
    ring_weights: torch.Tensor


@dataclass(frozen=True)
class FitCrops:
    """One pair, ready to fit: normalised high crops ``(K, 1, h, w)`` and the real residual's statistics."""

    name: str
    high: torch.Tensor
    real: ResidualStats


def residual(degraded: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """``fit_affine(degraded) − high`` for crops ``(K, 1, h, w)``, one affine map for all ``K`` crops."""
    k, c, h, w = high.shape
    fitted = fit_affine(degraded.reshape(1, c, k * h, w), high.reshape(1, c, k * h, w))
    return (fitted.reshape(k, c, h, w) - high.double()).float()


def _hann(n: int) -> torch.Tensor:
    if n == 1:
        return torch.ones(1, dtype=torch.float64)
    return torch.hann_window(n, periodic=False, dtype=torch.float64)


@functools.lru_cache(maxsize=8)
def _ring_geometry(
    h: int, w: int, rings: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The window ``(h, w)``, the flat indices of the kept frequencies, their ring, and the ring counts."""
    window = _hann(h)[:, None] * _hann(w)[None, :]
    window = window / window.pow(2).mean().sqrt()
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(w, dtype=torch.float64)[None, :]
    ring = (torch.ceil(torch.sqrt(fy * fy + fx * fx) / 0.5 * rings).long() - 1).flatten()
    keep = ((ring >= 0) & (ring < rings)).nonzero(as_tuple=True)[0]  # DC is ring -1, corners >= rings
    counts = torch.bincount(ring[keep], minlength=rings).double()
    return window, keep, ring[keep], counts


def ring_spectrum(r: torch.Tensor, rings: int = N_RINGS) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean power of ``r`` ``(K, 1, h, w)`` in ``rings`` radial frequency rings over (0, 0.5] cycles/px,
    and the share of the frequencies that fall in each ring.

    Each crop is Hann-windowed (the window scaled to mean square 1, so by Parseval the power is in the
    image's intensity units squared) and its power ``|FFT|² / (h·w)`` averaged over crops and rings.
    """
    _, _, h, w = r.shape
    window, keep, ring, counts = _ring_geometry(h, w, rings)
    power = torch.fft.fft2(r.double() * window).abs().pow(2).mean(dim=(0, 1)).flatten() / (h * w)
    sums = torch.zeros(rings, dtype=torch.float64).index_add_(0, ring, power[keep])
    return sums / counts.clamp_min(1), counts / counts.sum()


def residual_stats(r: torch.Tensor) -> ResidualStats:
    """Quantiles, mean absolute value and ring spectrum of residual crops ``(K, 1, h, w)``."""
    values, _ = torch.sort(r.float().flatten())
    n = values.numel()
    idx = ((torch.arange(N_QUANTILES, dtype=torch.float64) + 0.5) / N_QUANTILES * n).long().clamp_max(n - 1)
    spectrum, weights = ring_spectrum(r)
    return ResidualStats(values[idx].double(), float(values.double().abs().mean()), spectrum, weights)


def stats_distance(syn: ResidualStats, real: ResidualStats) -> tuple[float, float]:
    """``(hist, spectrum)``: W1 of the histograms / real mean |r|, and the weighted mean |ln amplitude
    ratio| over rings (see the module docstring)."""
    hist = float((syn.quantiles - real.quantiles).abs().mean()) / max(real.scale, 1e-12)
    eps = 1e-9 * float(real.spectrum.mean()) + 1e-30
    ratio = (syn.spectrum + eps) / (real.spectrum + eps)
    spectrum = float(((0.5 * torch.log(ratio)).abs() * real.ring_weights).sum())
    return hist, spectrum


def crop_pair(
    name: str,
    low: np.ndarray,
    high: np.ndarray,
    crop: int,
    n_crops: int,
    seed: int,
    percentiles: tuple[float, float] = (1.0, 99.8),
) -> FitCrops:
    """Normalise ``high`` ``(Y, X)`` by its percentiles, take ``n_crops`` seeded square crops of edge
    ``min(crop, Y, X)`` at the same places in both images, and measure the real residual."""
    if low.shape != high.shape:
        raise FitError(
            f"pair {name}: low has shape {list(low.shape)} but high {list(high.shape)}; expected equal"
        )
    high_t = torch.from_numpy(np.ascontiguousarray(high, dtype=np.float32))[None, None]
    high_n = normalise_percentile(high_t, *percentiles).float()[0, 0]
    if not float(high_n.max() - high_n.min()) > 0:
        raise FitError(f"pair {name}: the high image is constant; expected an image with structure")
    size = min(crop, *high.shape)
    rng = np.random.default_rng(seed)
    ys = rng.integers(0, high.shape[0] - size + 1, n_crops)
    xs = rng.integers(0, high.shape[1] - size + 1, n_crops)
    low_t = torch.from_numpy(np.ascontiguousarray(low, dtype=np.float32))
    lows = torch.stack([low_t[y : y + size, x : x + size] for y, x in zip(ys, xs, strict=True)])[:, None]
    highs = torch.stack([high_n[y : y + size, x : x + size] for y, x in zip(ys, xs, strict=True)])[:, None]
    real = residual_stats(residual(lows, highs))
    if not real.scale > 0:
        raise FitError(f"pair {name}: the low image is an affine copy of the high one; expected a noisy twin")
    return FitCrops(name, highs.contiguous(), real)


def prepare(
    pairs: Iterator[tuple[str, np.ndarray, np.ndarray]],
    crop: int = 256,
    n_crops: int = 8,
    seed: int = 0,
    percentiles: tuple[float, float] = (1.0, 99.8),
) -> list[FitCrops]:
    """:func:`crop_pair` for every pair (the crop positions seeded by ``seed`` and the pair's index)."""
    out = [
        crop_pair(name, low, high, crop, n_crops, seed * 100_003 + i, percentiles)
        for i, (name, low, high) in enumerate(pairs)
    ]
    if not out:
        raise FitError("no pair to fit to; expected at least one low/high pair")
    return out


# --------------------------------------------------------------------------------------------------
# The distance of a crappifier to the real pairs.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distance:
    """The mean over pairs of ``hist + spectrum``, its two terms, and the distance per pair."""

    total: float
    hist: float
    spectrum: float
    per_pair: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.total:.4f} (hist {self.hist:.4f} + spectrum {self.spectrum:.4f})"


def distance(crappifier: Crappifier, data: Sequence[FitCrops], seed: int = 0) -> Distance:
    """Degrade each pair's high crops (one generator seeded with ``seed``) and compare the residuals.

    A non-finite degradation gives an infinite distance. Raises ``FitError`` when the crappifier changes
    the image size (fitting needs one that works on the pairs' own grid).
    """
    generator = torch.Generator().manual_seed(seed)
    hists, spectra, per_pair = [], [], {}
    with torch.no_grad():
        for pair in data:
            degraded = crappifier(pair.high, generator)
            if degraded.shape != pair.high.shape:
                raise FitError(
                    f"the crappifier turns crops of shape {list(pair.high.shape)} into {list(degraded.shape)};"
                    " fitting to same-grid pairs needs it at scale 1 (resampling by ${scale} only)"
                )
            if not bool(torch.isfinite(degraded).all()):
                return Distance(math.inf, math.inf, math.inf, {p.name: math.inf for p in data})
            h, s = stats_distance(residual_stats(residual(degraded, pair.high)), pair.real)
            hists.append(h)
            spectra.append(s)
            per_pair[pair.name] = h + s
    hist, spectrum = float(np.mean(hists)), float(np.mean(spectra))
    return Distance(hist + spectrum, hist, spectrum, per_pair)
