"""Point-scanning and acquisition artifacts: scan-line jitter, photobleaching, background."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from psr.crappifiers.base import Crappifier, Param, Range, broadcast_to, check_batch


class ScanLineJitter(Crappifier):
    """Shift every scan line (row) along X by a random sub-pixel offset, as an unstable scanner does.

    Per sample an amplitude is drawn from ``shift`` (pixels); each row then moves by amplitude × N(0, 1),
    resampled linearly with edge replication. 3D batches jitter every Z plane independently.
    """

    def __init__(self, shift: Range = (0.0, 1.0)) -> None:
        super().__init__()
        self.shift = Param.parse(shift, "ScanLineJitter shift", minimum=0.0)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        ndim = check_batch(x, "ScanLineJitter")
        b, c = x.shape[:2]
        planes = x if ndim == 2 else x.transpose(1, 2).reshape(-1, c, *x.shape[-2:])
        n, _, h, w = planes.shape
        amp = self.shift.sample(b, generator, x.device).repeat_interleave(n // b)
        offsets = amp[:, None] * torch.randn(n, h, generator=generator, device=x.device)
        ys = torch.linspace(-1, 1, h, device=x.device)
        xs = torch.linspace(-1, 1, w, device=x.device)
        grid_x = xs[None, None, :] - offsets[:, :, None] * (2 / max(w - 1, 1))
        grid = torch.stack([grid_x, ys[None, :, None].expand(n, h, w)], dim=-1)
        out = F.grid_sample(planes.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)
        out = out.to(x.dtype)
        return out if ndim == 2 else out.reshape(b, -1, c, h, w).transpose(1, 2).contiguous()


class Bleaching(Crappifier):
    """Photobleaching: intensity decays as ``exp(−rate · t)`` along frames.

    Frames are the channel axis (multi-frame input, e.g. 5 time points) or Z (``axis="z"``, a stack
    acquired plane by plane). ``rate`` is the decay per frame, drawn per sample.
    """

    def __init__(self, rate: Range = (0.0, 0.05), axis: Literal["channel", "z"] = "channel") -> None:
        super().__init__()
        self.rate = Param.parse(rate, "Bleaching rate", minimum=0.0)
        if axis not in ("channel", "z"):
            raise ValueError(f"Bleaching axis must be 'channel' or 'z', got {axis!r}")
        self.axis = axis

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        ndim = check_batch(x, "Bleaching")
        if self.axis == "z" and ndim != 3:
            raise ValueError(f"Bleaching along z needs (B, C, Z, Y, X) batches, got shape {tuple(x.shape)}")
        dim = 1 if self.axis == "channel" else 2
        t = torch.arange(x.shape[dim], device=x.device, dtype=torch.float32)
        rate = self.rate.sample(x.shape[0], generator, x.device)
        decay = torch.exp(-rate[:, None] * t[None])  # (B, T)
        shape = [x.shape[0]] + [1] * (x.dim() - 1)
        shape[dim] = x.shape[dim]
        return x * decay.view(shape).to(x.dtype)


class Background(Crappifier):
    """Add a background: a constant ``offset`` plus a linear ramp of peak-to-peak ``gradient`` in a
    random direction (out-of-focus light, uneven illumination), both per sample."""

    def __init__(self, offset: Range = (0.0, 0.1), gradient: Range = (0.0, 0.1)) -> None:
        super().__init__()
        self.offset = Param.parse(offset, "Background offset")
        self.gradient = Param.parse(gradient, "Background gradient")

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_batch(x, "Background")
        b = x.shape[0]
        offset = broadcast_to(self.offset.sample(b, generator, x.device), x)
        amp = self.gradient.sample(b, generator, x.device)
        theta = 2 * math.pi * torch.rand(b, generator=generator, device=x.device)
        h, w = x.shape[-2:]
        ys = torch.linspace(-0.5, 0.5, h, device=x.device)[:, None]
        xs = torch.linspace(-0.5, 0.5, w, device=x.device)[None, :]
        ramp = torch.cos(theta)[:, None, None] * xs + torch.sin(theta)[:, None, None] * ys  # (B, Y, X)
        ramp = ramp / ramp.flatten(1).abs().amax(1).clamp_min(1e-12)[:, None, None] / 2
        ramp = (amp[:, None, None] * ramp).view(b, *([1] * (x.dim() - 3)), h, w)
        return x + offset + ramp.to(x.dtype)
