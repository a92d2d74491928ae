"""Where a prediction goes: an OME-Zarr image or an ImageJ TIFF, written block by block, atomically.

``StagedOutput`` stages everything (the output and prediction's scratch arrays) in a temporary folder
beside the output and renames the output into place only when it is complete; on any failure the folder
is removed, so nothing that looks finished is left behind. ``OmeZarrSink`` (a pyramid, through
``psr.io.writer``) and ``TiffSink`` take finished blocks ``(C, *block)`` of one plane and write them where
they belong: neither ever holds the image.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import zarr

from psr.atomic import durable_replace
from psr.inference.errors import PredictionError
from psr.inference.tiling import Region
from psr.io.units import IMAGEJ_UNITS

CHUNK_2D = (1024, 1024)
CHUNK_3D = (8, 512, 512)


def output_format(path: str | Path) -> str:
    """``zarr`` (``.ome.zarr``, ``.zarr``) or ``tiff`` (``.tif``, ``.tiff``) from the output's name."""
    name = Path(path).name.lower()
    if name.endswith(".zarr"):
        return "zarr"
    if name.endswith((".tif", ".tiff")):
        return "tiff"
    raise PredictionError(
        f"output={path} has an unknown format; expected a name ending in .ome.zarr, .zarr, .tif or .tiff"
    )


@dataclass(frozen=True)
class OutputGeometry:
    """The output image: axes in NGFF order (a subset of ``tczyx``), shape, and physical pixel size.

    ``spatial`` names the axes a tile spans (``yx`` or ``zyx``); the other non-channel axes are planes.
    ``channel_names`` name the output channels (empty, or one per channel).
    """

    axes: str
    shape: tuple[int, ...]
    spatial: str
    pixel_size: dict[str, float]
    unit: str | None
    channel_names: tuple[str, ...] = ()

    @property
    def channels(self) -> int:
        return self.shape[self.axes.index("c")] if "c" in self.axes else 1

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[self.axes.index(a)] for a in self.spatial)

    @property
    def chunks(self) -> tuple[int, ...]:
        """Chunks of the output array: one plane and one channel each; blocks of the spatial axes."""
        sizes = dict(zip(self.spatial, self.spatial_chunks, strict=True))
        return tuple(sizes.get(a, 1) for a in self.axes)

    @property
    def spatial_chunks(self) -> tuple[int, ...]:
        target = CHUNK_2D if len(self.spatial) == 2 else CHUNK_3D
        return tuple(min(t, n) for t, n in zip(target, self.spatial_shape, strict=True))

    def blocks(self) -> list[Region]:
        """The chunk grid of the spatial axes: prediction is normalised and written one block at a time."""
        regions: list[Region] = [()]
        for n, c in zip(self.spatial_shape, self.spatial_chunks, strict=True):
            regions = [(*r, slice(s, min(s + c, n))) for r in regions for s in range(0, n, c)]
        return regions

    def index(self, plane: Mapping[str, int], region: Region) -> tuple[Any, ...]:
        """The index of a block ``(C, *region)`` of plane ``plane`` in the output array."""
        spatial = dict(zip(self.spatial, region, strict=True))
        return tuple(
            slice(None) if a == "c" else spatial[a] if a in spatial else int(plane[a]) for a in self.axes
        )


class Sink(Protocol):
    def write(self, plane: Mapping[str, int], region: Region, values: np.ndarray) -> None: ...

    def write_plane(self, plane: Mapping[str, int], values: np.ndarray) -> None: ...

    def close(self) -> None: ...


def _whole(geometry: OutputGeometry) -> Region:
    return tuple(slice(0, n) for n in geometry.spatial_shape)


