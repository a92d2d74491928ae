"""RCAN: residual channel-attention network (Zhang et al., ECCV 2018), channel-agnostic.

The building blocks take ``dims`` (2 for ``(Y, X)``, 3 for ``(Z, Y, X)``) so that ``RCAN`` and ``RCAN3D``
(``psr/models/rcan3d.py``) share them.
"""

from __future__ import annotations

import torch
from torch import nn

from psr.models.layers import (
    PixelShuffle3dLateral,
    adaptive_avg_pool_nd,
    check_dims,
    check_scale,
    conv_nd,
    skip_channels,
    skip_source,
    upsample_lateral,
)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation over channels: global mean → bottleneck → sigmoid gate."""

    def __init__(self, channels: int, reduction: int, dims: int = 2) -> None:
        super().__init__()
        conv = conv_nd(dims)
        hidden = max(1, channels // reduction)
        self.gate = nn.Sequential(
            adaptive_avg_pool_nd(dims)(1),
            conv(channels, hidden, 1),
            nn.ReLU(inplace=True),
            conv(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class RCAB(nn.Module):
    """Residual channel-attention block: conv → ReLU → conv → channel attention, plus the input."""

    def __init__(self, channels: int, reduction: int, res_scale: float, dims: int = 2) -> None:
        super().__init__()
        conv = conv_nd(dims)
        self.body = nn.Sequential(
            conv(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            conv(channels, channels, 3, padding=1),
            ChannelAttention(channels, reduction, dims),
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.body(x)


class ResidualGroup(nn.Module):
    """``n_blocks`` RCABs and a closing convolution, wrapped in a short skip connection."""

    def __init__(self, channels: int, n_blocks: int, reduction: int, res_scale: float, dims: int = 2) -> None:
        super().__init__()
        blocks: list[nn.Module] = [RCAB(channels, reduction, res_scale, dims) for _ in range(n_blocks)]
        blocks.append(conv_nd(dims)(channels, channels, 3, padding=1))
        self.body = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def pixel_shuffle_upsampler(channels: int, scale: int, dims: int = 2) -> nn.Sequential:
    """Sub-pixel upsampling in Y and X: ×2 stages for powers of two, a single ×s stage otherwise.

    In 3D (``dims=3``) the convolutions are 3×3×3 and the shuffle is lateral only (Z keeps its size).
    """
    conv = conv_nd(dims)

    def shuffle(factor: int) -> nn.Module:
        return nn.PixelShuffle(factor) if dims == 2 else PixelShuffle3dLateral(factor)

    layers: list[nn.Module] = []
    if scale > 1 and scale & (scale - 1) == 0:
        for _ in range(scale.bit_length() - 1):
            layers += [conv(channels, 4 * channels, 3, padding=1), shuffle(2)]
    elif scale > 1:
        layers += [conv(channels, scale * scale * channels, 3, padding=1), shuffle(scale)]
    return nn.Sequential(*layers)


class RCAN(nn.Module):
    """Residual-in-residual network with channel attention and pixel-shuffle upsampling by ``scale``.

    Zhang, Li, Li, Wang, Zhong & Fu, "Image Super-Resolution Using Very Deep Residual Channel Attention
    Networks", ECCV 2018 (arXiv:1807.02758).

    Input ``(B, in_channels, Y, X)`` → output ``(B, out_channels, scale·Y, scale·X)``. No RGB mean
    shift: microscopy intensities arrive normalised by the datamodule. With ``global_residual`` the
    network predicts a correction to the bilinear upsampling of its input: of every channel when in and out
    channels match, of the centre frame for a multi-frame input (``in_channels=5, out_channels=1``, see
    ``psr.models.layers.skip_channels``). This speeds up training on noisy inputs without changing the
    architecture's capacity. ``dims`` (default: the class's ``spatial_dims``, 2 here, 3 for ``RCAN3D``)
    picks 2D or 3D blocks.
    """

    spatial_dims: int = 2

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
        dims: int | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if dims is not None:  # the class's spatial_dims unless given (RCAN 2, RCAN3D 3)
            self.spatial_dims = dims
        check_scale(scale, name)
        for key, value in (("n_feats", n_feats), ("n_groups", n_groups), ("n_blocks", n_blocks)):
            if value < 1:
                raise ValueError(f"{name} {key} must be >= 1, got {value}")
        dims = check_dims(self.spatial_dims, name)
        conv = conv_nd(dims)
        self.scale = int(scale)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.global_residual = global_residual and skip_channels(in_channels, out_channels) is not None
        self.head = conv(in_channels, n_feats, 3, padding=1)
        self.body = nn.Sequential(
            *[ResidualGroup(n_feats, n_blocks, reduction, res_scale, dims) for _ in range(n_groups)],
            conv(n_feats, n_feats, 3, padding=1),
        )
        self.upsample = pixel_shuffle_upsampler(n_feats, self.scale, dims)
        self.tail = conv(n_feats, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            axes = "Y, X" if self.spatial_dims == 2 else "Z, Y, X"
            raise ValueError(
                f"{type(self).__name__} expects (B, {self.in_channels}, {axes}), got a tensor of shape"
                f" {tuple(x.shape)}"
            )
        feats = self.head(x)
        feats = feats + self.body(feats)
        out = self.tail(self.upsample(feats))
        if self.global_residual:
            skip = skip_source(x, self.out_channels)
            assert skip is not None  # global_residual is only set when a skip exists
            out = out + upsample_lateral(skip, self.scale, "bilinear")
        return out
