"""Preview a degradation: ``python scripts/preview_crappifier.py crappifier=pssr_fluo [n_draws=4] [output=...]``.

Composes ``conf/preview.yaml`` (the training config plus ``n_draws`` and ``output``) like ``train.py`` (any override works: ``scale=2``, ``data=zarr data.path=...``,
``crappifier.steps.1.photons=50``), takes clean validation patches from the data, degrades them with
several random draws and writes one PNG: a grid of clean | degraded (nearest-upsampled) | residual per
draw, and intensity histograms of the clean and degraded patches.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="../conf", config_name="preview")
def main(cfg: DictConfig) -> None:
    from psr.tasks.errors import ConfigError
    from psr.tasks.preview import preview

    try:
        path = preview(cfg, n_draws=int(cfg.n_draws), output=cfg.output)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"psr: wrote {path}")


if __name__ == "__main__":
    main()