def _pwrite_all(fd: int, data: np.ndarray, offset: int) -> None:
    """Write a C-contiguous array's bytes at ``offset``, without a copy, however large (``pwrite`` may
    write less than asked)."""
    view = np.ascontiguousarray(data).reshape(-1).view(np.uint8).data
    while view.nbytes:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class OmeZarrSink:
    """An OME-Zarr image (NGFF 0.5, zarr v3, zstd) written block by block through ``psr.io.writer``.

    ``levels`` resolution levels (``0``, ``1``...; ``None``: enough for Y and X to shrink to 256 pixels,
    one for small outputs) are built while streaming; ``close`` adds the ``omero`` channel metadata
    (``channel_names`` when given, else the geometry's, one per output channel).
    """

    def __init__(
        self,
        path: Path,
        geometry: OutputGeometry,
        name: str,
        attributes: Mapping[str, Any] | None = None,
        levels: int | None = None,
        channel_names: Sequence[str] = (),
    ) -> None:
        from psr.io.writer import OmeZarrWriter, auto_levels

        self.geometry = geometry
        self.writer = OmeZarrWriter(
            zarr.open_group(str(path), mode="w", zarr_format=3),
            geometry.axes,
            geometry.shape,
            "float32",
            name=name,
            levels=levels if levels is not None else auto_levels(geometry.shape, geometry.axes),
            chunks=geometry.chunks,
            pixel_size=geometry.pixel_size,
            unit=geometry.unit,
            path="{}",
            attributes=attributes,
            channel_names=channel_names or geometry.channel_names,
        )
        self.array = self.writer.arrays[0]
        self.closed = False

    def write(self, plane: Mapping[str, int], region: Region, values: np.ndarray) -> None:
        spatial = dict(zip(self.geometry.spatial, region, strict=True))
        where = {
            a: spatial[a] if a in spatial else slice(int(plane[a]), int(plane[a]) + 1)
            for a in self.geometry.axes
            if a != "c"
        }
        shape = [values.shape[0] if a == "c" else where[a].stop - where[a].start for a in self.geometry.axes]
        self.writer.write(where, values.reshape(shape))

    def write_plane(self, plane: Mapping[str, int], values: np.ndarray) -> None:
        """A whole plane ``(C, *spatial)`` in one call: zarr compresses and stores its chunks concurrently."""
        self.write(plane, _whole(self.geometry), values)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()


class TiffSink:
    """A float32 ImageJ hyperstack TIFF (axes ``TZCYX``, contiguous), written row by row at its offsets.

    tifffile lays out the file (header, pages, ImageJ description with unit and Z spacing, X/Y resolution
    in pixels per unit, channel names as slice labels) with the pixel data contiguous and still empty;
    each finished block is then written in place with ``pwrite``, so the image is never held in memory.
    """

    def __init__(self, path: Path, geometry: OutputGeometry) -> None:
        import tifffile

        self.geometry = geometry
        self.order = "".join(a for a in "tzcyx" if a in geometry.axes)  # ImageJ's axis order
        self.shape = tuple(geometry.shape[geometry.axes.index(a)] for a in self.order)
        metadata: dict[str, Any] = {"axes": self.order.upper()}
        kwargs: dict[str, Any] = {}
        px = geometry.pixel_size
        if geometry.unit and "x" in px and "y" in px:
            metadata["unit"] = IMAGEJ_UNITS.get(geometry.unit, geometry.unit)
            kwargs["resolution"] = (1.0 / px["x"], 1.0 / px["y"])
            if "z" in px:
                metadata["spacing"] = px["z"]
        if geometry.channel_names and len(geometry.channel_names) == geometry.channels:
            pages = math.prod(n for a, n in zip(self.order, self.shape, strict=True) if a in "tz")
            metadata["Labels"] = list(geometry.channel_names) * pages  # one per page, channels innermost
        result = tifffile.imwrite(
            path,
            data=None,
            shape=self.shape,
            dtype="float32",
            byteorder="<",
            imagej=True,
            metadata=metadata,
            returnoffset=True,
            **kwargs,
        )
        if result is None:
            raise PredictionError(f"output={path}: tifffile could not lay out a contiguous ImageJ TIFF")
        self.offset = int(result[0])
        self.strides = [int(np.prod(self.shape[i + 1 :])) * 4 for i in range(len(self.shape))]
        self.fd = os.open(path, os.O_WRONLY)

    def write(self, plane: Mapping[str, int], region: Region, values: np.ndarray) -> None:
        spatial = dict(zip(self.geometry.spatial, region, strict=True))
        data = np.ascontiguousarray(values, dtype="<f4")  # (C, *region)
        lead = ("c" + self.geometry.spatial)[:-2]  # the axes above the rows: c, and z for 3D models
        y, x = spatial["y"], spatial["x"]
        full_rows = x.start == 0 and x.stop == self.shape[-1]
        for idx in np.ndindex(*data.shape[: len(lead)]):
            start = {**{a: int(i) for a, i in plane.items()}, "y": y.start, "x": x.start}
            for a, i in zip(lead, idx, strict=True):
                start[a] = i + (spatial[a].start if a in spatial else 0)
            block = data[idx]
            if full_rows:  # whole rows are one contiguous run of bytes
                _pwrite_all(self.fd, block, self._offset(start))
                continue
            for row in range(block.shape[0]):
                _pwrite_all(self.fd, block[row], self._offset({**start, "y": y.start + row}))

    def write_plane(self, plane: Mapping[str, int], values: np.ndarray) -> None:
        """A whole plane ``(C, *spatial)``: one contiguous write per channel (and z)."""
        self.write(plane, _whole(self.geometry), values)

    def _offset(self, start: Mapping[str, int]) -> int:
        return self.offset + sum(
            int(start.get(a, 0)) * s for a, s in zip(self.order, self.strides, strict=True)
        )

    def close(self) -> None:
        if self.fd >= 0:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1


