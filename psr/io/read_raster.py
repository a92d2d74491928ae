"""PNG and JPEG through Pillow: decoded whole (these formats cannot be read in parts).

Grey modes keep their bit depth (``L`` 8 bits, ``I;16`` 16 bits, ``I`` / ``F`` 32 bits); an alpha band is
transparency, not signal, and is dropped; every colour mode (RGB, RGBA, a palette, CMYK...) is read as RGB.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from psr.errors import DataError
from psr.io.source import BlockReader, Source

SUFFIXES = (".png", ".jpg", ".jpeg")
_GREY = {"1": "uint8", "L": "uint8", "LA": "uint8", "I;16": "uint16", "I;16B": "uint16", "I;16L": "uint16"}
_GREY |= {"I;16N": "uint16", "I": "int32", "F": "float32"}


def read_raster(path: Path, source: str) -> list[Source]:
    """One ``Source`` for a PNG / JPEG: axes ``YX`` (grey) or ``YXS`` (RGB)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode, (width, height) = im.mode, im.size
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{path}: not a readable PNG / JPEG ({err})") from None
    shape: tuple[int, ...]
    if mode in _GREY:
        axes, shape, dtype = "YX", (height, width), np.dtype(_GREY[mode])
    else:
        axes, shape, dtype = "YXS", (height, width, 3), np.dtype("uint8")

    @contextlib.contextmanager
    def open_raster() -> Iterator[BlockReader]:
        try:
            with Image.open(path) as im:
                decoded = (
                    im.convert("L") if mode in ("1", "LA") else im if mode in _GREY else im.convert("RGB")
                )
                array = np.asarray(decoded)
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: PNG / JPEG is truncated or corrupt ({err})") from None
        if array.shape != shape:
            raise DataError(f"{path}: decoded shape {array.shape} differs from the header's {shape}")
        yield array.astype(dtype, copy=False)  # blocks are views

    names = ("red", "green", "blue") if axes == "YXS" else ()
    return [Source(path, path.stem, axes, shape, dtype, {}, None, open_raster, names, source)]
