"""Plain ``nn.Module`` generators; each takes a low-resolution batch and returns it ``scale`` times larger."""

from psr.models.rcan import RCAN
from psr.models.unet import UNet

__all__ = ["RCAN", "UNet"]