class StagedOutput:
    """Stage an output in a temporary folder beside it; rename it into place only when it is complete.

    ``with StagedOutput(path, overwrite) as staged:`` creates ``.<name>.tmp-<id>/`` (and missing parent
    folders); write to ``staged.path`` and scratch data under ``staged.work``, then call
    ``staged.commit()``. Leaving the block without a commit (an error, Ctrl-C) removes the folder and any
    parent folder it created.
    """

    def __init__(self, path: str | Path, overwrite: bool = False) -> None:
        self.final = Path(path).expanduser().absolute()
        self.overwrite = overwrite
        self._created: list[Path] = []
        self.work = self.final.parent / f".{self.final.name}.tmp-{uuid.uuid4().hex[:8]}"
        self.path = self.work / self.final.name
        self.check()

    def check(self) -> None:
        """Refuse an existing output (unless ``overwrite``) and a location that cannot hold one."""
        if self.final.exists() and not self.overwrite:
            raise PredictionError(
                f"output {self.final} already exists; pass overwrite=true to replace it, or pick another name"
            )
        if self.final.exists() and self.final.is_dir() != (output_format(self.final) == "zarr"):
            raise PredictionError(
                f"output {self.final} exists and is not a {output_format(self.final)} output"
            )
        ancestor = self.final.parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise PredictionError(
                f"output {self.final} cannot be written: {ancestor} is a file, not a folder"
            )

    def __enter__(self) -> StagedOutput:
        missing: list[Path] = []
        parent = self.final.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        try:
            for folder in reversed(missing):
                folder.mkdir()
                self._created.append(folder)
            self.work.mkdir()
        except OSError as err:
            self._remove_created()
            raise PredictionError(
                f"output {self.final} cannot be written: folder {self.final.parent} is not writable"
                f" ({err.strerror or type(err).__name__})"
            ) from err
        return self

    def commit(self) -> Path:
        """Move the finished output into place (replacing an old one when allowed) and clean up."""
        aside = self.work / f"replaced-{self.final.name}"
        if self.final.exists():
            os.replace(self.final, aside)
        try:
            durable_replace(self.path, self.final)
        except OSError:
            if aside.exists():
                os.replace(aside, self.final)
            raise
        shutil.rmtree(self.work, ignore_errors=True)
        self._created.clear()
        return self.final

    def _remove_created(self) -> None:
        for folder in reversed(self._created):
            try:
                folder.rmdir()
            except OSError:
                break
        self._created.clear()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.work.exists():
            shutil.rmtree(self.work, ignore_errors=True)
        self._remove_created()
