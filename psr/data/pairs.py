"""Real image pairs: a low-quality acquisition and its high-quality twin, from any format ``psr.io`` reads.

``list_images`` expands a file, a folder or a glob (or a list of them) into ``ImageFile`` records;
``match_pairs`` pairs the low and the high list by sorted order or by name; ``ImageFile.header`` gives the
shape and axes without reading pixels (files are opened through ``psr.io``'s reader table), and ``read_planes`` reads one image as a batch of planes
``(N, C, *spatial)`` float32 for a model with ``spatial_dims`` spatial axes.

Axes use one letter each (``psr.io.psr_axes``): ``c`` channel (a TIFF ``C`` or ``S`` axis, the colour of an RGB PNG), ``t``,
``z``, ``y``, ``x``, and ``q`` for any other axis (TIFF ``Q``, ``I``, ...). Axes that are neither channels
nor spatial become separate planes (samples) of the batch. Nothing here assumes RGB, 8 bits or 2D.
"""

from __future__ import annotations

import glob as globlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from psr.errors import DataError
from psr.io.formats import FILE_SUFFIXES, open_images
from psr.io.read_zarr import is_zarr as _is_zarr
from psr.io.source import Source
from psr.io.units import convert

if TYPE_CHECKING:
    from psr.io.omezarr import ImageRef

ChannelChoice = int | str | None


class PairError(DataError):
    """Bad pair input: a path that does not exist or matches nothing, mismatched lists or shapes."""


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.zarr", ".ome.tiff", ".ome.tif", ".zarr", *FILE_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


@dataclass(frozen=True)
class ImageFile:
    """One image: a PNG or TIFF file, or one image inside a zarr store (``ref``)."""

    path: Path
    ref: ImageRef | None = None

    @property
    def name(self) -> str:
        """The file's stem (``.ome.zarr`` and the like removed), plus the array path inside a zarr store."""
        if self.ref is not None and self.ref.array_path:
            return f"{_stem(self.path)}/{self.ref.array_path}"
        return _stem(self.path)

    @property
    def pixel_size(self) -> float | None:
        """The X pixel size (in micrometres where the file names its unit); ``None`` where it has none."""
        if self.ref is not None:
            return float(self.ref.pixel_size["x"]) if "x" in self.ref.pixel_size else None
        source = self._source()
        size = source.pixel_size.get("x")
        return convert(float(size), source.unit, "micrometer") if size is not None else None

    def _source(self) -> Source:
        try:
            return open_images(self.path)[0]
        except DataError as err:
            raise PairError(f"image {err}") from err

    def header(self) -> tuple[tuple[int, ...], str]:
        """Shape and axes (see the module docstring) without reading the pixels."""
        if self.ref is not None:
            return tuple(self.ref.shape), self.ref.axes
        source = self._source()
        return tuple(source.shape), source.axes

    def read(self) -> np.ndarray:
        """All pixels, axes as ``header()`` says (an RGBA or grey+alpha PNG loses its alpha band)."""
        if self.ref is not None:
            return np.asarray(self.ref.open()[...])
        try:
            with self._source() as source:
                return source.read()
        except (OSError, ValueError) as err:
            if isinstance(err, PairError):
                raise
            raise PairError(f"image {self.path} cannot be read ({type(err).__name__}: {err})") from err


def _expand(spec: str, key: str) -> list[ImageFile]:
    """One file, folder or glob into images, sorted by path."""
    path = Path(spec).expanduser()
    if any(ch in spec for ch in "*?["):
        matches = [Path(p) for p in sorted(globlib.glob(str(path)))]
        if not matches:
            raise PairError(
                f"{key}={spec} matches no file; expected an image file, a zarr store, a folder or a glob"
            )
        files: list[ImageFile] = []
        for match in matches:
            if _is_zarr(match) or match.suffix.lower() in FILE_SUFFIXES:
                files.extend(_expand(str(match), key))
        if not files:
            raise PairError(f"{key}={spec} matches no image file or zarr store ({len(matches)} other paths)")
        return files
    if not path.exists():
        raise PairError(
            f"{key}={spec} does not exist; expected an image file, a zarr store, a folder or a glob"
        )
    if _is_zarr(path):
        from psr.io.omezarr import discover_images  # ome-zarr only when there is zarr input

        try:
            return [ImageFile(path, ref) for ref in discover_images(path)]
        except (ValueError, FileNotFoundError) as err:
            raise PairError(f"{key}={spec}: {err}") from err
    if path.is_file():
        if path.suffix.lower() not in FILE_SUFFIXES:
            raise PairError(
                f"{key}={spec} is a {path.suffix or 'suffix-less'} file; expected one of {', '.join(FILE_SUFFIXES)} or zarr"
            )
        return [ImageFile(path)]
    files = []
    for child in sorted(path.iterdir()):
        if _is_zarr(child):
            files.extend(_expand(str(child), key))
        elif child.is_file() and child.suffix.lower() in FILE_SUFFIXES:
            files.append(ImageFile(child))
    if not files:
        raise PairError(f"{key}={spec} is a folder with no image file or zarr store")
    return files


