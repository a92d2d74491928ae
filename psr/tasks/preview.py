"""The preview task: what a crappifier does to clean patches, as one PNG figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from psr.reporting.figures import save_figure
from psr.tasks.train import _choice, build


def preview(cfg: DictConfig, n_draws: int = 4, output: str | None = None, n_patches: int = 3) -> Path:
    """Degrade ``n_patches`` validation patches ``n_draws`` times each and write the figure.

    Returns the PNG's path (``output``, else ``<paths.output_dir>/preview-<crappifier>.png``). The file
    is written under a temporary name and renamed, so a failed run leaves no partial figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if n_draws < 1:
        raise ValueError(f"n_draws must be >= 1, got {n_draws}")
    parts = build(cfg)
    crappifier, datamodule = parts["crappifier"], parts["datamodule"]
    loader = datamodule.val_dataloader() if datamodule.val_sources else datamodule.train_dataloader()
    clean = next(iter(loader))[:n_patches].float()
    clean_show = clean[:, :, clean.shape[2] // 2] if clean.dim() == 5 else clean  # 3D: the middle plane
    name = _choice(cfg, "crappifier")
    rows = []
    degraded_values = []
    for draw in range(n_draws):
        gen = torch.Generator().manual_seed(int(cfg.seed) * 1000 + draw)
        with torch.no_grad():
            low = crappifier(clean, gen)
        low_show = low[:, :, low.shape[2] // 2] if low.dim() == 5 else low
        up = F.interpolate(low_show, size=clean_show.shape[-2:], mode="nearest")
        degraded_values.append(low_show.flatten().numpy())
        rows.append((up, up - clean_show))

    fig = plt.figure(figsize=(2.2 * (1 + 2 * n_draws), 2.2 * n_patches + 2.6), dpi=110)
    grid = fig.add_gridspec(n_patches + 1, 1 + 2 * n_draws, height_ratios=[1] * n_patches + [1.1])
    for i in range(clean_show.shape[0]):
        img = clean_show[i, 0].numpy()
        lo, hi = np.percentile(img, [0.5, 99.5])
        ax = fig.add_subplot(grid[i, 0])
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
        ax.set_axis_off()
        if i == 0:
            ax.set_title("clean", fontsize=9)
        for d, (up, residual) in enumerate(rows):
            ax = fig.add_subplot(grid[i, 1 + 2 * d])
            ax.imshow(up[i, 0].numpy(), cmap="gray", vmin=lo, vmax=hi)
            ax.set_axis_off()
            if i == 0:
                ax.set_title(f"degraded #{d + 1}", fontsize=9)
            ax = fig.add_subplot(grid[i, 2 + 2 * d])
            r = residual[i, 0].numpy()
            span = float(np.abs(r).max()) or 1.0
            ax.imshow(r, cmap="RdBu_r", vmin=-span, vmax=span)
            ax.set_axis_off()
            if i == 0:
                ax.set_title("residual", fontsize=9)
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
        label="degraded",
        color="tab:red",
    )
    ax.set_yscale("log")
    ax.set_xlabel("normalised intensity")
    ax.legend(fontsize=8)
    fig.suptitle(f"crappifier={name}  scale={crappifier.scale}", fontsize=11)
    fig.tight_layout()

    return save_figure(fig, Path(output) if output else Path(cfg.paths.output_dir) / f"preview-{name}.png")
