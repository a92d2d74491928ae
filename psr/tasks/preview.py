"""The preview task: what a crappifier does to clean patches, as one PNG figure.

Each patch is degraded ``n_draws`` times. Every degraded tile is labelled with the operators that draw
applied and the parameters it sampled (:mod:`psr.reporting.draws`); every residual (degraded − clean)
shares one symmetric colour range, shown by a colour bar.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from psr.reporting.draws import Step, recording
from psr.reporting.figures import save_figure
from psr.tasks.common import choice as _choice
from psr.tasks.train import build


def _middle_plane(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, [Z,] Y, X)`` → ``(B, C, Y, X)``: 3D patches show their middle plane."""
    return x[:, :, x.shape[2] // 2] if x.dim() == 5 else x


def describe_draw(steps: list[Step], width: int = 34) -> str:
    """The steps of one draw as short wrapped lines (``→`` between operators)."""
    text = " → ".join(step.describe() for step in steps) or "no operator applied"
    return "\n".join(textwrap.wrap(text, width=width, break_long_words=False)[:6])


def preview(cfg: DictConfig, n_draws: int = 4, output: str | None = None, n_patches: int = 3) -> Path:
    """Degrade ``n_patches`` validation patches ``n_draws`` times each and write the figure.

    Returns the PNG's path (``output``, else ``<paths.output_dir>/preview-<crappifier>.png``). The file
    is written under a temporary name and renamed, so a failed run leaves no partial figure. Draw ``d``
    uses the generator seeded with ``seed * 1000 + d``, and degrades the patches one by one with it, so
    each tile's label holds that patch's own parameters.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if n_draws < 1:
        raise ValueError(f"n_draws must be >= 1, got {n_draws}")
    parts = build(cfg)
    crappifier, datamodule = parts["crappifier"], parts["datamodule"]
    loader = datamodule.val_dataloader() if datamodule.val_sources else datamodule.train_dataloader()
    batch = next(iter(loader))
    if isinstance(batch, (list, tuple)):  # a training pool yields (patches, noise seeds)
        batch = batch[0]
    clean = batch[:n_patches].float()
    clean_show = _middle_plane(clean)
    n_patches = clean_show.shape[0]
    name = _choice(cfg, "crappifier")
    draws: list[tuple[torch.Tensor, torch.Tensor, list[str]]] = []  # (degraded, residual, labels)
    degraded_values = []
    for draw in range(n_draws):
        gen = torch.Generator().manual_seed(int(cfg.seed) * 1000 + draw)
        lows, labels = [], []
        for i in range(n_patches):
            with torch.no_grad(), recording(crappifier) as steps:
                lows.append(crappifier(clean[i : i + 1], gen))
            labels.append(describe_draw(steps))
        low_show = _middle_plane(torch.cat(lows))
        up = F.interpolate(low_show, size=clean_show.shape[-2:], mode="nearest")
        degraded_values.append(low_show.flatten().numpy())
        draws.append((up, up - clean_show, labels))
    residuals = np.concatenate([r[:, 0].flatten().numpy() for _, r, _ in draws])
    span = float(np.percentile(np.abs(residuals), 99.5)) or float(np.abs(residuals).max()) or 1.0

    tile = 2.3
    fig = plt.figure(figsize=(tile * (1 + 2 * n_draws) + 1.4, (tile + 0.9) * n_patches + 2.9), dpi=100)
    grid = fig.add_gridspec(
        n_patches + 1,
        1 + 2 * n_draws,
        height_ratios=[1] * n_patches + [0.9],
        left=0.045,
        right=1 - 1.4 / fig.get_figwidth(),
        top=1 - 0.7 / fig.get_figheight(),
        bottom=0.5 / fig.get_figheight(),
        hspace=0.55,
        wspace=0.06,
    )
    shown_residual = None
    for i in range(n_patches):
        img = clean_show[i, 0].numpy()
        lo, hi = np.percentile(img, [0.5, 99.5])
        ax = fig.add_subplot(grid[i, 0])
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"grey range [{lo:.3g}, {hi:.3g}]", fontsize=7)
        if i == 0:
            ax.set_title("clean", fontsize=9, fontweight="bold")
        for d, (up, residual, labels) in enumerate(draws):
            ax = fig.add_subplot(grid[i, 1 + 2 * d])
            ax.imshow(up[i, 0].numpy(), cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(labels[i], fontsize=6.5, loc="left", linespacing=1.1)
            if i == 0:
                ax.set_title(f"draw {d + 1}: degraded", fontsize=9, fontweight="bold")
            ax = fig.add_subplot(grid[i, 2 + 2 * d])
            shown_residual = ax.imshow(
                residual[i, 0].numpy(), cmap="RdBu_r", vmin=-span, vmax=span, interpolation="nearest"
            )
            ax.set_axis_off()
            if i == 0:
                ax.set_title("residual", fontsize=9)
    assert shown_residual is not None
    bar = fig.add_axes((1 - 1.2 / fig.get_figwidth(), 0.35, 0.15 / fig.get_figwidth(), 0.5))
    fig.colorbar(shown_residual, cax=bar, extend="both").set_label(
        "residual: degraded − clean\n(normalised intensity; one range for all)", fontsize=8
    )
    ax = fig.add_subplot(grid[n_patches, :])
    values = clean_show.flatten().numpy()
    bins = np.linspace(
        min(values.min(), *(v.min() for v in degraded_values)),
        max(values.max(), *(v.max() for v in degraded_values)),
        120,
    )
    ax.hist(values, bins=bins.tolist(), density=True, histtype="step", label="clean", color="black")
    ax.hist(
        np.concatenate(degraded_values),
        bins=bins.tolist(),
        density=True,
        histtype="step",
        label="degraded (all draws)",
        color="tab:red",
    )
    ax.set_yscale("log")
    ax.set_xlabel("normalised intensity")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.suptitle(
        f"crappifier={name}  scale={crappifier.scale}  ·  degraded tiles enlarged by nearest neighbour, "
        "shown with their clean patch's grey range; under each: the operators applied and the sampled values",
        fontsize=10,
    )
    return save_figure(fig, Path(output) if output else Path(cfg.paths.output_dir) / f"preview-{name}.png")
