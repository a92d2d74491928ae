"""What one random draw of a crappifier did: the operators it applied and the parameters it sampled.

:func:`recording` watches a crappifier while it runs (forward pre-hooks on its operators, and the
sampling of its ranged :class:`~psr.crappifiers.base.Param` values) and gives back the list of
:class:`Step` it took. For one sample per call (a batch of 1), each step's values are that sample's:
the crappifier preview degrades patches one at a time for this reason. Composition operators
(``Chain``, ``RandomApply``, ``OneOf``, …) are not steps; an operator that ``RandomApply`` skipped or
``OneOf`` did not choose does not appear.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from psr.crappifiers.base import Crappifier, Param


@dataclass
class Step:
    """One operator applied: its name (with its mode, if it has one) and the values it sampled."""

    name: str
    values: dict[str, list[float]] = field(default_factory=dict)

    def describe(self, digits: int = 3) -> str:
        """``"PoissonNoise photons=312"``; several values (frames of a multi-frame sample) as a range."""
        parts = []
        for key, values in self.values.items():
            lo, hi = min(values), max(values)
            text = f"{lo:.{digits}g}" if lo == hi else f"{lo:.{digits}g}–{hi:.{digits}g}"
            parts.append(f"{key}={text}")
        return " ".join([self.name, *parts])


def _is_operator(module: nn.Module) -> bool:
    """A crappifier that does the work itself (no crappifier inside it)."""
    return isinstance(module, Crappifier) and not any(
        isinstance(child, Crappifier) for child in module.modules() if child is not module
    )


def _label(module: nn.Module) -> str:
    mode = getattr(module, "mode", None)
    return f"{type(module).__name__}({mode})" if isinstance(mode, str) else type(module).__name__


@contextmanager
def recording(crappifier: nn.Module) -> Iterator[list[Step]]:
    """Record the steps ``crappifier`` takes inside the ``with`` block (appended to the yielded list).

    Only ranged parameters are recorded: a fixed one is the same in every draw (it is in the config).
    Not thread-safe: ``Param.sample`` is wrapped for the duration of the block.
    """
    owners: dict[int, tuple[nn.Module, str]] = {}
    operators = [m for m in crappifier.modules() if _is_operator(m)]
    for module in operators:
        for attr, value in vars(module).items():
            if isinstance(value, Param) and not value.fixed:
                owners[id(value)] = (module, attr)
    steps: list[Step] = []
    current: dict[int, Step] = {}  # the latest step of each operator

    def before(module: nn.Module, args: object) -> None:
        step = Step(_label(module))
        steps.append(step)
        current[id(module)] = step

    original = Param.sample

    def sample(
        self: Param, batch: int, generator: torch.Generator | None, device: torch.device
    ) -> torch.Tensor:
        values = original(self, batch, generator, device)
        owner = owners.get(id(self))
        if owner is not None and id(owner[0]) in current:
            current[id(owner[0])].values.setdefault(owner[1], []).extend(values.flatten().tolist())
        return values

    hooks = [module.register_forward_pre_hook(before) for module in operators]
    Param.sample = sample  # type: ignore[method-assign]
    try:
        yield steps
    finally:
        Param.sample = original  # type: ignore[method-assign]
        for hook in hooks:
            hook.remove()
