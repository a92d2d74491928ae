"""Small building blocks shared by the generators: dimension-agnostic layers, lateral resampling and the
input skip (global residual) rule."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_CONV: dict[int, type[nn.Conv2d] | type[nn.Conv3d]] = {2: nn.Conv2d, 3: nn.Conv3d}


def check_scale(scale: int, owner: str) -> int:
    """Validate an upsampling factor: an integer >= 1 (one message for every generator)."""
    if int(scale) != scale or scale < 1:
        raise ValueError(f"{owner} scale must be an integer >= 1, got {scale!r}")
    return int(scale)


def check_dims(dims: int, owner: str) -> int:
    """Validate a ``dims`` argument (number of spatial axes: 2 for ``(Y, X)``, 3 for ``(Z, Y, X)``)."""
    if dims not in (2, 3):
        raise ValueError(f"{owner} dims must be 2 (Y, X) or 3 (Z, Y, X), got {dims!r}")
    return dims


def conv_nd(dims: int) -> type[nn.Conv2d] | type[nn.Conv3d]:
    """``nn.Conv2d`` or ``nn.Conv3d`` for ``dims`` spatial axes."""
    return _CONV[check_dims(dims, "conv")]


def batch_norm_nd(dims: int) -> type[nn.BatchNorm2d] | type[nn.BatchNorm3d]:
    return nn.BatchNorm2d if check_dims(dims, "batch norm") == 2 else nn.BatchNorm3d


def max_pool_nd(dims: int) -> type[nn.MaxPool2d] | type[nn.MaxPool3d]:
    return nn.MaxPool2d if check_dims(dims, "max pool") == 2 else nn.MaxPool3d


def adaptive_avg_pool_nd(dims: int) -> type[nn.AdaptiveAvgPool2d] | type[nn.AdaptiveAvgPool3d]:
    return nn.AdaptiveAvgPool2d if check_dims(dims, "pool") == 2 else nn.AdaptiveAvgPool3d


class PixelShuffle3dLateral(nn.Module):
    """Sub-pixel shuffle in Y and X only: ``(B, C·s², Z, Y, X)`` → ``(B, C, Z, s·Y, s·X)``.

    The 3D counterpart of ``nn.PixelShuffle`` for anisotropic stacks, where Z keeps its sampling. Channel
    ``c·s² + i·s + j`` lands at sub-pixel ``(i, j)`` of output channel ``c``, as ``nn.PixelShuffle`` orders
    them, so every Z slice is shuffled exactly like a 2D image.
    """

    def __init__(self, scale: int) -> None:
        super().__init__()
        if int(scale) != scale or scale < 1:
            raise ValueError(f"PixelShuffle3dLateral scale must be an integer >= 1, got {scale!r}")
        self.scale = int(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale
        if x.dim() != 5 or x.shape[1] % (s * s):
            raise ValueError(
                f"PixelShuffle3dLateral expects (B, C·{s * s}, Z, Y, X), got shape {tuple(x.shape)}"
            )
        b, c, z, y, w = x.shape
        c_out = c // (s * s)
        x = x.reshape(b, c_out, s, s, z, y, w).permute(0, 1, 4, 5, 2, 6, 3)
        return x.reshape(b, c_out, z, y * s, w * s)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def upsample_lateral(x: torch.Tensor, scale: int, mode: str = "bilinear") -> torch.Tensor:
    """Resize ``(B, C, Y, X)`` or ``(B, C, Z, Y, X)`` by ``scale`` in Y and X; Z is never resampled.

    ``mode`` is ``nearest``, ``bilinear`` or ``bicubic`` (2D only); in 3D ``bilinear`` means linear in Y and X
    (a trilinear resize with a Z factor of 1, which leaves every slice as it is).
    """
    if scale == 1:
        return x
    if mode not in ("nearest", "bilinear", "bicubic"):
        raise ValueError(f"upsampling mode must be 'nearest', 'bilinear' or 'bicubic', got {mode!r}")
    if x.dim() == 4:
        factor: tuple[float, ...] = (float(scale), float(scale))
    elif x.dim() == 5:
        if mode == "bicubic":
            raise ValueError(
                "bicubic upsampling is 2D only: use 'bilinear' or 'nearest' for (Z, Y, X) stacks"
            )
        factor = (1.0, float(scale), float(scale))
        mode = "trilinear" if mode == "bilinear" else mode
    else:
        raise ValueError(f"upsampling expects (B, C, Y, X) or (B, C, Z, Y, X), got shape {tuple(x.shape)}")
    if mode == "nearest":
        return F.interpolate(x, scale_factor=factor, mode=mode)
    return F.interpolate(x, scale_factor=factor, mode=mode, align_corners=False)


def skip_channels(in_channels: int, out_channels: int) -> slice | None:
    """Which input channels a global residual adds back to the output, or None when none fit.

    Equal channel counts: all of them, one to one. One output channel from an odd number of input channels:
    the centre one, read as PSSR's multi-frame input (a stack of neighbouring frames centred on the frame to
    restore, e.g. 5 in → 1 out). Anything else has no natural correspondence, so the skip is left out.
    """
    if in_channels == out_channels:
        return slice(0, in_channels)
    if out_channels == 1 and in_channels % 2 == 1:
        centre = in_channels // 2
        return slice(centre, centre + 1)
    return None


def skip_source(x: torch.Tensor, out_channels: int) -> torch.Tensor | None:
    """The channels of ``x`` (``(B, C, ...)``) to add back to an ``out_channels`` prediction, or None.

    See ``skip_channels``: the whole input when channels match, the centre frame of a multi-frame input.
    """
    channels = skip_channels(x.shape[1], out_channels)
    return None if channels is None else x[:, channels]
