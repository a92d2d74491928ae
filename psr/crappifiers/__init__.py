"""Degradation operators ("crappifiers"): batched torch modules driven by an explicit generator."""

from psr.crappifiers.base import Crappifier
from psr.crappifiers.compose import Chain
from psr.crappifiers.noise import GaussianNoise, PoissonNoise
from psr.crappifiers.sampling import Downsample

__all__ = ["Chain", "Crappifier", "Downsample", "GaussianNoise", "PoissonNoise"]
