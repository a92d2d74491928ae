"""The one exception type that entry points turn into a clear message and a non-zero exit."""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad input or an inconsistent configuration, found before any work starts.

    The message is one sentence naming the config key or file, what was found and what was expected.
    """
