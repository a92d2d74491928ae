"""Writing matplotlib figures safely."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save ``fig`` as ``path`` under a temporary name, rename it when complete, and close the figure.

    A failure leaves neither a partial PNG nor the temporary file.
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix or ".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
