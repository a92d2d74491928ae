"""What a bioimage.io package of a psr generator holds besides its weights: the normalisation psr trained
with (as bioimage.io's ``scale_range``), the constructor arguments, a deterministic test input and the
model's output on it, a cover image and a README written from the checkpoint's config and history."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psr.export.common import axis_names, model_class
from psr.inference.checkpoint import LoadedModel
from psr.metrics import keys

LICENSE = "BSD-3-Clause"
PSSR_CITATION = (
    "Fang, L., Monroe, F., Novak, S.W. et al. Deep learning-based point-scanning super-resolution imaging."
    " Nature Methods 18, 406-416 (2021)."
)
PSSR_DOI = "10.1038/s41592-021-01080-z"


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


def architecture_kwargs(model: LoadedModel) -> dict[str, Any]:
    """Constructor arguments of the generator from the checkpoint's config, as plain YAML values.

    ``encoder_weights`` (pretrained encoder initialisation of the U-Nets) is set to None: the state dict
    replaces those weights, and a consumer should not need to download them.
    """
    kwargs = {k: v for k, v in dict(model.config.get("model") or {}).items() if not k.startswith("_")}
    if kwargs.get("encoder_weights") is not None:
        kwargs["encoder_weights"] = None
    return kwargs


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


def describe(node: Any) -> str:
    """A config node with ``_target_`` as ``Name(key=value, ...)``; a ``steps`` list as ``A → B``."""
    if isinstance(node, dict):
        name = str(node.get("_target_", "")).rsplit(".", 1)[-1]
        if isinstance(node.get("steps"), list):
            return " → ".join(describe(step) for step in node["steps"])
        args = ", ".join(f"{k}={describe(v)}" for k, v in node.items() if not k.startswith("_"))
        return f"{name}({args})" if name else "{" + args + "}"
    if isinstance(node, list):
        return "[" + ", ".join(describe(v) for v in node) + "]"
    return repr(node) if isinstance(node, str) else str(node)


def docstring_summary(module: str, name: str) -> str:
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
        f"Architecture: `{module}.{cls}` with `{describe(kwargs)}`.",
    ]
    summary = docstring_summary(module, cls)
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
        f"- Degradation (crappifier, applied on the fly to clean patches): `{describe(cfg.get('crappifier'))}`.",
        f"- Scale ×{model.scale}; the network learns to undo this degradation (PSSR's training scheme).",
        f"- Loss `{describe(cfg.get('loss'))}`, optimizer `{describe(module_cfg.get('optimizer'))}`,"
        f" schedule `{describe(module_cfg.get('scheduler'))}`.",
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
                f"| {h.get('epoch', '?')} | {h.get(keys.VAL_PSNR, float('nan')):.2f} |"
                f" {h.get(keys.VAL_BASELINE_PSNR, float('nan')):.2f} | {h.get(keys.VAL_SSIM, float('nan')):.3f} |"
                f" {h.get(keys.VAL_BASELINE_SSIM, float('nan')):.3f} |"
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
        "Each converted format reproduces the state dict within 1e-4 (plus 1e-5 of the output's magnitude)"
        " on two input sizes (checked at export).",
        "",
        "## Citation",
        "",
        f"{PSSR_CITATION} doi:{PSSR_DOI}",
        "",
    ]
    path.write_text("\n".join(lines))
