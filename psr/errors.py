"""psr's exception types, on the ground floor: every package may raise them, entry points catch them.

``PsrError`` is the base: an error whose message is one sentence naming the config key or file, what was
found and what was expected, which an entry point prints as ``error: ...`` before exiting non-zero.
"""

from __future__ import annotations


class PsrError(ValueError):
    """Bad input that psr reports as one clear sentence (a ``ValueError``, as its subclasses always were)."""


class ConfigError(PsrError):
    """Bad input or an inconsistent configuration, found before any work starts.

    The message is one sentence naming the config key or file, what was found and what was expected.
    """


class DataError(PsrError):
    """An image or store that cannot be read as expected: the message names the file and what is wrong."""


__all__ = ["ConfigError", "DataError", "PsrError"]
