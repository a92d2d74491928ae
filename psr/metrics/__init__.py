"""Image quality metrics on batched tensors: PSNR, SSIM, MS-SSIM, NRMSE, the CARE normalisation, FRC."""

from typing import Any

from psr.metrics.care import care_normalise, fit_affine, normalise_percentile
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
    "care_normalise",
    "checkerboard_frc",
    "fit_affine",
    "frc_curve",
    "frc_resolution",
    "half_bit_threshold",
    "ms_ssim",
    "normalise_percentile",
    "nrmse",
    "psnr",
    "ssim",
]


def __getattr__(name: str) -> Any:
    """The deprecated spellings ``normalize_percentile`` and ``care_normalize`` (with a warning)."""
    from psr.metrics import care

    if name in care._RENAMED:
        return getattr(care, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
