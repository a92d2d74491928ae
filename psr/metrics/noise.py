"""Blind Poisson–Gaussian noise estimation from raw frames, without a clean target.

A raw frame ``z`` is modelled as ``z = u + n`` with ``Var(n) = α·u + β``: shot noise with gain ``α``
(in the frame's units, ``α = 1 / photons`` where ``photons`` is the expected count at intensity 1) plus
signal-independent noise ``β`` (read noise, quantisation, the shot noise of a pedestal below the zero of
the intensity scale). The idea is Foi, Trimeche, Katkovnik & Egiazarian, "Practical Poissonian-Gaussian
noise modeling and fitting for single-image raw-data", IEEE TIP 17(10), 2008: measure (local mean, local
noise variance) pairs in smooth parts of the image, bin them by level and fit a line. This module is an
independent, simpler implementation:

1. **Noise samples.** The 5-point Laplacian residual ``r = (4·z₀ − z_N − z_S − z_E − z_W) / √20`` has
   white-noise variance gain 1, so ``E[r²] ≈ Var(n)`` where the signal is locally linear (a linear ramp
   leaves no residual). The level is the 5×5 box mean ``m`` of ``z``; for white noise ``r`` and ``m`` are
   uncorrelated (every stencil pixel has the same weight in the box), so binning by ``m`` does not bias
   the variance.
2. **Smooth regions.** Signal curvature leaks into ``r``. Each pixel gets a structure score, the gradient
   magnitude of the frame smoothed by a Gaussian of σ = 2 px (a low-pass, nearly uncorrelated with the
   high-pass ``r``); within each level bin only the ``keep`` fraction of pixels with the lowest score is
   used.
3. **Binned variances.** Equal-width level bins; in each, the variance of ``r`` after rejecting values
   beyond 6 standard deviations (hot pixels, sharp edges).
4. **Clipping.** Near a clip limit (a saturated detector, the ends of an 8-bit range) the noise is
   truncated. A bin is left out when more than ``max_clipped`` (1 %) of its residual stencils touch a
   value at or beyond a clip limit: the data say where clipping matters, no noise model is assumed.
5. **Fit.** ``var = α·m + β`` by iteratively reweighted least squares: weights ``n / var_pred²`` (the
   sampling variance of a variance) times Huber weights on the standardised residuals. ``β`` may come
   out negative (a pedestal above the zero of the scale); ``read_sigma`` is then 0.

Quantisation with step ``Δ`` adds about ``Δ² / 12`` to the variance when the noise is larger than a
step; it is part of ``β`` (a network sees quantised inputs), reported as ``quant_variance`` when the
step is given.

**Correlated noise.** A colour camera's demosaicking or an interpolating resampler correlates each
pixel's noise with its neighbours'; the Laplacian residual then sees only part of the variance.
``correlation_sigma`` measures it from the frame alone: the correlation of neighbouring first differences
``d = z_{x+1} − z_x`` in the smoothest pixels is −0.5 for white noise and rises with the correlation;
inverted through the unit-energy Gaussian taps of ``psr.crappifiers.CorrelatedNoise`` it gives that
operator's ``sigma``, and ``laplacian_gain(sigma)`` the residual's share of the variance to divide by.

Everything is NumPy/SciPy on 2D ``(Y, X)`` float arrays, in whatever units the caller normalised to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from psr.errors import DataError

LAPLACIAN = np.array([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]]) / math.sqrt(20.0)


class NoiseEstimationError(DataError):
    """A frame from which no noise model can be estimated (too small, flat, too few usable levels)."""


@dataclass(frozen=True)
class NoiseSamples:
    """Per-pixel samples of one or more frames, flat arrays: the level, the residual, the structure
    score and whether the residual's stencil touches a clipped value."""

    level: np.ndarray
    residual: np.ndarray
    score: np.ndarray
    clipped: np.ndarray

    @staticmethod
    def concatenate(parts: Sequence[NoiseSamples]) -> NoiseSamples:
        """The samples of all ``parts`` pooled."""
        return NoiseSamples(
            *(
                np.concatenate([getattr(p, k) for p in parts])
                for k in ("level", "residual", "score", "clipped")
            )
        )