def list_images(spec: str | Sequence[str], key: str = "pairs") -> list[ImageFile]:
    """Every image named by ``spec``: a file, a folder (its images, not recursive), a glob, or a list of
    those, in the order given (each entry sorted by path). ``key`` names the setting in error messages.

    Raises ``PairError`` for a path that does not exist or matches nothing.
    """
    specs = [spec] if isinstance(spec, str) else list(spec)
    if not specs:
        raise PairError(f"{key} is empty; expected a file, a folder or a glob")
    return [image for s in specs for image in _expand(str(s), key)]


def match_pairs(
    low: Sequence[ImageFile],
    high: Sequence[ImageFile],
    match: str = "order",
    strip: Sequence[str] = (),
    allow_unmatched: bool = False,
) -> tuple[list[tuple[str, ImageFile, ImageFile]], list[str]]:
    """Pair ``low`` with ``high``: ``(name, low, high)`` triples and the names left without a twin.

    ``match="order"`` pairs the two lists position by position (they must be equally long);
    ``match="stem"`` pairs images whose names are equal once every substring in ``strip`` is removed
    (e.g. ``["-lowsnr", "-highsnr"]``). Unpaired images are an error unless ``allow_unmatched``.
    """
    if match == "order":
        if len(low) != len(high):
            raise PairError(
                f"pairs.low matches {len(low)} images but pairs.high matches {len(high)}; matched by sorted order"
                " they must be as many (or set pairs.match=stem to pair them by name)"
            )
        pairs = [(_pair_name(lo, hi), lo, hi) for lo, hi in zip(low, high, strict=True)]
        _check_unique([name for name, _, _ in pairs])
        return pairs, []
    if match != "stem":
        raise PairError(f"pairs.match must be 'order' or 'stem', got {match!r}")

    def key(image: ImageFile) -> str:
        name = image.name
        for token in strip:
            name = name.replace(str(token), "")
        return name

    lows = _by_key(low, key, "pairs.low")
    highs = _by_key(high, key, "pairs.high")
    common = sorted(set(lows) & set(highs))
    unmatched = [f"low {lows[k].name}" for k in sorted(set(lows) - set(highs))] + [
        f"high {highs[k].name}" for k in sorted(set(highs) - set(lows))
    ]
    if not common:
        raise PairError(
            f"no name of pairs.low matches one of pairs.high (after removing pairs.strip={list(strip)}): e.g."
            f" low {low[0].name} and high {high[0].name}"
        )
    if unmatched and not allow_unmatched:
        raise PairError(
            f"{len(unmatched)} image(s) have no twin when matched by name: {', '.join(unmatched[:4])}; fix"
            " pairs.strip, or set pairs.allow_unmatched=true to evaluate the matched ones only"
        )
    return [(k, lows[k], highs[k]) for k in common], unmatched


def _by_key(images: Sequence[ImageFile], key, setting: str) -> dict[str, ImageFile]:  # noqa: ANN001
    out: dict[str, ImageFile] = {}
    for image in images:
        k = key(image)
        if k in out:
            raise PairError(
                f"{setting}: {out[k].path} and {image.path} have the same name '{k}' for matching"
            )
        out[k] = image
    return out


def _pair_name(low: ImageFile, high: ImageFile) -> str:
    """The low image's name, with its folder when files are only told apart by folder (raw.png, gt.png)."""
    if low.ref is None and low.path.parent.name:
        return f"{low.path.parent.name}/{low.name}"
    return low.name


