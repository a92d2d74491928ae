"""The napari plugin headless (Qt offscreen): the "Restore with psr" widget on a napari viewer model, and
the manifest's reader and dock widget in a ``napari.Viewer(show=False)`` where Qt can make an OpenGL
context (with an X server or xvfb-run; Qt's offscreen platform alone has none). Skipped where napari or a
Qt binding cannot be imported (install psr[napari])."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
try:
    import napari
    from napari.qt import get_qapp
    from qtpy.QtGui import QOpenGLContext
    from qtpy.QtWidgets import QApplication
except Exception as err:  # noqa: BLE001 - no napari, no Qt binding, or one that cannot load its libraries
    pytest.skip(
        f"napari with a Qt binding is not importable ({type(err).__name__}: {err})", allow_module_level=True
    )

from napari.components import ViewerModel  # noqa: E402

from psr.io.omezarr import write_ome_zarr_collection  # noqa: E402
from psr.napari.widget import RestoreWidget  # noqa: E402


@pytest.fixture
def viewer() -> Any:
    """A napari viewer model (layers, add_image, open) with a Qt application for the widgets; installed
    plugins discovered as a napari.Viewer discovers them (psr's through its napari.manifest entry point)."""
    from npe2 import PluginManager

    get_qapp()
    PluginManager.instance().discover()
    return ViewerModel()


def has_opengl() -> bool:
    get_qapp()
    return bool(QOpenGLContext().create())


def wait_idle(widget: RestoreWidget, timeout: float = 60.0) -> None:
    """Process Qt events until the widget's worker has finished (Restore is enabled again)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        QApplication.processEvents()
        if widget.run_button.enabled:
            return
        time.sleep(0.01)
    raise AssertionError("the restoration did not finish in time")


def make_widget(viewer: Any, checkpoint: Path, layer: Any) -> RestoreWidget:
    widget = RestoreWidget(viewer)
    widget.checkpoint.value = checkpoint
    widget.image.value = layer
    widget.tile.value, widget.overlap.value, widget.device.value = 32, 8, "cpu"
    return widget


def test_restore_adds_a_layer_at_the_finer_scale(viewer: Any, checkpoint: Path, image: np.ndarray) -> None:
    layer = viewer.add_image(image, name="cells", scale=(0.4, 0.4), translate=(5.0, 5.0))
    widget = make_widget(viewer, checkpoint, layer)
    assert widget.image.choices == (layer,)
    assert widget.start() is not None
    assert not widget.run_button.enabled and widget.cancel_button.enabled
    wait_idle(widget)
    restored = viewer.layers["cells (psr ×2)"]
    assert restored.data.shape == (90, 122) and restored.data.dtype == np.float32
    np.testing.assert_allclose(restored.scale, (0.2, 0.2))
    np.testing.assert_allclose(restored.translate, (4.9, 4.9))

    # the input's and the restoration's pixel edges span the same world box: [4.8, 22.8] × [4.8, 29.2]
    def edges(lay: Any) -> np.ndarray:
        shape = np.array(lay.data.shape)
        return np.stack([lay.translate - lay.scale / 2, lay.translate + (shape - 0.5) * lay.scale])

    np.testing.assert_allclose(edges(restored), edges(layer))
    np.testing.assert_allclose(edges(layer), [[4.8, 4.8], [22.8, 29.2]])
    assert widget.progress.value == widget.progress.max == 6
    assert widget.status.value.startswith("restored cells on cpu")


def test_a_layer_without_scale_takes_the_checkpoints_pixel_size(
    viewer: Any, checkpoint: Path, image: np.ndarray, tmp_path: Path
) -> None:
    """A plain image (napari's default scale of 1) and a checkpoint recording 0.05 µm training pixels
    (×2 model): the input layer takes 0.1 µm and the result 0.05 µm, so the two still overlay."""
    import torch

    from psr.io.metadata import CHECKPOINT_KEY, ImageMetadata

    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt[CHECKPOINT_KEY] = ImageMetadata({"y": 0.05, "x": 0.05}, "micrometer").to_dict()
    torch.save(ckpt, tmp_path / "sized.ckpt")
    layer = viewer.add_image(image, name="plain")
    widget = make_widget(viewer, tmp_path / "sized.ckpt", layer)
    widget.start()
    wait_idle(widget)
    restored = viewer.layers["plain (psr ×2)"]
    np.testing.assert_allclose(layer.scale, (0.1, 0.1))
    np.testing.assert_allclose(restored.scale, (0.05, 0.05))
    np.testing.assert_allclose(restored.translate, (-0.025, -0.025))
    assert widget.status.value.endswith("pixel size 0.1 micrometer from the checkpoint's training images")


def test_cancel_adds_nothing(viewer: Any, checkpoint: Path) -> None:
    big = np.random.default_rng(0).normal(100, 10, (640, 640)).astype(np.float32)
    layer = viewer.add_image(big, name="big")
    widget = make_widget(viewer, checkpoint, layer)
    widget.start()
    widget.cancel()
    wait_idle(widget)
    assert [lay.name for lay in viewer.layers] == ["big"]
    assert widget.status.value == "cancelled; nothing was added"
    assert widget.progress.value < widget.progress.max


def test_input_errors_are_one_status_line(viewer: Any, checkpoint: Path, tmp_path: Path) -> None:
    widget = RestoreWidget(viewer)
    assert widget.start() is None and widget.status.value == "error: no image layer; open an image first"
    layer = viewer.add_image(np.zeros((8, 8), np.float32), name="img")
    widget.image.reset_choices()
    widget.image.value = layer
    widget.checkpoint.value = tmp_path / "none.ckpt"
    assert widget.start() is None
    assert widget.status.value.startswith("error: checkpoint") and "does not exist" in widget.status.value


def test_the_manifest_reader_opens_a_store(viewer: Any, tmp_path: Path) -> None:
    image = np.arange(2 * 40 * 40, dtype=np.uint16).reshape(2, 40, 40)
    store = write_ome_zarr_collection(
        tmp_path / "set.ome.zarr", [image], "cyx", names=["a"], pixel_size={"y": 0.3, "x": 0.3}, levels=1
    )
    layers = viewer.open(str(store), plugin="psr")
    assert [lay.name for lay in layers] == [
        "set.ome.zarr/a channel 0",
        "set.ome.zarr/a channel 1",
    ]  # omero labels
    np.testing.assert_allclose(layers[0].scale, (0.3, 0.3))
    np.testing.assert_array_equal(np.asarray(layers[1].data), image[1])


@pytest.mark.skipif(not has_opengl(), reason="Qt cannot create an OpenGL context here (run under xvfb-run)")
def test_in_a_viewer_window_the_widget_docks_and_restores(checkpoint: Path, image: np.ndarray) -> None:
    window_viewer = napari.Viewer(show=False)
    try:
        layer = window_viewer.add_image(image, name="cells")
        _, widget = window_viewer.window.add_plugin_dock_widget("psr", "Restore with psr")
        assert isinstance(widget, RestoreWidget)
        widget.checkpoint.value = checkpoint
        widget.image.value = layer
        widget.tile.value, widget.overlap.value, widget.device.value = 32, 8, "cpu"
        widget.start()
        wait_idle(widget)
        assert window_viewer.layers["cells (psr ×2)"].data.shape == (90, 122)
    finally:
        window_viewer.close()


def test_the_widget_picks_the_viewers_current_layer(viewer: Any) -> None:
    first = viewer.add_image(np.zeros((8, 8), np.float32), name="first")
    second = viewer.add_image(np.ones((8, 8), np.float32), name="second")
    viewer.layers.selection.active = first
    widget = RestoreWidget(viewer)
    assert widget.image.value is first  # not simply the first or the newest layer: the selected one
    viewer.layers.selection.active = second
    assert widget.image.value is second
    viewer.add_points(np.zeros((1, 2)))  # a non-image layer becoming current leaves the choice alone
    assert widget.image.value is second
