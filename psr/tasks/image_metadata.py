"""Training records what its images are in every checkpoint: pixel size, unit and channel names.

``training_metadata`` reads them from the training images of a datamodule (the OME-Zarr metadata of an
ingested store: multiscales scale and unit, ``omero`` channel labels); ``RecordImageMetadata`` writes them
under ``psr_image`` (``psr.io.metadata``) when Lightning saves a checkpoint. Prediction and the napari
widget read them back (``LoadedModel.image``).
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from psr.io.metadata import CHECKPOINT_KEY, ImageMetadata, common
from psr.io.read_zarr import ref_metadata

log = logging.getLogger(__name__)


def training_metadata(datamodule: Any) -> ImageMetadata:
    """What the training images of ``datamodule`` (``train_sources``, each with a zarr ``ref`` and the
    ``channels`` it reads) share; empty for a datamodule without them or images without metadata."""
    found = []
    for source in getattr(datamodule, "train_sources", None) or []:
        ref = getattr(source, "ref", None)
        if ref is None:
            continue
        meta = ref_metadata(ref)
        names = meta.channel_names
        channels = tuple(getattr(source, "channels", ()) or ())
        if names and channels:
            names = tuple(names[c] for c in channels) if max(channels) < len(names) else ()
        found.append(ImageMetadata(meta.pixel_size, meta.unit, names))
    return common(found)


class RecordImageMetadata(Callback):
    """Store ``training_metadata`` of the trainer's datamodule in every checkpoint (``psr_image``)."""

    def __init__(self) -> None:
        self.metadata: ImageMetadata | None = None

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.metadata is None:
            self.metadata = training_metadata(getattr(trainer, "datamodule", None))
            if self.metadata.pixel_size:
                # a formatted string, not the mapping: some handlers turn a lone mapping argument into a
                # tuple of its keys, which the message's %s cannot take
                meta = self.metadata
                sizes = ", ".join(f"{axis} {size:g}" for axis, size in meta.pixel_size.items())
                channels = f"; channels {', '.join(meta.channel_names)}" if meta.channel_names else ""
                log.info(
                    "psr: checkpoints record the training images' pixel size %s %s%s",
                    sizes,
                    meta.unit or "(no unit)",
                    channels,
                )
        if self.metadata:
            checkpoint[CHECKPOINT_KEY] = self.metadata.to_dict()
