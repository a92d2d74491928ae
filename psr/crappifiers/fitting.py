"""Deprecated location of the crappifier fitting workflow, which is now ``psr.calibration.fitting`` (the
operators package does not read images). Names imported from here still work, with a DeprecationWarning."""

from __future__ import annotations

import warnings
from typing import Any


def __getattr__(name: str) -> Any:
    from psr.calibration import fitting

    if name.startswith("__") or not hasattr(fitting, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"psr.crappifiers.fitting is deprecated; import {name} from psr.calibration.fitting",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(fitting, name)
