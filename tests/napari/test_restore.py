"""The widget's core without Qt: a checkpoint and an array in, psr's tiled prediction, array and scale out."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile

from psr.inference.errors import PredictionError
from psr.inference.predict import predict_file
from psr.napari.restore import RestoreCancelled, layer_axes, restore_array, restore_steps

OPTIONS = {"tile": 32, "overlap": 8, "batch_size": 2, "device": "cpu"}


def test_restores_like_psr_predict_with_the_scale_and_offset_of_the_finer_grid(
    checkpoint: Path, image: np.ndarray, tmp_path: Path
) -> None:
    """The array equals psr predict's output for the same image saved as a TIFF; the layer scale halves in
    Y and X and the offset puts the finer pixels inside the input's, so the layers overlay."""
    restored = restore_array(
        checkpoint, image, scale=(0.5, 0.25), translate=(10.0, -4.0), name="cells", **OPTIONS
    )
    tifffile.imwrite(tmp_path / "cells.tif", image)
    predict_file(checkpoint, tmp_path / "cells.tif", tmp_path / "cells_x2.tif", **OPTIONS)
    expected = tifffile.imread(tmp_path / "cells_x2.tif")
    assert restored.axes == "yx" and restored.data.shape == (90, 122) == expected.shape
    assert restored.data.dtype == np.float32
    np.testing.assert_allclose(restored.data, expected, rtol=1e-6, atol=1e-3)
    assert restored.scale == (0.25, 0.125)
    # input pixel 0 spans [9.75, 10.25] in Y; the first of its two output pixels is centred at 9.875
    assert restored.translate == pytest.approx((9.875, -4.0625))
    assert restored.summary["scale"] == 2 and restored.summary["device"] == "cpu"


def test_progress_counts_every_tile_once_and_ends_at_the_total(checkpoint: Path, image: np.ndarray) -> None:
    seen: list[tuple[int, int]] = []
    restore_array(checkpoint, image, progress=lambda done, total: seen.append((done, total)), **OPTIONS)
    totals = {total for _, total in seen}
    dones = [done for done, _ in seen]
    assert totals == {2 * 3}  # 45 × 61 px in 32-px tiles overlapping by 8: 2 × 3 tiles
    assert dones == sorted(dones) and dones[-1] == 6 and len(seen) == 3  # batches of 2


def test_a_stack_restores_plane_by_plane_with_z_kept(checkpoint: Path, image: np.ndarray) -> None:
    stack = np.stack([image, image[::-1]])
    restored = restore_array(checkpoint, stack, scale=(2.0, 0.5, 0.5), **OPTIONS)
    assert restored.axes == "zyx" and restored.data.shape == (2, 90, 122)
    assert restored.scale == (2.0, 0.25, 0.25)
    # planes share the stack's normalisation, and each plane lands at its own index
    swapped = restore_array(checkpoint, stack[::-1], **OPTIONS).data
    np.testing.assert_allclose(restored.data[1], swapped[0], atol=1e-3)
    assert not np.allclose(restored.data[0], restored.data[1], atol=1.0)


def test_cancel_stops_at_the_next_batch_and_leaves_no_temporary_output(
    checkpoint: Path, image: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    class CancelDuringFirstBatch(threading.Event):
        """Cancel pressed while the first batch ran: the restoration asks after each batch; setting the
        event from the test after the first progress event would race the (fast) restoration thread."""

        def is_set(self) -> bool:
            self.set()
            return True

    steps = restore_steps(checkpoint, image, CancelDuringFirstBatch(), **OPTIONS)
    first = next(steps)
    assert first == (2, 6)  # the first batch's progress arrives, then the restoration stops
    with pytest.raises(RestoreCancelled):
        for _ in steps:
            pass
    assert not list(tmp_path.iterdir())


def test_steps_yield_progress_then_return_the_restoration(checkpoint: Path, image: np.ndarray) -> None:
    steps = restore_steps(checkpoint, image, **OPTIONS)
    progress = []
    with pytest.raises(StopIteration) as end:
        while True:
            progress.append(next(steps))
    assert progress[-1] == (6, 6)
    assert end.value.value.data.shape == (90, 122)


def test_layers_that_do_not_fit_get_one_clear_error(checkpoint: Path) -> None:
    with pytest.raises(PredictionError, match="cannot be restored"):
        restore_array(checkpoint, np.zeros(16, np.float32), **OPTIONS)
    with pytest.raises(PredictionError, match="5 dimensions"):
        layer_axes(5)
    assert layer_axes(4) == "tzyx" and layer_axes(3, rgb=True) == "yxc"
    with pytest.raises(PredictionError, match="expects 1"):  # an RGB layer for a one-channel model
        restore_array(checkpoint, np.zeros((20, 20, 3), np.float32), rgb=True, **OPTIONS)


def test_a_layer_without_pixel_size_takes_the_checkpoints(
    checkpoint: Path, image: np.ndarray, tmp_path: Path
) -> None:
    """napari's default scale of 1 is no pixel size: the input takes the training images' (×2 coarser
    for this ×2 model) and the result their own, in micrometres; a layer with a scale keeps it."""
    import torch

    from psr.io.metadata import CHECKPOINT_KEY, ImageMetadata

    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt[CHECKPOINT_KEY] = ImageMetadata({"y": 0.05, "x": 0.05}, "micrometer", ("GFP",)).to_dict()
    torch.save(ckpt, tmp_path / "with_pixel_size.ckpt")
    restored = restore_array(tmp_path / "with_pixel_size.ckpt", image, **OPTIONS)
    assert restored.input_scale == (0.1, 0.1) and restored.unit == "micrometer"
    assert restored.scale == (0.05, 0.05) and restored.translate == pytest.approx((-0.025, -0.025))
    assert restored.summary["pixel_size"] == {"y": 0.05, "x": 0.05}
    kept = restore_array(tmp_path / "with_pixel_size.ckpt", image, scale=(0.2, 0.2), **OPTIONS)
    assert kept.input_scale is None and kept.unit is None and kept.scale == (0.1, 0.1)
    plain = restore_array(checkpoint, image, **OPTIONS)  # a checkpoint without pixel size
    assert plain.input_scale is None and plain.unit is None and plain.scale == (0.5, 0.5)
