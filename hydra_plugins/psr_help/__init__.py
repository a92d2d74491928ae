"""Registers the ``psr.config_groups`` resolver of psr's ``--help`` template (``conf/hydra/help/psr.yaml``).

Hydra imports every module of the ``hydra_plugins`` namespace package once per process, before it
composes a config, so the resolver is there for ``python train.py --help``, ``psr train --help`` and the
compose API alike.
"""

from psr.cli import register_help_resolver

register_help_resolver()
