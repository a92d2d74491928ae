"""Export a trained model: ``python scripts/export.py ckpt=path/to/best.ckpt [format=bioimageio|onnx|torchscript]``.

Composes ``conf/export.yaml``; writes ``outputs/export/<name>.<zip|onnx|pt>`` unless ``output=...`` says
otherwise. The file appears only once the export reproduces the PyTorch model (and, for bioimage.io, once
bioimageio.core's model test passed). Bad input: one ``error: ...`` line on stderr and exit code 2.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    from psr.tasks.entry import run_task
    from psr.tasks.export import export, summary_line

    # Bad input, a full disk, SIGTERM: one error line and a non-zero exit (psr/tasks/entry.py).
    summary = run_task(export, cfg)
    print(summary_line(summary))


if __name__ == "__main__":
    from psr.tasks.entry import check_overrides

    check_overrides()  # unquoted spaces or µ: one error line, not a lexer report
    main()
