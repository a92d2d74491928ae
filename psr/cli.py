"""The ``psr`` command: one console script whose subcommands run psr's entry points.

``psr train model=rcan crappifier=poisson`` runs ``train.py`` with the same arguments, Hydra overrides
included; likewise ``predict``, ``evaluate`` (Hydra) and ``export``, ``ingest``, ``report``,
``fit-crappifier``, ``calibrate-noise`` (the tools under ``scripts/``). Each subcommand runs the very
file a user would run with ``python``, as ``__main__``, so its options, ``--help``, messages, output
folders and exit codes are those of the file.

The files are reached through ``psr/_app``: links to the root entry points, ``conf/`` and the scripts in
a source checkout, copied into the package by a wheel build, so an installed psr finds its configs
wherever it is run from (Hydra resolves ``config_path="conf"`` next to the file it runs).

This module also defines ``psr.config_groups``, the resolver of the entry points' ``--help``
(``conf/hydra/help/psr.yaml``): the config groups of the application that runs, each with its options
and current choice, rather than Hydra's default of every group under the config folder (``predict`` and
``export`` share ``conf/`` with training but have no groups of their own).
"""

from __future__ import annotations

import argparse
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

APP_DIR = Path(__file__).resolve().parent / "_app"
"""The entry points and ``conf/`` as the package carries them."""

HELP_RESOLVER = "psr.config_groups"


@dataclass(frozen=True)
class Command:
    """A subcommand: the file it runs (relative to ``APP_DIR``) and a line for ``psr --help``."""

    name: str
    script: str
    summary: str

    @property
    def path(self) -> Path:
        return APP_DIR / self.script


COMMANDS: tuple[Command, ...] = (
    Command("train", "train.py", "train a model (Hydra: model=rcan crappifier=poisson scale=4, -m sweeps)"),
    Command("segment", "segment.py", "train a segmentation model (Hydra: experiment=sstem_membranes)"),
    Command("predict", "predict.py", "restore images of any size (Hydra: ckpt=... input=... output=...)"),
    Command("evaluate", "evaluate.py", "score a checkpoint against ground truth (Hydra: ckpt=... data=...)"),
    Command("export", "scripts/export.py", "a checkpoint as bioimage.io, ONNX or TorchScript (Hydra)"),
    Command("ingest", "scripts/ingest.py", "images into one OME-Zarr store for training"),
    Command("report", "scripts/report.py", "the HTML report of a sweep folder"),
    Command("fit-crappifier", "scripts/fit_crappifier.py", "fit a crappifier preset to real low/high pairs"),
    Command("calibrate-noise", "scripts/calibrate_noise.py", "a Poisson-Gaussian preset from raw frames"),
)
BY_NAME = {c.name: c for c in COMMANDS}


def build_parser() -> argparse.ArgumentParser:
    width = max(len(c.name) for c in COMMANDS)
    listing = "\n".join(f"  {c.name:<{width}}  {c.summary}" for c in COMMANDS)
    parser = argparse.ArgumentParser(
        prog="psr",
        description="psr: deep-learning microscopy image restoration.",
        epilog=f"commands:\n{listing}\n\n'psr <command> --help' shows a command's own options and config groups.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"psr {_version()}")
    parser.add_argument("command", choices=list(BY_NAME), metavar="command", help="one of the commands below")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the command's own arguments")
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("psr")
    except PackageNotFoundError:
        return "unknown"


def run_command(command: Command, args: Sequence[str]) -> None:
    """Run ``command``'s file as ``__main__`` with ``args``, as ``python <file> <args>`` would (its own
    folder first on ``sys.path``); ``sys.argv`` and ``sys.path`` are restored afterwards. The file's
    ``SystemExit`` propagates."""
    path = command.path
    if not path.is_file():
        raise FileNotFoundError(
            f"psr {command.name} runs {path}, which is missing; expected the psr package's _app folder"
            " (reinstall psr)"
        )
    # As runpy.run_path(path, run_name="__main__") but sys.argv[0] stays "psr <command>" (run_path sets
    # it to the file), so argparse tools print "usage: psr <command>".
    code = compile(path.read_bytes(), str(path), "exec")
    module = types.ModuleType("__main__")
    module.__file__ = str(path)
    saved_argv, saved_path, saved_main = sys.argv[:], sys.path[:], sys.modules["__main__"]
    sys.argv = [f"psr {command.name}", *args]
    sys.path.insert(0, str(path.parent))
    sys.modules["__main__"] = module
    try:
        exec(code, module.__dict__)
    finally:
        sys.modules["__main__"] = saved_main
        sys.argv[:] = saved_argv
        sys.path[:] = saved_path


def main(argv: Sequence[str] | None = None) -> int:
    """``psr <command> [args...]``; returns the exit code of a command that ends without ``sys.exit``."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        parser.error(f"expected a command, one of {', '.join(BY_NAME)}")
    args = parser.parse_args(argv)
    try:
        run_command(BY_NAME[args.command], args.args)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


# --- the entry points' --help ----------------------------------------------------------------------
def _is_hydra_group(group: str) -> bool:
    return group == "hydra" or group.startswith("hydra/")


def config_groups(*, _root_: Any) -> str:
    """The lines of ``--help``'s group section: the groups of this application's defaults tree (Hydra's
    ``hydra.runtime.choices``), each with every option the search path offers and the current choice."""
    from hydra.core.global_hydra import GlobalHydra

    choices = _root_.hydra.runtime.choices
    loader = GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None
    lines = []
    for key in sorted(choices):
        group = str(key).split("@", 1)[0]
        if _is_hydra_group(group):
            continue
        options = loader.get_group_options(group) if loader is not None else []
        choice = choices[key]
        lines.append(f"{group}: {', '.join(options)}  (now: {'null' if choice is None else choice})")
    if not lines:
        return "(none: this command is configured by the keys below)"
    return "\n".join(lines)


def register_help_resolver() -> None:
    """Make ``${psr.config_groups:}`` available (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(HELP_RESOLVER):
        OmegaConf.register_new_resolver(HELP_RESOLVER, config_groups)


if __name__ == "__main__":
    sys.exit(main())
