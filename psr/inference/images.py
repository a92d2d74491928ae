"""Input images for prediction, opened lazily through ``psr.io``, and how a model's axes map onto them.

``open_input`` opens any format of ``psr.io``'s reader table (TIFF / OME-TIFF / ImageJ, PNG / JPEG, zarr and
OME-Zarr, CZI / ND2 / LIF with the ``formats`` extra) and names its axes with the letters ``t c z y x``
(``q`` for an axis the file does not name). ``plan_model_axes`` matches those axes to a model: the spatial axes
a tile spans (``y x`` for 2D models, ``z y x`` for 3D ones), the channels it reads, and the planes
predicted one after the other (``t``, and ``z`` for a 2D model). Nothing reads more than a tile, except
``input_statistics``, which reads a strided subsample, as training does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from psr.errors import DataError
from psr.inference.checkpoint import LoadedModel
from psr.inference.errors import PredictionError
from psr.inference.tiling import Region
from psr.io import Source, find_format, open_images
from psr.io.metadata import ImageMetadata, agree
from psr.io.read_raster import SUFFIXES as PICTURE_SUFFIXES
from psr.io.read_tiff import SUFFIXES as TIFF_SUFFIXES
from psr.io.read_zarr import is_zarr

AXIS_LETTERS = "tczyx"
# Values per channel read to estimate percentiles: training's psr.data.zarr.STATS_SUBSAMPLE (a test keeps
# them equal). Not imported from there: that module loads Lightning, seconds that prediction never needs.
STATS_SUBSAMPLE = 1 << 22
__all__ = [
    "PICTURE_SUFFIXES",
    "TIFF_SUFFIXES",
    "InputImage",
    "ModelAxes",
    "open_input",
    "output_metadata",
    "plan_model_axes",
]
log = logging.getLogger(__name__)


@dataclass
class InputImage:
    """An image opened for reading: ``source`` (a ``psr.io`` image) with its axes as prediction names them.

    ``axes`` uses ``t c z y x``, and ``q`` for an axis the file leaves unnamed (``axes=...`` renames
    them). ``pixel_size`` holds the physical size of ``z``, ``y`` and ``x`` where the file records it, in
    ``unit``. Close it when done (it is a context manager).
    """

    source: Source
    axes: str = ""
    name: str = ""
    pixel_size: dict[str, float] = field(default_factory=dict)
    unit: str | None = None

    def __post_init__(self) -> None:
        self.axes = self.axes or self.source.axes
        self.name = self.name or self.source.where
        self.pixel_size = self.pixel_size or dict(self.source.pixel_size)
        self.unit = self.unit or self.source.unit

    @property
    def data(self) -> Any:
        """The open pixel reader (NumPy indexing): a memory-map-like reader or a zarr array."""
        return self.source.reader()

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.source.shape)

    @property
    def channel_names(self) -> tuple[str, ...]:
        return self.source.channel_names

    def close(self) -> None:
        self.source.close()

    def __enter__(self) -> InputImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def input_kind(path: Path) -> str:
    """The name of the input's format in ``psr.io``'s reader table; raises ``PredictionError``."""
    found = find_format(path)
    if found is None:
        raise PredictionError(
            f"input {path} has an unknown format; expected a .tif/.tiff, .png/.jpg image, a zarr array, an"
            " OME-Zarr image, or .czi/.nd2/.lif with the formats extra"
        )
    return found.name


def open_input(path: str | Path, axes: str | None = None) -> InputImage:
    """Open an image for prediction without reading its pixels (PNG / JPEG are read whole).

    ``axes`` renames the axes (``tyx``, ``zcyx``...: one letter of ``t c z y x`` per axis), for files
    that do not name them or name them wrongly. Raises ``PredictionError`` naming the file.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise PredictionError(
            f"input {path} does not exist; expected a TIFF, PNG/JPEG, zarr array or OME-Zarr image"
        )
    input_kind(path)
    try:
        sources = open_images(path)
    except DataError as err:
        raise PredictionError(f"input {err}") from err
    if len(sources) > 1 and is_zarr(path):
        names = ", ".join(s.where.removeprefix(f"{path}/") for s in sources[:4])
        raise PredictionError(
            f"input {path} holds {len(sources)} images ({names}{', ...' if len(sources) > 4 else ''}); pick"
            f" one, e.g. input={Path(sources[0].where).parent}"
        )
    image = InputImage(sources[0])
    if axes is not None:
        try:
            image.axes = _check_axes(str(axes), image)
        except PredictionError:
            image.close()
            raise
    return image


