"""Tiled prediction with a trained psr model on images of any size, streamed to disk.

``predict_file(ckpt, input, output)`` restores a TIFF, PNG/JPEG, zarr array or OME-Zarr image and
writes an OME-Zarr image (``.ome.zarr``/``.zarr``) or an ImageJ TIFF (``.tif``/``.tiff``), float32:

1. The input is normalised as in training: per channel, ``(x - low) / (high - low)`` with the
   checkpoint's percentiles (``data.percentiles``) of the whole input, estimated from a strided
   subsample (``psr.inference.images.input_statistics``).
2. Every plane (each ``t``; each ``z`` for a 2D model) is cut into overlapping tiles
   (``psr.inference.tiling``); tiles run through the network in batches (bf16 autocast on CUDA only),
   optionally averaged over the 8 flips and 90° rotations in Y/X (test-time augmentation).
3. Each output tile, weighted by its blending window, is added into an on-disk zarr accumulator in a
   temporary folder beside the output; when a plane is done, its accumulator is divided by the summed
   windows block by block and written to the output (optionally mapped back to the input's intensity
   range, ``denormalize``).
4. The output is renamed into place only when complete; on any error the temporary folder goes.

Memory is bounded by the tile size and the batch (plus one output block), never by the image.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from torch import nn

from psr.inference.checkpoint import LoadedModel, load_checkpoint
from psr.inference.errors import PredictionError
from psr.inference.images import InputImage, Layout, input_statistics, open_input, plan_layout
from psr.inference.tiling import (
    WINDOWS,
    Region,
    accumulate,
    axis_windows,
    block_weights,
    outer,
    scale_region,
    tile_grid,
    window_sums,
)
from psr.inference.writers import (
    OmeZarrSink,
    OutputGeometry,
    Sink,
    StagedOutput,
    TiffSink,
    output_format,
)

__all__ = [
    "PredictionError",
    "infer",
    "predict_file",
    "predict_image",
    "resolve_device",
]


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


def _dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if flip:
        x = x.flip(-1)
    return torch.rot90(x, k, dims=(-2, -1))


def _undo_dihedral(y: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    y = torch.rot90(y, -k, dims=(-2, -1))
    return y.flip(-1) if flip else y


def infer(net: nn.Module, batch: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """``net(batch)`` in float32 without gradients; bf16 autocast on CUDA only.

    ``batch``: ``(B, C, Y, X)`` or ``(B, C, Z, Y, X)`` on the net's device. With ``tta`` the prediction is
    the mean over the 8 symmetries of the square in Y/X (4 rotations × a flip), each undone on the output
    (lateral only in 3D).
    """
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if batch.device.type == "cuda"
        else contextlib.nullcontext()
    )
    with torch.inference_mode(), amp:
        if not tta:
            return net(batch).float()
        total: torch.Tensor | None = None
        for flip in (False, True):
            for k in range(4):
                y = _undo_dihedral(net(_dihedral(batch, k, flip)).float(), k, flip)
                total = y if total is None else total + y
        assert total is not None
        return total / 8.0


def _per_axis(value: int | Sequence[int], ndim: int, key: str) -> tuple[int, ...]:
    """An int for every spatial axis, or one per axis; a clear error naming the option otherwise."""
    try:
        values = (int(value),) * ndim if isinstance(value, int | np.integer) else tuple(int(v) for v in value)
    except (TypeError, ValueError) as err:
        raise PredictionError(f"{key}={value} is not an integer or a list of {ndim} integers") from err
    if len(values) != ndim:
        raise PredictionError(
            f"{key}={list(values)} has {len(values)} values; the model has {ndim} spatial axes: give one"
            f" value or {ndim}"
        )
    return values


def _check_options(
    spatial_dims: int, tile: Any, overlap: Any, batch_size: int, window: str
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    tiles = _per_axis(tile, spatial_dims, "tile")
    overlaps = _per_axis(overlap, spatial_dims, "overlap")
    if min(tiles) < 1:
        raise PredictionError(f"tile={tile} must be positive (input pixels per tile side)")
    if min(overlaps) < 0:
        raise PredictionError(f"overlap={overlap} must be 0 or more (input pixels)")
    bad = [(t, o) for t, o in zip(tiles, overlaps, strict=True) if 2 * o > t]
    if bad:
        raise PredictionError(
            f"overlap={overlap} is more than half of tile={tile}; use an overlap of at most {bad[0][0] // 2}"
        )
    if int(batch_size) < 1:
        raise PredictionError(f"batch_size={batch_size} must be at least 1")
    if window not in WINDOWS:
        raise PredictionError(
            f"window={window} is not a blending window; expected one of {', '.join(WINDOWS)}"
        )
    return tiles, overlaps


def _output_range(
    low: np.ndarray, high: np.ndarray, in_channels: int, out_channels: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The input intensity range each output channel maps back to (``denormalize``), or None."""
    if out_channels == in_channels:
        return low, high
    if out_channels == 1 and in_channels % 2 == 1:  # multi-frame input: the centre frame's range
        c = in_channels // 2
        return low[c : c + 1], high[c : c + 1]
    return None


