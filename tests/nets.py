"""Tiny in-memory generators for tests: they declare what every psr generator declares
(``psr.models.protocol.Generator``)."""

from __future__ import annotations

import torch
from torch import nn


class TinyGenerator(nn.Module):
    """Nearest ×``scale`` (laterally) then one 3×3 (×3) convolution: a psr generator of a few weights."""

    def __init__(self, scale: int = 1, channels: int = 1, dims: int = 2) -> None:
        super().__init__()
        self.scale, self.spatial_dims = scale, dims
        self.in_channels = self.out_channels = channels
        self.conv = (nn.Conv2d if dims == 2 else nn.Conv3d)(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale > 1:
            factor = (self.scale,) * 2 if self.spatial_dims == 2 else (1, self.scale, self.scale)
            x = nn.functional.interpolate(x, scale_factor=factor, mode="nearest")
        return self.conv(x)