def _check_axes(axes: str, image: InputImage) -> str:
    letters = axes.strip().lower()
    if len(letters) != len(image.shape):
        raise PredictionError(
            f"axes={axes} has {len(letters)} letters but input {image.name} has {len(image.shape)} axes of"
            f" shape {list(image.shape)}"
        )
    bad = sorted({a for a in letters if a not in AXIS_LETTERS} | {a for a in letters if letters.count(a) > 1})
    if bad:
        raise PredictionError(
            f"axes={axes} is not a valid axis order: each of t, c, z, y, x at most once (found {', '.join(bad)})"
        )
    return letters


@dataclass(frozen=True)
class ModelAxes:
    """How a model reads an image: positions (in the image's axes) of its channel, plane and spatial axes.

    ``planes`` are predicted independently, one after the other (``t``; and ``z`` for a 2D model), in the
    order ``t`` then ``z``. ``fixed`` are unnamed axes of size 1, read at index 0.
    """

    axes: str
    shape: tuple[int, ...]
    channel_axis: int | None
    channels: tuple[int, ...]
    planes: tuple[int, ...]
    spatial: tuple[int, ...]
    fixed: tuple[int, ...]

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[a] for a in self.spatial)

    @property
    def plane_letters(self) -> str:
        return "".join(self.axes[a] for a in self.planes)

    @property
    def plane_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[a] for a in self.planes)

    def plane_indices(self) -> Iterator[tuple[int, ...]]:
        """Every plane, as indices along ``planes`` (one empty tuple when there is none)."""
        return iter(np.ndindex(*self.plane_shape)) if self.planes else iter([()])

    def _index(self, plane: Sequence[int] | None, spatial: Sequence[slice]) -> tuple[Any, ...]:
        index: list[Any] = [slice(None)] * len(self.shape)
        for a in self.fixed:
            index[a] = 0
        if plane is not None:
            for a, i in zip(self.planes, plane, strict=True):
                index[a] = int(i)
        for a, s in zip(self.spatial, spatial, strict=True):
            index[a] = s
        return tuple(index)

    def _channels_first(self, block: np.ndarray, kept: Sequence[int]) -> np.ndarray:
        """Reorder a block whose remaining axes are ``kept`` (image axis positions) to ``(C, *spatial)``."""
        order = ([self.channel_axis] if self.channel_axis is not None else []) + list(self.spatial)
        block = np.transpose(block, [list(kept).index(a) for a in order])
        if self.channel_axis is None:
            return block[None]
        if self.channels != tuple(range(block.shape[0])):
            block = block[list(self.channels)]
        return block

    def read(self, data: Any, plane: Sequence[int], region: Region) -> np.ndarray:
        """One tile ``(C, *region)`` of plane ``plane``, in the image's dtype."""
        block = np.asarray(data[self._index(plane, region)])
        kept = sorted(a for a in range(len(self.shape)) if a not in self.fixed and a not in self.planes)
        return self._channels_first(block, kept)

    def read_strided_planes(self, data: Any, step: int) -> np.ndarray:
        """Every plane, every ``step``-th pixel along the spatial axes: ``(C, *planes, *spatial)``."""
        block = np.asarray(data[self._index(None, [slice(None, None, step)] * len(self.spatial))])
        kept = sorted(a for a in range(len(self.shape)) if a not in self.fixed)
        order = ([self.channel_axis] if self.channel_axis is not None else []) + list(self.planes)
        order += list(self.spatial)
        block = np.transpose(block, [kept.index(a) for a in order])
        if self.channel_axis is None:
            return block[None]
        return block[list(self.channels)]


