"""Training records its images' pixel size and unit in every checkpoint (``psr_image``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from psr.data.demo import DEMO_PIXEL_SIZE_UM
from psr.inference.checkpoint import load_checkpoint, read_checkpoint
from psr.io.metadata import CHECKPOINT_KEY


def test_a_trained_checkpoint_records_the_training_pixel_size(trained_checkpoint: Path) -> None:
    """The demo phantoms are written at DEMO_PIXEL_SIZE_UM; the RCAN ×4 expects inputs 4× coarser."""
    assert read_checkpoint(trained_checkpoint)[CHECKPOINT_KEY]["unit"] == "micrometer"
    model = load_checkpoint(trained_checkpoint)
    assert model.image.pixel_size == pytest.approx({"y": DEMO_PIXEL_SIZE_UM, "x": DEMO_PIXEL_SIZE_UM})
    assert model.input_image.pixel_size == pytest.approx(
        {"y": 4 * DEMO_PIXEL_SIZE_UM, "x": 4 * DEMO_PIXEL_SIZE_UM}
    )