@dataclass(frozen=True)
class NoiseFit:
    """A Poisson–Gaussian noise model ``Var = alpha·u + beta`` and the binned data it was fitted to.

    ``levels``, ``variances``, ``counts`` and ``used`` have one entry per level bin (``used``: inside
    the clip limits and given weight in the fit). ``rel_rms`` is the weighted RMS of
    ``variance / model − 1`` over the used bins, ``r2`` the weighted coefficient of determination,
    ``alpha_se`` and ``beta_se`` the standard errors from the weighted fit (scaled by its scatter).
    """

    alpha: float
    beta: float
    alpha_se: float
    beta_se: float
    levels: np.ndarray
    variances: np.ndarray
    counts: np.ndarray
    used: np.ndarray
    r2: float
    rel_rms: float
    n_samples: int
    quant_step: float | None = None
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def photons(self) -> float:
        """``1 / alpha``: the expected photon count at intensity 1 (``inf`` without shot noise)."""
        return 1.0 / self.alpha if self.alpha > 0 else math.inf

    @property
    def read_sigma(self) -> float:
        """``sqrt(beta)``, 0 when ``beta`` is negative (a pedestal, no measurable read noise)."""
        return math.sqrt(self.beta) if self.beta > 0 else 0.0

    @property
    def quant_variance(self) -> float:
        """``Δ² / 12``, the part of ``beta`` that quantisation explains (0 when no step is known)."""
        return self.quant_step**2 / 12.0 if self.quant_step else 0.0

    def variance(self, level: np.ndarray | float) -> np.ndarray:
        """The model's noise variance at ``level``."""
        return self.alpha * np.asarray(level, dtype=np.float64) + self.beta

    def __str__(self) -> str:
        return (
            f"photons {self.photons:.4g} (alpha {self.alpha:.4g} ± {self.alpha_se:.2g}), read sigma"
            f" {self.read_sigma:.4g} (beta {self.beta:.4g} ± {self.beta_se:.2g}), {int(self.used.sum())}"
            f" bins, rel. RMS {self.rel_rms:.3f}"
        )