def _suggest_axes(axes: str, unknown: int, spatial_dims: int) -> str:
    letters = list(axes)
    options = [a for a in ("t", "z") if a not in axes]
    letters[unknown] = options[0] if options else "t"
    if spatial_dims == 3 and "z" not in axes:
        letters[unknown] = "z"
    return "".join(letters)


def plan_model_axes(
    image: InputImage, spatial_dims: int, in_channels: int, channel: int | Sequence[int] | None = None
) -> ModelAxes:
    """Match ``image``'s axes to a model with ``spatial_dims`` (2 or 3) and ``in_channels`` inputs.

    ``channel`` picks input channels (an index or a list) when the image has more than the model takes.
    Raises ``PredictionError`` (one sentence) for a dimensionality or channel count that does not fit.
    """
    axes, shape, name = image.axes, image.shape, image.name
    model = "2D model predicts (Y, X) planes" if spatial_dims == 2 else "3D model predicts (Z, Y, X) stacks"
    spatial_letters = "yx" if spatial_dims == 2 else "zyx"
    if spatial_dims == 3 and "z" not in axes:
        raise PredictionError(
            f"the {model} but input {name} has axes '{axes}' (shape {list(shape)}) and no z axis; use a 2D model"
            " for 2D images, or name a z axis with axes=..."
        )
    missing = [a for a in "yx" if a not in axes]
    if missing:
        raise PredictionError(
            f"input {name} has axes '{axes}' (shape {list(shape)}) and no {' or '.join(missing)} axis; name the"
            " axes with axes=... (e.g. axes=tyx)"
        )
    fixed: list[int] = []
    for i, a in enumerate(axes):
        if a in AXIS_LETTERS:
            continue
        if shape[i] == 1:
            fixed.append(i)
            continue
        raise PredictionError(
            f"the {model} but input {name} has axes '{axes}' (shape {list(shape)}): axis {i} of {shape[i]} is"
            f" neither t, z nor c, so there is no t or z axis to predict along; name the axes, e.g."
            f" axes={_suggest_axes(axes, i, spatial_dims)}"
        )
    channel_axis = axes.index("c") if "c" in axes else None
    n_channels = shape[channel_axis] if channel_axis is not None else 1
    if channel is not None:
        picked = (int(channel),) if isinstance(channel, int | np.integer) else tuple(int(c) for c in channel)
        bad = [c for c in picked if not 0 <= c < n_channels]
        if bad or not picked:
            raise PredictionError(
                f"channel={list(picked) if len(picked) != 1 else picked[0]} but input {name} has {n_channels}"
                f" channel(s), numbered 0 to {n_channels - 1}"
            )
    else:
        picked = tuple(range(n_channels))
    if len(picked) != in_channels:
        rgb = n_channels == 3 and axes.endswith("c")
        hint = ""
        if len(picked) > in_channels and channel is None:
            hint = f"; pick {in_channels} with channel=..." + (
                " (e.g. channel=0)" if in_channels == 1 else ""
            )
            if not rgb:
                hint += f", or name the axes with axes=... if axis {axes.index('c')} does not hold channels"
        found = f"{len(picked)} channel(s)" + (" (an RGB image)" if rgb else "")
        what = "picks" if channel is not None else "has"
        raise PredictionError(
            f"input {name} {what} {found} but the model expects {in_channels} (model.in_channels){hint}"
        )
    spatial = tuple(axes.index(a) for a in spatial_letters)
    planes = tuple(axes.index(a) for a in "tz" if a in axes and a not in spatial_letters)
    return ModelAxes(axes, shape, channel_axis, picked, planes, spatial, tuple(fixed))


