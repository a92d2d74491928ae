"""What every export format shares: the error type, the model's valid input sizes, verification inputs,
the metadata written beside the weights, and outputs that appear only when complete.

A psr generator takes ``(B, C, Y, X)`` (2D) or ``(B, C, Z, Y, X)`` (3D) and returns the same axes with Y
and X multiplied by its scale. Generators that pad internally to a multiple (U-Nets: ``net.multiple`` =
``2**depth``, applied after upsampling) are exact only on that grid once traced or exported, because the
padding branch is taken once at export time: exported models accept spatial sizes that are multiples of
:func:`size_steps`.
"""

from __future__ import annotations

import copy
import json
import math
import os
import secrets
import string
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from psr.atomic import durable_replace
from psr.errors import PsrError
from psr.faults import storage_fault
from psr.inference.checkpoint import LoadedModel, load_checkpoint

#: Characters a model name may hold (bioimage.io's rule; also safe in a file name).
NAME_CHARACTERS = frozenset(string.ascii_letters + string.digits + "_+- ()")
#: Largest difference tolerated between an exported model and eager PyTorch on the same input, for outputs
#: in the normalised range; larger values get ``RTOL`` of their magnitude on top (float32 rounding grows
#: with it: an untrained ResNet-34 U-Net's outputs reach 30, where two float32 runs differ by 1e-4).
ATOL = 1e-4
RTOL = 1e-5


class ExportError(PsrError):
    """An export that cannot be done or that does not reproduce the model: one sentence saying why."""


@dataclass
class ExportResult:
    """What an export wrote and what it checked."""

    path: Path
    format: str
    #: Largest absolute difference to eager PyTorch per checked input shape, e.g. ``{"2x1x64x64": 3e-7}``.
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    #: Named checks with their status (bioimage.io model test), e.g. ``{"Reproduce test outputs ...": "passed"}``.
    checks: dict[str, str] = field(default_factory=dict)
    #: Anything else worth reporting (ONNX opset, bioimage.io weight formats, ...).
    info: dict[str, Any] = field(default_factory=dict)


def as_loaded(model: LoadedModel | str | Path) -> LoadedModel:
    """The checkpoint at a path loaded (``CheckpointError`` when it is not one), or a ``LoadedModel`` put in
    eval mode; a model on an accelerator is exported from a CPU copy (exports are device-independent)."""
    loaded = model if isinstance(model, LoadedModel) else load_checkpoint(model)
    tensors = [*loaded.net.parameters(), *loaded.net.buffers()]
    if any(t.device.type != "cpu" for t in tensors):
        loaded = replace(loaded, net=copy.deepcopy(loaded.net).cpu())
    loaded.net.eval()
    return loaded


def axis_names(model: LoadedModel) -> tuple[str, ...]:
    """The spatial axis names of the model's tensors: ``("y", "x")`` or ``("z", "y", "x")``."""
    return ("z", "y", "x")[-model.spatial_dims :]


def size_steps(model: LoadedModel) -> tuple[int, ...]:
    """Per spatial axis (Z?, Y, X), the multiple an input size must be for the exported model to be exact.

    A generator with a ``multiple`` attribute pads its (laterally upsampled) grid to that multiple; Y and X
    are upsampled by the scale first, so they need ``multiple / gcd(multiple, scale)`` input pixels, and Z
    (never upsampled) needs the full multiple. Generators without one accept any size (step 1).
    """
    multiple = int(getattr(model.net, "multiple", 1))
    lateral = multiple // math.gcd(multiple, model.scale)
    return (multiple, lateral, lateral) if model.spatial_dims == 3 else (lateral, lateral)


def round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def check_test_size(model: LoadedModel, test_size: int, key: str = "test_size") -> int:
    """``test_size`` (Y and X of the test input) when the exported model can run on it, else ``ExportError``."""
    step = size_steps(model)[-1]
    if int(test_size) != test_size or test_size < 8:
        raise ExportError(f"{key}={test_size} is too small; expected an integer of at least 8 (input pixels)")
    if test_size % step:
        raise ExportError(
            f"{key}={test_size} is not a multiple of {step}, the input size step of this"
            f" {type(model.net).__name__} (it pads to {getattr(model.net, 'multiple', 1)} after upsampling"
            f" by {model.scale}); use {round_up(int(test_size), step)}"
        )
    return int(test_size)


