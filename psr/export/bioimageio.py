"""bioimage.io model packages (format 0.5) of psr generators, built with bioimageio.spec's classes and
tested with bioimageio.core's own model test before the zip appears.

The package holds:

- ``pytorch_state_dict`` weights first (the primary format: the architecture is the psr model class,
  ``ArchitectureFromLibraryDescr`` with the constructor arguments from the checkpoint's config), then
  TorchScript and/or ONNX weights converted from it (``parent: pytorch_state_dict``);
- input ``(batch, channel, [z,] y, x)`` with sizes ``min + n·step`` (step: the multiple the model needs,
  ``psr.export.common.size_steps``; min: above twice the halo), output ``(batch, channel, [z,] y, x)``
  whose Y and X reference the input at the model's scale (input axes carry ``scale = s``, output axes 1,
  so output size = s · input size) with a halo for tiling (the model's effective receptive field);
- preprocessing ``scale_range`` with the checkpoint's percentiles per sample and channel (how psr
  normalised its training data), no postprocessing (outputs are in those normalised units);
- test input/output tensors computed by the model, a cover (input | output), a README from the
  checkpoint's config, authors, license (BSD-3-Clause) and the PSSR citation.

Offline: bioimageio.spec checks URLs and downloads files when its IO checks are on. psr turns them off
(``BIOIMAGEIO_PERFORM_IO_CHECKS=false`` unless set otherwise) and puts no URL in the description, so
building, packaging and the model test (which re-reads the zip with local IO checks: hashes, file
contents) need no network.
"""

from __future__ import annotations

import inspect
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from psr.export.common import (
    ATOL,
    ExportError,
    ExportResult,
    as_loaded,
    axis_names,
    check_name,
    check_output,
    check_test_size,
    default_name,
    first_line,
    model_class,
    round_up,
    shape_name,
    size_steps,
    staged_output,
    verification_shapes,
)
from psr.export.onnx import verify_onnx, write_onnx
from psr.export.torchscript import write_torchscript
from psr.inference.checkpoint import CheckpointError, LoadedModel, read_checkpoint

if TYPE_CHECKING:
    from bioimageio.spec.model.v0_5 import ModelDescr

# Before bioimageio.spec is first imported anywhere through psr: its settings are read at import.
os.environ.setdefault("BIOIMAGEIO_PERFORM_IO_CHECKS", "false")

WEIGHT_FORMATS = ("torchscript", "onnx")
LICENSE = "BSD-3-Clause"
PSSR_CITATION = (
    "Fang, L., Monroe, F., Novak, S.W. et al. Deep learning-based point-scanning super-resolution imaging."
    " Nature Methods 18, 406-416 (2021)."
)
PSSR_DOI = "10.1038/s41592-021-01080-z"
#: Share of the gradient of an output pixel that the halo must cover (effective receptive field).
HALO_MASS = 0.99


@contextmanager
def _quiet_bioimageio() -> Iterator[None]:
    """bioimageio logs validation chatter through loguru: keep it off the console (results are returned)."""
    import gc
    import warnings

    from loguru import logger

    logger.disable("bioimageio")
    # bioimageio.core runs gc.collect() each time it unloads a model (six times per weight format in the
    # model test): with torch's objects frozen out of the collector's reach that costs milliseconds, not
    # most of a second each.
    gc.freeze()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation, in the test
            yield
    finally:
        gc.unfreeze()
        logger.enable("bioimageio")


def percentile_normalise(
    image: np.ndarray, percentiles: tuple[float, float], joint_axes: Sequence[int], eps: float = 1e-6
) -> np.ndarray:
    """``(x - p_low) / (p_high - p_low + eps)`` with percentiles over ``joint_axes`` (linear interpolation).

    The same arithmetic as bioimage.io's ``scale_range`` (and psr's training normalisation, which has no
    eps); float32 in, float32 out.
    """
    low = np.percentile(image, percentiles[0], axis=tuple(joint_axes), keepdims=True)
    high = np.percentile(image, percentiles[1], axis=tuple(joint_axes), keepdims=True)
    return ((image - low) / (high - low + eps)).astype(np.float32)


