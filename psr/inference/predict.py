"""Tiled prediction with a trained psr model on images of any size, as a pipeline, streamed to disk.

``predict_image(model, image, output)`` restores a TIFF, PNG/JPEG, zarr array or OME-Zarr image and
writes an OME-Zarr image (``.ome.zarr``/``.zarr``) or an ImageJ TIFF (``.tif``/``.tiff``), float32:

1. The input is normalised as in training: per channel, ``(x - low) / (high - low)`` with the
   checkpoint's percentiles (``data.percentiles``) of the whole input, estimated from a strided
   subsample (``psr.inference.images.input_statistics``).
2. Every plane (each ``t``; each ``z`` for a 2D model) is cut into overlapping tiles
   (``psr.inference.tiling``). Three stages run at once, so that the device never waits for the disk:
   a reader thread reads the tiles (a plane whole when it fits the memory budget, then slices it) into
   a ring of reusable batch buffers (pinned on CUDA); the main thread copies each batch to the device
   (``non_blocking``), runs the network (bf16 autocast and channels-last on CUDA, optionally
   ``torch.compile``; optionally averaged over the 8 flips and 90° rotations, ``tta``); a writer thread
   blends and writes.
3. Each output tile, weighted by its blending window, is added into the plane's accumulator: a tensor
   in memory when the plane fits ``memory_budget`` (on the GPU with CUDA, where the blending runs on
   the device; in RAM on the CPU), else a zarr array on disk in a temporary folder beside the output.
   A finished plane is divided by the summed windows (optionally mapped back to the input's intensity
   range, ``denormalize``) and written while the next plane is computed: a time series streams frame
   by frame, with frames/s in the log.
4. The output is renamed into place only when complete; on any error the temporary folder goes.

``watch_folder`` restores every image file that appears in a folder, as it appears (live acquisition).
Memory is bounded by the tile size, the batch and ``memory_budget``, never by the image.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import re
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from torch import nn

from psr.inference.checkpoint import LoadedModel, load_checkpoint
from psr.inference.errors import PredictionError
from psr.inference.images import (
    PICTURE_SUFFIXES,
    TIFF_SUFFIXES,
    InputImage,
    Layout,
    input_statistics,
    open_input,
    plan_layout,
)
from psr.inference.tiling import (
    WINDOWS,
    Region,
    WindowCache,
    accumulate,
    block_weights,
    scale_region,
    tile_grid,
    window_key,
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
_BUFFERS = 3  # batch buffers in the reader's ring: one filling, one queued, one on its way to the device
_PENDING = 3  # writer tasks queued at most behind the network (each holds one batch of output tiles)


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
    spatial_dims: int, tile: Any, overlap: Any, window: str
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


def _batches(items: Sequence[Region], size: int) -> list[Sequence[Region]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@dataclass
class _Batch:
    """A batch of tiles of one plane, read into ``buffer`` (its first ``len(regions)`` rows)."""

    number: int  # the plane's position in the order planes are predicted
    plane: tuple[int, ...]
    regions: Sequence[Region]
    buffer: torch.Tensor  # (B, C, *tile), float32, on the host
    last: bool  # the plane's last batch


class _Reader:
    """Reads the tiles of every plane in a thread, ahead of the network, into a ring of reusable batch
    buffers (pinned memory on CUDA, so host→device copies can be asynchronous).

    ``read_plane(plane)`` returns a whole normalised plane ``(C, *spatial)`` (tiles are then sliced from
    it) or None (then ``read_tile(plane, region)`` reads each tile). Iterate to get ``_Batch``es in order;
    hand every buffer back with ``release`` once the device no longer reads it.
    """

    def __init__(
        self,
        planes: Sequence[tuple[int, ...]],
        grid: Sequence[Region],
        batch_size: int,
        tile_shape: Sequence[int],
        read_plane: Callable[[tuple[int, ...]], np.ndarray | None],
        read_tile: Callable[[tuple[int, ...], Region], np.ndarray],
        pin: bool,
    ) -> None:
        self.planes, self.batches = planes, _batches(grid, batch_size)
        self.read_plane, self.read_tile = read_plane, read_tile
        self.free: queue.Queue[tuple[torch.Tensor, Any]] = queue.Queue()
        for _ in range(_BUFFERS):
            self.free.put((torch.zeros((batch_size, *tile_shape), dtype=torch.float32, pin_memory=pin), None))
        self.ready: queue.Queue[_Batch | BaseException | None] = queue.Queue(maxsize=_BUFFERS)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="psr-predict-reader", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for number, plane in enumerate(self.planes):
                source = self.read_plane(plane)
                for i, regions in enumerate(self.batches):
                    taken = self._take()
                    if taken is None:
                        return
                    buffer, event = taken
                    if event is not None:  # the device's copy out of this buffer must be done
                        event.synchronize()
                    rows = buffer.numpy()
                    for j, region in enumerate(regions):
                        rows[j] = (
                            source[(slice(None), *region)]
                            if source is not None
                            else self.read_tile(plane, region)
                        )
                    last = i == len(self.batches) - 1
                    if not self._put(_Batch(number, plane, regions, buffer, last)):
                        return
                del source
            self._put(None)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which raises it
            self._put(err)

    def _take(self) -> tuple[torch.Tensor, Any] | None:
        while not self.stop.is_set():
            with contextlib.suppress(queue.Empty):
                return self.free.get(timeout=0.1)
        return None

    def _put(self, item: _Batch | BaseException | None) -> bool:
        while not self.stop.is_set():
            try:
                self.ready.put(item, timeout=0.1)
            except queue.Full:
                continue
            return True
        return False

    def __iter__(self) -> Iterator[_Batch]:
        while True:
            item = self.ready.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def release(self, buffer: torch.Tensor, event: Any = None) -> None:
        self.free.put((buffer, event))

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


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


def _to_host(values: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """Start copying a device tensor into pinned host memory; returns it and an event to wait on (CPU
    tensors: themselves, no event)."""
    if values.device.type != "cuda":
        return values, None
    host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
    host.copy_(values, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return host, event


class _Windows:
    """The blending windows of one grid as tensors on a device, each moved there once."""

    def __init__(self, windows: WindowCache, device: torch.device) -> None:
        self.windows, self.device = windows, device
        self.cache: dict[Any, torch.Tensor] = {}

    def __call__(self, region: Region) -> torch.Tensor:
        key = window_key(region, self.windows.shape)
        window = self.cache.get(key)
        if window is None:
            window = torch.from_numpy(self.windows(region)).to(self.device)
            if key in self.windows.cache:  # small enough to keep
                self.cache[key] = window
        return window


class _TensorAccumulator:
    """The blended output of one plane in memory, ``(C, *spatial)`` float32 on ``device`` (a GPU or RAM)."""

    def __init__(self, shape: Sequence[int], windows: _Windows, factors: Sequence[int]) -> None:
        self.total = torch.zeros(tuple(shape), dtype=torch.float32, device=windows.device)
        self.windows, self.factors = windows, factors

    def add(self, regions: Sequence[Region], values: torch.Tensor, event: Any = None) -> None:
        """Add output tiles ``(B, C, *tile)`` (on the accumulator's device), each times its window."""
        if event is not None:
            event.synchronize()
        for region, value in zip(regions, values, strict=True):
            target = self.total[(slice(None), *scale_region(region, self.factors))]
            target.addcmul_(value, self.windows(region))

    def finish(
        self, sums: Sequence[np.ndarray], out_range: tuple[np.ndarray, np.ndarray] | None
    ) -> tuple[torch.Tensor, Any]:
        """Divide by the summed windows and map back to the input range, in place; start the copy to
        the host. Returns the host tensor and an event to wait on (None on the CPU)."""
        total = self.total
        for axis, weights in enumerate(sums):
            shape = [1] * total.ndim
            shape[axis + 1] = -1
            total.div_(torch.from_numpy(weights.astype(np.float32)).to(total.device).view(shape))
        if out_range is not None:
            lo, hi = out_range
            shape = [-1] + [1] * (total.ndim - 1)
            total.mul_(torch.from_numpy(hi - lo).to(total.device).view(shape))
            total.add_(torch.from_numpy(lo).to(total.device).view(shape))
        return _to_host(total)


class _ZarrAccumulator:
    """The blended output of one plane on disk (for planes beyond the memory budget): a zarr array,
    created by the first ``add`` (in the writer thread, after the previous plane's is finished)."""

    def __init__(
        self,
        path: Path,
        shape: Sequence[int],
        chunks: Sequence[int],
        windows: WindowCache,
        factors: Sequence[int],
    ) -> None:
        self.path, self.shape, self.chunks = path, tuple(shape), tuple(chunks)
        self.windows, self.factors = windows, factors
        self.array: Any = None

    def add(self, regions: Sequence[Region], values: torch.Tensor, event: Any = None) -> None:
        if event is not None:
            event.synchronize()
        if self.array is None:
            self.array = zarr.create_array(
                store=str(self.path),
                shape=self.shape,
                chunks=self.chunks,
                dtype="float32",
                fill_value=0.0,
                compressors=None,
                overwrite=True,
            )
        for region, value in zip(regions, values.numpy(), strict=True):
            accumulate(self.array, scale_region(region, self.factors), value, self.windows(region))

    def finish(
        self,
        sink: Sink,
        labels: dict[str, int],
        geometry: OutputGeometry,
        sums: Sequence[np.ndarray],
        out_range: tuple[np.ndarray, np.ndarray] | None,
    ) -> None:
        """Normalise block by block and write each block to ``sink``."""
        for block in geometry.blocks():
            values = np.asarray(self.array[(slice(None), *block)]) / block_weights(sums, block)
            if out_range is not None:
                lo, hi = out_range
                shape = (-1, *([1] * len(block)))
                values = values * (hi - lo).reshape(shape) + lo.reshape(shape)
            sink.write(labels, block, values.astype(np.float32, copy=False))
        self.array = None
        import shutil

        shutil.rmtree(self.path, ignore_errors=True)


def _write_plane(sink: Sink, labels: dict[str, int], host: torch.Tensor, event: Any) -> None:
    if event is not None:
        event.synchronize()
    sink.write_plane(labels, host.numpy())


def _plan_memory(
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


def _prepare_net(net: nn.Module, device: torch.device, spatial_dims: int, compile_net: bool) -> nn.Module:
    """On CUDA, 2D models run channels-last (tensor cores read NHWC); ``compile_net`` wraps the net in
    ``torch.compile`` (static shapes: every batch is padded to the full batch size)."""
    if device.type == "cuda" and spatial_dims == 2:
        net = net.to(memory_format=torch.channels_last)
    if compile_net:
        return torch.compile(net, dynamic=False)  # type: ignore[return-value]
    return net


@contextlib.contextmanager
def _cudnn_benchmark(device: torch.device) -> Iterator[None]:
    """Let cuDNN pick the fastest convolutions for the (fixed) tile shape, for this call only."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


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
    tiles, overlaps = _check_options(model.spatial_dims, tile, overlap, window)
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
    layout = plan_layout(image, model.spatial_dims, model.in_channels, channel)
    spatial_in = layout.spatial_shape
    factors = (model.scale,) * 2 if model.spatial_dims == 2 else (1, model.scale, model.scale)
    try:
        grid = tile_grid(spatial_in, tiles, overlaps)
    except ValueError as err:  # an empty axis
        raise PredictionError(f"input {image.name} has spatial shape {list(spatial_in)}: {err}") from err
    with _reading(image.name):
        low, high = input_statistics(image, layout, model.percentiles, model.input_smoothing)
    out_range = _output_range(low, high, model.in_channels, model.out_channels)
    if denormalize and out_range is None:
        raise PredictionError(
            f"denormalize=true but the model maps {model.in_channels} input channels to {model.out_channels}:"
            " no input channel gives each output its intensity range; set denormalize=false"
        )
    geometry = _geometry(image, layout, model)
    sums = window_sums(spatial_in, tiles, overlaps, window, factors)
    scale_low = low.reshape(-1, *([1] * len(spatial_in)))
    scale_span = (high - low).reshape(scale_low.shape)
    planes = [tuple(int(i) for i in p) for p in layout.plane_indices()]
    n_planes = len(planes)
    batch = min(batch, len(grid))
    in_plane = 4 * model.in_channels * math.prod(spatial_in)
    out_plane = 4 * geometry.channels * math.prod(geometry.spatial_shape)
    whole, where = _plan_memory(budget, in_plane, out_plane, n_planes, device)

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
    net = _prepare_net(model.net, device, model.spatial_dims, bool(compile))
    setup = _PlaneSetup(
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
        _cudnn_benchmark(device),
    ):
        sink: Sink = (
            OmeZarrSink(staged.path, geometry, out_path.name, attributes)
            if fmt == "zarr"
            else TiffSink(staged.path, geometry)
        )
        try:
            tile_shape = (model.in_channels, *(s.stop - s.start for s in grid[0]))
            reader = _Reader(planes, grid, batch, tile_shape, read_plane, read_tile, device.type == "cuda")
            _run_pipeline(
                net, model, reader, layout, geometry, sink, setup, bool(tta), bool(compile), bar.advance, rate
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


@dataclass
class _PlaneSetup:
    """What every plane's accumulator needs."""

    where: str  # device, ram or disk
    windows: WindowCache
    factors: Sequence[int]
    sums: Sequence[np.ndarray]
    out_range: tuple[np.ndarray, np.ndarray] | None
    scratch: Path  # the on-disk accumulator
    device: torch.device

    tensor_windows: _Windows | None = None

    def accumulator(self, geometry: OutputGeometry) -> _TensorAccumulator | _ZarrAccumulator:
        shape = (geometry.channels, *geometry.spatial_shape)
        if self.where == "disk":
            chunks = (geometry.channels, *geometry.spatial_chunks)
            return _ZarrAccumulator(self.scratch, shape, chunks, self.windows, self.factors)
        if self.tensor_windows is None:
            on = self.device if self.where == "device" else torch.device("cpu")
            self.tensor_windows = _Windows(self.windows, on)
        return _TensorAccumulator(shape, self.tensor_windows, self.factors)


def _run_pipeline(
    net: nn.Module,
    model: LoadedModel,
    reader: _Reader,
    layout: Layout,
    geometry: OutputGeometry,
    sink: Sink,
    setup: _PlaneSetup,
    tta: bool,
    pad: bool,
    advance: Callable[[int], None],
    rate: _FrameRate,
) -> None:
    """The main thread's part: batches from the reader → device → network → accumulator; finished planes
    to the writer thread. Blending runs on the device for ``device`` accumulators, in the writer thread
    otherwise (one task at a time, in order, at most ``_PENDING`` behind)."""
    device = setup.device
    channels_last = device.type == "cuda" and model.spatial_dims == 2
    pending: deque[Future[None]] = deque()

    def submit(fn: Callable[..., None], *args: Any, limit: int = _PENDING) -> None:
        pending.append(writer.submit(fn, *args))
        while pending and (pending[0].done() or len(pending) > limit):
            pending.popleft().result()

    expected: tuple[int, ...] | None = None
    accumulator: _TensorAccumulator | _ZarrAccumulator | None = None
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="psr-predict-writer") as writer:
            try:
                for item in reader:
                    rate.start()
                    n = len(item.regions)
                    x = (item.buffer if pad else item.buffer[:n]).to(device, non_blocking=True)
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    values = infer(net, x, tta)[:n]
                    event = None
                    if device.type == "cuda":  # marks the end of the copy out of the buffer, and more
                        event = torch.cuda.Event()
                        event.record()
                    reader.release(item.buffer, event)
                    if expected is None:
                        out_tile = [
                            (s.stop - s.start) * f
                            for s, f in zip(item.regions[0], setup.factors, strict=True)
                        ]
                        expected = (model.out_channels, *out_tile)
                    if tuple(values.shape[1:]) != expected:
                        raise PredictionError(
                            f"the model maps a tile of shape {list(x.shape[1:])} to {list(values.shape[1:])};"
                            f" expected {list(expected)} (scale {model.scale})"
                        )
                    if accumulator is None:
                        accumulator = setup.accumulator(geometry)
                    if setup.where == "device":
                        accumulator.add(item.regions, values)
                    else:
                        submit(accumulator.add, item.regions, *_to_host(values))
                    advance(n)
                    if not item.last:
                        continue
                    labels = dict(zip(layout.plane_letters, item.plane, strict=True))
                    if isinstance(accumulator, _ZarrAccumulator):
                        submit(accumulator.finish, sink, labels, geometry, setup.sums, setup.out_range)
                    elif setup.where == "device":
                        while pending:  # the previous plane is written before this one is copied out
                            pending.popleft().result()
                        submit(_write_plane, sink, labels, *accumulator.finish(setup.sums, setup.out_range))
                    else:
                        submit(_finish_in_ram, accumulator, sink, labels, setup.sums, setup.out_range)
                    accumulator = None
                    rate.frame()
                while pending:
                    pending.popleft().result()
            finally:
                reader.close()
                while pending:  # after an error: drop what has not started, wait for what has
                    future = pending.popleft()
                    if not future.cancel():
                        future.exception()
    finally:
        reader.close()


def _finish_in_ram(
    accumulator: _TensorAccumulator,
    sink: Sink,
    labels: dict[str, int],
    sums: Sequence[np.ndarray],
    out_range: tuple[np.ndarray, np.ndarray] | None,
) -> None:
    host, event = accumulator.finish(sums, out_range)
    _write_plane(sink, labels, host, event)


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


_WATCHED_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr", *TIFF_SUFFIXES, *PICTURE_SUFFIXES, ".zarr")


def _image_stem(path: Path) -> str | None:
    """The name of an image file without its image suffix (``.ome.tif`` counts as one), or None for a
    file that is not an image prediction reads, or a hidden one (a temporary name)."""
    name = path.name
    if name.startswith("."):
        return None
    for suffix in _WATCHED_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def _signature(path: Path) -> tuple[int, int] | None:
    """Size and latest modification time (ns) of a file, or of every file in a zarr folder; None when
    it vanished meanwhile."""
    try:
        if path.is_dir():
            files = [f.stat() for f in path.rglob("*") if f.is_file()]
            return sum(f.st_size for f in files), max((f.st_mtime_ns for f in files), default=0)
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def watch_folder(
    model: LoadedModel,
    folder: str | Path,
    output: str | Path,
    *,
    suffix: str = ".tif",
    interval: float = 0.5,
    timeout: float = 60.0,
    axes: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Restore every image file that appears in ``folder`` into the folder ``output``, as it appears.

    A file (TIFF, PNG/JPEG, or a zarr folder; hidden names are ignored) is complete when its size and
    modification time are unchanged across two polls ``interval`` seconds apart; its restoration is
    written to ``output/<stem><suffix>`` (``.tif``, ``.ome.zarr``...) by ``predict_image`` with
    ``options``. Files already there when watching starts are restored too; one whose output exists is
    skipped unless ``overwrite``. A file that cannot be opened is waited for until it changes; one that
    cannot be predicted is logged and skipped (and retried if it changes). Watching stops after
    ``timeout`` seconds without a new or changing file, or on Ctrl-C. Returns a summary: files restored, frames, seconds spent predicting, frames/s, and each file's summary.
    """
    source = Path(folder).expanduser().absolute()
    target = Path(output).expanduser().absolute()
    if not source.is_dir():
        raise PredictionError(f"input {folder} is not a folder; watch=true watches a folder for new images")
    if target == source:
        raise PredictionError(
            f"output {output} is the watched folder; with watch=true pick another folder for the results"
        )
    output_format(f"image{suffix}")  # the suffix names an output format
    if target.exists() and not target.is_dir():
        raise PredictionError(f"output {output} is a file; with watch=true it must be a folder")
    target.mkdir(parents=True, exist_ok=True)
    overwrite = bool(options.pop("overwrite", False))
    previous: dict[Path, tuple[int, int] | None] = {}
    handled: dict[Path, tuple[int, int] | None] = {}
    results: list[dict[str, Any]] = []
    skipped: list[str] = []
    unreadable: dict[Path, str] = {}
    busy = 0.0
    frames = 0
    last_activity = time.monotonic()
    log.info("psr: watching %s for new images (stops after %g s without one, or Ctrl-C)", source, timeout)
    try:
        while True:
            current = {p: _signature(p) for p in sorted(source.iterdir()) if _image_stem(p) is not None}
            if any(previous.get(p) != sig and handled.get(p) != sig for p, sig in current.items()):
                last_activity = time.monotonic()
            for path, sig in current.items():
                if sig is None or handled.get(path) == sig or previous.get(path) != sig or sig[0] == 0:
                    continue  # gone, done, still changing (or first seen), or empty
                handled[path] = sig
                destination = target / f"{_image_stem(path)}{suffix}"
                if destination.exists() and not overwrite:
                    log.info(
                        "psr: %s already has %s; skipped (overwrite=true redoes it)", path.name, destination
                    )
                    skipped.append(str(path))
                    continue
                try:
                    image = open_input(path, axes)
                except Exception as err:  # noqa: BLE001 - a truncated file trips up readers in many ways
                    # not complete after all, or not an image: wait for it to change
                    log.info("psr: %s is not readable (yet); waiting for it to change: %s", path.name, err)
                    unreadable[path] = str(err)
                    continue
                unreadable.pop(path, None)
                started = time.perf_counter()
                try:
                    with image:
                        summary = predict_image(model, image, destination, overwrite=overwrite, **options)
                except PredictionError as err:
                    log.warning("psr: skipped %s: %s", path.name, err)
                    skipped.append(str(path))
                    continue
                finally:
                    busy += time.perf_counter() - started
                    last_activity = time.monotonic()
                results.append(summary)
                frames += int(summary["planes"])
                log.info(
                    "psr: restored %s → %s (%d frame(s) in %.2f s); %d file(s), %.2f frames/s",
                    path.name,
                    destination.name,
                    summary["planes"],
                    summary["seconds"],
                    len(results),
                    frames / busy if busy > 0 else float("inf"),
                )
            previous = current
            if time.monotonic() - last_activity > timeout:
                log.info("psr: no new image in %s for %g s; stopped watching", source, timeout)
                break
            time.sleep(interval)
    except KeyboardInterrupt:
        log.info("psr: stopped watching %s (Ctrl-C)", source)
    for path, reason in unreadable.items():
        log.warning("psr: skipped %s: %s", path.name, reason)
        skipped.append(str(path))
    return {
        "input": str(source),
        "output": str(target),
        "files": len(results),
        "skipped": skipped,
        "frames": frames,
        "seconds": round(busy, 3),
        "frames_per_second": frames / busy if busy > 0 else 0.0,
        "results": results,
    }
