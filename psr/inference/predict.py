"""Tiled prediction with a trained psr model on images of any size, as a pipeline, streamed to disk.

``predict_image(model, image, output)`` restores a TIFF, PNG/JPEG, zarr array or OME-Zarr image and
writes an OME-Zarr image (``.ome.zarr``/``.zarr``) or an ImageJ TIFF (``.tif``/``.tiff``), float32:

1. The input is normalised as in training: per channel, ``(x - low) / (high - low)`` with the
   checkpoint's percentiles (``data.percentiles``) of the whole input, estimated from a strided
   subsample (``psr.inference.images.input_statistics``).
2. Every plane (each ``t``; each ``z`` for a 2D model) is cut into overlapping tiles
   (``psr.inference.tiling``) that stream through ``psr.inference.pipeline``: a reader thread, the
   network on the device (bf16 autocast and channels-last on CUDA, optionally ``torch.compile``;
   optionally averaged over the 8 flips and 90° rotations, ``tta``), and a writer thread that blends.
3. Planes are blended in memory when they fit ``memory_budget`` (on the GPU with CUDA), else in a zarr
   array in a temporary folder beside the output; a finished plane (optionally mapped back to the
   input's intensity range, ``denormalize``) is written while the next is computed: a time series
   streams frame by frame, with frames/s in the log.
4. The output is renamed into place only when complete; on any error the temporary folder goes.

``watch_folder`` (``psr.inference.watch``) restores every image file that appears in a folder, as it
appears (live acquisition). Settings are checked by ``psr.inference.options``; the network runs through
``psr.inference.forward.infer``. Memory is bounded by the tile size, the batch and ``memory_budget``, never
by the image.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psr.inference.checkpoint import LoadedModel, load_checkpoint
from psr.inference.errors import PredictionError
from psr.inference.forward import cudnn_benchmark, infer, prepare_net
from psr.inference.images import InputImage, input_statistics, open_input, plan_model_axes
from psr.inference.options import (
    BATCH_AUTO,
    DEFAULT_MEMORY_BUDGET,
    check_options,
    output_geometry,
    output_range,
    parse_bytes,
    plan_memory,
    resolve_batch_size,
    resolve_device,
)
from psr.inference.pipeline import PlaneSetup, Reader, run_pipeline
from psr.inference.tiling import Region, WindowCache, tile_grid, window_sums
from psr.inference.watch import watch_folder
from psr.inference.writers import OmeZarrSink, Sink, StagedOutput, TiffSink, output_format

__all__ = [
    "BATCH_AUTO",
    "DEFAULT_MEMORY_BUDGET",
    "PredictionError",
    "infer",
    "parse_bytes",
    "predict_file",
    "predict_image",
    "resolve_batch_size",
    "resolve_device",
    "watch_folder",
]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _reading(name: str) -> Iterator[None]:
    """Errors of the file readers (a corrupt compressed strip, a truncated file) as one sentence."""
    try:
        yield
    except PredictionError:
        raise
    except (OSError, RuntimeError, ValueError, EOFError, zlib.error) as err:
        raise PredictionError(
            f"input {name} cannot be read ({type(err).__name__}: {err}); the file is damaged or truncated"
        ) from err


def _check_pixel_type(image: InputImage) -> bool:
    """Refuse pixels that are not intensities (bool, complex); return whether they are floating point
    (then each block read is checked for NaN/Inf)."""
    dtype = np.dtype(image.data.dtype)
    if dtype.kind in "bc":
        raise PredictionError(
            f"input {image.name} has {dtype} pixels; expected intensities (unsigned or signed integers such"
            " as uint8/uint16, or float32)"
        )
    return dtype.kind == "f"


def _check_finite(block: np.ndarray, name: str, plane: Sequence[int], region: Region) -> None:
    """One sentence naming where the first NaN/Inf of a block read from the input is."""
    finite = np.isfinite(block)
    if finite.all():
        return
    where = np.argwhere(~finite)[0]  # (C, *spatial) within the block
    spatial = [int(i) + s.start for i, s in zip(where[1:], region, strict=True)]
    at = f"plane {list(plane)}, " if plane else ""
    raise PredictionError(
        f"input {name} has {int((~finite).sum())} NaN or infinite value(s) in the block read at {at}spatial"
        f" index {spatial} (first); expected finite intensities: fill or crop them before predicting"
    )


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


class _FrameRate:
    """Frames finished per second since the first batch, logged every few seconds for a series."""

    def __init__(self, total: int, name: str, every: float = 2.0) -> None:
        self.total, self.name, self.every = total, name, every
        self.frames = 0
        self.started: float | None = None
        self.logged = 0.0

    def start(self) -> None:
        if self.started is None:
            self.started = self.logged = time.perf_counter()

    @property
    def rate(self) -> float:
        if self.started is None or self.frames == 0:
            return 0.0
        elapsed = time.perf_counter() - self.started
        return self.frames / elapsed if elapsed > 0 else float("inf")

    def frame(self) -> None:
        self.frames += 1
        now = time.perf_counter()
        if self.total > 1 and (now - self.logged >= self.every or self.frames == self.total):
            self.logged = now
            log.info("psr: %s frame %d/%d, %.2f frames/s", self.name, self.frames, self.total, self.rate)


def predict_image(
    model: LoadedModel,
    image: InputImage,
    output: str | Path,
    *,
    tile: int | Sequence[int] = 256,
    overlap: int | Sequence[int] = 32,
    batch_size: int | str = "auto",
    window: str = "cosine",
    tta: bool = False,
    denormalize: bool = True,
    channel: int | Sequence[int] | None = None,
    overwrite: bool = False,
    progress: bool = False,
    memory_budget: int | str = DEFAULT_MEMORY_BUDGET,
    compile: bool = False,  # noqa: A002 - the user-facing option is called compile
) -> dict[str, Any]:
    """Predict ``image`` with ``model`` tile by tile and write ``output`` (``.ome.zarr``/``.zarr``/``.tif``).

    ``tile`` and ``overlap`` are in input pixels (one value, or one per spatial axis); ``overlap // 4``
    pixels at each shared tile side are given a negligible weight, so the result equals whole-image
    prediction when the model's receptive-field radius is at most that. ``batch_size``: tiles per
    forward pass, or ``auto`` (``BATCH_AUTO``). ``memory_budget`` (bytes or ``512MB``, ``2GB``...) bounds
    what is held per plane: within it, input planes are read whole and output planes blended in memory
    (on the GPU with CUDA); beyond it, tiles are read one by one and blended on disk. ``compile`` wraps
    the net in ``torch.compile``. Returns a summary dict. Raises ``PredictionError`` (one sentence) for
    bad options, input or output; on any error nothing is left at ``output`` and no temporary folder
    remains.
    """
    started = time.perf_counter()
    tiles, overlaps = check_options(model.spatial_dims, tile, overlap, window)
    budget = parse_bytes(memory_budget)
    device = next(iter(model.net.parameters()), torch.empty(0)).device
    batch = resolve_batch_size(batch_size, device)
    fmt = output_format(output)
    out_path = Path(output).expanduser().absolute()
    staged = StagedOutput(out_path, overwrite)
    source = Path(image.name).expanduser().absolute()
    if out_path == source or source in out_path.parents:
        raise PredictionError(f"output {out_path} would overwrite the input {image.name}; pick another path")
    floating = _check_pixel_type(image)
    layout = plan_model_axes(image, model.spatial_dims, model.in_channels, channel)
    spatial_in = layout.spatial_shape
    factors = (model.scale,) * 2 if model.spatial_dims == 2 else (1, model.scale, model.scale)
    try:
        grid = tile_grid(spatial_in, tiles, overlaps)
    except ValueError as err:  # an empty axis
        raise PredictionError(f"input {image.name} has spatial shape {list(spatial_in)}: {err}") from err
    with _reading(image.name):
        low, high = input_statistics(image, layout, model.percentiles, model.input_smoothing)
    out_range = output_range(low, high, model.in_channels, model.out_channels)
    if denormalize and out_range is None:
        raise PredictionError(
            f"denormalize=true but the model maps {model.in_channels} input channels to {model.out_channels}:"
            " no input channel gives each output its intensity range; set denormalize=false"
        )
    geometry = output_geometry(image, layout, model)
    sums = window_sums(spatial_in, tiles, overlaps, window, factors)
    scale_low = low.reshape(-1, *([1] * len(spatial_in)))
    scale_span = (high - low).reshape(scale_low.shape)
    planes = [tuple(int(i) for i in p) for p in layout.plane_indices()]
    n_planes = len(planes)
    batch = min(batch, len(grid))
    in_plane = 4 * model.in_channels * math.prod(spatial_in)
    out_plane = 4 * geometry.channels * math.prod(geometry.spatial_shape)
    whole, where = plan_memory(budget, in_plane, out_plane, n_planes, device)

    def read_tile(plane: Sequence[int], region: Region) -> np.ndarray:
        with _reading(image.name):
            block = layout.read(image.data, plane, region).astype(np.float32)
        if floating:  # every pixel, as it is read: the statistics above only sample the input
            _check_finite(block, image.name, plane, region)
        return (block - scale_low) / scale_span

    def read_plane(plane: Sequence[int]) -> np.ndarray | None:
        return read_tile(plane, tuple(slice(0, n) for n in spatial_in)) if whole else None

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
    name = Path(image.name).name
    rate = _FrameRate(n_planes, name)
    net = prepare_net(model.net, device, model.spatial_dims, bool(compile))
    setup = PlaneSetup(
        where,
        WindowCache(spatial_in, overlaps, window, factors),
        factors,
        sums,
        out_range if denormalize else None,
        staged.work / "accumulator.zarr",
        device,
    )
    with (
        staged,
        _Progress(progress, n_planes * len(grid), f"predict {name}") as bar,
        cudnn_benchmark(device),
    ):
        sink: Sink = (
            OmeZarrSink(staged.path, geometry, out_path.name, attributes)
            if fmt == "zarr"
            else TiffSink(staged.path, geometry)
        )
        try:
            tile_shape = (model.in_channels, *(s.stop - s.start for s in grid[0]))
            reader = Reader(planes, grid, batch, tile_shape, read_plane, read_tile, device.type == "cuda")
            run_pipeline(
                net,
                model,
                reader,
                layout,
                geometry,
                sink,
                setup,
                bool(tta),
                bool(compile),
                bar.advance,
                rate.start,
                rate.frame,
            )
        finally:
            sink.close()
        staged.commit()
    seconds = time.perf_counter() - started
    megapixels = n_planes * math.prod(spatial_in) / 1e6
    out_megapixels = n_planes * math.prod(geometry.spatial_shape) / 1e6
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
        "batch_size": batch,
        "accumulator": where,
        "read_whole_planes": whole,
        "compile": bool(compile),
        "tta": bool(tta),
        "device": str(device),
        "seconds": round(seconds, 3),
        "frames_per_second": n_planes / seconds if seconds > 0 else float("inf"),
        "input_megapixels": megapixels,
        "megapixels_per_second": megapixels / seconds if seconds > 0 else float("inf"),
        "output_megapixels": out_megapixels,
        "output_megapixels_per_second": out_megapixels / seconds if seconds > 0 else float("inf"),
    }


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
    ``tta``, ``denormalize``, ``channel``, ``overwrite``, ``progress``, ``memory_budget``, ``compile``);
    ``axes`` renames the input's axes (``tyx``...). Raises ``CheckpointError`` or ``PredictionError`` with
    one clear sentence.
    """
    resolved = resolve_device(device)
    model = load_checkpoint(ckpt, resolved)
    with open_input(input, axes) as image:
        summary = predict_image(model, image, output, **options)
    summary["checkpoint"] = str(ckpt)
    return summary
