"""Batched PSNR, SSIM, MS-SSIM and NRMSE on ``(B, C, [Z,] Y, X)`` tensors.

SSIM follows Wang et al. (2004) with a Gaussian window (σ = 1.5, truncated at 3.5 σ: 11 taps) and
population statistics, the settings under which scikit-image's ``structural_similarity(...,
gaussian_weights=True, use_sample_covariance=False)`` reproduces the original paper. Only positions
where the window lies fully inside the image contribute, as in scikit-image's border crop.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F


def _per_sample_range(target: torch.Tensor, data_range: float | torch.Tensor | None) -> torch.Tensor:
    if data_range is None:
        flat = target.flatten(1)
        return (flat.amax(1) - flat.amin(1)).clamp_min(torch.finfo(target.dtype).eps)
    if isinstance(data_range, torch.Tensor):
        return data_range.to(target).expand(target.shape[0])
    return torch.full((target.shape[0],), float(data_range), device=target.device, dtype=target.dtype)


def psnr(
    pred: torch.Tensor, target: torch.Tensor, data_range: float | torch.Tensor | None = None
) -> torch.Tensor:
    """Peak signal-to-noise ratio per sample, ``(B,)`` in dB.

    ``data_range`` defaults to each target's own max − min.
    """
    if pred.shape != target.shape:
        raise ValueError(f"psnr needs equal shapes, got {tuple(pred.shape)} and {tuple(target.shape)}")
    pred64, target64 = pred.double(), target.double()
    rng = _per_sample_range(target64, data_range)
    mse = (pred64 - target64).pow(2).flatten(1).mean(1).clamp_min(1e-20)
    return (10 * torch.log10(rng.pow(2) / mse)).to(pred.dtype if pred.is_floating_point() else torch.float32)


def gaussian_window(
    sigma: float = 1.5, truncate: float = 3.5, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """1D Gaussian taps normalised to sum 1 (scipy.ndimage's truncation rule)."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=dtype)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _filter_valid(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' filtering of ``(N, 1, *S)`` along every spatial axis."""
    spatial = x.dim() - 2
    k = taps.numel()
    conv = F.conv2d if spatial == 2 else F.conv3d
    for axis in range(spatial):
        shape = [1, 1] + [1] * spatial
        shape[2 + axis] = k
        x = conv(x, taps.view(shape).to(x))
    return x


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float | torch.Tensor | None = None,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity per sample, ``(B,)``: the mean SSIM map over channels and positions.

    ``data_range`` defaults to each target's own max − min. Works on 2D ``(B, C, Y, X)`` and 3D
    ``(B, C, Z, Y, X)`` batches whose spatial axes are at least the window size (11 for σ = 1.5).
    """
    if pred.shape != target.shape:
        raise ValueError(f"ssim needs equal shapes, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.dim() not in (4, 5):
        raise ValueError(f"ssim expects (B, C, Y, X) or (B, C, Z, Y, X), got shape {tuple(pred.shape)}")
    taps = gaussian_window(sigma)
    if min(pred.shape[2:]) < taps.numel():
        raise ValueError(
            f"ssim needs spatial axes of at least {taps.numel()} pixels, got {tuple(pred.shape[2:])}"
        )
    b, c = pred.shape[:2]
    x = pred.double().reshape(b * c, 1, *pred.shape[2:])
    y = target.double().reshape(b * c, 1, *target.shape[2:])
    rng = _per_sample_range(target.double(), data_range).repeat_interleave(c)
    c1 = (k1 * rng) ** 2
    c2 = (k2 * rng) ** 2
    stats = _filter_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1).reshape(-1, 1, *x.shape[2:]), taps)
    stats = stats.reshape(b * c, 5, *stats.shape[2:])
    mx, my, mxx, myy, mxy = stats.unbind(1)
    vx, vy, cov = mxx - mx * mx, myy - my * my, mxy - mx * my
    view = (-1,) + (1,) * (mx.dim() - 1)
    c1v, c2v = c1.view(view), c2.view(view)
    smap = ((2 * mx * my + c1v) * (2 * cov + c2v)) / ((mx * mx + my * my + c1v) * (vx + vy + c2v))
    per_channel = smap.flatten(1).mean(1)
    return per_channel.view(b, c).mean(1).to(torch.float32)


# Wang, Simoncelli & Bovik (2003): the exponents of the five MS-SSIM scales, finest first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
# The shortest spatial axis at which :func:`ms_ssim` uses all five scales (the published metric).
MS_SSIM_MIN_SIZE = 11 * 2 ** (len(MS_SSIM_WEIGHTS) - 1)


