"""Plain ``nn.Module`` generators; each takes a low-resolution batch and returns it ``scale`` times larger.

The classes are imported on first use (PEP 562): ``UNet`` needs segmentation-models-pytorch, which pulls
in timm and torchvision (about a second at start-up), and a run with ``model=rcan`` or ``model=care_unet``
should not pay for it. Configs name the module directly (``psr.models.rcan.RCAN``) anyway.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psr.models.care_unet import CAREUNet
    from psr.models.edsr import EDSR
    from psr.models.rcan import RCAN
    from psr.models.rcan3d import RCAN3D
    from psr.models.unet import UNet

_MODULES = {
    "CAREUNet": "psr.models.care_unet",
    "EDSR": "psr.models.edsr",
    "RCAN": "psr.models.rcan",
    "RCAN3D": "psr.models.rcan3d",
    "UNet": "psr.models.unet",
}

__all__ = ["CAREUNet", "EDSR", "RCAN", "RCAN3D", "UNet"]


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'psr.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
