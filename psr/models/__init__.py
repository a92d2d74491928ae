"""Plain ``nn.Module`` generators; each takes a low-resolution batch and returns it ``scale`` times larger."""

from psr.models.care_unet import CAREUNet
from psr.models.edsr import EDSR
from psr.models.rcan import RCAN
from psr.models.rcan3d import RCAN3D
from psr.models.unet import UNet

__all__ = ["CAREUNet", "EDSR", "RCAN", "RCAN3D", "UNet"]