def _blur_valid(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' Gaussian filtering of ``(N, K, *S)`` along every spatial axis, per channel."""
    spatial = x.dim() - 2
    conv = F.conv2d if spatial == 2 else F.conv3d
    k = x.shape[1]
    for axis in range(spatial):
        shape = [1, 1] + [1] * spatial
        shape[2 + axis] = taps.numel()
        weight = taps.to(x).view(shape).expand(k, *shape[1:]).contiguous()
        x = conv(x, weight, groups=k)
    return x


def ms_ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float | None = 1.0,
    max_scales: int = len(MS_SSIM_WEIGHTS),
) -> torch.Tensor:
    """Multi-scale SSIM per sample ``(B,)``, differentiable with respect to ``pred``.

    Wang, Simoncelli & Bovik, "Multiscale structural similarity for image quality assessment" (2003),
    with the window, constants and float64 arithmetic of :func:`ssim`. The number of
    scales adapts to the patch: scale ``k`` (after ``k`` ×2 average-pool downsamplings) is used while the
    shortest spatial axis is at least ``11 · 2**k`` pixels, up to ``max_scales``; the first weights of
    :data:`MS_SSIM_WEIGHTS` are renormalised to sum to 1. With one scale (shortest axis < 22) this is
    exactly :func:`ssim`. Contrast-structure terms are clamped at 1e-6 before the
    fractional powers so anti-correlated patches cannot produce NaN. ``data_range=None`` uses each
    target's own max − min, as :func:`ssim` does. Used as a metric (evaluation) and in the
    ``ssim_l1`` loss (``psr.modules.losses``). ``(B, C, Y, X)`` and ``(B, C, Z, Y, X)``.
    """
    if pred.shape != target.shape:
        raise ValueError(f"ms_ssim needs equal shapes, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.dim() not in (4, 5):
        raise ValueError(f"ms_ssim expects (B, C, Y, X) or (B, C, Z, Y, X), got shape {tuple(pred.shape)}")
    taps = gaussian_window()
    win = taps.numel()
    shortest = min(pred.shape[2:])
    if shortest < win:
        raise ValueError(f"ms_ssim needs spatial axes of at least {win} pixels, got {tuple(pred.shape[2:])}")
    n_scales = 1
    while n_scales < max_scales and shortest >= win * 2**n_scales:
        n_scales += 1
    if n_scales == 1:
        return ssim(pred, target, data_range=data_range)

    weights = torch.tensor(MS_SSIM_WEIGHTS[:n_scales], dtype=torch.float64, device=pred.device)
    weights = weights / weights.sum()
    b, c = pred.shape[:2]
    x = pred.double().reshape(b * c, 1, *pred.shape[2:])
    y = target.double().reshape(b * c, 1, *target.shape[2:])
    if data_range is None:
        flat = target.double().flatten(1)
        rng = (flat.amax(1) - flat.amin(1)).clamp_min(torch.finfo(torch.float64).eps).repeat_interleave(c)
    else:
        rng = torch.full((b * c,), float(data_range), dtype=torch.float64, device=pred.device)
    view = (-1,) + (1,) * (pred.dim() - 2)
    c1 = ((0.01 * rng) ** 2).view(view)
    c2 = ((0.03 * rng) ** 2).view(view)
    pool = F.avg_pool2d if pred.dim() == 4 else F.avg_pool3d

    result = torch.ones(b * c, dtype=torch.float64, device=pred.device)
    for scale in range(n_scales):
        mx, my, mxx, myy, mxy = _blur_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), taps).unbind(1)
        vx, vy, cov = mxx - mx * mx, myy - my * my, mxy - mx * my
        cs = (2 * cov + c2) / (vx + vy + c2)
        if scale < n_scales - 1:
            term = cs.flatten(1).mean(1)
            x, y = pool(x, 2), pool(y, 2)
        else:  # luminance only at the coarsest scale
            term = ((2 * mx * my + c1) / (mx * mx + my * my + c1) * cs).flatten(1).mean(1)
        result = result * term.clamp_min(1e-6).pow(weights[scale])
    return result.view(b, c).mean(1).to(torch.float32)


def nrmse(
    pred: torch.Tensor,
    target: torch.Tensor,
    normalization: Literal["euclidean", "min-max", "mean"] | float = "euclidean",
) -> torch.Tensor:
    """Normalised root-mean-square error per sample, ``(B,)``: ``RMSE(pred, target) / denominator``.

    The denominators are scikit-image's (``skimage.metrics.normalized_root_mse``): ``"euclidean"``
    ``sqrt(mean(target²))``, ``"min-max"`` ``max(target) − min(target)``, ``"mean"`` ``mean(target)``, each
    per sample. A number is used as the denominator of every sample: with ``1.0`` on percentile-normalised
    images this is the NRMSE of the CARE evaluation (Weigert et al., Nature Methods 2018), the RMSE in
    units of the ground truth's normalised range. Any ``(B, ...)`` shape.
    """
    if pred.shape != target.shape:
        raise ValueError(f"nrmse needs equal shapes, got {tuple(pred.shape)} and {tuple(target.shape)}")
    p, t = pred.double().flatten(1), target.double().flatten(1)
    rmse = (p - t).pow(2).mean(1).sqrt()
    if isinstance(normalization, int | float):
        denom = torch.full_like(rmse, float(normalization))
    elif normalization == "euclidean":
        denom = t.pow(2).mean(1).sqrt()
    elif normalization == "min-max":
        denom = t.amax(1) - t.amin(1)
    elif normalization == "mean":
        denom = t.mean(1)
    else:
        raise ValueError(
            f"nrmse normalization must be euclidean, min-max, mean or a number, got {normalization!r}"
        )
    return (rmse / denom).to(torch.float32)