def _geometry(image: InputImage, layout: Layout, model: LoadedModel) -> OutputGeometry:
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
    pixel = {a: v for a, v in image.pixel_size.items() if a in "zyx"}
    for a in "yx":
        if a in pixel:
            pixel[a] = pixel[a] / model.scale
    if "y" not in pixel and "x" not in pixel:
        # No physical size: keep the input's pixel grid as the unit, so overlays line up in viewers.
        pixel = {"y": 1.0 / model.scale, "x": 1.0 / model.scale}
        unit = None
    else:
        unit = image.unit
    return OutputGeometry(axes, tuple(sizes[a] for a in axes), spatial, pixel, unit)


def _batches(items: Sequence[Region], size: int) -> Iterator[Sequence[Region]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class _Progress:
    """A rich progress bar on stderr over all tiles, or nothing."""

    def __init__(self, enabled: bool, total: int, description: str) -> None:
        self.bar: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("tiles"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self.task = self.bar.add_task(description, total=total)

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, n)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def predict_image(
    model: LoadedModel,
    image: InputImage,
    output: str | Path,
    *,
    tile: int | Sequence[int] = 256,
    overlap: int | Sequence[int] = 32,
    batch_size: int = 4,
    window: str = "cosine",
    tta: bool = False,
    denormalize: bool = True,
    channel: int | Sequence[int] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Predict ``image`` with ``model`` tile by tile and write ``output`` (``.ome.zarr``/``.zarr``/``.tif``).

    ``tile`` and ``overlap`` are in input pixels (one value, or one per spatial axis); ``overlap // 4``
    pixels at each shared tile side are given a negligible weight, so the result equals whole-image
    prediction when the model's receptive-field radius is at most that. Returns a summary dict. Raises
    ``PredictionError`` (one sentence) for bad options, input or output; on any error nothing is left at
    ``output`` and no temporary folder remains.
    """
    started = time.perf_counter()
    tiles, overlaps = _check_options(model.spatial_dims, tile, overlap, batch_size, window)
    fmt = output_format(output)
    out_path = Path(output).expanduser().absolute()
    staged = StagedOutput(out_path, overwrite)
    source = Path(image.name).expanduser().absolute()
    if out_path == source or source in out_path.parents:
        raise PredictionError(f"output {out_path} would overwrite the input {image.name}; pick another path")
    layout = plan_layout(image, model.spatial_dims, model.in_channels, channel)
    spatial_in = layout.spatial_shape
    factors = (model.scale,) * 2 if model.spatial_dims == 2 else (1, model.scale, model.scale)
    try:
        grid = tile_grid(spatial_in, tiles, overlaps)
    except ValueError as err:  # an empty axis
        raise PredictionError(f"input {image.name} has spatial shape {list(spatial_in)}: {err}") from err
    low, high = input_statistics(image, layout, model.percentiles)
    out_range = _output_range(low, high, model.in_channels, model.out_channels)
    if denormalize and out_range is None:
        raise PredictionError(
            f"denormalize=true but the model maps {model.in_channels} input channels to {model.out_channels}:"
            " no input channel gives each output its intensity range; set denormalize=false"
        )
    geometry = _geometry(image, layout, model)
    sums = window_sums(spatial_in, tiles, overlaps, window, factors)
    device = next(iter(model.net.parameters()), torch.empty(0)).device
    scale_low = low.reshape(-1, *([1] * len(spatial_in)))
    scale_span = (high - low).reshape(scale_low.shape)

    def read(plane: Sequence[int], region: Region) -> np.ndarray:
        block = layout.read(image.data, plane, region).astype(np.float32)
        return (block - scale_low) / scale_span

    attributes = {
        "psr": {
            "checkpoint": str(model.path),
            "input": image.name,
            "scale": model.scale,
            "tile": list(tiles),
            "overlap": list(overlaps),
            "window": window,
            "tta": bool(tta),
            "denormalized": bool(denormalize),
            "normalisation": {
                "percentiles": list(model.percentiles),
                "low": low.tolist(),
                "high": high.tolist(),
            },
        }
    }
    n_planes = math.prod(layout.plane_shape)
    name = Path(image.name).name
    with staged, _Progress(progress, n_planes * len(grid), f"predict {name}") as bar:
        sink: Sink = (
            OmeZarrSink(staged.path, geometry, out_path.name, attributes)
            if fmt == "zarr"
            else TiffSink(staged.path, geometry)
        )
        try:
            for plane in layout.plane_indices():
                accumulator = zarr.create_array(
                    store=str(staged.work / "accumulator.zarr"),
                    shape=(geometry.channels, *geometry.spatial_shape),
                    chunks=(geometry.channels, *geometry.spatial_chunks),
                    dtype="float32",
                    fill_value=0.0,
                    compressors=None,
                    overwrite=True,
                )
                _predict_plane(
                    model,
                    lambda region, plane=plane: read(plane, region),  # type: ignore[misc]
                    grid,
                    spatial_in,
                    overlaps,
                    window,
                    factors,
                    accumulator,
                    int(batch_size),
                    bool(tta),
                    device,
                    bar.advance,
                )
                labels = dict(zip(layout.plane_letters, (int(i) for i in plane), strict=True))
                for block in geometry.blocks():
                    values = np.asarray(accumulator[(slice(None), *block)]) / block_weights(sums, block)
                    if denormalize and out_range is not None:
                        lo, hi = out_range
                        shape = (-1, *([1] * len(block)))
                        values = values * (hi - lo).reshape(shape) + lo.reshape(shape)
                    sink.write(labels, block, values.astype(np.float32, copy=False))
        finally:
            sink.close()
        staged.commit()
    seconds = time.perf_counter() - started
    megapixels = n_planes * math.prod(spatial_in) / 1e6
    return {
        "input": image.name,
        "input_axes": image.axes,
        "input_shape": list(image.shape),
        "output": str(out_path),
        "format": fmt,
        "output_axes": geometry.axes,
        "output_shape": list(geometry.shape),
        "pixel_size": geometry.pixel_size,
        "unit": geometry.unit,
        "scale": model.scale,
        "planes": n_planes,
        "tiles_per_plane": len(grid),
        "tta": bool(tta),
        "device": str(device),
        "seconds": round(seconds, 3),
        "input_megapixels": megapixels,
        "megapixels_per_second": megapixels / seconds if seconds > 0 else float("inf"),
    }


def _predict_plane(
    model: LoadedModel,
    read: Callable[[Region], np.ndarray],
    grid: Sequence[Region],
    spatial_in: Sequence[int],
    overlaps: Sequence[int],
    window: str,
    factors: Sequence[int],
    accumulator: Any,
    batch_size: int,
    tta: bool,
    device: torch.device,
    advance: Callable[[int], None],
) -> None:
    """Run every tile of one plane through the model in batches and add it, windowed, into
    ``accumulator`` (``(C_out, *output spatial)``). Accumulation runs in a worker thread, one batch
    behind the network, so disk writes overlap with compute."""
    # Per-axis windows, cached by which sides are shared: full windows of large 3D tiles would not fit.
    cache: dict[tuple[int, bool, bool], np.ndarray] = {}

    def window_of(region: Region) -> np.ndarray:
        keys = [(a, s.start > 0, s.stop < n) for a, (s, n) in enumerate(zip(region, spatial_in, strict=True))]
        if any(key not in cache for key in keys):
            for key, w in zip(keys, axis_windows(region, spatial_in, overlaps, window, factors), strict=True):
                cache[key] = w
        return outer([cache[key] for key in keys])

    def add(regions: Sequence[Region], values: np.ndarray) -> None:
        for region, value in zip(regions, values, strict=True):
            accumulate(accumulator, scale_region(region, factors), value, window_of(region))

    expected: tuple[int, ...] | None = None
    pending: Future[None] | None = None
    with ThreadPoolExecutor(max_workers=1) as writer:
        try:
            for regions in _batches(grid, batch_size):
                batch = torch.from_numpy(np.stack([read(r) for r in regions])).to(device)
                values = infer(model.net, batch, tta).cpu().numpy()
                if expected is None:
                    out_tile = [(s.stop - s.start) * f for s, f in zip(regions[0], factors, strict=True)]
                    expected = (model.out_channels, *out_tile)
                if values.shape[1:] != expected:
                    raise PredictionError(
                        f"the model maps a tile of shape {list(batch.shape[1:])} to {list(values.shape[1:])};"
                        f" expected {list(expected)} (scale {model.scale})"
                    )
                if pending is not None:
                    pending.result()
                pending = writer.submit(add, regions, values)
                advance(len(regions))
        finally:
            if pending is not None:
                pending.result()


def predict_file(
    ckpt: str | Path,
    input: str | Path,  # noqa: A002 - the user-facing option is called input
    output: str | Path,
    *,
    device: str | torch.device = "auto",
    axes: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Load a psr checkpoint, open ``input`` and write its restoration to ``output``.

    ``options`` are those of ``predict_image`` (``tile``, ``overlap``, ``batch_size``, ``window``,
    ``tta``, ``denormalize``, ``channel``, ``overwrite``, ``progress``); ``axes`` renames the input's
    axes (``tyx``...). Raises ``CheckpointError`` or ``PredictionError`` with one clear sentence.
    """
    resolved = resolve_device(device)
    model = load_checkpoint(ckpt, resolved)
    with open_input(input, axes) as image:
        summary = predict_image(model, image, output, **options)
    summary["checkpoint"] = str(ckpt)
    return summary