def _check_unique(names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise PairError(f"two pairs are both named '{name}'; give the low images distinct names")
        seen.add(name)


def channel_header(
    shape: tuple[int, ...], axes: str, channel: ChannelChoice, source: str
) -> tuple[tuple[int, ...], str]:
    """Shape and axes after :func:`select_channel`, from the header alone (checks ``channel`` the same way)."""
    if channel is None:
        return tuple(shape), axes
    if isinstance(channel, str) and channel not in ("max", "mean"):
        raise PairError(f"pairs.channel must be null, an index, 'max' or 'mean', got {channel!r}")
    if "c" not in axes:
        if isinstance(channel, str):
            return tuple(shape), axes  # a single-channel image: max and mean change nothing
        raise PairError(
            f"image {source} has no channel axis (axes '{axes}'); pairs.channel={channel} cannot apply"
        )
    axis = axes.index("c")
    if not isinstance(channel, str) and not -shape[axis] <= int(channel) < shape[axis]:
        raise PairError(f"image {source} has {shape[axis]} channels; pairs.channel={channel} is out of range")
    return tuple(shape[:axis]) + tuple(shape[axis + 1 :]), axes.replace("c", "")


def select_channel(
    array: np.ndarray, axes: str, channel: ChannelChoice, source: str
) -> tuple[np.ndarray, str]:
    """Apply ``channel`` to the ``c`` axis: ``None`` keeps it, an index picks one, ``"max"``/``"mean"``
    reduce over it (the max over RGB turns a colour-lookup-table image back into intensities)."""
    _, rest = channel_header(tuple(array.shape), axes, channel, source)
    if channel is None or "c" not in axes:
        return array, axes
    axis = axes.index("c")
    if channel == "max":
        return array.max(axis=axis), rest
    if channel == "mean":
        return array.mean(axis=axis, dtype=np.float64), rest
    return np.take(array, int(channel), axis=axis), rest


def plane_layout(
    shape: tuple[int, ...], axes: str, spatial_dims: int, in_channels: int, source: str
) -> tuple[int, int, tuple[int, ...]]:
    """``(planes, channels, spatial shape)`` of an image of ``shape``/``axes`` for a model with
    ``spatial_dims`` spatial axes and ``in_channels`` input channels.

    With one input channel every channel becomes a plane of its own; otherwise the image's channel axis
    must hold exactly ``in_channels`` channels.
    """
    spatial = "zyx"[-spatial_dims:]
    missing = [a for a in spatial if a not in axes]
    if missing:
        raise PairError(
            f"image {source} has axes '{axes}' (shape {list(shape)}) but a {spatial_dims}D model needs axes '{spatial}'"
        )
    sizes = dict(zip(axes, shape, strict=True))
    channels = 1
    if in_channels > 1:
        if sizes.get("c") != in_channels:
            raise PairError(
                f"image {source} has {sizes.get('c', 1)} channel(s) (axes '{axes}') but the model takes"
                f" {in_channels}; pick pairs.channel or provide images with {in_channels} channels"
            )
        channels = in_channels
    planes = int(
        np.prod([n for a, n in sizes.items() if a not in spatial and not (a == "c" and in_channels > 1)])
    )
    return planes, channels, tuple(sizes[a] for a in spatial)


def read_planes(
    image: ImageFile, channel: ChannelChoice, spatial_dims: int, in_channels: int
) -> tuple[np.ndarray, list[str]]:
    """Read ``image`` as ``(N, C, *spatial)`` float32 planes and a label per plane (``""`` for a single
    plane, else e.g. ``"c=1"`` or ``"z=3,c=0"``).

    Raises ``PairError`` naming the file when its pixels are not intensities (bool, complex), hold NaN or
    Inf, or do not fit the model.
    """
    array = image.read()
    if np.dtype(array.dtype).kind in "bc":
        raise PairError(
            f"image {image.path} has {array.dtype} pixels; expected intensities (unsigned or signed integers"
            " such as uint8/uint16, or float32)"
        )
    shape, axes = image.header()
    if tuple(array.shape) != tuple(shape):  # PNG alpha dropped, palette expanded: trust the pixels
        axes = "yx" if array.ndim == 2 else "yxc"
    array, axes = select_channel(array, axes, channel, str(image.path))
    plane_layout(tuple(array.shape), axes, spatial_dims, in_channels, str(image.path))
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise PairError(f"image {image.path} holds {bad} NaN/Inf values; expected finite intensities")
    spatial = "zyx"[-spatial_dims:]
    keep_channels = in_channels > 1
    plane_axes = [a for a in axes if a not in spatial and not (a == "c" and keep_channels)]
    order = plane_axes + (["c"] if keep_channels else []) + list(spatial)
    array = np.transpose(array, [axes.index(a) for a in order])
    sizes = [array.shape[i] for i in range(len(plane_axes))]
    n_channels = in_channels if keep_channels else 1
    planes = array.reshape(-1, n_channels, *array.shape[len(order) - spatial_dims :])
    labels = [
        ",".join(f"{a}={i}" for a, i in zip(plane_axes, index, strict=True) if sizes[plane_axes.index(a)] > 1)
        for index in itertools.product(*(range(s) for s in sizes))
    ] or [""]
    return np.ascontiguousarray(planes), labels
