"""The one interface every image reader gives: an ``ImageSource``, its metadata known before any pixel is read.

Axes are named twice: ``native_axes`` as the file names them (tifffile's ``TZCYXS``..., bioio's ``TCZYX``,
OME-Zarr's ``tczyx``), and ``axes`` in psr's letters ``t c z y x`` with ``q`` for an axis the file leaves
unnamed (a repeated letter, e.g. RGB samples of a multi-channel image, is ``q`` too). ``read(region)`` reads a
block with NumPy basic indexing (slices, with steps, and integers): a reader never holds more than the block,
except PNG / JPEG, which cannot be decoded in parts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

BlockIndex = tuple[slice | int, ...]  # NumPy basic indexing, one entry per axis
AXIS_LETTERS = "tczyx"
# native axis codes (tifffile, bioio) -> psr letters; S (samples, e.g. RGB) is a channel axis
_CODES = {"T": "t", "Z": "z", "C": "c", "S": "c", "Y": "y", "X": "x"}


def psr_axes(native: str) -> str:
    """``t c z y x`` letters for native axis codes; unknown or repeated codes become ``q``."""
    out = ""
    for code in native:
        letter = _CODES.get(code, code if code in AXIS_LETTERS else "q")
        out += "q" if letter != "q" and letter in out else letter
    return out


class BlockReader(Protocol):
    """Reads a block of an image in its own axes (NumPy basic indexing); an array-like with a shape and dtype."""

    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def dtype(self) -> Any: ...

    def __getitem__(self, index: Any) -> Any: ...


@runtime_checkable
class ImageSource(Protocol):
    """One image of a file or store: metadata without pixels, and ``read(region)`` for blocks."""

    @property
    def name(self) -> str: ...  # the image's name: the file stem, with a series / scene suffix
    @property
    def axes(self) -> str: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...
    @property
    def pixel_size(self) -> dict[str, float]: ...  # z / y / x where the file records it, in ``unit``
    @property
    def unit(self) -> str | None: ...  # an NGFF length unit name, or None
    @property
    def channel_names(self) -> tuple[str, ...]: ...  # empty where the file names none

    def read(self, region: BlockIndex | None = None) -> np.ndarray: ...


@dataclass(eq=False)
class Source:
    """An ``ImageSource`` made by a reader function: metadata plus an ``opener`` of its pixels.

    The pixels are opened on the first ``read`` and stay open until ``close`` (a context manager), so a
    converter or a tiled prediction reads many blocks through one open file.
    """

    path: Path  # the file or store
    name: str
    native_axes: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    pixel_size: dict[str, float]
    unit: str | None
    opener: Callable[[], contextlib.AbstractContextManager[BlockReader]] = field(repr=False)
    channel_names: tuple[str, ...] = ()
    source: str = ""  # the path as the user gave it (recorded by ingest)
    where: str = ""  # how messages name the image (the file, or store/array)
    _stack: contextlib.ExitStack | None = field(default=None, init=False, repr=False)
    _reader: BlockReader | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.source = self.source or str(self.path)
        self.where = self.where or str(self.path)

    @property
    def axes(self) -> str:
        return psr_axes(self.native_axes)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def reader(self) -> BlockReader:
        """The open pixel reader (opened now if it is not yet)."""
        if self._reader is None:
            stack = contextlib.ExitStack()
            self._reader = stack.enter_context(self.opener())
            self._stack = stack
        return self._reader

    def read(self, region: BlockIndex | None = None) -> np.ndarray:
        """The block ``region`` (the whole image for ``None``), in the file's dtype and axes."""
        index = region if region is not None else (slice(None),) * len(self.shape)
        return np.asarray(self.reader()[index])

    __getitem__ = read

    def close(self) -> None:
        stack, self._stack, self._reader = self._stack, None, None
        if stack is not None:
            stack.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ContiguousReader:
    """An uncompressed array stored contiguously in a file (C order): blocks are read with ``os.preadv``.

    A block is read as runs of contiguous bytes (e.g. one band of full rows per plane), straight into the
    result, so memory is bounded by the block and sequential reads stay fast. Integer indices read one
    position; slices with steps (a strided subsample) go through a memory map.
    """

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
        self.path, self.offset, self.shape, self.dtype = path, offset, shape, np.dtype(dtype)

    def __getitem__(self, index: Any) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        index = index + (slice(None),) * (len(self.shape) - len(index))
        slices = [slice(i, i + 1) if isinstance(i, int | np.integer) else i for i in index]
        ranges = [range(*sl.indices(n)) for sl, n in zip(slices, self.shape, strict=True)]
        if any(r.step != 1 for r in ranges):
            mapped = np.memmap(self.path, self.dtype, "r", self.offset, self.shape)
            return np.array(mapped[index])
        out = self._read(ranges)
        squeeze = tuple(k for k, i in enumerate(index) if isinstance(i, int | np.integer))
        return out.reshape([n for k, n in enumerate(out.shape) if k not in squeeze])

    def _read(self, ranges: Sequence[range]) -> np.ndarray:
        out = np.empty([len(r) for r in ranges], dtype=self.dtype)
        if out.size == 0:
            return out
        # the trailing axes read whole, plus one partial axis before them, form one contiguous run
        k = len(ranges) - 1
        while k > 0 and len(ranges[k]) == self.shape[k]:
            k -= 1
        strides = np.cumprod((self.shape[1:] + (1,))[::-1])[::-1] * self.dtype.itemsize
        run = out.reshape(*out.shape[:k], -1)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for lead in np.ndindex(*out.shape[:k]):
                start = (
                    self.offset
                    + sum((ranges[i][0] + lead[i]) * int(strides[i]) for i in range(k))
                    + ranges[k][0] * int(strides[k])
                )
                view = run[lead].data.cast("B")
                got = os.preadv(fd, [view], start)
                if got != view.nbytes:
                    raise OSError(
                        f"read {got} of {view.nbytes} bytes at offset {start}: the file is truncated"
                    )
        finally:
            os.close(fd)
        return out
