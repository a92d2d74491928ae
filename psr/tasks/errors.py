"""The exception entry points turn into a clear message and a non-zero exit (defined in ``psr.errors``)."""

from __future__ import annotations

from psr.errors import ConfigError, DataError, PsrError

__all__ = ["ConfigError", "DataError", "PsrError"]
