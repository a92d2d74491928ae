"""Composition of degradation operators."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from psr.crappifiers.base import Crappifier


class Chain(Crappifier):
    """Apply ``steps`` in order; the chain's ``scale`` is the product of the steps' scales.

    The order is itself an ablation axis (PSSR adds noise before downsampling, PSSR2 after).
    """

    def __init__(self, steps: Sequence[Crappifier]) -> None:
        super().__init__()
        steps = list(steps)
        for i, step in enumerate(steps):
            if not isinstance(step, Crappifier):
                raise TypeError(f"Chain step {i} must be a Crappifier, got {type(step).__name__}")
        self.steps = nn.ModuleList(steps)
        self.scale = math.prod(int(getattr(s, "scale", 1)) for s in steps)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for step in self.steps:
            x = step(x, generator)
        return x
