"""RCAN: residual channel-attention network (Zhang et al., ECCV 2018), channel-agnostic, 2D."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation over channels: global mean → bottleneck → sigmoid gate."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class RCAB(nn.Module):
    """Residual channel-attention block: conv → ReLU → conv → channel attention, plus the input."""

    def __init__(self, channels: int, reduction: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            ChannelAttention(channels, reduction),
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.body(x)


class ResidualGroup(nn.Module):
    """``n_blocks`` RCABs and a closing convolution, wrapped in a short skip connection."""

    def __init__(self, channels: int, n_blocks: int, reduction: int, res_scale: float) -> None:
        super().__init__()
        blocks: list[nn.Module] = [RCAB(channels, reduction, res_scale) for _ in range(n_blocks)]
        blocks.append(nn.Conv2d(channels, channels, 3, padding=1))
        self.body = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def pixel_shuffle_upsampler(channels: int, scale: int) -> nn.Sequential:
    """Sub-pixel upsampling: ×2 stages for powers of two, a single ×s stage otherwise."""
    layers: list[nn.Module] = []
    if scale > 1 and scale & (scale - 1) == 0:
        for _ in range(scale.bit_length() - 1):
            layers += [nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2)]
    elif scale > 1:
        layers += [nn.Conv2d(channels, scale * scale * channels, 3, padding=1), nn.PixelShuffle(scale)]
    return nn.Sequential(*layers)


class RCAN(nn.Module):
    """Residual-in-residual network with channel attention and pixel-shuffle upsampling by ``scale``.

    Input ``(B, in_channels, Y, X)`` → output ``(B, out_channels, scale·Y, scale·X)``. No RGB mean
    shift: microscopy intensities arrive normalised by the datamodule. With ``global_residual`` the
    network predicts a correction to the bilinear upsampling of its input (when in and out channels
    match), which speeds up training on noisy inputs without changing the architecture's capacity.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        scale: int = 4,
        n_feats: int = 64,
        n_groups: int = 10,
        n_blocks: int = 20,
        reduction: int = 16,
        res_scale: float = 1.0,
        global_residual: bool = True,
    ) -> None:
        super().__init__()
        if int(scale) != scale or scale < 1:
            raise ValueError(f"RCAN scale must be an integer >= 1, got {scale!r}")
        for name, value in (("n_feats", n_feats), ("n_groups", n_groups), ("n_blocks", n_blocks)):
            if value < 1:
                raise ValueError(f"RCAN {name} must be >= 1, got {value}")
        self.scale = int(scale)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.global_residual = global_residual and in_channels == out_channels
        self.head = nn.Conv2d(in_channels, n_feats, 3, padding=1)
        self.body = nn.Sequential(
            *[ResidualGroup(n_feats, n_blocks, reduction, res_scale) for _ in range(n_groups)],
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
        )
        self.upsample = pixel_shuffle_upsampler(n_feats, self.scale)
        self.tail = nn.Conv2d(n_feats, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"RCAN expects (B, {self.in_channels}, Y, X), got a tensor of shape {tuple(x.shape)}"
            )
        feats = self.head(x)
        feats = feats + self.body(feats)
        out = self.tail(self.upsample(feats))
        if self.global_residual:
            if self.scale > 1:
                x = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
            out = out + x
        return out
