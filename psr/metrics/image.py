"""Batched PSNR and SSIM on ``(B, C, [Z,] Y, X)`` tensors.

SSIM follows Wang et al. (2004) with a Gaussian window (σ = 1.5, truncated at 3.5 σ: 11 taps) and
population statistics, the settings under which scikit-image's ``structural_similarity(...,
gaussian_weights=True, use_sample_covariance=False)`` reproduces the original paper. Only positions
where the window lies fully inside the image contribute, as in scikit-image's border crop.
"""

from __future__ import annotations

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