def verification_shapes(model: LoadedModel, test_size: int) -> list[tuple[int, ...]]:
    """Two different valid input shapes ``(B, C, [Z,] Y, X)`` to compare an export with eager PyTorch.

    The first is the test size itself with a batch of 2; the second has batch 1, other sizes and different
    Y and X, each rounded up to the model's size step.
    """
    steps = size_steps(model)
    size = check_test_size(model, test_size)
    first = [size, size]
    second = [round_up(size * 3 // 4 + 1, steps[-2]), round_up(size // 2 + 3, steps[-1])]
    if model.spatial_dims == 3:
        first.insert(0, round_up(8, steps[0]))
        second.insert(0, round_up(5, steps[0]) + steps[0])
    return [(2, model.in_channels, *first), (1, model.in_channels, *second)]


def shape_name(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def random_input(shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    """Uniform [0, 1) values: the range of percentile-normalised data the generators were trained on."""
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def compare(
    eager: torch.Tensor,
    exported: torch.Tensor,
    what: str,
    shape: Sequence[int],
    atol: float = ATOL,
    rtol: float = RTOL,
) -> float:
    """Max absolute difference of two outputs; ``ExportError`` when shapes differ or a pixel differs by
    more than ``atol + rtol·|eager|`` (``numpy.allclose``'s rule)."""
    if tuple(eager.shape) != tuple(exported.shape):
        raise ExportError(
            f"{what} returns shape {list(exported.shape)} for input {list(shape)}, PyTorch {list(eager.shape)}"
        )
    error = (eager - exported).abs()
    diff = float(error.max())
    excess = error - rtol * eager.abs()
    if not float(excess.max()) <= atol:  # also catches NaN
        raise ExportError(
            f"{what} differs from eager PyTorch by {diff:.3g} (> {atol:g} + {rtol:g}·|output|) on an input of"
            f" shape {list(shape)}"
        )
    return diff


def export_metadata(model: LoadedModel) -> dict[str, Any]:
    """What a consumer of a bare ONNX or TorchScript file needs: axes, valid sizes, scale, normalisation."""
    model_cfg = dict(model.config.get("model") or {})
    return {
        "producer": "psr",
        "checkpoint": model.path.name,
        "model": model_cfg.get("_target_", type(model.net).__module__ + "." + type(model.net).__name__),
        "model_kwargs": {k: v for k, v in model_cfg.items() if k != "_target_"},
        "input_axes": ["batch", "channel", *axis_names(model)],
        "output_axes": ["batch", "channel", *axis_names(model)],
        "in_channels": model.in_channels,
        "out_channels": model.out_channels,
        "scale": model.scale,
        "upsampled_axes": ["y", "x"],
        "size_step": dict(zip(axis_names(model), size_steps(model), strict=True)),
        "normalisation": {
            "kind": "percentile, per sample and channel: (x - p_low) / (p_high - p_low)",
            "percentiles": list(model.percentiles),
        },
    }


def model_class(model: LoadedModel) -> tuple[str, str]:
    """``(module, class name)`` of the generator, from the checkpoint's ``model._target_``."""
    target = str((model.config.get("model") or {}).get("_target_") or "")
    if "." not in target:
        cls = type(model.net)
        return cls.__module__, cls.__name__
    module, name = target.rsplit(".", 1)
    return module, name


def default_name(model: LoadedModel) -> str:
    """``psr-<model>-<crappifier>-x<scale>`` from the run's summary.json when it is beside the checkpoint,
    else from the model class."""
    summary_file = model.path.parent.parent / "summary.json"
    parts = ["psr", model_class(model)[1].lower()]
    try:
        summary = json.loads(summary_file.read_text())
        parts = ["psr", str(summary["model"]), str(summary["crappifier"])]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    name = "-".join(parts + [f"x{model.scale}"])
    return "".join(c if c in NAME_CHARACTERS and c not in " ()" else "-" for c in name)


def check_output(output: str | Path, overwrite: bool, key: str = "output") -> Path:
    """Validate an output file path before any work: its folder can be made, and it is not there unless
    ``overwrite``. Returns it as a ``Path``."""
    path = Path(output)
    if path.is_dir():
        raise ExportError(f"{key}={path} is a directory; expected a file path")
    if path.exists() and not overwrite:
        raise ExportError(f"{key}={path} already exists; pass overwrite=true to replace it")
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ExportError(f"{key}={path} cannot be written: {blocker} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ExportError(
            f"{key}={path} cannot be written: its folder {path.parent} cannot be created ({err.strerror or err})"
        ) from err
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise ExportError(f"{key}={path} cannot be written: no write permission in {path.parent}")
    return path


def check_name(name: str, key: str = "name") -> str:
    """A model name usable as a file name and as a bioimage.io name: 5 to 128 letters, digits, spaces, _+-()."""
    bad = sorted(set(name) - NAME_CHARACTERS)
    if bad or not 5 <= len(name) <= 128:
        raise ExportError(
            f"{key}={name!r} is not a valid model name; expected 5 to 128 letters, digits, spaces and _ + - ( )"
            + (f" (found {''.join(bad)!r})" if bad else "")
        )
    return name


@contextmanager
def staged_output(output: str | Path, overwrite: bool, key: str = "output") -> Iterator[Path]:
    """Yield a temporary file beside ``output``; on success it is renamed to ``output``, on failure removed.

    A reader never sees a half-written export under the final name, and a full disk (also one an exporter
    wrapped in its own exception type) is an ``OSError`` naming ``output``, not the temporary file.
    """
    path = check_output(output, overwrite, key)
    tmp = path.parent / f".{path.stem}.{secrets.token_hex(4)}.partial{path.suffix}"
    try:
        tmp.touch(exist_ok=False)  # the usual permissions (umask), unlike mkstemp's private file
    except OSError as err:
        raise ExportError(f"{key}={path} cannot be written ({err.strerror or err})") from err
    try:
        yield tmp
        if path.exists() and not overwrite:  # appeared while we worked
            raise ExportError(f"{key}={path} already exists; pass overwrite=true to replace it")
        durable_replace(tmp, path)
    except Exception as err:
        fault = storage_fault(err)  # a full disk, also when an exporter wrapped it: name the output
        if fault is None:
            raise
        raise OSError(fault.errno, fault.strerror or os.strerror(fault.errno or 0), str(path)) from err
    finally:
        tmp.unlink(missing_ok=True)


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (or its type), for one-sentence errors."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
