"""The CARE / CSBDeep evaluation convention: normalise the ground truth, fit the prediction to it.

Restorations and their ground truths rarely share an intensity scale (the publishers of most real pairs
stretched each image independently; a network trained on normalised data predicts normalised values).
Weigert et al., "Content-aware image restoration: pushing the limits of fluorescence microscopy", Nature
Methods 15, 1090-1097 (2018), Methods section "Evaluation" (code: ``csbdeep.utils.normalize`` and
``normalize_minmse``): the ground truth is normalised by its 0.1 and 99.9 percentiles, then the
prediction is mapped onto it by the affine transform that minimises the squared error. PSNR, SSIM and
NRMSE computed afterwards (with data range 1) are invariant to any affine change of the prediction.

All functions take ``(B, C, *S)`` tensors (any number of spatial axes) and treat each sample and channel
on its own; arithmetic is float64.
"""

from __future__ import annotations

import torch


def _percentiles(x: torch.Tensor, qs: tuple[float, ...]) -> list[torch.Tensor]:
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


def normalize_percentile(
    x: torch.Tensor, low: float = 0.1, high: float = 99.9, eps: float = 1e-20
) -> torch.Tensor:
    """Map each sample and channel of ``(B, C, *S)`` so its ``low`` percentile is 0 and ``high`` is 1.

    ``csbdeep.utils.normalize(x, pmin=0.1, pmax=99.9)`` per sample and channel (values outside the
    percentiles are kept, not clipped). Returns float64.
    """
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"normalize_percentile needs 0 <= low < high <= 100, got {low} and {high}")
    if x.dim() < 3:
        raise ValueError(f"normalize_percentile expects (B, C, *S), got shape {tuple(x.shape)}")
    flat = x.double().flatten(2)
    b, c, m = flat.shape
    lo, hi = _percentiles(flat.reshape(b * c, m), (low, high))
    view = (b, c) + (1,) * (x.dim() - 2)
    return (x.double() - lo.view(view)) / (hi - lo + eps).view(view)


def fit_affine(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``α·pred + β`` with the least-squares ``α, β`` per sample and channel: ``csbdeep.utils.normalize_minmse``.

    ``α = cov(pred, target) / var(pred)`` and ``β = mean(target) − α·mean(pred)`` over the spatial axes
    of ``(B, C, *S)``. A constant prediction (zero variance) becomes the target's mean. Returns float64.
    """
    if pred.shape != target.shape:
        raise ValueError(f"fit_affine needs equal shapes, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.dim() < 3:
        raise ValueError(f"fit_affine expects (B, C, *S), got shape {tuple(pred.shape)}")
    axes = tuple(range(2, pred.dim()))
    p, t = pred.double(), target.double()
    mp, mt = p.mean(axes, keepdim=True), t.mean(axes, keepdim=True)
    dp = p - mp
    alpha = (dp * (t - mt)).mean(axes, keepdim=True) / (dp * dp).mean(axes, keepdim=True).clamp_min(1e-30)
    return alpha * dp + mt


def care_normalize(
    pred: torch.Tensor, target: torch.Tensor, low: float = 0.1, high: float = 99.9
) -> tuple[torch.Tensor, torch.Tensor]:
    """The CARE pair: ``(fit_affine(pred, gt_n), gt_n)`` with ``gt_n = normalize_percentile(target, low, high)``.

    Compare the two with a data range of 1 (the span between the ground truth's percentiles).
    """
    gt = normalize_percentile(target, low, high)
    return fit_affine(pred, gt), gt
