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
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class NormalisationError(ValueError):
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
