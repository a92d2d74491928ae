"""Validation panels a person can read: labelled columns, per-row scores, the contrast range, a scale bar.

:func:`validation_panel` draws rows of ``input | prediction | target | baseline`` tiles into an RGB image
(the PNG written each validation epoch and the image sent to W&B). Every tile of a row shares one display
range, taken from the target, and the panel says so. :func:`scale_bar_length` picks a round length for the
scale bar; :func:`source_pixel_size` finds the physical pixel size of a datamodule's images, where the
store records one.

Drawing uses matplotlib's object API with the Agg canvas (no pyplot state), so it is safe to call from a
training loop.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from psr.io.units import SYMBOLS, UNIT_METRES, normalise_unit, symbol

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class PanelRow:
    """One validation image: 2D tiles ``(Y, X)`` at the target's size, and the scores of the row.

    ``input`` is the degraded input enlarged by nearest-neighbour (every input pixel stays visible);
    ``baseline`` the interpolation the model is compared with. Scores are those of validation: PSNR in
    dB and SSIM of the prediction and of the baseline against the target.
    """

    input: np.ndarray
    prediction: np.ndarray
    target: np.ndarray
    baseline: np.ndarray
    psnr: float
    ssim: float
    baseline_psnr: float
    baseline_ssim: float


def scale_bar_length(pixel_size: float, width_px: int, unit: str) -> tuple[float, str, float]:
    """A round scale bar for a tile ``width_px`` pixels wide: ``(length, unit, length in pixels)``.

    The length is 1, 2 or 5 × 10^k, at most a fifth of the tile and more than a twelfth of it, in the
    largest length unit (Å, nm, µm, mm, m) that keeps the number at 1 or more.
    """
    if not (pixel_size > 0 and math.isfinite(pixel_size)) or width_px < 1:
        raise ValueError(f"pixel_size={pixel_size} and width_px={width_px}; expected positive numbers")
    name = normalise_unit(unit, strict=False)
    shown = SYMBOLS[name] if name else unit
    target = pixel_size * width_px / 5
    if name is not None:
        metres = target * UNIT_METRES[name]
        fitting = [
            u
            for u, m in sorted(UNIT_METRES.items(), key=lambda kv: kv[1])
            if u != "centimeter" and m <= metres
        ]
        better = fitting[-1] if fitting else "angstrom"
        pixel_size *= UNIT_METRES[name] / UNIT_METRES[better]
        target, shown = metres / UNIT_METRES[better], SYMBOLS[better]
    magnitude = 10 ** math.floor(math.log10(target))
    length = max(m * magnitude for m in (1, 2, 5) if m * magnitude <= target * (1 + 1e-9))
    return length, shown, length / pixel_size


def _round_text(value: float) -> str:
    return f"{value:g}"


def _display_range(target: np.ndarray) -> tuple[float, float]:
    """The 0.5–99.5 percentiles of the target: a few hot pixels do not wash out the row."""
    lo, hi = (float(v) for v in np.percentile(target, [0.5, 99.5]))
    if not hi > lo:
        lo, hi = float(target.min()), float(target.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def panel_figure(
    rows: Sequence[PanelRow],
    *,
    baseline_name: str = "bilinear",
    pixel_size: float | None = None,
    unit: str | None = None,
    title: str = "",
    note: str = "",
    tile_inches: float = 2.3,
    dpi: int = 100,
) -> Figure:
    """The panel of ``rows`` as a matplotlib figure (on an Agg canvas); :func:`validation_panel` renders it.

    Columns: input (nearest) | prediction | target | baseline (``baseline_name``), titled once at the top;
    each prediction and baseline tile carries its PSNR and SSIM. A row's four tiles share the display
    range of its target (stated at the row's left). With ``pixel_size`` (in ``unit`` per pixel), each
    target tile gets a scale bar. ``note`` adds a line under the title (e.g. what the planes are).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    if not rows:
        raise ValueError("validation_panel needs at least one row")
    columns = ("input (nearest)", "prediction", "target", f"baseline ({baseline_name})")
    n = len(rows)
    height, width = rows[0].target.shape
    aspect = height / width
    head = 0.75 if not note else 0.95
    fig = Figure(figsize=(0.9 + 4 * tile_inches, head + n * (tile_inches * aspect + 0.42)), dpi=dpi)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(
        n,
        4,
        left=0.9 / fig.get_figwidth(),
        right=0.995,
        top=1 - head / fig.get_figheight(),
        bottom=0.3 / fig.get_figheight(),
        wspace=0.04,
        hspace=0.22 / tile_inches * 2,
    )
    heading = title or "validation panel"
    fig.suptitle(heading, fontsize=11, y=1 - 0.12 / fig.get_figheight(), va="top")
    sub = "grey levels: each row's four tiles share one range, the target's 0.5–99.5 percentiles (shown at left)"
    fig.text(
        0.5,
        1 - 0.38 / fig.get_figheight(),
        sub + (f"\n{note}" if note else ""),
        ha="center",
        va="top",
        fontsize=8,
        color="#444",
    )
    for i, row in enumerate(rows):
        lo, hi = _display_range(row.target)
        tiles = (row.input, row.prediction, row.target, row.baseline)
        scores = (
            "",
            f"PSNR {row.psnr:.2f} dB · SSIM {row.ssim:.3f}",
            "",
            f"PSNR {row.baseline_psnr:.2f} dB · SSIM {row.baseline_ssim:.3f}",
        )
        for j, (tile, score) in enumerate(zip(tiles, scores, strict=True)):
            ax = fig.add_subplot(grid[i, j])
            ax.imshow(tile, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(columns[j], fontsize=10, fontweight="bold")
            if score:
                ax.set_xlabel(score, fontsize=8.5, labelpad=2)
            if j == 0:
                ax.set_ylabel(
                    f"#{i + 1}\ngrey range\n[{lo:.3g}, {hi:.3g}]", fontsize=8, rotation=90, labelpad=4
                )
            if j == 2 and pixel_size is not None and unit:
                length, shown, pixels = scale_bar_length(pixel_size, width, unit)
                bar = AnchoredSizeBar(
                    ax.transData,
                    pixels,
                    f"{_round_text(length)} {shown}",
                    "lower right",
                    pad=0.3,
                    borderpad=0.4,
                    sep=3,
                    color="white",
                    frameon=True,
                    size_vertical=max(1.0, height / 60),
                    fontproperties={"size": 8},
                )
                bar.patch.set(facecolor="black", alpha=0.55, edgecolor="none")
                ax.add_artist(bar)
    return fig


def validation_panel(rows: Sequence[PanelRow], **options: Any) -> np.ndarray:
    """The panel of ``rows`` (options as :func:`panel_figure`) as an RGB image ``(H, W, 3)`` uint8."""
    fig = panel_figure(rows, **options)
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()  # type: ignore[attr-defined]
    fig.clear()
    return image


def source_pixel_size(datamodule: Any) -> tuple[float, str] | None:
    """The lateral pixel size and unit of a datamodule's validation (else training) images, when every
    image has the same one and its store records the unit; ``None`` otherwise.

    Reads ``val_sources`` / ``train_sources`` (each with an ``ImageRef`` as ``.ref``) and the unit of the
    first spatial axis of each image's OME-Zarr metadata.
    """
    sources: Iterable[Any] = (
        getattr(datamodule, "val_sources", None) or getattr(datamodule, "train_sources", None) or []
    )
    found: set[tuple[float, str]] = set()
    for source in sources:
        ref = getattr(source, "ref", None)
        size = (getattr(ref, "pixel_size", None) or {}).get("x")
        unit = _store_unit(ref) if size is not None else None
        if size is None or unit is None:
            return None
        found.add((float(size), unit))
    return found.pop() if len(found) == 1 else None


def _store_unit(ref: Any) -> str | None:
    """The symbol of the unit of ``ref``'s image (its OME-Zarr axes), ``None`` when it records none."""
    from psr.io.read_zarr import ref_metadata

    return symbol(ref_metadata(ref).unit)