def normalisation_axes(model: LoadedModel) -> tuple[str, ...]:
    """The axes psr's percentiles are taken over: the spatial ones (per sample and channel), and the channel
    axis too for multi-frame inputs, whose frames share their image's percentiles."""
    frames = int((model.config.get("data") or {}).get("frames", 1) or 1)
    return (("channel",) if frames > 1 else ()) + axis_names(model)


def receptive_halo(model: LoadedModel, spatial: Sequence[int], mass: float = HALO_MASS) -> tuple[int, ...]:
    """Per spatial axis, the input radius holding ``mass`` of the gradient of one central output pixel.

    An effective receptive field: a tile cropped by this halo (in input pixels; times the scale in output
    pixels) differs little from the whole-image prediction. Capped at a quarter of the probe size.
    """
    net, s = model.net, model.scale
    x = torch.rand(1, model.in_channels, *spatial, generator=torch.Generator().manual_seed(7))
    x.requires_grad_(True)
    centre = [n // 2 for n in spatial]
    with torch.enable_grad():
        out = net(x)
        index: list[Any] = [slice(None), slice(None)]
        if len(spatial) == 3:
            index.append(slice(centre[0], centre[0] + 1))
        index += [slice(c * s, (c + 1) * s) for c in centre[-2:]]
        out[tuple(index)].sum().backward()
    assert x.grad is not None
    grad = x.grad.detach().abs().sum(dim=(0, 1)).double()
    total = float(grad.sum())
    radii = []
    for axis, (n, c) in enumerate(zip(spatial, centre, strict=True)):
        profile = grad.sum(dim=tuple(a for a in range(grad.dim()) if a != axis))
        cumulative = [float(profile[max(0, c - r) : c + r + 1].sum()) for r in range(n)]
        radius = next((r for r, v in enumerate(cumulative) if v >= mass * total), n) if total > 0 else 0
        radii.append(min(radius, n // 4))
    return tuple(radii)


def architecture_kwargs(model: LoadedModel) -> dict[str, Any]:
    """Constructor arguments of the generator from the checkpoint's config, as plain YAML values.

    ``encoder_weights`` (pretrained encoder initialisation of the U-Nets) is set to None: the state dict
    replaces those weights, and a consumer should not need to download them.
    """
    kwargs = {k: v for k, v in dict(model.config.get("model") or {}).items() if not k.startswith("_")}
    if kwargs.get("encoder_weights") is not None:
        kwargs["encoder_weights"] = None
    return kwargs


# ---------------------------------------------------------------------------------------------------------
# Package content


def sample_input_image(model: LoadedModel, spatial: Sequence[int]) -> np.ndarray:
    """A deterministic raw test input ``(1, C, [Z,] Y, X)`` float32: psr's fluorescence-like phantoms, in
    camera counts (the package's preprocessing normalises them like the training data)."""
    from psr.data.phantoms import PhantomSpec, render_phantom

    spec = PhantomSpec(size=max(spatial[-2:]))
    planes = spatial[0] if len(spatial) == 3 else 1
    channels = []
    for c in range(model.in_channels):
        stack = [render_phantom(seed=0, index=c * planes + z, spec=spec) for z in range(planes)]
        channels.append(np.stack(stack)[:, : spatial[-2], : spatial[-1]])
    image = np.stack(channels).astype(np.float32)  # (C, Z, Y, X)
    return image[None] if len(spatial) == 3 else image[None, :, 0]


def predict_normalised(model: LoadedModel, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(normalised input, output)`` of eager PyTorch on a raw input ``(B, C, [Z,] Y, X)``."""
    names = ("batch", "channel", *axis_names(model))
    joint = [names.index(a) for a in normalisation_axes(model)]
    x = percentile_normalise(raw, model.percentiles, joint)
    with torch.no_grad():
        y = model.net(torch.from_numpy(x)).numpy().astype(np.float32)
    return x, y


def write_cover(raw: np.ndarray, output: np.ndarray, scale: int, title: str, path: Path) -> None:
    """A 2:1 PNG: the input (nearest-upsampled to the output grid) | the output; the middle Z plane in 3D
    and the middle input channel (the centre frame of a multi-frame input)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def plane(a: np.ndarray, channel: int) -> np.ndarray:
        a = a[0, channel]
        return a[a.shape[0] // 2] if a.ndim == 3 else a

    low = np.kron(plane(raw, raw.shape[1] // 2), np.ones((scale, scale)))
    high = plane(output, 0)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), dpi=100)
    for ax, image, label in ((axes[0], low, "input"), (axes[1], high, f"output (×{scale})")):
        lo, hi = np.percentile(image, [0.5, 99.5])
        ax.imshow(image, cmap="magma", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
        ax.set_title(label, fontsize=11)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.86, wspace=0.02)
    fig.savefig(path, format="png")
    plt.close(fig)


def _describe(node: Any) -> str:
    """A config node with ``_target_`` as ``Name(key=value, ...)``; a ``steps`` list as ``A → B``."""
    if isinstance(node, dict):
        name = str(node.get("_target_", "")).rsplit(".", 1)[-1]
        if isinstance(node.get("steps"), list):
            return " → ".join(_describe(step) for step in node["steps"])
        args = ", ".join(f"{k}={_describe(v)}" for k, v in node.items() if not k.startswith("_"))
        return f"{name}({args})" if name else "{" + args + "}"
    if isinstance(node, list):
        return "[" + ", ".join(_describe(v) for v in node) + "]"
    return repr(node) if isinstance(node, str) else str(node)


def _docstring_summary(module: str, name: str) -> str:
    """The first paragraph of the generator class's docstring (it names the architecture and its paper)."""
    try:
        cls = getattr(__import__(module, fromlist=[name]), name)
    except (ImportError, AttributeError):
        return ""
    doc = inspect.getdoc(cls) or ""
    return " ".join(doc.split("\n\n")[1].split()) if doc.count("\n\n") >= 1 else " ".join(doc.split())


def write_readme(
    model: LoadedModel,
    name: str,
    description: str,
    geometry: dict[str, Any],
    weights: Sequence[str],
    ckpt: dict[str, Any] | None,
    path: Path,
) -> None:
    """The package's documentation: what the model does and how it was trained, from the checkpoint."""
    cfg = model.config
    module, cls = model_class(model)
    kwargs = architecture_kwargs(model)
    data = dict(cfg.get("data") or {})
    trainer = dict(cfg.get("trainer") or {})
    module_cfg = dict(cfg.get("module") or {})
    data_kind = str(data.get("_target_", "?")).rsplit(".", 1)[-1]
    if data.get("path"):
        data_text = f"`{data_kind}` reading `{Path(str(data['path'])).name}`"
    else:
        data_text = (
            f"`{data_kind}`: psr's embedded fluorescence-like phantoms ({data.get('n_images', '?')} images of"
            f" {data.get('image_size', '?')}², generated deterministically, seed {data.get('phantom_seed', 0)})"
        )
    axes = ", ".join(axis_names(model))
    lines = [
        f"# {name}",
        "",
        description,
        "",
        f"Exported by psr from the checkpoint `{model.path.name}` on {datetime.now():%Y-%m-%d}.",
        "",
        "## What the model does",
        "",
        f"Input `(batch, channel, {axes})` with {model.in_channels} channel(s), output"
        f" `(batch, channel, {axes})` with {model.out_channels} channel(s), Y and X upsampled"
        f" ×{model.scale}" + (" (Z keeps its size)" if model.spatial_dims == 3 else "") + ".",
        "",
        f"Architecture: `{module}.{cls}` with `{_describe(kwargs)}`.",
    ]
    summary = _docstring_summary(module, cls)
    if summary:
        lines += ["", f"> {summary}"]
    lines += [
        "",
        "## Input, normalisation and tiling",
        "",
        f"- Preprocessing: `scale_range` with percentiles {model.percentiles[0]:g} and {model.percentiles[1]:g}"
        f" over axes {', '.join(normalisation_axes(model))} of each sample, the normalisation psr used for"
        " the training images (low percentile → 0, high → 1).",
        "- Postprocessing: none. Outputs are in those normalised units (0 ≈ the input's low percentile,"
        " 1 ≈ its high percentile); rescale with the input's percentiles to get counts back.",
        "- Input sizes: "
        + "; ".join(f"{a.upper()} = {g['min']} + n·{g['step']}" for a, g in geometry.items())
        + (
            " (the network pads to a multiple after upsampling: the exported weights are exact on that grid only)."
            if any(g["step"] > 1 for g in geometry.values())
            else "."
        ),
        "- Halo (output pixels to crop from each side of a tile): "
        + ", ".join(
            f"{a.upper()} {g['halo'] * (model.scale if a != 'z' else 1)}" for a, g in geometry.items()
        )
        + ", the effective receptive field (99 % of an output pixel's input gradient).",
        "",
        "## Training",
        "",
        f"- Data: {data_text}; patches of {data.get('patch_size', '?')} pixels (high resolution), batch"
        f" {data.get('batch_size', '?')}, percentiles {list(model.percentiles)}.",
        f"- Degradation (crappifier, applied on the fly to clean patches): `{_describe(cfg.get('crappifier'))}`.",
        f"- Scale ×{model.scale}; the network learns to undo this degradation (PSSR's training scheme).",
        f"- Loss `{_describe(cfg.get('loss'))}`, optimizer `{_describe(module_cfg.get('optimizer'))}`,"
        f" schedule `{_describe(module_cfg.get('scheduler'))}`.",
        f"- Trainer: max_epochs {trainer.get('max_epochs', '?')}, precision {trainer.get('precision', '?')};"
        f" seed {cfg.get('seed', '?')}.",
    ]
    if ckpt is not None:
        lines.append(
            f"- This checkpoint: epoch {ckpt.get('epoch', '?')}, {ckpt.get('global_step', '?')} optimizer steps;"
            f" generator `{ckpt.get('psr_generator', 'net')}`."
        )
    lines += ["", "## Validation", ""]
    history = list((ckpt or {}).get("psr_history") or [])
    if history:
        lines += [
            "Validation during training, on held-out images degraded by the same crappifier with a fixed seed"
            " (PSNR/SSIM on normalised intensities; the baseline is bilinear upsampling of the input):",
            "",
            "| epoch | val PSNR (dB) | baseline PSNR (dB) | val SSIM | baseline SSIM |",
            "|---:|---:|---:|---:|---:|",
        ]
        for h in history:
            lines.append(
                f"| {h.get('epoch', '?')} | {h.get('val/psnr', float('nan')):.2f} |"
                f" {h.get('val/baseline_psnr', float('nan')):.2f} | {h.get('val/ssim', float('nan')):.3f} |"
                f" {h.get('val/baseline_ssim', float('nan')):.3f} |"
            )
    else:
        lines.append("The checkpoint carries no validation history.")
    lines += [
        "",
        "Synthetic degradations are not real low-quality acquisitions: validate on real pairs of"
        " low- and high-quality images of your sample before relying on the output (psr's `evaluate.py`).",
        "",
        "## Weights",
        "",
        f"- `pytorch_state_dict` (primary): needs the `psr` package installed (`{module}.{cls}`), torch"
        f" {torch.__version__.split('+')[0]}.",
    ]
    if "torchscript" in weights:
        lines.append(
            "- `torchscript`: traced from the state dict (TorchScript is deprecated from torch 2.15 on)."
        )
    if "onnx" in weights:
        lines.append(
            "- `onnx`: exported from the state dict with torch.export (`torch.onnx.export(dynamo=True)`)."
        )
    lines += [
        "",
        "Each converted format reproduces the state dict within 1e-4 on two input sizes (checked at export).",
        "",
        "## Citation",
        "",
        f"{PSSR_CITATION} doi:{PSSR_DOI}",
        "",
    ]
    path.write_text("\n".join(lines))


# ---------------------------------------------------------------------------------------------------------
# Description


def build_description(
    model: LoadedModel,
    files: dict[str, Path],
    *,
    name: str,
    description: str,
    authors: Sequence[str],
    geometry: dict[str, dict[str, int]],
    weights: Sequence[str],
    opset: int | None,
) -> ModelDescr:
    """The bioimage.io ``ModelDescr`` (format 0.5) of the package's files."""
    from bioimageio.spec import ValidationContext
    from bioimageio.spec.model import v0_5
    from pydantic import ValidationError

    s = float(model.scale)
    input_id, output_id = v0_5.TensorId("input"), v0_5.TensorId("output")
    in_axes: list[Any] = [
        v0_5.BatchAxis(),
        v0_5.ChannelAxis(channel_names=[v0_5.Identifier(f"channel{i}") for i in range(model.in_channels)]),
    ]
    out_axes: list[Any] = [
        v0_5.BatchAxis(),
        v0_5.ChannelAxis(channel_names=[v0_5.Identifier(f"channel{i}") for i in range(model.out_channels)]),
    ]
    for axis, g in geometry.items():
        lateral = axis != "z"
        in_axes.append(
            v0_5.SpaceInputAxis(
                id=v0_5.AxisId(axis),
                size=v0_5.ParameterizedSize(min=g["min"], step=g["step"]),
                scale=s if lateral else 1.0,
                concatenable=False,
            )
        )
        ref = v0_5.SizeReference(tensor_id=input_id, axis_id=v0_5.AxisId(axis))
        halo = g["halo"] * (model.scale if lateral else 1)
        if halo >= 1:
            out_axes.append(
                v0_5.SpaceOutputAxisWithHalo(id=v0_5.AxisId(axis), size=ref, halo=halo, scale=1.0)
            )
        else:
            out_axes.append(v0_5.SpaceOutputAxis(id=v0_5.AxisId(axis), size=ref, scale=1.0))
    low, high = model.percentiles
    preprocessing: list[Any] = [
        v0_5.ScaleRangeDescr(
            kwargs=v0_5.ScaleRangeKwargs(
                axes=[v0_5.AxisId(a) for a in normalisation_axes(model)],
                min_percentile=low,
                max_percentile=high,
            )
        )
    ]
    module, cls = model_class(model)
    torch_version = v0_5.Version(torch.__version__.split("+")[0])
    weights_descr: dict[str, Any] = {
        "pytorch_state_dict": v0_5.PytorchStateDictWeightsDescr(
            source=files["state_dict"],
            architecture=v0_5.ArchitectureFromLibraryDescr(
                import_from=module, callable=v0_5.Identifier(cls), kwargs=architecture_kwargs(model)
            ),
            pytorch_version=torch_version,
            comment=f"the generator of psr checkpoint {model.path.name}",
        )
    }
    if "torchscript" in weights:
        weights_descr["torchscript"] = v0_5.TorchscriptWeightsDescr(
            source=files["torchscript"],
            pytorch_version=torch_version,
            parent="pytorch_state_dict",
            comment="traced with torch.jit.trace; exact for input sizes on the size grid",
        )
    if "onnx" in weights:
        weights_descr["onnx"] = v0_5.OnnxWeightsDescr(
            source=files["onnx"],
            opset_version=opset or 18,
            parent="pytorch_state_dict",
            comment="exported with torch.onnx.export(dynamo=True), dynamic batch and spatial axes",
        )
    tags = [
        "pytorch",
        f"{model.spatial_dims}d",
        "image-restoration",
        "super-resolution" if model.scale > 1 else "denoising",
        "pssr",
        "psr",
        cls.lower(),
    ]
    if "unet" in cls.lower():
        tags.append("unet")
    cfg = model.config
    module_cfg = dict(cfg.get("module") or {})
    optimizer = dict(module_cfg.get("optimizer") or {})
    psr_config: dict[str, Any] = {
        "psr": {
            "scale": model.scale,
            "percentiles": list(model.percentiles),
            "model": dict(cfg.get("model") or {}),
            "crappifier": cfg.get("crappifier"),
            "checkpoint": model.path.name,
        }
    }
    n_params = sum(p.numel() for p in model.net.parameters())
    try:
        with ValidationContext(perform_io_checks=False, log_warnings=False):
            return v0_5.ModelDescr(
                name=name,
                description=description,
                authors=[v0_5.Author(name=a) for a in authors],
                cite=[v0_5.CiteEntry(text=PSSR_CITATION, doi=v0_5.Doi(PSSR_DOI))],
                license=v0_5.LicenseId(LICENSE),
                documentation=v0_5.FileDescr(source=files["readme"]),
                covers=[v0_5.FileDescr(source=files["cover"])],
                tags=tags,
                version=v0_5.Version("0.1.0"),
                inputs=[
                    v0_5.InputTensorDescr(
                        id=input_id,
                        description="raw image; normalised by the preprocessing",
                        axes=in_axes,
                        test_tensor=v0_5.FileDescr(source=files["test_input"]),
                        sample_tensor=v0_5.FileDescr(source=files["sample_input"]),
                        preprocessing=preprocessing,
                    )
                ],
                outputs=[
                    v0_5.OutputTensorDescr(
                        id=output_id,
                        description=f"restored image, Y and X ×{model.scale}, in normalised units",
                        axes=out_axes,
                        test_tensor=v0_5.FileDescr(source=files["test_output"]),
                        sample_tensor=v0_5.FileDescr(source=files["sample_output"]),
                    )
                ],
                weights=v0_5.WeightsDescr(**weights_descr),
                config=v0_5.Config(
                    bioimageio=v0_5.BioimageioConfig(
                        architecture_type=cls[:32],
                        architecture_description=_docstring_summary(module, cls) or None,
                        task="super-resolution" if model.scale > 1 else "image-restoration",
                        model_parameter_count=n_params,
                        training=v0_5.TrainingDetails(
                            training_preprocessing=(
                                f"percentile normalisation {list(model.percentiles)} per image and channel;"
                                f" degradation {_describe(cfg.get('crappifier'))}"
                            ),
                            training_epochs=(cfg.get("trainer") or {}).get("max_epochs"),
                            training_batch_size=(cfg.get("data") or {}).get("batch_size"),
                            initial_learning_rate=optimizer.get("lr"),
                            learning_rate_schedule=_describe(module_cfg.get("scheduler")) or None,
                            loss_function=str((cfg.get("loss") or {}).get("_target_", "")) or None,
                            optimizer=str(optimizer.get("_target_", "")) or None,
                        ),
                    ),
                    **psr_config,
                ),
            )
    except ValidationError as err:
        problem = err.errors()[0]
        where = ".".join(str(p) for p in problem.get("loc", ()))
        raise ExportError(f"the bioimage.io description is invalid at {where}: {problem.get('msg')}") from err


# ---------------------------------------------------------------------------------------------------------
# Test and export


def run_model_test(package: str | Path) -> dict[str, str]:
    """bioimageio.core's model test of a package, offline; ``{check name: status}`` with the overall status
    under ``"summary"``. Every weight format is tested: test outputs reproduced from test inputs, and
    inference for batch sizes 1 and 2 at three parameterized sizes."""
    from bioimageio.core import test_model

    with _quiet_bioimageio():
        summary = test_model(str(package))
    checks = {"summary": str(summary.status)}
    for detail in summary.details:
        key = detail.name
        while key in checks:
            key += " "
        checks[key] = str(detail.status)
    failed = [d for d in summary.details if d.status == "failed"]
    if failed:
        errors = [e.msg for d in failed for e in d.errors]
        checks["summary"] = "failed"
        checks["first error"] = f"{failed[0].name}: {errors[0] if errors else 'no message'}"
    return checks


def package_geometry(model: LoadedModel, test_size: int) -> tuple[dict[str, dict[str, int]], tuple[int, ...]]:
    """Per spatial axis ``{min, step, halo}`` in input pixels, and the test input's spatial shape."""
    steps = size_steps(model)
    size = check_test_size(model, test_size)
    probe = [size, size]
    if model.spatial_dims == 3:
        probe.insert(0, round_up(16, steps[0]))
    halos = receptive_halo(model, probe)
    geometry: dict[str, dict[str, int]] = {}
    for axis, step, halo in zip(axis_names(model), steps, halos, strict=True):
        geometry[axis] = {"min": step * (2 * halo // step + 1), "step": step, "halo": halo}
    spatial = [size, size]
    if model.spatial_dims == 3:
        spatial.insert(0, round_up(max(8, geometry["z"]["min"]), steps[0]))
    for axis, n in zip(axis_names(model), spatial, strict=True):
        if n < geometry[axis]["min"]:
            raise ExportError(
                f"test_size={test_size} is smaller than the model's minimum input size {geometry[axis]['min']}"
                f" along {axis.upper()} (more than twice its halo of {geometry[axis]['halo']} pixels)"
            )
    return geometry, tuple(spatial)


def export_bioimageio(
    model: LoadedModel | str | Path,
    output: str | Path,
    *,
    name: str | None = None,
    description: str | None = None,
    authors: Sequence[str] = ("psr",),
    test_size: int = 64,
    weights: Sequence[str] = WEIGHT_FORMATS,
    overwrite: bool = False,
    atol: float = ATOL,
) -> ExportResult:
    """Export a generator (a ``LoadedModel`` or a checkpoint path) as a bioimage.io model zip at ``output``.

    ``weights``: the formats added to the primary ``pytorch_state_dict`` (``torchscript``, ``onnx``). Each
    is verified against eager PyTorch within ``atol``; then bioimageio.core's model test runs on the
    finished zip, and only a zip whose test status is "passed" is renamed to ``output``. Raises
    ``ExportError`` (or ``CheckpointError``) with one sentence otherwise.
    """
    unknown = sorted(set(weights) - set(WEIGHT_FORMATS))
    if unknown:
        raise ExportError(
            f"weights={list(weights)} names unknown format(s) {unknown}; expected any of {list(WEIGHT_FORMATS)}"
        )
    check_output(output, overwrite)
    loaded = as_loaded(model)
    name = check_name(name or default_name(loaded))
    authors = [str(a) for a in authors] or ["psr"]
    for author in authors:
        if "/" in author or not author.strip():
            raise ExportError(f"author name {author!r} is not valid; expected a non-empty name without '/'")
    module, cls = model_class(loaded)
    description = description or (
        f"{'Super-resolution (×' + str(loaded.scale) + ') and restoration' if loaded.scale > 1 else 'Restoration'}"
        f" of {loaded.spatial_dims}D microscopy images with {cls}, trained by psr the PSSR way: clean images"
        " degraded on the fly by a crappifier, the network learning to undo it."
    )
    geometry, spatial = package_geometry(loaded, test_size)
    shapes = verification_shapes(loaded, test_size)
    try:
        ckpt: dict[str, Any] | None = read_checkpoint(loaded.path)
    except CheckpointError:
        ckpt = None
    result = ExportResult(path=Path(output), format="bioimageio")
    with (
        staged_output(output, overwrite) as tmp_zip,
        tempfile.TemporaryDirectory(prefix="psr-bioimageio-") as wd,
    ):
        work = Path(wd)
        files = {
            "state_dict": work / "weights.pt",
            "torchscript": work / "weights_torchscript.pt",
            "onnx": work / "weights.onnx",
            "test_input": work / "test_input.npy",
            "test_output": work / "test_output.npy",
            "sample_input": work / "sample_input.tif",
            "sample_output": work / "sample_output.tif",
            "cover": work / "cover.png",
            "readme": work / "README.md",
        }
        torch.save(loaded.net.state_dict(), files["state_dict"])
        opset = None
        if "torchscript" in weights:
            diffs = write_torchscript(loaded, files["torchscript"], shapes, atol)
            result.max_abs_diff.update({f"torchscript {k}": v for k, v in diffs.items()})
        if "onnx" in weights:
            opset = write_onnx(loaded, files["onnx"], shapes[0])
            diffs = verify_onnx(loaded.net, files["onnx"], shapes, atol)
            result.max_abs_diff.update({f"onnx {k}": v for k, v in diffs.items()})
        raw = sample_input_image(loaded, spatial)
        _, out = predict_normalised(loaded, raw)
        np.save(files["test_input"], raw)
        np.save(files["test_output"], out)
        import tifffile

        tifffile.imwrite(files["sample_input"], raw[0].squeeze())  # for people and viewers; .npy for tests
        tifffile.imwrite(files["sample_output"], out[0].squeeze())
        write_cover(raw, out, loaded.scale, f"{name}: {cls} ×{loaded.scale}", files["cover"])
        formats = ["pytorch_state_dict", *weights]
        write_readme(loaded, name, description, geometry, formats, ckpt, files["readme"])
        descr = build_description(
            loaded,
            files,
            name=name,
            description=description,
            authors=authors,
            geometry=geometry,
            weights=weights,
            opset=opset,
        )
        from bioimageio.spec import save_bioimageio_package

        try:
            with _quiet_bioimageio():
                save_bioimageio_package(descr, output_path=tmp_zip)
        except Exception as err:  # noqa: BLE001 - packaging errors come from pydantic, zipfile, IO
            raise ExportError(f"packaging the bioimage.io model failed: {first_line(err)}") from err
        result.checks = run_model_test(tmp_zip)
        if result.checks["summary"] != "passed":
            raise ExportError(
                f"bioimageio.core's model test did not pass ({result.checks.get('first error', 'no detail')});"
                f" nothing was written to {output}"
            )
    result.info = {
        "weights": formats,
        "opset": opset,
        "test_input_shape": shape_name(raw.shape),
        "geometry": geometry,
        "halo_output_pixels": {a: g["halo"] * (loaded.scale if a != "z" else 1) for a, g in geometry.items()},
        "parameters": sum(p.numel() for p in loaded.net.parameters()),
        "bioimageio_io_checks": os.environ.get("BIOIMAGEIO_PERFORM_IO_CHECKS"),
    }
    return result


def predict_with_bioimageio(
    package: str | Path, image: np.ndarray, weight_format: str | None = None
) -> np.ndarray:
    """Run a bioimage.io package on a raw image ``(B, C, [Z,] Y, X)`` with bioimageio.core: its preprocessing,
    then the weights of ``weight_format`` (default: bioimageio.core's choice) on the whole image.

    Like psr's own prediction, the image is not padded by the halo (bioimageio.core's ``predict`` pads it
    symmetrically, which also shifts the percentiles the preprocessing computes); the image size must be
    a valid input size of the package.
    """
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import create_sample_for_model
    from bioimageio.spec import load_model_description

    with _quiet_bioimageio():
        descr = load_model_description(str(package), perform_io_checks=False)
        with create_prediction_pipeline(descr, weights_format=weight_format) as pipeline:  # type: ignore[arg-type]
            sample = create_sample_for_model(descr, inputs=image, sample_id="psr")
            result = pipeline.predict_sample_without_blocking(
                sample, skip_input_padding=True, skip_output_cropping=True
            )
    (tensor,) = result.members.values()
    return np.asarray(tensor.data)
