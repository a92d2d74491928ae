"""Export trained generators: TorchScript, ONNX and bioimage.io model packages.

Plain functions taking a ``LoadedModel`` (``psr.inference.checkpoint.load_checkpoint``) or a checkpoint
path; each verifies its output against eager PyTorch and writes the file only when it matches.
``psr.export.bioimageio`` imports bioimageio.core lazily (slow to import); import it directly.
"""

from psr.export.common import ATOL, ExportError, ExportResult, size_steps
from psr.export.onnx import export_onnx
from psr.export.torchscript import export_torchscript

__all__ = ["ATOL", "ExportError", "ExportResult", "export_onnx", "export_torchscript", "size_steps"]
