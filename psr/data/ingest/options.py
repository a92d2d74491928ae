"""Ingest options: what ``scripts/ingest.py`` and ``data.ingest`` accept, checked before anything is read."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from psr.errors import ConfigError, DataError
from psr.io.units import normalise_unit

OUTPUT_AXES = "tczyx"


class IngestError(ConfigError, DataError):
    """A source that cannot be ingested: the message names the file, what was found and what was expected."""


@contextlib.contextmanager
def ingest_errors() -> Iterator[None]:
    """Report a reader's ``DataError`` (an unreadable file, an unknown unit) as an ``IngestError``."""
    try:
        yield
    except IngestError:
        raise
    except DataError as err:
        raise IngestError(str(err)) from None


def unit_option(unit: str | None, where: str = "--unit") -> str | None:
    """The NGFF name of a length unit (``"um"`` -> ``"micrometer"``), ``None`` for pixels / no unit; an
    unknown unit is an ``IngestError`` (:func:`psr.io.units.normalise_unit`)."""
    with ingest_errors():
        return normalise_unit(unit, where)


# --------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class IngestOptions:
    """How sources become OME-Zarr images; every field is recorded in the store and its fingerprint.

    pixel_size / z_spacing: physical sizes in ``unit`` overriding the files' metadata.
    unit: the unit of the stored sizes (metadata sizes are converted to it); default: the file's own unit.
    axes: override the source axes, one letter of ``tczyx`` per source axis (e.g. ``"zyx"``).
    channel: pick channel N or reduce channels (``"max"`` / ``"mean"``) where an image has several.
    single_channel: an image with several channels (e.g. RGB) is an error unless ``channel`` is given.
    chunks: chunk sizes of the trailing spatial axes (``(y, x)`` or ``(z, y, x)``); t and c chunk by 1.
    min_size: smallest Y and X accepted (an image smaller than a patch is useless for training).
    levels: pyramid levels (level 0 is full resolution; each next level halves Y and X).
    val_fraction / test_fraction / seed: random split by image of the images given without a split.
    """

    pixel_size: float | None = None
    z_spacing: float | None = None
    unit: str | None = None
    axes: str | None = None
    channel: int | str | None = None
    single_channel: bool = False
    chunks: tuple[int, ...] | None = None
    min_size: int = 16
    levels: int = 2
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("pixel_size", "z_spacing"):
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise IngestError(f"--{key.replace('_', '-')}: expected a positive number, got {value}")
        unit_option(self.unit)
        if self.axes is not None and (
            not self.axes
            or any(a not in OUTPUT_AXES for a in self.axes)
            or len(set(self.axes)) != len(self.axes)
            or not {"y", "x"} <= set(self.axes)
        ):
            raise IngestError(
                f"--axes: got '{self.axes}', expected distinct letters from 'tczyx' including y and x, one per source axis"
            )
        if isinstance(self.channel, str) and self.channel not in ("max", "mean"):
            raise IngestError(f"--channel: got '{self.channel}', expected a channel index, 'max' or 'mean'")
        if isinstance(self.channel, int) and self.channel < 0:
            raise IngestError(f"--channel: got {self.channel}, expected a channel index >= 0")
        if self.chunks is not None and (not 1 <= len(self.chunks) <= 3 or any(c < 1 for c in self.chunks)):
            raise IngestError(f"--chunks: got {self.chunks}, expected 1 to 3 positive sizes for (z,) y, x")
        if self.min_size < 1:
            raise IngestError(f"--min-size: got {self.min_size}, expected at least 1")
        if not 1 <= self.levels <= 8:
            raise IngestError(f"--levels: got {self.levels}, expected 1 to 8")
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1):
            raise IngestError(
                f"--val-fraction / --test-fraction: got {self.val_fraction} and {self.test_fraction}, expected values in [0, 1)"
            )
        if self.val_fraction + self.test_fraction >= 1:
            raise IngestError(
                f"--val-fraction + --test-fraction = {self.val_fraction + self.test_fraction}, expected less than 1 (some images must train)"
            )

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["chunks"] = list(self.chunks) if self.chunks is not None else None
        return out


def parse_channel(text: str) -> int | str:
    """``--channel`` value: an index or ``max`` / ``mean``."""
    return int(text) if text.strip().lstrip("-").isdigit() else text.strip().lower()


def parse_chunks(text: str) -> tuple[int, ...]:
    """``--chunks 16,256,256`` -> ``(16, 256, 256)``."""
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise IngestError(f"--chunks: got '{text}', expected sizes such as 256,256 or 16,256,256") from None
