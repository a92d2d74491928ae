"""A big-endian TIFF reads as the same values as a little-endian one (uncompressed data is not copied raw)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from psr.io.formats import open_images


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_tiff_byte_order(tmp_path: Path, byteorder: str) -> None:
    values = (np.arange(6 * 7, dtype=np.uint16).reshape(6, 7) * 1031).astype(np.uint16)
    path = tmp_path / "image.tif"
    tifffile.imwrite(path, values, byteorder=byteorder)
    with open_images(path)[0] as source:
        read = source.read()
        block = source.read((slice(1, 4), slice(2, 5)))
    np.testing.assert_array_equal(read, values)
    np.testing.assert_array_equal(block, values[1:4, 2:5])
