"""Sampling operators: a detector with larger pixels than the clean image."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from psr.crappifiers.base import Crappifier, check_batch

Mode = Literal["area", "bilinear", "bicubic"]


class Downsample(Crappifier):
    """Reduce the lateral sampling by an integer ``factor`` (PSSR's ×4 is 16× fewer pixels).

    Modes (DEGRADATIONS.md; PSSR, PSSR2, RCAN "BI"):

    - ``area``: mean over each ``factor × factor`` block, i.e. an integrating detector with a larger
      pixel. Preserves the mean intensity exactly.
    - ``bilinear``: bilinear resampling as in PSSR / PSSR2 (trilinear laterally for 3D batches,
      leaving Z untouched).
    - ``bicubic``: bicubic resampling, the RCAN "BI" degradation (2D only).

    ``antialias`` low-pass filters before bilinear/bicubic resampling (as PIL does); off by default,
    matching plain interpolation. 3D batches ``(B, C, Z, Y, X)`` are downsampled in Y and X only.
    """

    def __init__(self, factor: int = 4, mode: Mode = "area", antialias: bool = False) -> None:
        super().__init__()
        if int(factor) != factor or factor < 1:
            raise ValueError(f"Downsample factor must be an integer >= 1, got {factor!r}")
        if mode not in ("area", "bilinear", "bicubic"):
            raise ValueError(f"Downsample mode must be one of area, bilinear, bicubic; got {mode!r}")
        self.factor = int(factor)
        self.mode = mode
        self.antialias = bool(antialias)
        self.scale = self.factor

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        ndim = check_batch(x, "Downsample")
        f = self.factor
        if f == 1:
            return x
        lateral = x.shape[-2:]
        if lateral[0] % f or lateral[1] % f:
            raise ValueError(
                f"Downsample by {f} needs Y and X divisible by {f}, got a batch of shape {tuple(x.shape)}"
            )
        if self.mode == "area":
            if ndim == 2:
                return F.avg_pool2d(x, kernel_size=f, stride=f)
            return F.avg_pool3d(x, kernel_size=(1, f, f), stride=(1, f, f))
        size = (lateral[0] // f, lateral[1] // f)
        if ndim == 2:
            return F.interpolate(x, size=size, mode=self.mode, align_corners=False, antialias=self.antialias)
        if self.mode == "bicubic":
            raise ValueError("Downsample mode 'bicubic' is 2D only; use 'bilinear' or 'area' for 3D batches")
        b, c, z, y, xx = x.shape
        # Resample each Z plane laterally: fold Z into the batch so antialiasing is available too.
        planes = x.permute(0, 2, 1, 3, 4).reshape(b * z, c, y, xx)
        out = F.interpolate(planes, size=size, mode="bilinear", align_corners=False, antialias=self.antialias)
        return out.reshape(b, z, c, *size).permute(0, 2, 1, 3, 4).contiguous()
