"""Hydra's hook into psr's crappifier plugins (``python train.py crappifier=<entry point name>``).

Hydra imports every module of the ``hydra_plugins`` namespace package once per process and registers
the concrete plugin classes it finds among their members: :class:`CrappifierSearchPathPlugin` appends
the ``psr-plugins://`` config source to the search path, and :class:`CrappifierPluginSource` (a
``ConfigSource``) is registered for that scheme. ``hydra_plugins`` itself must stay a namespace package
(no ``__init__.py``) so that other Hydra plugins can share it.
"""

from psr.crappifiers.plugins import CrappifierPluginSource, CrappifierSearchPathPlugin

__all__ = ["CrappifierPluginSource", "CrappifierSearchPathPlugin"]
