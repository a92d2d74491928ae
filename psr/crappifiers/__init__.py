"""Degradation operators ("crappifiers"): batched torch modules driven by an explicit generator."""

from psr.crappifiers.artifacts import Background, Bleaching, ScanLineJitter
from psr.crappifiers.base import Crappifier, Param
from psr.crappifiers.compose import Chain, MultiFrame, OneOf, RandomApply, RandomOrder
from psr.crappifiers.noise import (
    Camera,
    CorrelatedNoise,
    GaussianNoise,
    LocalVarianceNoise,
    PoissonNoise,
    Quantize,
    SaltPepper,
)
from psr.crappifiers.optics import GaussianBlur, OpticalPSF, PSFFromFile
from psr.crappifiers.sampling import Downsample

__all__ = [
    "Background",
    "Bleaching",
    "Camera",
    "Chain",
    "CorrelatedNoise",
    "Crappifier",
    "Downsample",
    "GaussianBlur",
    "GaussianNoise",
    "LocalVarianceNoise",
    "MultiFrame",
    "OneOf",
    "OpticalPSF",
    "PSFFromFile",
    "Param",
    "PoissonNoise",
    "Quantize",
    "RandomApply",
    "RandomOrder",
    "SaltPepper",
    "ScanLineJitter",
]
