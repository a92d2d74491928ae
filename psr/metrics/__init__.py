"""Image quality metrics on batched tensors: PSNR, SSIM, MS-SSIM, NRMSE, the CARE normalisation, FRC.

The names are imported on first use, so ``psr.metrics.keys`` (the logged metric names, read by the
reports) does not import torch.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOMES = {
    "care": ("care_normalise", "fit_affine", "normalise_percentile"),
    "frc": (
        "FRCCurve",
        "FRCResolution",
        "checkerboard_frc",
        "frc_curve",
        "frc_resolution",
        "half_bit_threshold",
    ),
    "image": ("ms_ssim", "nrmse", "psnr", "ssim"),
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}

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
    """The metrics, from their modules on first use; the deprecated spellings ``normalize_percentile`` and
    ``care_normalize`` (with a warning)."""
    if name in _HOME:
        value = getattr(import_module(f"psr.metrics.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    care = import_module("psr.metrics.care")
    if name in care._RENAMED:
        return getattr(care, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
