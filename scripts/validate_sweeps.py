"""Check W&B sweep files offline: ``python scripts/validate_sweeps.py [files]`` (default: conf/sweeps/*.yaml).

A sweep file passes when

1. it conforms to the W&B sweep schema (the ``sweeps`` package's ``schema.json``, as the W&B server checks);
2. it runs psr's way: ``program: train.py``, a ``command`` that passes the parameters with
   ``${args_no_hyphens}`` (Hydra overrides are ``name=value``; ``--name=value`` or ``++name=value`` are not
   what train.py takes), no null values (the agent would pass the string ``None``; write ``"null"``), and a
   ``metric`` that psr logs;
3. every run it proposes is a valid Hydra override set: the proposals (the whole grid, or random draws
   from the distributions of a random or bayes sweep, whose first runs are random too) are formatted as
   the W&B agent formats them and composed with ``conf/train.yaml``, and the composed config must hold
   each value (config groups: the chosen option).

Prints ``ok: <file> (<n> runs composed)`` per file; exits 2 with ``error: <file>: <what is wrong>`` lines.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from omegaconf import OmegaConf

from psr.metrics.keys import (
    VAL_BASELINE_PSNR,
    VAL_BASELINE_SSIM,
    VAL_GAIN_DB,
    VAL_LOSS,
    VAL_PSNR,
    VAL_SSIM,
)

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = "train.py"
ARGS_MACRO = "${args_no_hyphens}"
# The other ways the agent can pass parameters; none of them is a plain Hydra override.
OTHER_ARGS_MACROS = (
    "${args}",
    "${args_no_equals}",
    "${args_no_boolean_flags}",
    "${args_json}",
    "${args_json_file}",
    "${args_append_hydra}",
    "${args_override_hydra}",
)
# What the restoration and GAN modules log once per validation epoch (tests check this against a run).
VALIDATION_METRICS = (VAL_LOSS, VAL_PSNR, VAL_SSIM, VAL_BASELINE_PSNR, VAL_BASELINE_SSIM, VAL_GAIN_DB)


def _sweeps() -> Any:
    """The ``sweeps`` package (its pydantic models warn about v1 options on import)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import sweeps
        import sweeps.grid_search
        import sweeps.random_search
    return sweeps


def load_spec(path: Path) -> dict[str, Any]:
    """The sweep file as a mapping; ``ValueError`` naming the file when it is not one."""
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot be read as YAML ({err})") from err
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: expected a YAML mapping of sweep settings, found {type(spec).__name__}")
    return spec


def schema_errors(spec: dict[str, Any]) -> list[str]:
    """Violations of the W&B sweep schema, one message each."""
    try:
        return list(_sweeps().schema_violations_from_proposed_config(spec))
    except ValueError as err:  # a parameter that is not a mapping
        return [str(err)]


def psr_errors(spec: dict[str, Any]) -> list[str]:
    """Where the sweep would not run psr's train.py as intended."""
    errors = []
    if spec.get("program") != PROGRAM:
        errors.append(
            f"program is {spec.get('program')!r}; expected {PROGRAM!r} (run the agent from the project root)"
        )
    command = [str(c) for c in spec.get("command") or []]
    if ARGS_MACRO not in command:
        errors.append(f"command {command or None} does not pass the parameters with {ARGS_MACRO}")
    others = [c for c in command if c in OTHER_ARGS_MACROS]
    if others:
        errors.append(f"command uses {others}; Hydra takes name=value overrides: use {ARGS_MACRO} alone")
    metric = (spec.get("metric") or {}).get("name") if isinstance(spec.get("metric"), dict) else None
    if metric not in VALIDATION_METRICS:
        errors.append(
            f"metric.name is {metric!r}; expected one of the metrics psr logs: {', '.join(VALIDATION_METRICS)}"
        )
    for name, param in (spec.get("parameters") or {}).items():
        if not isinstance(param, dict):
            continue
        if "parameters" in param:
            errors.append(
                f"parameters.{name} nests parameters; name each Hydra key in full (e.g. {name}.key)"
            )
        values = [param["value"]] if "value" in param else list(param.get("values") or [])
        if any(v is None for v in values):
            errors.append(
                f"parameters.{name} has a null value, which the agent passes as 'None'; write 'null'"
            )
    return errors


