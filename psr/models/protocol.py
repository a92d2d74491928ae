"""The contract every generator meets, built in or a plugin: what the rest of psr reads of a model.

A generator is a ``torch.nn.Module`` that maps ``(B, in_channels, [Z,] Y, X)`` to
``(B, out_channels, [Z,] scale·Y, scale·X)`` and declares four integers: ``scale`` (lateral upsampling,
1 for denoising), ``in_channels``, ``out_channels`` and ``spatial_dims`` (2 for ``(Y, X)`` planes, 3 for
``(Z, Y, X)`` stacks). Training, prediction, evaluation and export read these attributes and nothing
else; ``check_generator`` checks them once, where the model is built, with one sentence naming what is
missing or wrong.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from psr.errors import ConfigError

ATTRIBUTES = ("scale", "in_channels", "out_channels", "spatial_dims")


@runtime_checkable
class Generator(Protocol):
    """A psr generator (see the module docstring)."""

    scale: int
    in_channels: int
    out_channels: int
    spatial_dims: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


def check_generator(net: object, what: str = "model") -> Generator:
    """Return ``net`` as a ``Generator``; raise ``ConfigError`` naming ``what`` (e.g. ``model=rcan``) when
    it is not a ``torch.nn.Module``, misses one of ``ATTRIBUTES`` or declares an impossible value."""
    name = type(net).__name__
    if not isinstance(net, torch.nn.Module):
        raise ConfigError(f"{what} builds a {name}, not a torch.nn.Module; a psr generator is an nn.Module")
    missing = [a for a in ATTRIBUTES if not isinstance(getattr(net, a, None), int)]
    if missing:
        raise ConfigError(
            f"{what} ({name}) does not declare {', '.join(missing)} as integers; a psr generator declares"
            " scale, in_channels, out_channels and spatial_dims (psr.models.protocol.Generator)"
        )
    if net.spatial_dims not in (2, 3):  # type: ignore[attr-defined]
        raise ConfigError(
            f"{what} ({name}) declares spatial_dims={net.spatial_dims}; expected 2 (Y, X) or 3 (Z, Y, X)"  # type: ignore[attr-defined]
        )
    for attribute in ("scale", "in_channels", "out_channels"):
        if getattr(net, attribute) < 1:
            raise ConfigError(
                f"{what} ({name}) declares {attribute}={getattr(net, attribute)}; expected >= 1"
            )
    return net  # type: ignore[return-value]
