"""The "Restore with psr" dock widget: pick a checkpoint and an image layer, restore it in a napari thread
worker (progress bar, Cancel), and add the result as a new layer at the right scale.

The work is ``psr.napari.restore.restore_steps`` (psr's tiled prediction, on the GPU when there is one);
this module only wires it to magicgui widgets and napari's thread worker. An input layer without a
physical scale takes the pixel size recorded in the checkpoint (the training images'), as does the result.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.types import FileDialogMode
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, ProgressBar, PushButton, SpinBox

from psr.napari.restore import RestoreCancelled, Restored, restore_steps

if TYPE_CHECKING:
    import napari

__all__ = ["RestoreWidget"]


def _devices() -> list[str]:
    import torch

    return ["auto", "cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]


class RestoreWidget(Container):
    """Checkpoint, image layer, tile options, Restore / Cancel, a progress bar and a status line."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.checkpoint = FileEdit(label="checkpoint", mode=FileDialogMode.EXISTING_FILE, filter="*.ckpt")
        self.image = ComboBox(label="image", choices=self._image_layers)
        self.tile = SpinBox(label="tile", value=256, min=16, max=8192, step=16)
        self.overlap = SpinBox(label="overlap", value=32, min=0, max=1024, step=8)
        self.device = ComboBox(label="device", choices=_devices(), value="auto")
        self.tta = CheckBox(text="test-time augmentation (8× slower)", value=False)
        self.run_button = PushButton(text="Restore")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="tiles", value=0, min=0, max=1)
        self.status = Label(label="", value="")
        self.extend(
            [
                self.checkpoint,
                self.image,
                self.tile,
                self.overlap,
                self.device,
                self.tta,
                self.run_button,
                self.cancel_button,
                self.progress,
                self.status,
            ]
        )
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(lambda _=None: self.image.reset_choices())
        self.worker: Any = None
        self.result: Restored | None = None
        self._stop = threading.Event()
        self.image.reset_choices()
        # the layer picked follows the viewer's current layer (the one selected in the layer list)
        viewer.layers.selection.events.active.connect(lambda _=None: self._follow_active())
        self._follow_active()

    def _follow_active(self) -> None:
        from napari.layers import Image

        active = self.viewer.layers.selection.active
        if isinstance(active, Image) and active in self.viewer.layers:
            self.image.reset_choices()
            self.image.value = active

    def _image_layers(self, _widget: Any = None) -> list[tuple[str, Any]]:
        from napari.layers import Image

        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image)]

    def _fail(self, message: str) -> None:
        self.status.value = f"error: {message}"

    def start(self, _value: Any = None) -> Any:
        """Start restoring the chosen layer; returns the worker, or None after an input error."""
        from napari.qt.threading import create_worker

        layer = self.image.value
        ckpt = Path(str(self.checkpoint.value)).expanduser()
        if layer is None:
            self._fail("no image layer; open an image first")
            return None
        if not ckpt.is_file():
            self._fail(f"checkpoint {ckpt} does not exist; pick a .ckpt written by psr train")
            return None
        data = layer.data[0] if layer.multiscale else layer.data
        self._stop = threading.Event()
        steps = restore_steps(
            ckpt,
            data,
            self._stop,
            scale=tuple(layer.scale),
            translate=tuple(layer.translate),
            name=layer.name,
            rgb=bool(layer.rgb),
            device=str(self.device.value),
            tile=int(self.tile.value),
            overlap=int(self.overlap.value),
            tta=bool(self.tta.value),
        )

        def work() -> Any:
            return (yield from steps)

        self.result = None
        # errored is connected here, not after: create_worker re-raises errors that nothing handles
        self.worker = create_worker(
            work,
            _start_thread=False,
            _connect={
                "yielded": self._on_progress,
                "returned": lambda restored: self._on_done(layer.name, restored),
                "errored": self._on_error,
                "finished": self._on_finished,
            },
        )
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.progress.value = 0
        self.status.value = f"restoring {layer.name}…"
        self.worker.start()
        return self.worker

    def cancel(self, _value: Any = None) -> None:
        """Stop at the next batch of tiles; nothing is added."""
        self._stop.set()
        self.status.value = "cancelling…"

    def _on_progress(self, step: tuple[int, int]) -> None:
        done, total = step
        self.progress.max = max(total, 1)
        self.progress.value = done

    def _on_done(self, name: str, restored: Restored) -> None:
        self.result = restored
        kwargs: dict[str, Any] = {
            "name": f"{name} (psr ×{restored.summary.get('scale', 1)})",
            "scale": restored.scale,
            "translate": restored.translate,
            "metadata": {"psr": restored.summary},
        }
        data = restored.data
        if "c" in restored.axes and not self._input_rgb(name):
            c = restored.axes.index("c")
            kwargs["channel_axis"] = c
            kwargs["scale"] = [s for i, s in enumerate(restored.scale) if i != c]
            kwargs["translate"] = [t for i, t in enumerate(restored.translate) if i != c]
        note = ""
        if restored.input_scale is not None and name in self.viewer.layers:
            # the input had no pixel size: it takes the training images' too, so the layers overlay
            self.viewer.layers[name].scale = restored.input_scale
            size = restored.input_scale[-1]
            note = f"; pixel size {size:g} {restored.unit} from the checkpoint's training images"
        self.viewer.add_image(data, **kwargs)
        seconds = restored.summary.get("seconds", 0.0)
        device = restored.summary.get("device")
        self.status.value = f"restored {name} on {device} in {seconds:.1f} s{note}"

    def _input_rgb(self, name: str) -> bool:
        return name in self.viewer.layers and bool(getattr(self.viewer.layers[name], "rgb", False))

    def _on_error(self, err: BaseException) -> None:
        if isinstance(err, RestoreCancelled):
            self.status.value = "cancelled; nothing was added"
        else:
            self._fail(str(err))

    def _on_finished(self) -> None:
        self.run_button.enabled, self.cancel_button.enabled = True, False