def _json_round_trip(config: dict[str, Any]) -> dict[str, Any]:
    """A proposal as the agent receives it from the server: JSON numbers, lists and strings."""
    out: dict[str, Any] = json.loads(
        json.dumps(config, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    )
    return out


def proposals(spec: dict[str, Any], n_random: int = 5, seed: int = 0) -> list[dict[str, Any]]:
    """The runs the sweep proposes, as ``{name: value}``: the whole grid, or ``n_random`` random draws.

    Bayes sweeps start from random draws of the same distributions (and the W&B server needs the
    results of finished runs to go further), so random draws stand for them; the first draw is then
    repeated with each categorical value the draws missed, so that every listed value is composed.
    """
    sweeps = _sweeps()
    if spec.get("method") == "grid":
        params = spec.get("parameters") or {}
        size = math.prod(len(p["values"]) for p in params.values() if isinstance(p, dict) and "values" in p)
        runs = sweeps.grid_search.grid_search_next_runs([], spec, n=size + 1)
        return [
            _json_round_trip({k: v["value"] for k, v in run.config.items()})
            for run in runs
            if run is not None
        ]
    np.random.seed(seed)  # the sweeps package samples from numpy's global generator
    runs = sweeps.random_search.random_search_next_runs({**spec, "method": "random"}, n=n_random)
    drawn = [_json_round_trip({k: v["value"] for k, v in run.config.items()}) for run in runs]
    for name, param in (spec.get("parameters") or {}).items():
        for value in param.get("values", []) if isinstance(param, dict) else []:
            if drawn and all(run[name] != value for run in drawn):
                drawn.append({**drawn[0], name: value})
    return drawn


def agent_args(proposal: dict[str, Any]) -> list[str]:
    """The arguments the W&B agent puts in place of ``${args_no_hyphens}`` (its own formatting code)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    args: list[str] = create_sweep_command_args({"args": {k: {"value": v} for k, v in proposal.items()}})[
        "args_no_hyphens"
    ]
    return args


def _same(found: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(found, bool):
        return found is expected or found == expected
    if isinstance(expected, int | float) and isinstance(found, int | float):
        return math.isclose(float(found), float(expected), rel_tol=1e-12, abs_tol=0.0)
    if isinstance(expected, list) and isinstance(found, list):
        return len(found) == len(expected) and all(_same(f, e) for f, e in zip(found, expected, strict=True))
    return bool(found == expected)


def composition_errors(proposal: dict[str, Any], config_dir: Path = ROOT / "conf") -> list[str]:
    """Compose ``train.yaml`` with the agent's arguments for ``proposal``; where a value did not land."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    args = agent_args(proposal)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose("train", overrides=args, return_hydra_config=True)
    except Exception as err:  # Hydra's override, composition and missing-config errors
        # Hydra's message lines, without the indented details (full_key, object_type).
        message = " ".join(
            line.strip() for line in str(err).splitlines() if line.strip() and not line[0].isspace()
        )
        return [f"the run {' '.join(args)} does not compose: {message or type(err).__name__}"]
    finally:
        GlobalHydra.instance().clear()
    errors = []
    choices = cfg.hydra.runtime.choices
    for name, value in proposal.items():
        if name in choices:
            found: Any = choices[name]
            ok = str(found) == str(value)
        else:
            node = OmegaConf.select(cfg, name, throw_on_missing=False)
            found = OmegaConf.to_object(node) if OmegaConf.is_config(node) else node
            ok = _same(found, value)
        if not ok:
            errors.append(
                f"parameters.{name}: the agent passes {name}={value} but the composed config holds {found!r}"
            )
    return errors


def validate_file(path: Path, n_random: int = 5) -> tuple[list[str], int]:
    """``(errors, runs composed)`` for one sweep file; no errors means it is ready for ``wandb sweep``."""
    try:
        spec = load_spec(path)
    except ValueError as err:
        return [str(err)], 0
    errors = schema_errors(spec)
    if errors:  # proposals need a well-formed spec
        return errors, 0
    errors = psr_errors(spec)
    runs = proposals(spec, n_random)
    for proposal in runs:
        errors += [e for e in composition_errors(proposal) if e not in errors]
    return errors, len(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("files", nargs="*", type=Path, help="sweep files (default: conf/sweeps/*.yaml)")
    parser.add_argument("--random-runs", type=int, default=5, help="draws composed per random/bayes sweep")
    args = parser.parse_args(argv)
    files = args.files or sorted((ROOT / "conf" / "sweeps").glob("*.yaml"))
    if not files:
        print("error: no sweep files given and none in conf/sweeps/", file=sys.stderr)
        return 2
    failed = False
    for path in files:
        errors, n_runs = validate_file(path, args.random_runs)
        for error in errors:
            print(f"error: {path}: {error}", file=sys.stderr)
        if errors:
            failed = True
        else:
            print(f"ok: {path} ({n_runs} runs composed)")
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