def input_statistics(
    image: InputImage, layout: ModelAxes, percentiles: tuple[float, float], smoothing: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel low/high percentiles ``(C,)`` of the whole input from a strided subsample.

    About ``STATS_SUBSAMPLE`` values per channel, every ``step``-th pixel along the spatial axes, over all
    planes; each sampled plane smoothed by a Gaussian of ``smoothing`` pixels first (the checkpoint's
    ``data.input_smoothing``: ``psr.data.normalise.frame_range``, as evaluation and real-pair validation
    normalise raw frames). Raises ``PredictionError`` for NaN/Inf or a channel without dynamic range.
    """
    from psr.data.normalise import NormalisationError, frame_range

    per_channel = math.prod(layout.shape[a] for a in range(len(layout.shape)) if a != layout.channel_axis)
    step = max(1, math.ceil((per_channel / STATS_SUBSAMPLE) ** (1 / len(layout.spatial))))
    sample = layout.read_strided_planes(image.data, step)
    if not np.issubdtype(sample.dtype, np.floating):
        sample = sample.astype(np.float32)
    try:
        low, high = frame_range(sample, percentiles, smoothing, f"input {image.name}", layout.channels)
    except NormalisationError as err:
        raise PredictionError(str(err)) from err
    return low.astype(np.float32), high.astype(np.float32)


def _format_size(pixel: dict[str, float], unit: str | None) -> str:
    return ", ".join(f"{a}={pixel[a]:g}" for a in "zyx" if a in pixel) + f" {unit}"


def output_metadata(image: InputImage, layout: ModelAxes, model: LoadedModel) -> ImageMetadata:
    """The physical pixel size, unit and channel names of ``image`` restored by ``model``.

    The pixel size is the input's own, divided by the scale in Y and X; an input without one takes the
    size of the checkpoint's training images (``model.image``: the output grid); a warning is logged when
    the input's size disagrees with what the model was trained on. Without either, the output keeps the
    input's pixel grid as its unit (``1 / scale`` per output pixel, no unit), so overlays line up in
    viewers. Channel names are the input's (of the channels read) where the model keeps one output per
    input channel, else the checkpoint's where they name every output channel.
    """
    scale = model.scale
    own = {a: v for a, v in image.pixel_size.items() if a in "zyx"}
    trained = model.image
    unit: str | None
    if "y" in own or "x" in own:
        unit = image.unit
        expected = model.input_image.in_unit(unit)
        if trained.pixel_size and unit is not None and not agree(own, expected, "yx"):
            log.warning(
                "psr: input %s has pixel size %s but %s was trained for inputs of %s (its training images"
                " of %s, scale %d); a model restores best at the magnification it learnt",
                image.name,
                _format_size(own, unit),
                model.path.name,
                _format_size(expected, unit),
                _format_size(trained.in_unit(unit), unit),
                scale,
            )
        pixel = {a: v / scale if a in "yx" else v for a, v in own.items()}
    elif trained.pixel_size:
        pixel, unit = dict(trained.pixel_size), trained.unit
        log.info(
            "psr: input %s records no pixel size; the output takes the training images' %s from %s",
            image.name,
            _format_size(pixel, unit),
            model.path.name,
        )
    else:
        pixel, unit = {"y": 1.0 / scale, "x": 1.0 / scale}, None
    names = tuple(image.channel_names)
    picked = tuple(names[c] for c in layout.channels) if len(names) > max(layout.channels, default=0) else ()
    if picked and len(picked) == model.out_channels and model.in_channels == model.out_channels:
        channel_names = picked
    elif len(trained.channel_names) == model.out_channels:
        channel_names = trained.channel_names
    else:
        channel_names = ()
    return ImageMetadata(pixel, unit, channel_names)
