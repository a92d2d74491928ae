"""Image input and output: one ``ImageSource`` interface over every readable format, one reader table by
suffix (``formats.FORMATS``), and one streaming OME-Zarr writer (``writer.OmeZarrWriter``).

Ingest, prediction and real pairs read through ``open_images``; ingest and prediction write through
``OmeZarrWriter``. Importing this package loads neither zarr's writer stack nor bioio.
"""

from psr.io.formats import FORMATS, Format, find_format, image_stem, is_image, open_image, open_images
from psr.io.source import BlockIndex, ImageSource, Source, psr_axes
from psr.io.units import convert, normalise_unit

__all__ = [
    "FORMATS",
    "Format",
    "ImageSource",
    "BlockIndex",
    "Source",
    "convert",
    "find_format",
    "image_stem",
    "is_image",
    "normalise_unit",
    "open_image",
    "open_images",
    "psr_axes",
]
