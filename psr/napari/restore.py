"""The "Restore with psr" widget's core, without Qt or napari: a checkpoint and an array in, the restored
array and its layer scale out.

``restore_array`` runs psr's own tiled prediction (``psr.inference.predict.predict_image``: the
checkpoint's normalisation, blended tiles, the GPU pipeline when there is one, the result mapped back to
the input's intensity range) on an in-memory array and reads the result back. Progress and cancellation
come from the network itself: the generator is wrapped in a module that reports every forward pass
(tiles done) and raises ``RestoreCancelled`` at the next batch once asked to stop; prediction then removes
its temporary output. ``restore_steps`` runs it in a thread and yields ``(done, total)`` tiles, which is
what a napari thread worker wants.
"""

from __future__ import annotations

import contextlib
import math
import queue
import tempfile
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from psr.inference.checkpoint import LoadedModel, load_checkpoint
from psr.inference.errors import PredictionError
from psr.inference.images import InputImage, plan_model_axes
from psr.inference.predict import predict_image, resolve_device
from psr.inference.tiling import n_tiles
from psr.io.source import Source

__all__ = ["Restored", "RestoreCancelled", "layer_axes", "restore_array", "restore_steps"]

Progress = Callable[[int, int], None]
"""``progress(done, total)``: tile evaluations done out of the total (8 per tile with ``tta``)."""


class RestoreCancelled(Exception):
    """The restoration was asked to stop; nothing was produced."""


@dataclass
class Restored:
    """A restoration ready to be a napari layer: ``data`` in the input layer's axis order (a channel
    axis only where the input had one), its per-axis ``scale`` and ``translate`` in the input layer's
    world units (so the two overlay pixel for pixel), and psr's prediction summary.

    ``unit`` is the physical unit of the scale where one is known; ``input_scale`` is set when the input
    layer had no physical scale (napari's default of 1) and the checkpoint's training images supplied
    it: the scale the input layer should take for the two to overlay."""

    data: np.ndarray
    axes: str
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    summary: dict[str, Any] = field(default_factory=dict)
    unit: str | None = None
    input_scale: tuple[float, ...] | None = None


def layer_axes(ndim: int, spatial_dims: int = 2, rgb: bool = False) -> str:
    """Axis letters for a napari layer of ``ndim`` dimensions: the last two are ``yx`` (``yxc`` for an
    RGB layer), a 3D model's third from last is ``z``; leading axes are ``z`` then ``t``, innermost first."""
    letters = ["y", "x"]
    rest = ndim - 2 - (1 if rgb else 0)
    leading = ["z", "t"]
    if rest < 0 or rest > len(leading):
        raise PredictionError(
            f"a layer of {ndim} dimensions{' (RGB)' if rgb else ''} cannot be restored; expected (Y, X) planes"
            " with at most a Z and a T axis in front"
        )
    if spatial_dims == 3 and rest == 0:
        raise PredictionError(
            f"the model is 3D (Z, Y, X) but the layer has {ndim} dimensions; use a 2D model"
        )
    axes = "".join(reversed(leading[:rest])) + "".join(letters)
    return axes + ("c" if rgb else "")


