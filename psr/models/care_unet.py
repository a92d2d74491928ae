"""The CARE / CSBDeep U-Net (Weigert et al., Nature Methods 2018) in 2D or 3D."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from psr.models.layers import (
    batch_norm_nd,
    check_dims,
    check_scale,
    conv_nd,
    max_pool_nd,
    skip_channels,
    skip_source,
    upsample_lateral,
)


def _conv_block(c_in: int, c_out: int, kernel_size: int, dims: int, batch_norm: bool) -> list[nn.Module]:
    """CSBDeep's ``conv_block``: a same-padded convolution, optional batch norm, ReLU."""
    layers: list[nn.Module] = [
        conv_nd(dims)(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=not batch_norm)
    ]
    if batch_norm:
        layers.append(batch_norm_nd(dims)(c_out))
    layers.append(nn.ReLU(inplace=True))
    return layers


class CAREUNet(nn.Module):
    """CSBDeep's residual U-Net, the network behind CARE, on the input resized to the target grid.

    Weigert, Schmidt, Boothe, ..., Jug & Myers, "Content-aware image restoration: pushing the limits of
    fluorescence microscopy", Nature Methods 15, 1090–1097 (2018); architecture after CSBDeep's
    ``custom_unet``/``unet_block`` (depth 2, 32 filters doubling per level, ``n_conv_per_depth`` convolutions
    with ReLU per level, max-pool by 2 down, nearest ×2 up and concatenation of the skip, 1×1 linear output
    convolution, residual). Each level's last decoder convolution halves the width, as in CSBDeep.

    ``dims=2``: input ``(B, in_channels, Y, X)`` → output ``(B, out_channels, scale·Y, scale·X)``.
    ``dims=3``: input ``(B, in_channels, Z, Y, X)`` → output ``(B, out_channels, Z, scale·Y, scale·X)``.

    For ``scale > 1`` the input is first interpolated to the target grid (``upsample_mode``; in 3D laterally
    only, Z kept), as CARE does for upsampling and isotropic restoration, and the U-Net restores that grid.
    With ``residual`` the prediction is that interpolation plus the network output (every channel when in and
    out channels match, the centre frame of a multi-frame input; see ``psr.models.layers.skip_channels``).
    Every spatial axis (Z included in 3D, pooled like CSBDeep's default) is padded to a multiple of
    ``2**depth`` and cropped back, so any size works. CSBDeep's default kernel is 5×5 in 2D and 3×3×3 in
    3D; this class uses 3 for both unless told otherwise.
    """

    spatial_dims: int = 2

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        scale: int = 4,
        dims: int = 2,
        depth: int = 2,
        n_filter_base: int = 32,
        kernel_size: int = 3,
        n_conv_per_depth: int = 2,
        batch_norm: bool = False,
        upsample_mode: str = "bilinear",
        residual: bool = True,
    ) -> None:
        super().__init__()
        check_scale(scale, "CAREUNet")
        for key, value in (
            ("depth", depth),
            ("n_filter_base", n_filter_base),
            ("n_conv_per_depth", n_conv_per_depth),
        ):
            if value < 1:
                raise ValueError(f"CAREUNet {key} must be >= 1, got {value}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"CAREUNet kernel_size must be odd (same padding), got {kernel_size}")
        if upsample_mode not in ("nearest", "bilinear", "bicubic") or (dims, upsample_mode) == (3, "bicubic"):
            raise ValueError(
                "CAREUNet upsample_mode must be 'nearest' or 'bilinear' (or 'bicubic' in 2D),"
                f" got {upsample_mode!r}"
            )
        self.spatial_dims = check_dims(dims, "CAREUNet")
        self.scale = int(scale)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.upsample_mode = upsample_mode
        self.residual = residual and skip_channels(in_channels, out_channels) is not None
        self.multiple = 2**depth

        def width(level: int) -> int:
            return n_filter_base * 2 ** max(0, level)

        def convs(c_in: int, c_mid: int, c_out: int) -> nn.Sequential:
            """``n_conv_per_depth`` blocks: all ``c_mid`` wide but the last, which gives ``c_out``."""
            layers: list[nn.Module] = []
            for i in range(n_conv_per_depth):
                c_next = c_out if i == n_conv_per_depth - 1 else c_mid
                layers += _conv_block(c_in, c_next, kernel_size, dims, batch_norm)
                c_in = c_next
            return nn.Sequential(*layers)

        self.down = nn.ModuleList()
        c_in = in_channels
        for level in range(depth):
            self.down.append(convs(c_in, width(level), width(level)))
            c_in = width(level)
        self.pool = max_pool_nd(dims)(2)
        self.middle = convs(c_in, width(depth), width(depth - 1))
        self.up = nn.ModuleList()
        c_in = width(depth - 1)
        for level in reversed(range(depth)):
            self.up.append(convs(c_in + width(level), width(level), width(level - 1)))
            c_in = width(level - 1)
        self.unpool = nn.Upsample(scale_factor=2, mode="nearest")
        self.out = conv_nd(dims)(c_in, out_channels, 1)

    def _unet(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.middle(x)
        for block, skip in zip(self.up, reversed(skips), strict=True):
            x = block(torch.cat([self.unpool(x), skip], dim=1))
        return self.out(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            axes = "Y, X" if self.spatial_dims == 2 else "Z, Y, X"
            raise ValueError(
                f"CAREUNet expects (B, {self.in_channels}, {axes}), got a tensor of shape {tuple(x.shape)}"
            )
        x = upsample_lateral(x, self.scale, self.upsample_mode)
        size = x.shape[2:]
        pads = [(-n) % self.multiple for n in size]
        padded = x
        if any(pads):
            # Reflection needs the pad to be smaller than the axis; tiny inputs fall back to edge padding.
            mode = "reflect" if all(p < n for p, n in zip(pads, size, strict=True)) else "replicate"
            padded = F.pad(x, [v for p in reversed(pads) for v in (0, p)], mode=mode)
        out = self._unet(padded)
        for axis, n in enumerate(size, start=2):
            out = out.narrow(axis, 0, n)
        if self.residual:
            skip = skip_source(x, self.out_channels)
            assert skip is not None  # residual is only set when a skip exists
            out = out + skip
        return out
