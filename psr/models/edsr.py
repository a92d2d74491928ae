"""EDSR-baseline: enhanced deep residual super-resolution network (Lim et al., CVPRW 2017), 2D."""

from __future__ import annotations

import torch
from torch import nn

from psr.models.layers import check_scale, skip_channels, skip_source, upsample_lateral
from psr.models.rcan import pixel_shuffle_upsampler


class ResBlock(nn.Module):
    """EDSR residual block: conv → ReLU → conv, scaled by ``res_scale``, plus the input; no batch norm."""

    def __init__(self, channels: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.body(x)


class EDSR(nn.Module):
    """EDSR: head conv, ``n_blocks`` residual blocks and a body conv under a long skip, pixel-shuffle
    upsampling by ``scale``, tail conv.

    Lim, Son, Kim, Nah & Lee, "Enhanced Deep Residual Networks for Single Image Super-Resolution", CVPR
    Workshops 2017 (arXiv:1707.02921). The defaults are the paper's EDSR-baseline (64 features, 16 blocks,
    residual scaling 1.0); the full EDSR is ``n_feats=256, n_blocks=32, res_scale=0.1``.

    Input ``(B, in_channels, Y, X)`` → output ``(B, out_channels, scale·Y, scale·X)``. No batch norm (the
    paper's point) and no RGB mean shift: microscopy intensities arrive normalised by the datamodule.
    ``global_residual`` is this project's addition, as in ``RCAN``: the network predicts a correction to the
    bilinear upsampling of its input (every channel when in and out channels match, the centre frame of a
    multi-frame input); ``global_residual=False`` gives the paper's network.
    """

    spatial_dims: int = 2

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        scale: int = 4,
        n_feats: int = 64,
        n_blocks: int = 16,
        res_scale: float = 1.0,
        global_residual: bool = True,
    ) -> None:
        super().__init__()
        check_scale(scale, "EDSR")
        for key, value in (("n_feats", n_feats), ("n_blocks", n_blocks)):
            if value < 1:
                raise ValueError(f"EDSR {key} must be >= 1, got {value}")
        self.scale = int(scale)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.global_residual = global_residual and skip_channels(in_channels, out_channels) is not None
        self.head = nn.Conv2d(in_channels, n_feats, 3, padding=1)
        self.body = nn.Sequential(
            *[ResBlock(n_feats, res_scale) for _ in range(n_blocks)],
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
        )
        self.upsample = pixel_shuffle_upsampler(n_feats, self.scale)
        self.tail = nn.Conv2d(n_feats, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"EDSR expects (B, {self.in_channels}, Y, X), got a tensor of shape {tuple(x.shape)}"
            )
        feats = self.head(x)
        feats = feats + self.body(feats)
        out = self.tail(self.upsample(feats))
        if self.global_residual:
            skip = skip_source(x, self.out_channels)
            assert skip is not None  # global_residual is only set when a skip exists
            out = out + upsample_lateral(skip, self.scale, "bilinear")
        return out
