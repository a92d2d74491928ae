"""Restore an image of any size with a trained model, tile by tile:
``python predict.py ckpt=outputs/runs/.../best.ckpt input=image.tif output=restored.ome.zarr``; or every
image that appears in a folder, as it appears:
``python predict.py ckpt=... input=incoming/ output=restored/ watch=true``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from psr.tasks import entry


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    from psr.tasks.predict import predict

    # Bad input, a full disk, SIGTERM: one error line and a non-zero exit (psr/tasks/entry.py).
    entry.run_task(predict, cfg)


if __name__ == "__main__":
    entry.check_overrides()  # unquoted spaces or µ: one error line, not a lexer report
    main()