def noise_samples(
    frame: np.ndarray,
    clip_low: float | None = None,
    clip_high: float | None = None,
    structure_sigma: float = 2.0,
    box: int = 7,
) -> NoiseSamples:
    """Level (``box``² mean), white-noise-normalised Laplacian residual, structure score and clip flag
    (a stencil value at or beyond ``clip_low``/``clip_high``) for every interior pixel of ``frame (Y, X)``
    (a ``box // 2`` border is dropped: the box and the residual need full support)."""
    from scipy.ndimage import convolve, gaussian_filter, uniform_filter

    z = np.asarray(frame, dtype=np.float64)
    if z.ndim != 2:
        raise NoiseEstimationError(f"noise estimation expects a 2D (Y, X) frame, got shape {list(z.shape)}")
    if min(z.shape) < 16:
        raise NoiseEstimationError(f"a frame of shape {list(z.shape)} is too small; expected at least 16×16")
    if not np.isfinite(z).all():
        raise NoiseEstimationError("the frame holds NaN/Inf values; expected finite intensities")
    residual = convolve(z, LAPLACIAN, mode="reflect")
    at_clip = np.zeros(z.shape, dtype=bool)
    if clip_low is not None:
        at_clip |= z <= clip_low
    if clip_high is not None:
        at_clip |= z >= clip_high
    clipped = convolve(at_clip.astype(np.uint8), (LAPLACIAN != 0).astype(np.uint8), mode="reflect") > 0
    level = uniform_filter(z, box, mode="reflect")
    smooth = gaussian_filter(z, structure_sigma, mode="reflect")
    gy, gx = np.gradient(smooth)
    score = np.hypot(gy, gx)
    b = max(box // 2, 1)
    inner = (slice(b, -b), slice(b, -b))
    return NoiseSamples(*(a[inner].ravel() for a in (level, residual, score, clipped)))


def _robust_variance(r: np.ndarray, reject: float = 6.0) -> float:
    """Variance of ``r`` after one round of dropping values beyond ``reject`` standard deviations of the
    mean (hot pixels, sharp edges). Plain standard deviations, not MAD: at a few photons per pixel the
    noise is discrete and skewed, and a MAD-based cut would drop genuine noise."""
    if r.size < 2:
        return math.nan
    mean, sd = float(r.mean()), float(r.std())
    if sd > 0:
        r = r[np.abs(r - mean) <= reject * sd]
    return float(np.var(r, ddof=1)) if r.size > 1 else math.nan


@dataclass(frozen=True)
class Bins:
    """Per level bin: the mean level, the residual variance, the number of samples used, and the fraction
    of all the bin's samples whose stencil touches a clipped value."""

    levels: np.ndarray
    variances: np.ndarray
    counts: np.ndarray
    clipped: np.ndarray


def binned_variances(
    samples: NoiseSamples, n_bins: int = 40, keep: float = 0.5, min_count: int = 200
) -> Bins:
    """The non-empty level bins: equal-width bins between the 0.1 and 99.9 percentiles of the level, the
    ``keep`` smoothest fraction of each bin (lowest structure score), bins with fewer than ``min_count``
    kept samples dropped."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    lo, hi = np.percentile(samples.level, [0.1, 99.9])
    if not hi > lo:
        raise NoiseEstimationError(
            "the frame has no range of intensity levels; expected an image with signal"
        )
    edges = np.linspace(lo, hi, n_bins + 1)
    inside = (samples.level >= lo) & (samples.level <= hi)
    index = np.clip(np.searchsorted(edges, samples.level[inside], side="right") - 1, 0, n_bins - 1)
    order = np.argsort(index, kind="stable")
    level, resid, score, clipped = (
        getattr(samples, k)[inside][order] for k in ("level", "residual", "score", "clipped")
    )
    starts = np.searchsorted(index[order], np.arange(n_bins + 1))
    rows = []
    for s, e in zip(starts[:-1], starts[1:], strict=True):
        if e - s < min_count / keep:
            continue
        sc = score[s:e]
        sel = sc <= (np.quantile(sc, keep) if keep < 1 else np.inf)
        if int(sel.sum()) < min_count:
            continue
        rows.append(
            (
                float(level[s:e][sel].mean()),
                _robust_variance(resid[s:e][sel]),
                int(sel.sum()),
                float(clipped[s:e].mean()),
            )
        )
    cols = list(zip(*rows, strict=True)) if rows else [(), (), (), ()]
    return Bins(
        np.asarray(cols[0], dtype=np.float64),
        np.asarray(cols[1], dtype=np.float64),
        np.asarray(cols[2], dtype=np.int64),
        np.asarray(cols[3], dtype=np.float64),
    )


def fit_line(
    bins: Bins, max_clipped: float = 0.01, huber: float = 2.5, iterations: int = 20
) -> tuple[float, float, float, float, np.ndarray, np.ndarray]:
    """IRLS fit of ``variances ≈ α·levels + β``: ``(α, β, se_α, se_β, used, weights)``.

    Weights are ``counts / model²`` (the sampling variance of a variance is ``2·var² / n``) times Huber
    weights (threshold ``huber`` robust standard deviations of the standardised residuals). Bins where
    more than ``max_clipped`` of the samples touch a clipped value are left out (their noise is
    truncated). The standard errors come from the weighted normal equations, scaled by the scatter.
    """
    x, y, n = bins.levels, bins.variances, bins.counts.astype(np.float64)
    used = np.isfinite(y) & (y > 0) & (bins.clipped <= max_clipped)
    if int(used.sum()) < 3:
        raise NoiseEstimationError(
            f"only {int(used.sum())} intensity levels are usable (enough smooth pixels, unclipped);"
            " expected at least 3: an image with a range of smooth intensities"
        )
    pred = np.full_like(y, float(np.median(y[used])))
    robust = np.ones_like(y)
    design = np.stack([x, np.ones_like(x)], axis=1)
    floor = 1e-3 * float(np.median(y[used]))
    alpha = beta = 0.0
    cov = np.zeros((2, 2))
    weights = np.zeros_like(y)
    for _ in range(iterations):
        weights = np.where(used, n / np.clip(pred, floor, None) ** 2 * robust, 0.0)
        wd = design * weights[:, None]
        try:
            inv = np.linalg.inv(design.T @ wd)
        except np.linalg.LinAlgError:
            raise NoiseEstimationError("the intensity levels are too close together to fit a line") from None
        alpha, beta = inv @ (wd.T @ y)
        new_pred = np.clip(alpha * x + beta, floor, None)
        z = (y - new_pred) / (new_pred * np.sqrt(2.0 / np.clip(n, 2, None)))
        scale = 1.4826 * float(np.median(np.abs(z[used]))) or 1.0
        robust = np.minimum(1.0, huber * scale / np.clip(np.abs(z), 1e-12, None))
        chi2 = float(np.sum(weights * (y - alpha * x - beta) ** 2)) / max(int(used.sum()) - 2, 1)
        cov = inv * chi2
        converged = bool(np.allclose(new_pred, pred, rtol=1e-7))
        pred = new_pred
        if converged:
            break
    return float(alpha), float(beta), math.sqrt(cov[0, 0]), math.sqrt(cov[1, 1]), used, weights


def fit_samples(
    samples: NoiseSamples,
    n_bins: int = 40,
    keep: float = 0.5,
    min_count: int = 200,
    max_clipped: float = 0.01,
    quant_step: float | None = None,
) -> NoiseFit:
    """Bin ``samples`` by level (:func:`binned_variances`) and fit the line (:func:`fit_line`)."""
    bins = binned_variances(samples, n_bins, keep, min_count)
    alpha, beta, se_a, se_b, used, weights = fit_line(bins, max_clipped)
    levels, variances = bins.levels, bins.variances
    pred = np.clip(alpha * levels + beta, 1e-30, None)
    w = weights[used] * pred[used] ** 2  # counts × Huber weights: relative errors weighted by sample size
    rel = variances[used] / pred[used] - 1.0
    rel_rms = math.sqrt(float(np.sum(w * rel**2) / np.sum(w)))
    wv = weights[used]
    ybar = float(np.sum(wv * variances[used]) / np.sum(wv))
    ss_tot = float(np.sum(wv * (variances[used] - ybar) ** 2))
    ss_res = float(np.sum(wv * (variances[used] - pred[used]) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan
    return NoiseFit(
        alpha,
        beta,
        se_a,
        se_b,
        levels,
        variances,
        bins.counts,
        used,
        r2,
        rel_rms,
        int(samples.level.size),
        quant_step,
    )


def estimate_noise(
    frames: np.ndarray | Sequence[np.ndarray],
    clip: tuple[float | None, float | None] | Sequence[tuple[float | None, float | None]] = (None, None),
    quant_step: float | None = None,
    n_bins: int = 40,
    keep: float = 0.5,
    min_count: int = 200,
    max_clipped: float = 0.01,
) -> NoiseFit:
    """The Poisson–Gaussian model of one frame ``(Y, X)`` or of several pooled (a sequence of frames,
    or ``(N, Y, X)``), all in the same units.

    ``clip`` is ``(low, high)`` for all frames or one pair per frame: the values where the detector or
    the file format clips (``None``: no limit). ``quant_step`` is the quantisation step in these units,
    reported only.
    """
    if isinstance(frames, np.ndarray) and frames.ndim == 2:
        frames = [frames]
    frames = list(frames)
    if not frames:
        raise NoiseEstimationError("no frame to estimate noise from")
    clips: list[tuple[float | None, float | None]]
    if len(clip) == 2 and not isinstance(clip[0], tuple | list):
        clips = [clip] * len(frames)  # type: ignore[list-item]
    else:
        clips = [tuple(c) for c in clip]  # type: ignore[misc, arg-type]
        if len(clips) != len(frames):
            raise ValueError(f"{len(clips)} clip pairs for {len(frames)} frames")
    parts = [noise_samples(f, c[0], c[1]) for f, c in zip(frames, clips, strict=True)]
    return fit_samples(NoiseSamples.concatenate(parts), n_bins, keep, min_count, max_clipped, quant_step)


# Below this width (lag-1 correlation 0.26) noise is taken as white: white noise on cell-sized structure
# (1.5–3 px) reads as widths up to 0.47 (tests/metrics/test_noise_calibration.py).
WHITE_SIGMA = 0.5


def _taps(sigma: float) -> np.ndarray:
    from psr.crappifiers.noise import correlation_taps

    return correlation_taps(sigma).numpy()


def difference_correlation(sigma: float) -> float:
    """The correlation of neighbouring first differences of noise correlated by the taps of ``sigma``
    (−0.5 for white noise, rising towards 1 as the correlation widens)."""
    k = _taps(sigma)
    lag = [float(np.dot(k[: len(k) - i], k[i:])) if i < len(k) else 0.0 for i in (1, 2)]
    return (2 * lag[0] - 1 - lag[1]) / (2 * (1 - lag[0]))


def laplacian_gain(sigma: float) -> float:
    """``E[r²] / Var(n)`` of the Laplacian residual ``r`` for noise correlated by the taps of ``sigma``
    (1 for white noise)."""
    from scipy.signal import convolve2d

    k = _taps(sigma)
    return float(np.square(convolve2d(np.outer(k, k), LAPLACIAN)).sum())


def correlation_sigma(frame: np.ndarray, keep: float = 0.5, structure_sigma: float = 4.0) -> float:
    """The width (px) of the Gaussian correlation of ``frame``'s noise, ``(Y, X)``, measured without a
    target: the correlation of neighbouring first differences (along X and along Y) over the ``keep``
    fraction of smoothest pixels, inverted through :func:`difference_correlation`. 0 for white noise
    (at most −0.5); values below :data:`WHITE_SIGMA` mean nearly white noise."""
    from scipy.ndimage import gaussian_filter

    z = np.asarray(frame, dtype=np.float64)
    if z.ndim != 2 or min(z.shape) < 16:
        raise NoiseEstimationError(
            f"correlation estimation expects a 2D frame of at least 16×16, got {list(z.shape)}"
        )
    gy, gx = np.gradient(gaussian_filter(z, structure_sigma, mode="reflect"))
    score = np.hypot(gy, gx)
    products, squares = 0.0, 0.0
    for d, s in ((np.diff(z, axis=1), score[:, 1:-1]), (np.diff(z, axis=0).T, score.T[:, 1:-1])):
        a, b = d[:, :-1], d[:, 1:]
        smooth = s <= np.quantile(s, keep)
        a, b = a[smooth] - d.mean(), b[smooth] - d.mean()
        products += float(np.dot(a, b))
        squares += 0.5 * float(np.dot(a, a) + np.dot(b, b))
    if not squares > 0:
        raise NoiseEstimationError("the frame's smooth parts are constant; expected a raw frame with noise")
    measured = products / squares
    lo, hi = 0.0, 4.0
    if measured <= difference_correlation(0.3):
        return 0.0
    if measured >= difference_correlation(hi):
        return hi
    for _ in range(50):  # difference_correlation rises with sigma above 0.3
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if difference_correlation(mid) < measured else (lo, mid)
    return 0.5 * (lo + hi)


def correlation_width(frame: np.ndarray) -> float:
    """:func:`correlation_sigma` of ``frame``, 0 below :data:`WHITE_SIGMA` (where structure alone reads as
    that much correlation): the width calibration and the classical baselines correct for."""
    width = correlation_sigma(frame)
    return width if width >= WHITE_SIGMA else 0.0


def residual_variance(
    low: np.ndarray, reference: np.ndarray, n_bins: int = 20, min_count: int = 500
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The real noise of ``low (Y, X)`` measured against a (near) noise-free ``reference`` of the same
    field: ``reference`` is mapped onto ``low`` by the least-squares affine fit, and the variance of
    ``low − fit(reference)`` is binned by the fitted reference level (equal-width bins between its 0.5
    and 99.5 percentiles; 5-MAD outlier rejection). Returns ``(levels, variances, counts)``."""
    y = np.asarray(low, dtype=np.float64).ravel()
    x = np.asarray(reference, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"residual_variance needs equal shapes, got {low.shape} and {reference.shape}")
    dx = x - x.mean()
    slope = float(np.dot(dx, y - y.mean()) / max(float(np.dot(dx, dx)), 1e-30))
    fitted = y.mean() + slope * dx
    r = y - fitted
    lo, hi = np.percentile(fitted, [0.5, 99.5])
    edges = np.linspace(lo, hi, n_bins + 1)
    levels, variances, counts = [], [], []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        sel = (fitted >= a) & (fitted < b)
        if int(sel.sum()) < min_count:
            continue
        levels.append(float(fitted[sel].mean()))
        variances.append(_robust_variance(r[sel]))
        counts.append(int(sel.sum()))
    return np.asarray(levels), np.asarray(variances), np.asarray(counts, dtype=np.int64)


__all__ = [
    "LAPLACIAN",
    "WHITE_SIGMA",
    "Bins",
    "NoiseEstimationError",
    "NoiseFit",
    "NoiseSamples",
    "binned_variances",
    "correlation_sigma",
    "correlation_width",
    "difference_correlation",
    "estimate_noise",
    "fit_line",
    "fit_samples",
    "laplacian_gain",
    "noise_samples",
    "residual_variance",
]
