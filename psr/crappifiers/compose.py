"""Composition of degradation operators: sequences, random application, random choice and order,
and multi-frame degradation.

Random choices are made per sample: each operator runs once on the subset of samples that drew it, so
a batch costs no more than its samples need.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from psr.crappifiers.base import Crappifier, probability


def _as_crappifiers(ops: Sequence[Crappifier], who: str) -> list[Crappifier]:
    ops = list(ops)
    for i, op in enumerate(ops):
        if not isinstance(op, Crappifier):
            raise TypeError(f"{who} step {i} must be a Crappifier, got {type(op).__name__}")
    return ops


def _total_scale(ops: Iterable[nn.Module]) -> int:
    """The product of the operators' lateral downsampling factors."""
    total = 1
    for op in ops:
        total *= int(getattr(op, "scale", 1))
    return total


def _run_subsets(
    x: torch.Tensor, choice: torch.Tensor, ops: Sequence[nn.Module], generator: torch.Generator | None
) -> torch.Tensor:
    """Apply ``ops[choice[i]]`` to sample ``i``, each operator once on its subset."""
    out: torch.Tensor | None = None
    for k, op in enumerate(ops):
        idx = (choice == k).nonzero(as_tuple=True)[0]
        if idx.numel() == 0:
            continue
        y = op(x.index_select(0, idx), generator)
        if out is None:
            out = y.new_empty((x.shape[0], *y.shape[1:]))
        out[idx] = y
    assert out is not None
    return out


class Chain(Crappifier):
    """Apply ``steps`` in order; the chain's ``scale`` is the product of the steps' scales.

    The order is itself an ablation axis (PSSR adds noise before downsampling, PSSR2 after).
    """

    def __init__(self, steps: Sequence[Crappifier]) -> None:
        super().__init__()
        self.steps = nn.ModuleList(_as_crappifiers(steps, "Chain"))
        self.scale = _total_scale(self.steps)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for step in self.steps:
            x = step(x, generator)
        return x


class RandomApply(Crappifier):
    """Apply ``op`` to each sample with probability ``p`` (Real-ESRGAN's per-step probabilities).

    ``op`` must keep the image size (scale 1): samples that skip it must still fit the batch.
    """

    def __init__(self, op: Crappifier, p: float = 0.5) -> None:
        super().__init__()
        (self.op,) = _as_crappifiers([op], "RandomApply")
        if self.op.scale != 1:
            raise ValueError(
                f"RandomApply needs an operator that keeps the size (scale 1), got scale {self.op.scale}"
            )
        self.p = probability(p, "RandomApply p")

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        apply = torch.rand(x.shape[0], generator=generator, device=x.device) < self.p
        return _run_subsets(x, (~apply).long(), [self.op, _Identity()], generator)


class _Identity(nn.Identity):
    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:  # type: ignore[override]
        return x


class OneOf(Crappifier):
    """Apply one of ``ops`` per sample, chosen with probabilities proportional to ``weights``.

    All options must share one scale, so every sample ends with the same size.
    """

    def __init__(self, ops: Sequence[Crappifier], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.ops = nn.ModuleList(_as_crappifiers(ops, "OneOf"))
        if not self.ops:
            raise ValueError("OneOf needs at least one operator")
        scales = {int(getattr(op, "scale", 1)) for op in self.ops}
        if len(scales) != 1:
            raise ValueError(f"OneOf options must share one scale, got scales {sorted(scales)}")
        self.scale = scales.pop()
        w = [1.0] * len(self.ops) if weights is None else [float(v) for v in weights]
        if len(w) != len(self.ops) or any(v < 0 for v in w) or sum(w) <= 0:
            raise ValueError(
                f"OneOf weights must be {len(self.ops)} non-negative numbers with a positive sum, got {w}"
            )
        self.weights: torch.Tensor
        self.register_buffer("weights", torch.tensor(w) / sum(w), persistent=False)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        choice = torch.multinomial(
            self.weights.to(x.device), x.shape[0], replacement=True, generator=generator
        )
        return _run_subsets(x, choice, list(self.ops), generator)


class RandomOrder(Crappifier):
    """Apply all ``ops`` in an order drawn per sample (Real-ESRGAN shuffles its final steps).

    Samples that drew the same permutation run together; at most 5 operators (120 orders).
    """

    def __init__(self, ops: Sequence[Crappifier]) -> None:
        super().__init__()
        self.ops = nn.ModuleList(_as_crappifiers(ops, "RandomOrder"))
        if not 1 <= len(self.ops) <= 5:
            raise ValueError(f"RandomOrder takes 1 to 5 operators, got {len(self.ops)}")
        self.scale = _total_scale(self.ops)
        self.orders = list(itertools.permutations(range(len(self.ops))))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        choice = torch.randint(len(self.orders), (x.shape[0],), generator=generator, device=x.device)
        chains = [_OrderedView(self.ops, order) for order in self.orders]
        return _run_subsets(x, choice, chains, generator)


class _OrderedView(nn.Module):
    """The operators of a RandomOrder in one fixed order (not registered as a child: no parameters)."""

    def __init__(self, ops: nn.ModuleList, order: Sequence[int]) -> None:
        super().__init__()
        self._ops = [ops[i] for i in order]

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for op in self._ops:
            x = op(x, generator)
        return x


class MultiFrame(Crappifier):
    """Degrade each frame independently (PSSR multi-frame: 5 adjacent frames in, centre frame target).

    Frames are the channel axis ``(B, T, Y, X)``; each frame gets its own parameters and noise.
    """

    def __init__(self, op: Crappifier) -> None:
        super().__init__()
        (self.op,) = _as_crappifiers([op], "MultiFrame")
        self.scale = int(self.op.scale)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, t = x.shape[:2]
        frames = x.reshape(b * t, 1, *x.shape[2:])
        out = self.op(frames, generator)
        return out.reshape(b, t, *out.shape[2:])
