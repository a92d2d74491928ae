"""Microscope formats through bioio and its reader plugins (the ``formats`` extra): CZI, ND2, LIF...

``bioio_reader(plugin)`` makes the reader function of one plugin. Each scene of a file is a ``Source`` with
bioio's ``TCZYX`` axes (``S`` for RGB samples), physical pixel sizes in micrometres (bioio's convention)
and the channel names; blocks are read lazily through bioio's dask array. A missing bioio or plugin is one
clear error naming the package and the extra that installs it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from psr.errors import DataError
from psr.io.source import BlockReader, Source

EXTRA = "pip install -e '.[formats]' in psr's checkout"


class MissingReaderError(DataError):
    """A format whose reader package is not installed."""


class _DaskReader:
    """Blocks of a bioio scene: only the chunks a block touches are read."""

    def __init__(self, array: Any) -> None:
        self.array = array
        self.shape = tuple(int(n) for n in array.shape)
        self.dtype = np.dtype(array.dtype)

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.asarray(self.array[index])


def _plugin(module: str, path: Path) -> Any:
    package = module.replace("_", "-")
    for needed in ("bioio", module):
        if importlib.util.find_spec(needed) is None:
            raise MissingReaderError(
                f"{path}: reading {path.suffix} files needs the {needed.replace('_', '-')} package"
                f" (with bioio and {package}), which is not installed; install the formats extra ({EXTRA})"
                f" or convert the file to OME-TIFF"
            )
    return importlib.import_module(module)


def read_bioio_with(module: str, path: Path, source: str) -> list[Source]:
    """The scenes of ``path`` read by the bioio plugin ``module`` (``bioio_czi``, ``bioio_nd2``...)."""
    plugin = _plugin(module, path)
    from bioio import BioImage

    try:
        image = BioImage(path, reader=plugin.Reader)
        scenes = list(image.scenes)
    except Exception as err:  # noqa: BLE001 - each plugin raises its own types for unreadable files
        raise DataError(f"{path}: not a readable {path.suffix} file ({type(err).__name__}: {err})") from None
    stem = path.name[: -len(path.suffix)].removesuffix(".ome")
    sources = []
    for k, scene in enumerate(scenes):
        try:
            image.set_scene(scene)
            sizes = image.physical_pixel_sizes
            order = str(image.dims.order)
            shape = tuple(int(n) for n in image.shape)
            dtype = np.dtype(image.dtype)
            names = tuple(str(c) for c in (image.channel_names or ()))
        except Exception as err:  # noqa: BLE001
            raise DataError(f"{path}: scene {scene!r} cannot be read ({type(err).__name__}: {err})") from None
        pixel = {
            ax: float(v)
            for ax, v in (("z", sizes.Z), ("y", sizes.Y), ("x", sizes.X))
            if v is not None and float(v) > 0 and ax.upper() in order
        }
        sources.append(
            Source(
                path=path,
                name=stem if len(scenes) == 1 else f"{stem}_s{k}",
                native_axes=order,
                shape=shape,
                dtype=dtype,
                pixel_size=pixel,
                unit="micrometer" if pixel else None,
                opener=_scene_opener(path, plugin, k),
                channel_names=names if all(names) and len(names) == _channels(order, shape) else (),
                source=source,
            )
        )
    return sources


def _channels(order: str, shape: tuple[int, ...]) -> int:
    return shape[order.index("C")] if "C" in order else 1


def _scene_opener(
    path: Path, plugin: Any, scene: int
) -> Callable[[], contextlib.AbstractContextManager[BlockReader]]:
    @contextlib.contextmanager
    def open_scene() -> Iterator[BlockReader]:
        from bioio import BioImage

        image = BioImage(path, reader=plugin.Reader)
        image.set_scene(scene)
        yield _DaskReader(image.dask_data)

    return open_scene


def bioio_reader(module: str) -> Callable[[Path, str], list[Source]]:
    """The reader function of one bioio plugin module, for the reader table."""

    def read(path: Path, source: str) -> list[Source]:
        return read_bioio_with(module, path, source)

    read.__name__ = f"read_{module}"
    return read
