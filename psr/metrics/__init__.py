"""Image quality metrics on batched tensors: PSNR, SSIM, MS-SSIM, NRMSE, the CARE normalisation, FRC."""

from psr.metrics.care import care_normalize, fit_affine, normalize_percentile
from psr.metrics.frc import (
    FRCCurve,
    FRCResolution,
    checkerboard_frc,
    frc_curve,
    frc_resolution,
    half_bit_threshold,
)
from psr.metrics.image import ms_ssim, nrmse, psnr, ssim

__all__ = [
    "FRCCurve",
    "FRCResolution",
    "care_normalize",
    "checkerboard_frc",
    "fit_affine",
    "frc_curve",
    "frc_resolution",
    "half_bit_threshold",
    "ms_ssim",
    "normalize_percentile",
    "nrmse",
    "psnr",
    "ssim",
]
