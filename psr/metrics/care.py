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

import warnings
from typing import Any

import torch

from psr.data.normalise import normalise_percentile

# Deprecated spellings (psr writes "normalise"): still importable, with a DeprecationWarning.
_RENAMED = {"normalize_percentile": "normalise_percentile", "care_normalize": "care_normalise"}


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


def care_normalise(
    pred: torch.Tensor, target: torch.Tensor, low: float = 0.1, high: float = 99.9
) -> tuple[torch.Tensor, torch.Tensor]:
    """The CARE pair: ``(fit_affine(pred, gt_n), gt_n)`` with ``gt_n = normalise_percentile(target, low, high)``.

    Compare the two with a data range of 1 (the span between the ground truth's percentiles).
    """
    gt = normalise_percentile(target, low, high)
    return fit_affine(pred, gt), gt


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        new = _RENAMED[name]
        warnings.warn(f"psr.metrics.care.{name} is deprecated; use {new}", DeprecationWarning, stacklevel=2)
        return globals()[new]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
