"""Figures and tables of an evaluation: per-image panels with zoomed insets and error maps, a Markdown table.

Plain NumPy in, files or strings out; no configuration objects (see ``psr.tasks.evaluate``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from psr.reporting.figures import save_figure


@dataclass(frozen=True)
class Panel:
    """One image of the figure: a 2D view ``(Y, X)`` in the ground truth's normalised units."""

    title: str
    image: np.ndarray
    error: np.ndarray | None = None  # |image − ground truth|, drawn under it; None for the ground truth


@dataclass(frozen=True)
class Curve:
    """One FRC curve for the figure's last panel."""

    label: str
    frequency: np.ndarray  # (R,) cycles per pixel
    correlation: np.ndarray  # (R,)


def zoom_box(truth: np.ndarray, fraction: float = 0.2, max_size: int = 96) -> tuple[int, int, int]:
    """``(y, x, size)`` of the square crop with the most structure (highest standard deviation of the
    ground truth) among crops on a coarse grid: the region the insets magnify. The crop is ``fraction``
    of the shorter side, at most ``max_size`` pixels, so that insets of large images show single pixels."""
    size = max(8, min(int(max_size), int(round(min(truth.shape) * fraction))))
    size = min(size, *truth.shape)
    steps = 6
    best = (-1.0, 0, 0)
    for y in np.linspace(0, truth.shape[0] - size, steps).astype(int):
        for x in np.linspace(0, truth.shape[1] - size, steps).astype(int):
            score = float(np.std(truth[y : y + size, x : x + size]))
            if score > best[0]:
                best = (score, int(y), int(x))
    return best[1], best[2], size


def evaluation_figure(
    path: str | Path,
    panels: Sequence[Panel],
    curves: Sequence[Curve] = (),
    title: str = "",
    thresholds: Sequence[tuple[str, np.ndarray, np.ndarray]] = (),
    inset_fraction: float = 0.2,
) -> Path:
    """Write the figure of one image to ``path`` (PNG, written under a temporary name and renamed).

    Top row: the panels (input, baselines, prediction, ground truth), each on the display range [0, 1]
    of the normalised ground truth with a magnified inset of the :func:`zoom_box` region. Bottom row:
    the absolute error maps on one shared scale, and the FRC curves against the ground truth with the
    threshold curves (``(label, frequency, values)``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    path = Path(path)
    n = len(panels)
    truth = panels[-1].image
    y0, x0, size = zoom_box(truth, inset_fraction)
    errors = [p.error for p in panels if p.error is not None]
    err_max = max((float(np.percentile(e, 99.5)) for e in errors), default=1.0) or 1.0
    width = 2.6
    fig, axes = plt.subplots(2, n, figsize=(width * n, width * 2 + 0.6), dpi=110, squeeze=False)
    for i, panel in enumerate(panels):
        ax = axes[0, i]
        ax.imshow(panel.image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.add_patch(
            Rectangle((x0 - 0.5, y0 - 0.5), size, size, fill=False, edgecolor="yellow", linewidth=0.8)
        )
        inset = ax.inset_axes((0.58, 0.0, 0.42, 0.42))
        inset.imshow(
            panel.image[y0 : y0 + size, x0 : x0 + size],
            cmap="gray",
            vmin=0.0,
            vmax=1.0,
            interpolation="nearest",
        )
        inset.set_xticks([])
        inset.set_yticks([])
        for spine in inset.spines.values():
            spine.set_edgecolor("yellow")
        ax.set_title(panel.title, fontsize=8)
        ax.set_axis_off()
        low = axes[1, i]
        if panel.error is not None:
            shown = low.imshow(panel.error, cmap="magma", vmin=0.0, vmax=err_max, interpolation="nearest")
            low.set_title("|error|", fontsize=8)
            low.set_axis_off()
            if i == 0:  # one shared scale; the bar sits beside the first map without shrinking it
                bar = fig.colorbar(shown, cax=low.inset_axes((1.02, 0.0, 0.04, 1.0)))
                bar.ax.tick_params(labelsize=6)
        elif curves:
            for curve in curves:
                low.plot(curve.frequency, curve.correlation, linewidth=1.0, label=curve.label)
            for label, freq, values in thresholds:
                low.plot(freq, values, linestyle="--", color="gray", linewidth=0.8, label=label)
            low.set_ylim(-0.1, 1.02)
            low.set_xlim(0, float(max(c.frequency.max() for c in curves)))
            low.set_xlabel("cycles / pixel", fontsize=7)
            low.set_title("FRC vs ground truth", fontsize=8)
            low.tick_params(labelsize=6)
            low.legend(fontsize=5, loc="upper right")
        else:
            low.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def markdown_table(rows: Sequence[dict[str, object]], columns: Sequence[tuple[str, str, str]]) -> str:
    """A Markdown table of ``rows``: ``columns`` are ``(key, header, format)``, e.g. ``("psnr", "PSNR",
    ".2f")``; NaN and missing values print as ``–``."""
    lines = [
        "| " + " | ".join(header for _, header, _ in columns) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|",
    ]
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = row.get(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                cells.append("–")
            elif fmt and isinstance(value, int | float):
                cells.append(format(value, fmt))
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
