"""Writing matplotlib figures safely."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from psr.atomic import atomic_path


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save ``fig`` as ``path`` under a temporary name, rename it when complete, and close the figure.

    A failure leaves neither a partial PNG nor the temporary file.
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=(path.suffix.lstrip(".") or "png"))
    finally:
        plt.close(fig)
    return path
