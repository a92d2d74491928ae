"""Sampling operators: a detector with larger pixels than the clean image."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from psr.crappifiers.base import Crappifier, check_batch, integer_factor

Mode = Literal["area", "bilinear", "bicubic", "nearest"]


class Downsample(Crappifier):
    """Reduce the lateral sampling by an integer ``factor`` (PSSR's ×4 is 16× fewer pixels).

    Modes (DEGRADATIONS.md; PSSR, PSSR2, RCAN "BI", CSBDeep):

    - ``area``: mean over each ``factor × factor`` block: an integrating detector with a larger pixel
      (binning that averages, as CMOS cameras do). Preserves the mean intensity exactly.
    - ``bilinear``: bilinear resampling as in PSSR / PSSR2.
    - ``bicubic``: bicubic resampling, the RCAN "BI" degradation (2D only).
    - ``nearest``: point subsampling, one pixel per block (the block centre), as CSBDeep's axial
      subsampling; a point scanner with a larger step and the same spot.

    ``antialias`` low-pass filters before bilinear/bicubic resampling (as PIL does); off by default.
    3D batches ``(B, C, Z, Y, X)`` are downsampled laterally by ``factor`` and along Z by ``z_factor``
    (anisotropic acquisition; Z is not part of ``scale``).
    """

    def __init__(
        self, factor: int = 4, mode: Mode = "area", antialias: bool = False, z_factor: int = 1
    ) -> None:
        super().__init__()
        self.factor = integer_factor(factor, "Downsample factor")
        self.z_factor = integer_factor(z_factor, "Downsample z_factor")
        if mode not in ("area", "bilinear", "bicubic", "nearest"):
            raise ValueError(f"Downsample mode must be one of area, bilinear, bicubic, nearest; got {mode!r}")
        self.mode = mode
        self.antialias = bool(antialias)
        self.scale = self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}, mode={self.mode}, z_factor={self.z_factor}"

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        ndim = check_batch(x, "Downsample")
        f, fz = self.factor, (self.z_factor if ndim == 3 else 1)
        if f == 1 and fz == 1:
            return x
        factors: tuple[int, ...] = (fz, f, f) if ndim == 3 else (f, f)
        for extent, k in zip(x.shape[2:], factors, strict=True):
            if extent % k:
                raise ValueError(
                    f"Downsample by {list(factors)} needs spatial axes divisible by it, got a batch of shape {tuple(x.shape)}"
                )
        if self.mode == "area":
            pool = F.avg_pool2d if ndim == 2 else F.avg_pool3d
            return pool(x, kernel_size=factors, stride=factors)
        if self.mode == "nearest":
            index = (...,) + tuple(slice(k // 2, None, k) for k in factors)
            return x[index].contiguous()
        size = tuple(s // k for s, k in zip(x.shape[2:], factors, strict=True))
        if ndim == 2:
            return F.interpolate(x, size=size, mode=self.mode, align_corners=False, antialias=self.antialias)
        if self.mode == "bicubic":
            raise ValueError(
                "Downsample mode 'bicubic' is 2D only; use 'bilinear', 'area' or 'nearest' for 3D batches"
            )
        if self.antialias or fz == 1:
            b, c, z, y, xx = x.shape
            planes = x.permute(0, 2, 1, 3, 4).reshape(b * z, c, y, xx)
            out = F.interpolate(
                planes, size=size[1:], mode="bilinear", align_corners=False, antialias=self.antialias
            )
            out = out.reshape(b, z, c, *size[1:]).permute(0, 2, 1, 3, 4)
            return out[:, :, fz // 2 :: fz].contiguous() if fz > 1 else out.contiguous()
        return F.interpolate(x, size=size, mode="trilinear", align_corners=False)
