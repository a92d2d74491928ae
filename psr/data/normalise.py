"""How a model's input is normalised: per channel, ``(x - low) / (high - low)`` with ``low`` and ``high``
the image's low/high percentiles, optionally taken on a Gaussian-smoothed copy.

Training normalises *clean* images by their percentiles, then degrades them. At inference the network
gets a *raw* low-quality frame instead, whose percentiles are inflated by its noise: on the 30 W2S
development frames the (1, 99.8) percentile range of a single raw frame is 1.47× (± 0.30) the range of
the same field's clean image mapped onto the raw frame's intensities, so a network sees its real inputs
about a third dimmer than the inputs it trained on. Smoothing the frame before taking its percentiles
(σ = 1 px) removes most of that: 1.02× (± 0.05). ``data.input_smoothing`` is that σ, applied to the
training images and, through the checkpoint, to every raw input (prediction, evaluation, real-pair
validation all call ``frame_range``). It is 0 by default: the recipes' models, trained on a spread of noise
levels, restored the development frames as well either way (see the README), and 0 keeps the normalisation
of earlier checkpoints. Noise calibration (``scripts/calibrate_noise.py``) uses σ = 1 px, so that its zero
level is the clean image's, as in training.

Every percentile normalisation of psr goes through this module: ``frame_range`` / ``apply_range`` /
``normalise_frame`` on NumPy frames (prediction, evaluation, real pairs, training patches, whose per-image
percentiles come from the cached table of ``psr.data.statistics``), and ``normalise_percentile`` on
batched tensors (the CARE evaluation convention of ``psr.metrics.care``, crappifier fitting).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from psr.errors import DataError


class NormalisationError(DataError):
    """An image that cannot be normalised: NaN/Inf values or no dynamic range."""


def smooth_planes(block: np.ndarray, sigma: float) -> np.ndarray:
    """``block (C, ..., Y, X)`` filtered by a Gaussian of ``sigma`` pixels over its last two axes (each
    plane on its own; Z is never smoothed), float64; ``sigma <= 0`` returns the values unchanged."""
    values = np.asarray(block, dtype=np.float64)
    if sigma <= 0:
        return values
    from scipy.ndimage import gaussian_filter

    sigmas = (0.0,) * (values.ndim - 2) + (float(sigma), float(sigma))
    return np.asarray(gaussian_filter(values, sigmas, mode="reflect"))


def frame_range(
    block: np.ndarray,
    percentiles: Sequence[float],
    smoothing: float = 0.0,
    source: str = "image",
    channel_names: Sequence[object] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(low, high)`` ``(C,)`` float64: the ``percentiles`` of ``block (C, ..., Y, X)`` after
    a Gaussian of ``smoothing`` pixels over Y and X (``0``: the raw values).

    Raises ``NormalisationError`` naming ``source`` for NaN/Inf values or a channel (by its index, or its
    entry in ``channel_names``) whose two percentiles are equal.
    """
    values = np.asarray(block)
    if values.ndim < 3:
        raise ValueError(f"frame_range expects (C, ..., Y, X), got shape {list(values.shape)}")
    finite = np.isfinite(values)
    if not finite.all():
        raise NormalisationError(
            f"{source} holds {int((~finite).sum())} NaN/Inf values; expected finite intensities"
        )
    lo_q, hi_q = (float(p) for p in percentiles)
    smoothed = smooth_planes(values, smoothing)
    flat = smoothed.reshape(smoothed.shape[0], -1)
    low, high = np.percentile(flat, [lo_q, hi_q], axis=1)
    check_range(low, high, (lo_q, hi_q), source, channel_names)
    return low, high


def check_range(
    low: np.ndarray,
    high: np.ndarray,
    percentiles: Sequence[float],
    source: str = "image",
    channel_names: Sequence[object] | None = None,
) -> None:
    """Raise ``NormalisationError`` naming ``source`` and the channel when a channel's ``high`` percentile
    is not above its ``low`` one (an image without dynamic range)."""
    flat = np.nonzero(np.asarray(high) <= np.asarray(low))[0]
    if flat.size:
        c = int(flat[0])
        name = channel_names[c] if channel_names is not None else c
        lo_q, hi_q = (float(p) for p in percentiles)
        raise NormalisationError(
            f"{source} channel {name} has no dynamic range (its {lo_q:g} and {hi_q:g} percentiles are both"
            f" {np.asarray(low)[c]:g}); expected an image with signal"
        )


def apply_range(
    block: np.ndarray, low: np.ndarray, high: np.ndarray, dtype: type[np.floating] = np.float64
) -> np.ndarray:
    """``block (C, ...)`` mapped per channel so that ``low`` → 0 and ``high`` → 1, float32; the arithmetic
    runs in ``dtype`` (float64 by default; training patches, float32 already, use float32)."""
    shape = (-1,) + (1,) * (np.ndim(block) - 1)
    lo = np.asarray(low).astype(dtype).reshape(shape)
    hi = np.asarray(high).astype(dtype).reshape(shape)
    return ((np.asarray(block, dtype=dtype) - lo) / (hi - lo)).astype(np.float32, copy=False)


def normalise_frame(
    block: np.ndarray, percentiles: Sequence[float], smoothing: float = 0.0, source: str = "image"
) -> np.ndarray:
    """``block (C, ..., Y, X)`` normalised by its own (smoothed) percentiles: ``apply_range ∘ frame_range``."""
    low, high = frame_range(block, percentiles, smoothing, source)
    return apply_range(block, low, high)


def _batch_percentiles(x: torch.Tensor, qs: tuple[float, ...]) -> list[torch.Tensor]:
    """Percentiles ``qs`` (0-100) of each row of ``(N, M)``, NumPy's default linear interpolation.

    A full sort instead of ``torch.quantile``, which refuses inputs over 16 M values (3D stacks).
    """
    values, _ = torch.sort(x, dim=1)
    m = values.shape[1]
    out = []
    for q in qs:
        pos = q / 100.0 * (m - 1)
        lo = int(pos)
        hi = min(lo + 1, m - 1)
        frac = pos - lo
        out.append(values[:, lo] * (1 - frac) + values[:, hi] * frac)
    return out


def normalise_percentile(
    x: torch.Tensor, low: float = 0.1, high: float = 99.9, eps: float = 1e-20
) -> torch.Tensor:
    """Map each sample and channel of ``(B, C, *S)`` so its ``low`` percentile is 0 and ``high`` is 1.

    ``csbdeep.utils.normalize(x, pmin=0.1, pmax=99.9)`` per sample and channel (values outside the
    percentiles are kept, not clipped; ``eps`` keeps a flat channel finite). Returns float64.
    """
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"normalise_percentile needs 0 <= low < high <= 100, got {low} and {high}")
    if x.dim() < 3:
        raise ValueError(f"normalise_percentile expects (B, C, *S), got shape {tuple(x.shape)}")
    flat = x.double().flatten(2)
    b, c, m = flat.shape
    lo, hi = _batch_percentiles(flat.reshape(b * c, m), (low, high))
    view = (b, c) + (1,) * (x.dim() - 2)
    return (x.double() - lo.view(view)) / (hi - lo + eps).view(view)