class _Watched(nn.Module):
    """The generator, reporting the tiles of every forward pass and stopping when asked."""

    def __init__(self, net: nn.Module, on_batch: Callable[[int], None]) -> None:
        super().__init__()
        self.net = net
        self.on_batch = on_batch
        for name in ("scale", "in_channels", "out_channels", "spatial_dims"):
            if hasattr(net, name):
                setattr(self, name, getattr(net, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        self.on_batch(int(x.shape[0]))
        return y


def _model(ckpt: str | Path | LoadedModel, device: str | torch.device) -> LoadedModel:
    if isinstance(ckpt, LoadedModel):
        return ckpt
    return load_checkpoint(ckpt, resolve_device(device))


def restore_array(
    ckpt: str | Path | LoadedModel,
    data: Any,
    *,
    axes: str | None = None,
    scale: Sequence[float] | None = None,
    translate: Sequence[float] | None = None,
    name: str = "image",
    rgb: bool = False,
    device: str | torch.device = "auto",
    tile: int | Sequence[int] = 256,
    overlap: int | Sequence[int] = 32,
    batch_size: int | str = "auto",
    tta: bool = False,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Restored:
    """Restore ``data`` (an array-like, e.g. a napari layer's data) with the checkpoint ``ckpt``.

    ``axes`` names ``data``'s axes (``t c z y x``; default ``layer_axes``, with ``rgb`` for a napari RGB
    layer), ``scale`` and ``translate`` its layer's world scale and offset per axis (default 1 and 0).
    A layer whose spatial scale is napari's default of 1 takes the pixel size the checkpoint's training
    images had (``LoadedModel.input_image``: ``scale`` times coarser in Y and X), so the result has a
    physical scale (``Restored.unit``, ``Restored.input_scale``). Raises ``CheckpointError`` or
    ``PredictionError`` (one sentence) for a checkpoint or an image that does not fit, and
    ``RestoreCancelled`` when ``cancelled()`` turns true (checked after every batch of tiles).
    """
    model = _model(ckpt, device)
    array = data if hasattr(data, "shape") and hasattr(data, "__getitem__") else np.asarray(data)
    ndim = len(array.shape)
    axes = (axes or layer_axes(ndim, model.spatial_dims, rgb)).lower()
    if len(axes) != ndim or len(set(axes)) != ndim or set(axes) - set("tczyx"):
        raise PredictionError(
            f"axes '{axes}' do not name the {ndim} axes of {name}; expected letters of tczyx"
        )
    scale = tuple(float(s) for s in (scale if scale is not None else (1.0,) * ndim))
    translate = tuple(float(t) for t in (translate if translate is not None else (0.0,) * ndim))
    if len(scale) != ndim or len(translate) != ndim:
        raise PredictionError(f"{name}: scale and translate need {ndim} values, one per axis")
    trained = model.input_image
    spatial = [i for i, a in enumerate(axes) if a in trained.pixel_size]
    input_scale: tuple[float, ...] | None = None
    if spatial and all(scale[i] == 1.0 for i, a in enumerate(axes) if a in "zyx"):
        scale = tuple(trained.pixel_size.get(a, s) for a, s in zip(axes, scale, strict=True))
        input_scale = scale
    source = Source(
        Path(name),
        name,
        axes,
        tuple(int(n) for n in array.shape),
        np.dtype(array.dtype),
        {},
        None,
        lambda: contextlib.nullcontext(array),
    )
    image = InputImage(source, axes=axes, name=name)
    layout = plan_model_axes(image, model.spatial_dims, model.in_channels)
    planes = math.prod(layout.plane_shape)
    total = planes * n_tiles(layout.spatial_shape, tile, overlap) * (8 if tta else 1)
    done = 0

    def on_batch(tiles: int) -> None:
        nonlocal done
        done += tiles
        if progress is not None:
            progress(min(done, total), total)
        if cancelled is not None and cancelled():
            raise RestoreCancelled(f"restoring {name} was cancelled")

    watched = LoadedModel(_Watched(model.net, on_batch), model.config, model.path, model.image)
    with tempfile.TemporaryDirectory(prefix="psr-napari-") as tmp:
        output = Path(tmp) / "restored.ome.zarr"
        summary = predict_image(
            watched, image, output, tile=tile, overlap=overlap, batch_size=batch_size, tta=tta
        )
        import zarr

        level0 = zarr.open_array(str(output), path="0", mode="r")
        restored = np.asarray(level0[...])
    out_axes = str(summary["output_axes"])
    order = [out_axes.index(a) for a in axes if a in out_axes]
    extra = [i for i, a in enumerate(out_axes) if a not in axes]  # a channel axis the model added
    restored = np.transpose(restored, extra + order)
    result_axes = "".join(out_axes[i] for i in extra + order)
    factors = {"y": model.scale, "x": model.scale}
    by_axis = dict(zip(axes, zip(scale, translate, strict=True), strict=True))
    out_scale, out_translate = [], []
    for a in result_axes:
        s, t = by_axis.get(a, (1.0, 0.0))
        f = factors.get(a, 1)
        out_scale.append(s / f)
        # The first output pixel's centre: the input pixel's edge plus half an output pixel.
        out_translate.append(t - 0.5 * s + 0.5 * s / f)
    unit = trained.unit if input_scale is not None else None  # a layer scale has no unit of its own
    return Restored(restored, result_axes, tuple(out_scale), tuple(out_translate), summary, unit, input_scale)


def restore_steps(
    ckpt: str | Path | LoadedModel, data: Any, stop: threading.Event | None = None, **options: Any
) -> Generator[tuple[int, int], None, Restored]:
    """``restore_array`` in a thread: yields ``(done, total)`` tiles as they finish and returns the
    ``Restored`` (``value`` of the ``StopIteration``). Setting ``stop``, or closing the generator, cancels
    the restoration at its next batch and raises ``RestoreCancelled``; errors of the restoration are
    raised here."""
    stop = stop if stop is not None else threading.Event()
    events: queue.Queue[tuple[str, Any]] = queue.Queue()

    def work() -> None:
        try:
            result = restore_array(
                ckpt,
                data,
                progress=lambda done, total: events.put(("progress", (done, total))),
                cancelled=stop.is_set,
                **options,
            )
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which raises it
            events.put(("error", err))
        else:
            events.put(("done", result))

    thread = threading.Thread(target=work, name="psr-napari-restore", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = events.get()
            if kind == "progress":
                yield value
            elif kind == "error":
                raise value
            else:
                return value
    finally:
        stop.set()
        thread.join()
