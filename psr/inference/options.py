"""Prediction's settings, checked before any pixel is read: the device, the batch size, memory sizes, tile
and overlap per axis, where each plane is held (``memory_budget``), and the output's geometry."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import torch

from psr.inference.checkpoint import LoadedModel
from psr.inference.errors import PredictionError
from psr.inference.images import InputImage, ModelAxes, output_metadata
from psr.inference.tiling import WINDOWS, per_axis
from psr.inference.writers import OutputGeometry

BATCH_AUTO = {"cpu": 4, "cuda": 16}
"""Tiles per forward pass for ``batch_size="auto"``, by device type (others: the CPU's)."""
DEFAULT_MEMORY_BUDGET = "2GB"
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "kib": 2**10,
    "m": 10**6,
    "mb": 10**6,
    "mib": 2**20,
    "g": 10**9,
    "gb": 10**9,
    "gib": 2**30,
    "t": 10**12,
    "tb": 10**12,
    "tib": 2**40,
}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; otherwise the named device, which must exist."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise PredictionError(f"device={device} is not a device; expected auto, cpu, cuda or cuda:N") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise PredictionError(f"device={device} but no CUDA device is available; use device=auto or cpu")
    return resolved


def resolve_batch_size(batch_size: int | str, device: torch.device) -> int:
    """Tiles per forward pass: a positive integer, or ``auto`` (``BATCH_AUTO``: 4 on the CPU, 16 on CUDA)."""
    if isinstance(batch_size, str) and batch_size.strip().lower() == "auto":
        return BATCH_AUTO.get(device.type, BATCH_AUTO["cpu"])
    try:
        value = int(batch_size)
    except (TypeError, ValueError) as err:
        raise PredictionError(
            f"batch_size={batch_size} is not a number of tiles; expected auto or 1, 2, ..."
        ) from err
    if isinstance(batch_size, bool) or value < 1 or value != float(batch_size):
        raise PredictionError(f"batch_size={batch_size} must be at least 1 (or auto)")
    return value


def parse_bytes(value: int | float | str, key: str = "memory_budget") -> int:
    """A memory size in bytes: an integer, or a string such as ``512MB``, ``2GB``, ``1.5GiB`` (``KB``, ``MB``,
    ``GB``, ``TB`` are powers of 1000; ``KiB``, ``MiB``, ``GiB``, ``TiB`` of 1024)."""
    expected = (
        f"{key}={value} is not a memory size; expected a number of bytes or a size such as 512MB or 2GB"
    )
    if isinstance(value, bool):
        raise PredictionError(expected)
    if isinstance(value, int | float | np.integer | np.floating):
        number, unit = float(value), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*", str(value).lower())
        if match is None or match.group(2) not in _SIZE_UNITS:
            raise PredictionError(expected)
        number, unit = float(match.group(1)), match.group(2)
    if not math.isfinite(number) or number < 0:
        raise PredictionError(expected)
    return int(number * _SIZE_UNITS[unit])


def check_options(
    spatial_dims: int, tile: Any, overlap: Any, window: str
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    try:
        tiles, overlaps = per_axis(tile, spatial_dims, "tile"), per_axis(overlap, spatial_dims, "overlap")
    except ValueError as err:
        raise PredictionError(str(err)) from err
    if min(tiles) < 1:
        raise PredictionError(f"tile={tile} must be positive (input pixels per tile side)")
    if min(overlaps) < 0:
        raise PredictionError(f"overlap={overlap} must be 0 or more (input pixels)")
    bad = [(t, o) for t, o in zip(tiles, overlaps, strict=True) if 2 * o > t]
    if bad:
        raise PredictionError(
            f"overlap={overlap} is more than half of tile={tile}; use an overlap of at most {bad[0][0] // 2}"
        )
    if window not in WINDOWS:
        raise PredictionError(
            f"window={window} is not a blending window; expected one of {', '.join(WINDOWS)}"
        )
    return tiles, overlaps


def output_range(
    low: np.ndarray, high: np.ndarray, in_channels: int, out_channels: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The input intensity range each output channel maps back to (``denormalize``), or None."""
    if out_channels == in_channels:
        return low, high
    if out_channels == 1 and in_channels % 2 == 1:  # multi-frame input: the centre frame's range
        c = in_channels // 2
        return low[c : c + 1], high[c : c + 1]
    return None


def output_geometry(image: InputImage, layout: ModelAxes, model: LoadedModel) -> OutputGeometry:
    """Output axes in NGFF order: the planes, channels (when the input has them or the model makes
    several), and the spatial axes enlarged by the scale in Y and X."""
    spatial = "yx" if model.spatial_dims == 2 else "zyx"
    planes = layout.plane_letters
    has_c = layout.channel_axis is not None or model.out_channels > 1
    axes = "".join(a for a in "tczyx" if a in planes or a in spatial or (a == "c" and has_c))
    sizes = {a: image.shape[image.axes.index(a)] for a in planes + spatial}
    sizes["y"] *= model.scale
    sizes["x"] *= model.scale
    sizes["c"] = model.out_channels
    meta = output_metadata(image, layout, model)  # the input's pixel size, else the checkpoint's
    shape = tuple(sizes[a] for a in axes)
    return OutputGeometry(axes, shape, spatial, meta.pixel_size, meta.unit, meta.channel_names)


def plan_memory(
    budget: int, in_plane: int, out_plane: int, n_planes: int, device: torch.device
) -> tuple[bool, str]:
    """Whether to read each input plane whole, and where to accumulate the output (``device``: a CUDA
    tensor; ``ram``; ``disk``). Sizes in bytes (float32). The input plane is read whole when twice it
    fits in half the budget; the output plane stays in memory when it fits in the rest (twice in RAM
    for a series on the CPU: one plane is written while the next accumulates)."""
    whole = 2 * in_plane <= budget // 2
    left = budget - (2 * in_plane if whole else 0)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if out_plane <= left and 2 * out_plane <= free:
            return whole, "device"
        return whole, "ram" if 2 * out_plane <= left else "disk"
    copies = 1 if n_planes == 1 else 2
    return whole, "ram" if copies * out_plane <= left else "disk"
