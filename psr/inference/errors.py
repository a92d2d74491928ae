"""The exception prediction raises for bad input: one sentence naming the file or option."""

from __future__ import annotations

from psr.errors import PsrError


class PredictionError(PsrError):
    """An input, output or option prediction cannot work with, found before (or instead of) writing.

    The message names the file or option, what was found and what is expected.
    """
