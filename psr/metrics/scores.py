"""Every evaluation figure of several restorations of one image against its ground truth, in one batch.

``restoration_scores`` stacks the candidates (a model's prediction and the baselines) into one batch and
computes, with the CARE convention (:mod:`psr.metrics.care`: percentile-normalised ground truth, each
candidate affinely fitted to it, data range 1): PSNR, SSIM, MS-SSIM (only where the shortest spatial axis
allows all five scales, :data:`~psr.metrics.image.MS_SSIM_MIN_SIZE`), NRMSE (RMSE in normalised units);
and FRC resolutions (:mod:`psr.metrics.frc`) at the 1/7 and half-bit thresholds, candidate against ground
truth and the candidate alone (checkerboard split), in pixels and, with a pixel size, physical units.
FRC figures of multi-channel or 3D images are the mean over channels and Z planes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from psr.metrics.care import fit_affine, normalise_percentile
from psr.metrics.frc import Criterion, FRCCurve, Window, checkerboard_frc, frc_curve, frc_resolution
from psr.metrics.image import MS_SSIM_MIN_SIZE, ms_ssim, nrmse, psnr, ssim

FRC_CRITERIA: tuple[tuple[str, Criterion], ...] = (("1_7", "1/7"), ("half_bit", "half-bit"))


def _frc_columns(
    prefix: str, curve_res: dict[str, torch.Tensor], unit: str, pixel_size: float | None
) -> dict:
    out: dict[str, torch.Tensor | None] = {}
    for key, pixels in curve_res.items():
        out[f"{prefix}_{key}_px"] = pixels
        out[f"{prefix}_{key}_{unit}"] = pixels * pixel_size if pixel_size is not None else None
    return out


def _resolutions(curve: FRCCurve, n: int) -> dict[str, torch.Tensor]:
    """Resolution in pixels per criterion, averaged over all but the first (candidate) axis: ``(n,)``."""
    return {
        key: frc_resolution(curve, criterion).pixels.reshape(n, -1).mean(1) for key, criterion in FRC_CRITERIA
    }


def restoration_scores(
    candidates: Mapping[str, torch.Tensor],
    target: torch.Tensor,
    percentiles: tuple[float, float] = (0.1, 99.9),
    pixel_size: float | None = None,
    unit: str = "um",
    frc_window: Window = "hann",
) -> tuple[dict[str, dict[str, float]], torch.Tensor, torch.Tensor]:
    """Scores of each candidate ``(1, C, *S)`` (same shape as ``target``) against ``target``.

    Returns ``(scores, fitted, gt)``: ``scores[name]`` maps a column name to a float (NaN where a figure
    does not apply), plus the entry ``"ground_truth"`` with the ground truth's own one-image FRC;
    ``fitted`` is the candidates after the CARE fit ``(M, C, *S)`` and ``gt`` the normalised ground truth
    ``(1, C, *S)``, both float64, for figures. Columns: ``psnr``, ``ssim``, ``ms_ssim``, ``nrmse``,
    ``frc_{1_7,half_bit}_{px,<unit>}`` (candidate vs ground truth) and ``frc1_...`` (the candidate alone).
    """
    names = list(candidates)
    if not names:
        raise ValueError("restoration_scores needs at least one candidate")
    for name, image in candidates.items():
        if image.shape != target.shape or image.shape[0] != 1:
            raise ValueError(
                f"candidate {name!r} has shape {tuple(image.shape)}; expected the ground truth's (1, C, *S)"
                f" shape {tuple(target.shape)}"
            )
    stack = torch.cat([candidates[n] for n in names]).double()
    m = stack.shape[0]
    gt = normalise_percentile(target.double(), *percentiles)
    gts = gt.expand_as(stack)
    fitted = fit_affine(stack, gts)
    columns: dict[str, torch.Tensor | None] = {
        "psnr": psnr(fitted, gts, data_range=1.0).double(),
        "ssim": ssim(fitted, gts, data_range=1.0).double(),
        "ms_ssim": ms_ssim(fitted, gts, data_range=1.0).double()
        if min(stack.shape[2:]) >= MS_SSIM_MIN_SIZE
        else None,
        "nrmse": nrmse(fitted, gts, normalization=1.0).double(),
    }
    pairs = frc_curve(fitted, gts, window=frc_window)
    columns.update(_frc_columns("frc", _resolutions(pairs, m), unit, pixel_size))
    single = checkerboard_frc(torch.cat([fitted, gt]), window=frc_window)
    single_res = _resolutions(single, m + 1)
    columns.update(_frc_columns("frc1", single_res, unit, pixel_size))

    scores: dict[str, dict[str, float]] = {}
    for i, name in enumerate(names):
        scores[name] = {k: (float(v[i]) if v is not None else math.nan) for k, v in columns.items()}
    truth = {k: math.nan for k in columns}
    for key, pixels in single_res.items():
        truth[f"frc1_{key}_px"] = float(pixels[m])
        truth[f"frc1_{key}_{unit}"] = float(pixels[m]) * pixel_size if pixel_size is not None else math.nan
    scores["ground_truth"] = truth
    return scores, fitted, gt
