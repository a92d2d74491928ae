"""ONNX export with dynamic batch and spatial axes, verified with onnxruntime against eager PyTorch.

Uses torch's ``torch.export``-based exporter (``dynamo=True``, the default and supported one since torch 2.9;
it needs ``onnxscript``, works offline). Every spatial axis is dynamic; an axis whose size step is ``k > 1``
(a U-Net that pads to a multiple after upsampling) is exported as ``k * n``, so the exporter proves the
padding branch and the model is exact on that grid. The legacy TorchScript-based exporter is not used: it
is deprecated and silently fixes shape-dependent branches at the example size.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from psr.export.common import (
    ATOL,
    ExportError,
    ExportResult,
    as_loaded,
    axis_names,
    check_output,
    compare,
    export_metadata,
    first_line,
    random_input,
    shape_name,
    size_steps,
    staged_output,
    verification_shapes,
)
from psr.inference.checkpoint import LoadedModel

INPUT_NAME = "input"
OUTPUT_NAME = "output"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter and onnxscript's optimizer print progress and log notes about their own passes: keep
    them off the user's console (failures still raise)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def dynamic_shapes(model: LoadedModel) -> dict[int, Any]:
    """``torch.export`` dimension specs of the input: batch free, each spatial axis a multiple of its step."""
    dims: dict[int, Any] = {0: torch.export.Dim("batch")}
    for axis, (name, step) in enumerate(zip(axis_names(model), size_steps(model), strict=True), start=2):
        dims[axis] = torch.export.Dim(name) if step == 1 else step * torch.export.Dim(f"{name}_blocks")
    return dims


def trace_shape(model: LoadedModel, shape: Sequence[int]) -> tuple[int, ...]:
    """The input shape to trace the export at: ``shape`` with the batch and every spatial axis at least two
    of its size steps. ``torch.export`` specialises a dimension whose example size is 1 to that constant,
    so an axis of one step (a ResNet U-Net of depth 5 on 8 pixels ×4: ``8·y_blocks`` with ``y_blocks = 1``)
    would stop being dynamic and the export would fail."""
    batch, channels, *spatial = (int(n) for n in shape)
    sizes = [max(n, 2 * step) for n, step in zip(spatial, size_steps(model), strict=True)]
    return (max(batch, 2), channels, *sizes)


def write_onnx(model: LoadedModel, path: Path, example_shape: Sequence[int]) -> int:
    """Export ``model.net`` to ``path`` (one self-contained file, psr metadata in ``metadata_props``),
    traced at ``trace_shape(model, example_shape)``.

    Returns the opset version written.
    """
    import onnx

    net = model.net.eval()
    try:
        with _quiet():
            torch.onnx.export(
                net,
                (random_input(trace_shape(model, example_shape)),),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=(dynamic_shapes(model),),
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except Exception as err:  # noqa: BLE001 - exporter failures have many types; report which model
        raise ExportError(f"ONNX export of {type(net).__name__} failed: {first_line(err)}") from err
    proto = onnx.load(str(path))
    for key, value in (("psr_export", json.dumps(export_metadata(model))),):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "psr (torch.onnx)"
    onnx.save(proto, str(path))
    return max(int(op.version) for op in proto.opset_import if op.domain in ("", "ai.onnx"))


def onnx_session(path: str | Path) -> Any:
    """An onnxruntime CPU session for an exported model."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The psr metadata (axes, size step, scale, normalisation) stored in an exported ONNX file."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return dict(json.loads(props.get("psr_export", "{}")))


def verify_onnx(
    net: torch.nn.Module, path: str | Path, shapes: Sequence[Sequence[int]], atol: float = ATOL
) -> dict[str, float]:
    """Run ``path`` with onnxruntime and eager ``net`` on each input shape; ``ExportError`` past ``atol``."""
    session = onnx_session(path)
    diffs: dict[str, float] = {}
    for i, shape in enumerate(shapes):
        x = random_input(shape, seed=1 + i)
        with torch.no_grad():
            eager = net(x)
        try:
            (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ExportError(
                f"the exported ONNX model fails on an input of shape {list(shape)}: {first_line(err)}"
            ) from err
        diffs[shape_name(shape)] = compare(
            eager, torch.from_numpy(out), "the ONNX model (onnxruntime)", shape, atol
        )
    return diffs


def export_onnx(
    model: LoadedModel | str | Path,
    output: str | Path,
    *,
    test_size: int = 64,
    overwrite: bool = False,
    atol: float = ATOL,
) -> ExportResult:
    """Export a generator (a ``LoadedModel`` or a checkpoint path) to an ONNX file at ``output``.

    Input ``input`` ``(B, C, [Z,] Y, X)`` float32, output ``output`` ``(B, C_out, [Z,] s·Y, s·X)``, all but
    the channel axes dynamic. The file appears only once onnxruntime reproduces eager PyTorch within
    ``atol`` on two different input shapes (around ``test_size``). Raises ``ExportError`` (or
    ``CheckpointError``) with one sentence otherwise.
    """
    check_output(output, overwrite)
    loaded = as_loaded(model)
    shapes = verification_shapes(loaded, test_size)
    with staged_output(output, overwrite) as tmp:
        opset = write_onnx(loaded, tmp, shapes[0])
        diffs = verify_onnx(loaded.net, tmp, shapes, atol)
    return ExportResult(path=Path(output), format="onnx", max_abs_diff=diffs, info={"opset": opset})
