"""The bioimage.io description (``rdf.yaml``, format 0.5) of a psr generator's package, built with
bioimageio.spec's classes: tensors with parameterized sizes (``min + n·step``: the model's size step, above
twice the halo), output axes that reference the input's at the model's scale with a halo for tiling (the
effective receptive field, ``receptive_halo``), ``scale_range`` preprocessing, weights and training details.

Importing this module turns bioimageio.spec's IO checks off (``BIOIMAGEIO_PERFORM_IO_CHECKS=false`` unless
set otherwise): the description holds no URL, so building and testing a package need no network.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from psr.export.common import ExportError, axis_names, check_test_size, model_class, round_up, size_steps
from psr.export.content import (
    LICENSE,
    PSSR_CITATION,
    PSSR_DOI,
    architecture_kwargs,
    describe,
    docstring_summary,
    normalisation_axes,
)
from psr.inference.checkpoint import LoadedModel

if TYPE_CHECKING:
    from bioimageio.spec.model.v0_5 import ModelDescr

# Before bioimageio.spec is first imported anywhere through psr: its settings are read at import.
os.environ.setdefault("BIOIMAGEIO_PERFORM_IO_CHECKS", "false")

#: Share of the gradient of an output pixel that the halo must cover (effective receptive field).
HALO_MASS = 0.99


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
                        architecture_description=docstring_summary(module, cls) or None,
                        task="super-resolution" if model.scale > 1 else "image-restoration",
                        model_parameter_count=n_params,
                        training=v0_5.TrainingDetails(
                            training_preprocessing=(
                                f"percentile normalisation {list(model.percentiles)} per image and channel;"
                                f" degradation {describe(cfg.get('crappifier'))}"
                            ),
                            training_epochs=(cfg.get("trainer") or {}).get("max_epochs"),
                            training_batch_size=(cfg.get("data") or {}).get("batch_size"),
                            initial_learning_rate=optimizer.get("lr"),
                            learning_rate_schedule=describe(module_cfg.get("scheduler")) or None,
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
