"""The prediction pipeline's three stages, so that the device never waits for the disk.

A reader thread reads the tiles of every plane into a ring of reusable batch buffers (pinned on CUDA); the
main thread copies each batch to the device and runs the network (``run_pipeline``); a writer thread
blends and writes. Each output tile, weighted by its blending window, is added into its plane's
accumulator: a tensor in memory (on the GPU with CUDA, in RAM on the CPU) or a zarr array on disk
(``PlaneSetup.where``). A finished plane is divided by the summed windows, optionally mapped back to the
input's intensity range, and handed to the output ``Sink`` while the next plane is computed.
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import threading
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

from psr.inference.checkpoint import LoadedModel
from psr.inference.errors import PredictionError
from psr.inference.forward import infer
from psr.inference.images import ModelAxes
from psr.inference.tiling import Region, WindowCache, accumulate, block_weights, scale_region, window_key
from psr.inference.writers import OutputGeometry, Sink

_BUFFERS = 3  # batch buffers in the reader's ring: one filling, one queued, one on its way to the device
_PENDING = 3  # writer tasks queued at most behind the network (each holds one batch of output tiles)


def _batches(items: Sequence[Region], size: int) -> list[Sequence[Region]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@dataclass
class _Batch:
    """A batch of tiles of one plane, read into ``buffer`` (its first ``len(regions)`` rows)."""

    plane: tuple[int, ...]
    regions: Sequence[Region]
    buffer: torch.Tensor  # (B, C, *tile), float32, on the host
    last: bool  # the plane's last batch


class Reader:
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
            for plane in self.planes:
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
                    if not self._put(_Batch(plane, regions, buffer, last)):
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
        shutil.rmtree(self.path, ignore_errors=True)


def _write_plane(sink: Sink, labels: dict[str, int], host: torch.Tensor, event: Any) -> None:
    if event is not None:
        event.synchronize()
    sink.write_plane(labels, host.numpy())


@dataclass
class PlaneSetup:
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


def run_pipeline(
    net: nn.Module,
    model: LoadedModel,
    reader: Reader,
    layout: ModelAxes,
    geometry: OutputGeometry,
    sink: Sink,
    setup: PlaneSetup,
    tta: bool,
    pad: bool,
    advance: Callable[[int], None],
    on_batch: Callable[[], None],
    on_frame: Callable[[], None],
) -> None:
    """The main thread's part: batches from the reader → device → network → accumulator; finished planes
    to the writer thread. Blending runs on the device for ``device`` accumulators, in the writer thread
    otherwise (one task at a time, in order, at most ``_PENDING`` behind). ``advance(n)`` is called after
    each batch of ``n`` tiles, ``on_batch()`` before it, ``on_frame()`` once a plane is handed over."""
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
                    on_batch()
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
                    on_frame()
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
