"""TorchScript export: the eval-mode generator traced on a valid input, saved, reloaded and compared.

Tracing (not scripting) because the generators use Python control flow on shapes and segmentation-models-
pytorch encoders that ``torch.jit.script`` rejects. The trace records the shape arithmetic, so it runs on
any batch and any spatial size that is a multiple of the model's size step (``psr.export.common.size_steps``);
the internal padding branch of a U-Net is fixed at the traced size, which is why sizes off that grid are
not supported. TorchScript is deprecated from torch 2.15 on: prefer ONNX or the bioimage.io package, whose
primary weights are a plain state dict.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from psr.export.common import (
    ATOL,
    ExportError,
    ExportResult,
    as_loaded,
    check_output,
    compare,
    export_metadata,
    first_line,
    random_input,
    shape_name,
    staged_output,
    verification_shapes,
)
from psr.inference.checkpoint import LoadedModel

#: Name of the JSON file stored inside the TorchScript archive (``torch.jit.load(..., _extra_files=...)``).
METADATA_FILE = "psr_export.json"


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch.jit's deprecation notices and the tracer's shape warnings (covered by verification)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def trace(net: nn.Module, example_shape: Sequence[int]) -> torch.jit.ScriptModule:
    """Trace the eval-mode ``net`` on a random input of ``example_shape`` ``(B, C, [Z,] Y, X)``."""
    net.eval()
    try:
        with _quiet(), torch.no_grad():
            return torch.jit.trace(net, random_input(example_shape), check_trace=False)
    except Exception as err:  # noqa: BLE001 - tracing failures have many types; report which model
        raise ExportError(f"TorchScript tracing of {type(net).__name__} failed: {first_line(err)}") from err


def load_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    """Load an exported TorchScript generator on the CPU, in eval mode."""
    with _quiet():
        module = torch.jit.load(str(path), map_location="cpu")
    return module.eval()


def read_metadata(path: str | Path) -> dict[str, object]:
    """The psr metadata (axes, size step, scale, normalisation) stored inside an exported TorchScript file."""
    extra = {METADATA_FILE: ""}
    with _quiet():
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return dict(json.loads(extra[METADATA_FILE] or "{}"))


def verify_torchscript(
    net: nn.Module, path: str | Path, shapes: Sequence[Sequence[int]], atol: float = ATOL
) -> dict[str, float]:
    """Reload ``path`` and compare it with eager ``net`` on each input shape; ``ExportError`` past ``atol``."""
    scripted = load_torchscript(path)
    diffs: dict[str, float] = {}
    for i, shape in enumerate(shapes):
        x = random_input(shape, seed=1 + i)
        with torch.no_grad():
            diffs[shape_name(shape)] = compare(
                net(x), scripted(x), "the reloaded TorchScript model", shape, atol
            )
    return diffs


def write_torchscript(
    model: LoadedModel, path: Path, shapes: Sequence[Sequence[int]], atol: float = ATOL
) -> dict[str, float]:
    """Trace ``model.net`` on ``shapes[0]``, save it (with psr metadata) to ``path`` and verify on ``shapes``."""
    traced = trace(model.net, shapes[0])
    extra = {METADATA_FILE: json.dumps(export_metadata(model), indent=2)}
    with _quiet():
        torch.jit.save(traced, str(path), _extra_files=extra)
    return verify_torchscript(model.net, path, shapes, atol)


def export_torchscript(
    model: LoadedModel | str | Path,
    output: str | Path,
    *,
    test_size: int = 64,
    overwrite: bool = False,
    atol: float = ATOL,
) -> ExportResult:
    """Export a generator (a ``LoadedModel`` or a checkpoint path) to a TorchScript file at ``output``.

    The file appears only once the reloaded trace matches eager PyTorch within ``atol`` on two input shapes
    (around ``test_size``). Raises ``ExportError`` (or ``CheckpointError``) with one sentence otherwise.
    """
    check_output(output, overwrite)
    loaded = as_loaded(model)
    shapes = verification_shapes(loaded, test_size)
    with staged_output(output, overwrite) as tmp:
        diffs = write_torchscript(loaded, tmp, shapes, atol)
    return ExportResult(path=Path(output), format="torchscript", max_abs_diff=diffs)
