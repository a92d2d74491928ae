"""LightningModules: training objectives around plain ``nn.Module`` generators."""

from psr.modules.restoration import RestorationModule

__all__ = ["RestorationModule"]
