"""The physical metadata a model carries from its training data to its outputs: pixel size, unit and
channel names.

Training records the ``ImageMetadata`` of the images it learns from (the high-quality, full-resolution
ones) in every checkpoint, under ``psr_image``. Prediction writes it into outputs whose input records
none (the pixel size of a super-resolution model's input is ``scale`` times the recorded one in Y and X),
and warns when an input's own pixel size disagrees with it; the napari widget scales a layer that has no
physical scale with it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from psr.io.units import convert, normalise_unit

CHECKPOINT_KEY = "psr_image"
"""The checkpoint entry that holds ``ImageMetadata.to_dict()``."""

AGREE = 0.05
"""Relative difference under which two pixel sizes are the same (rounding in file metadata)."""


@dataclass(frozen=True)
class ImageMetadata:
    """Physical pixel size of ``z`` / ``y`` / ``x`` in ``unit`` (an NGFF unit name), and channel names
    (empty where unknown). An empty ``pixel_size`` means no physical size is known."""

    pixel_size: dict[str, float] = field(default_factory=dict)
    unit: str | None = None
    channel_names: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.pixel_size or self.channel_names)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, so checkpoints keep loading with ``weights_only=True``."""
        return {
            "pixel_size": {a: float(v) for a, v in self.pixel_size.items()},
            "unit": self.unit,
            "channel_names": list(self.channel_names),
        }

    @classmethod
    def from_dict(cls, value: object) -> ImageMetadata:
        """The metadata of a checkpoint entry; an empty one for a missing or malformed entry (checkpoints
        written before psr recorded it)."""
        if not isinstance(value, Mapping):
            return cls()
        sizes = value.get("pixel_size") or {}
        unit = normalise_unit(value.get("unit"), strict=False)
        pixel = {
            str(a): float(v)
            for a, v in (sizes.items() if isinstance(sizes, Mapping) else ())
            if str(a) in "zyx" and isinstance(v, int | float) and math.isfinite(v) and v > 0
        }
        names = value.get("channel_names") or ()
        channel_names = tuple(str(n) for n in names) if isinstance(names, list | tuple) else ()
        return cls(pixel if unit is not None else {}, unit if pixel else None, channel_names)

    def scaled(self, factors: Mapping[str, float]) -> ImageMetadata:
        """The pixel size multiplied per axis by ``factors`` (e.g. ``{"y": 4, "x": 4}``)."""
        pixel = {a: v * float(factors.get(a, 1.0)) for a, v in self.pixel_size.items()}
        return ImageMetadata(pixel, self.unit, self.channel_names)

    def in_unit(self, unit: str | None) -> dict[str, float]:
        """The pixel size expressed in ``unit`` (unchanged when either unit is unknown)."""
        return {a: convert(v, self.unit, unit) for a, v in self.pixel_size.items()}


def agree(a: Mapping[str, float], b: Mapping[str, float], axes: str = "zyx") -> bool:
    """Whether two pixel sizes (same unit) agree within ``AGREE`` on every axis both know."""
    shared = [x for x in axes if x in a and x in b]
    return all(abs(a[x] - b[x]) <= AGREE * max(abs(a[x]), abs(b[x])) for x in shared)


def common(images: Iterable[ImageMetadata]) -> ImageMetadata:
    """What all ``images`` share: the pixel size where every image records one that agrees (in the first
    image's unit), the channel names where all name their channels alike; empty parts otherwise."""
    items = list(images)
    if not items:
        return ImageMetadata()
    first = items[0]
    pixel: dict[str, float] = dict(first.pixel_size)
    for item in items[1:]:
        if (
            not item.pixel_size
            or set(item.pixel_size) != set(pixel)
            or not agree(pixel, item.in_unit(first.unit))
        ):
            pixel = {}
            break
    names = first.channel_names
    if any(item.channel_names != names for item in items[1:]):
        names = ()
    return ImageMetadata(pixel, first.unit if pixel else None, names)
