"""The crappifier interface and parameter sampling shared by every degradation operator.

A crappifier is an ``nn.Module`` that degrades a batch of clean images ``(B, C, [Z,] Y, X)`` on the
device it lives on, drawing every random number from an explicit ``torch.Generator`` so that a seed
reproduces a degradation exactly. Numeric parameters accept a fixed value or a ``[low, high]`` range
sampled independently per sample (uniformly, or log-uniformly where the scale of a parameter matters,
e.g. photon counts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

Range = float | Sequence[float]


def as_range(
    value: Range, name: str, *, minimum: float | None = None, exclusive: bool = False
) -> tuple[float, float]:
    """Normalise a value or a ``[low, high]`` pair to a ``(low, high)`` tuple and validate it.

    Raises ``ValueError`` naming the parameter when the range is malformed or below ``minimum``.
    """
    if isinstance(value, int | float):
        low = high = float(value)
    else:
        items = [float(v) for v in value]
        if len(items) != 2:
            raise ValueError(f"{name} must be a number or a [low, high] pair, got {list(value)!r}")
        low, high = items
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low > high:
        raise ValueError(f"{name} range [{low}, {high}] has low > high")
    if minimum is not None:
        bad = low <= minimum if exclusive else low < minimum
        if bad:
            relation = ">" if exclusive else ">="
            raise ValueError(f"{name} must be {relation} {minimum}, got {value!r}")
    return low, high


def sample_per_item(
    bounds: tuple[float, float],
    batch: int,
    generator: torch.Generator | None,
    device: torch.device,
    *,
    log_uniform: bool = False,
) -> torch.Tensor:
    """Draw one value per sample, shape ``(B,)`` float32 on ``device``.

    A fixed value (low == high) consumes no random numbers, so adding a fixed parameter never shifts
    the random stream of the others.
    """
    low, high = bounds
    if low == high:
        return torch.full((batch,), low, device=device, dtype=torch.float32)
    u = torch.rand(batch, generator=generator, device=device, dtype=torch.float32)
    if log_uniform:
        if low <= 0:
            raise ValueError(f"a log-uniform range needs a positive lower bound, got [{low}, {high}]")
        return torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    return low + u * (high - low)


def broadcast_to(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape per-sample values ``(B,)`` so they broadcast over ``x`` of shape ``(B, C, ...)``."""
    return values.view(-1, *([1] * (x.dim() - 1))).to(dtype=x.dtype)


def check_batch(x: torch.Tensor, who: str) -> int:
    """Validate a batch layout ``(B, C, Y, X)`` or ``(B, C, Z, Y, X)``; return its number of spatial dims."""
    if x.dim() not in (4, 5):
        raise ValueError(
            f"{who} expects a batch shaped (B, C, Y, X) or (B, C, Z, Y, X), got a tensor of shape {tuple(x.shape)}"
        )
    if not torch.is_floating_point(x):
        raise ValueError(f"{who} expects floating-point intensities, got {x.dtype}")
    return x.dim() - 2


class Crappifier(nn.Module):
    """Base class: ``forward(x, generator)`` maps clean ``(B, C, *S)`` to degraded ``(B, C, *S / scale)``.

    ``scale`` is the factor by which the operator shrinks every lateral axis (1 for pure noise). The
    composite ``Chain`` multiplies the scales of its steps, so the training task can check that a model
    and its crappifier agree before any data is read.
    """

    scale: int = 1

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x, generator)")
