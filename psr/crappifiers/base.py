"""The crappifier interface and parameter sampling shared by every degradation operator.

A crappifier is an ``nn.Module`` that degrades a batch of clean images ``(B, C, [Z,] Y, X)`` on the
device it lives on, drawing every random number from an explicit ``torch.Generator`` so that a seed
reproduces a degradation exactly. Every numeric parameter accepts a fixed value, a ``[low, high]`` range
or a mapping ``{low, high, log}``; ranges are sampled independently per sample, uniformly or
log-uniformly (where the scale of a parameter matters, e.g. photon counts).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

Range = float | Sequence[float] | Mapping[str, Any]


@dataclass(frozen=True)
class Param:
    """A numeric parameter: fixed (``low == high``) or a range sampled per sample."""

    low: float
    high: float
    log: bool = False

    @classmethod
    def parse(
        cls,
        value: Range,
        name: str,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        exclusive_min: bool = False,
        log: bool = False,
    ) -> Param:
        """Validate ``value`` (a number, ``[low, high]`` or ``{low, high, log}``) for parameter ``name``.

        Raises ``ValueError`` naming the parameter when the value is malformed or out of bounds.
        """
        if isinstance(value, Mapping):
            unknown = set(value) - {"low", "high", "log"}
            if unknown or "low" not in value or "high" not in value:
                raise ValueError(
                    f"{name} as a mapping needs keys low, high (and optionally log), got {dict(value)!r}"
                )
            low, high, log = float(value["low"]), float(value["high"]), bool(value.get("log", log))
        elif isinstance(value, int | float):
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
        if minimum is not None and (low <= minimum if exclusive_min else low < minimum):
            raise ValueError(f"{name} must be {'>' if exclusive_min else '>='} {minimum}, got {value!r}")
        if maximum is not None and high > maximum:
            raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
        if log and low != high and low <= 0:
            raise ValueError(
                f"{name} is sampled log-uniformly and needs a positive lower bound, got {value!r}"
            )
        return cls(low, high, log)

    @property
    def fixed(self) -> bool:
        return self.low == self.high

    def sample(self, batch: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        """One value per sample, ``(B,)`` float32 on ``device``.

        A fixed value consumes no random numbers, so fixing one parameter never shifts the random stream
        of the others.
        """
        if self.fixed:
            return torch.full((batch,), self.low, device=device, dtype=torch.float32)
        u = torch.rand(batch, generator=generator, device=device, dtype=torch.float32)
        if self.log:
            return torch.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        return self.low + u * (self.high - self.low)


def probability(value: float, name: str) -> float:
    """Validate a probability in [0, 1]."""
    p = float(value)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return p


def integer_factor(value: float, name: str) -> int:
    """Validate an integer factor >= 1."""
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


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

    ``scale`` is the factor by which the operator shrinks Y and X (1 for pure noise). The composite
    ``Chain`` multiplies the scales of its steps, so the training task can check that a model and its
    crappifier agree before any data is read.
    """

    scale: int = 1

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x, generator)")
