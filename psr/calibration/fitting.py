"""Fit a crappifier's parameters to real low/high image pairs by matching the statistics of residuals.

PSSR2's idea (DEGRADATIONS.md): a good crappifier turns a high-quality image into something whose
difference from it looks like the difference between a real low-quality acquisition and its high-quality
twin. For each real pair (same pixel grid: denoising pairs) this module

1. normalises the high image by its percentiles (the training convention, 1 and 99.8 by default, so that
   a fitted photon budget means the same thing in training) and takes seeded random crops of both images;
2. maps the real low crops onto the high ones by the least-squares affine fit (CARE / CSBDeep, one
   ``α, β`` per pair over all its crops) and keeps the **real residual** ``fit(low) − high``;
3. degrades the high crops with the crappifier at the pair's own grid (scale 1), fits them the same way
   and keeps the **synthetic residual** ``fit(crappified(high)) − high``;
4. compares the two residuals with one distance, the sum of two dimensionless terms:

   - ``hist``: the 1-D Wasserstein distance between the residual histograms (from 512 quantiles)
     divided by the real residual's mean absolute value;
   - ``spectrum``: the mean over 24 radial frequency rings (0 to 0.5 cycles/pixel, DC left out) of
     ``|ln(A_syn / A_real)|``, where ``A`` is the amplitude spectrum (the square root of the mean power
     in a ring of the Hann-windowed residual crops), in the common intensity units. Rings are weighted
     by the number of frequencies they hold, so the few, noisily estimated lowest ones do not dominate.

   Both are comparable by construction: if the synthetic residual is the real one scaled by ``k``, the
   first term is ``|k − 1|`` and the second ``|ln k|``, equal to first order. ``hist`` sees the shape of
   the noise distribution (Poisson skew, clipping, salt and pepper), ``spectrum`` its correlation (blur,
   binning, smooth background differences). The total over pairs is the mean of the per-pair distances.

Optuna's TPE sampler (seeded) searches the chosen numeric parameters of the preset, addressed by dotted
keys of the preset's YAML tree (``steps.1.photons``); the preset's own values are the first trial. Every
evaluation degrades the crops with the same seed (common random numbers), so the objective is a smooth
function of the parameters.

The preset is handled as a plain tree (``yaml.safe_load``); ``${scale}`` interpolations stay strings and
are left for Hydra. Building a crappifier from a tree is the caller's job (a ``build`` function), so this
module has no Hydra in it.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from psr.atomic import write_atomic
from psr.calibration.residuals import (
    Distance,
    FitCrops,
    FitError,
    PairSource,
    ResidualStats,
    crop_pair,
    distance,
    pair_source_from_config,
    prepare,
    read_pairs,
    residual,
    residual_stats,
    ring_spectrum,
    stats_distance,
)
from psr.crappifiers.base import Crappifier
from psr.data.pairs import PairError

Tree = dict[str, Any]
Build = Callable[[Tree], Crappifier]


# --------------------------------------------------------------------------------------------------
# Presets as plain trees: dotted keys, default search spaces, writing.
# --------------------------------------------------------------------------------------------------


def load_preset(path: Path) -> tuple[Tree, list[str]]:
    """The preset's tree (``yaml.safe_load``) and its leading comment lines (without ``#``)."""
    if not path.is_file():
        raise FitError(f"crappifier preset {path} does not exist; expected a YAML file of conf/crappifier")
    text = path.read_text()
    tree = yaml.safe_load(text)
    if not isinstance(tree, dict) or "_target_" not in tree:
        raise FitError(f"{path} is not a crappifier config; expected a mapping with a _target_")
    comments = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        comments.append(line[1:].strip())
    return tree, comments


def _step(node: Any, part: str, key: str) -> Any:
    if isinstance(node, dict) and part in node:
        return node[part]
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    raise KeyError(key)


def get_key(tree: Tree, key: str) -> Any:
    """The value at dotted ``key`` (list items by index: ``steps.1.photons``); ``KeyError`` if absent."""
    node: Any = tree
    for part in key.split("."):
        node = _step(node, part, key)
    return node


def set_keys(tree: Tree, values: Mapping[str, Any]) -> Tree:
    """A deep copy of ``tree`` with each dotted key of ``values`` set (the keys must exist)."""
    out = copy.deepcopy(tree)
    for key, value in values.items():
        *parents, last = key.split(".")
        node: Any = out
        for part in parents:
            node = _step(node, part, key)
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def is_numeric_param(value: Any) -> bool:
    """A number, a ``[low, high]`` pair or a ``{low, high, log}`` mapping: a parameter one can fit."""
    if _is_number(value):
        return True
    if isinstance(value, list):
        return len(value) == 2 and all(_is_number(v) for v in value)
    if isinstance(value, dict):
        return {"low", "high"} <= set(value) <= {"low", "high", "log"} and all(
            _is_number(value[k]) for k in ("low", "high")
        )
    return False


def numeric_keys(tree: Tree) -> list[str]:
    """Every dotted key of ``tree`` holding a numeric parameter (see :func:`is_numeric_param`)."""
    out: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            key = f"{prefix}{k}"
            if isinstance(v, dict) and "_target_" not in v and is_numeric_param(v):
                out.append(key)
            elif isinstance(v, dict | list) and not (isinstance(v, list) and is_numeric_param(v)):
                walk(v, key + ".")
            elif is_numeric_param(v):
                out.append(key)

    walk(tree, "")
    return out


def current_value(value: Any) -> float:
    """A representative number for a parameter: itself, or the middle of its range (geometric when the
    range is log-uniform or spans a factor of 10 or more, arithmetic otherwise)."""
    if _is_number(value):
        return float(value)
    low, high = (
        (float(value[0]), float(value[1]))
        if isinstance(value, list)
        else (float(value["low"]), float(value["high"]))
    )
    log = isinstance(value, dict) and bool(value.get("log", False))
    return math.sqrt(low * high) if (log and low > 0) or (low > 0 and high / low >= 10) else (low + high) / 2


@dataclass(frozen=True)
class ParamSpec:
    """One parameter to fit: a dotted key of the preset and its search bounds (log-uniform if ``log``)."""

    key: str
    low: float
    high: float
    log: bool = False

    def __str__(self) -> str:
        return f"{self.key}={self.low:g}:{self.high:g}{':log' if self.log else ''}"


# Default search bounds for the parameters of psr's operators (class name -> argument -> bounds).
# Noise strengths and blur widths; structural settings (modes, factors, optics) are left as they are.
DEFAULT_BOUNDS: dict[str, dict[str, tuple[float, float, bool]]] = {
    "PoissonNoise": {"photons": (1.0, 2000.0, True)},
    "GaussianNoise": {"sigma": (1e-4, 0.3, True)},
    "Camera": {"photons": (1.0, 5000.0, True), "read_noise": (0.1, 30.0, True)},
    "LocalVarianceNoise": {"k": (1e-4, 2.0, True)},
    "GaussianBlur": {"sigma": (0.0, 3.0, False)},
    "SaltPepper": {"salt": (0.0, 0.02, False), "pepper": (0.0, 0.02, False)},
    # Before a PoissonNoise step a constant offset is a pedestal: the per-pair affine fit removes its mean,
    # what remains is its shot noise (the signal-independent variance of a background below the zero).
    "Background": {"offset": (0.0, 0.5, False)},
}


def _operator_name(node: Any) -> str | None:
    target = node.get("_target_") if isinstance(node, dict) else None
    if isinstance(target, str) and target.startswith("psr.crappifiers."):
        return target.rsplit(".", 1)[-1]
    return None


def default_params(tree: Tree) -> list[ParamSpec]:
    """The noise and blur parameters of every psr operator in ``tree``, with :data:`DEFAULT_BOUNDS`."""
    out: list[ParamSpec] = []
    for key in numeric_keys(tree):
        *parents, name = key.split(".")
        op = _operator_name(get_key(tree, ".".join(parents)) if parents else tree)
        bounds = DEFAULT_BOUNDS.get(op or "", {}).get(name)
        if bounds is not None:
            out.append(ParamSpec(key, *bounds))
    return out


def parse_param(text: str, tree: Tree, source: str) -> ParamSpec:
    """``KEY=LOW:HIGH[:log]``, or ``KEY`` alone for the operator's default bounds, checked against ``tree``."""
    key, _, bounds = text.partition("=")
    key = key.strip()
    try:
        value = get_key(tree, key)
    except KeyError:
        raise FitError(
            f"--params {text}: {key} is not a key of {source}; its numeric keys are"
            f" {', '.join(numeric_keys(tree)) or 'none'}"
        ) from None
    if not is_numeric_param(value):
        raise FitError(
            f"--params {text}: {source} has {value!r} at {key}; expected a number or a [low, high] range"
        )
    if not bounds:
        for spec in default_params(tree):
            if spec.key == key:
                return spec
        raise FitError(f"--params {text}: {key} has no default bounds; give them as {key}=LOW:HIGH[:log]")
    parts = bounds.split(":")
    log = len(parts) == 3 and parts[2] == "log"
    try:
        if len(parts) not in (2, 3) or (len(parts) == 3 and not log):
            raise ValueError
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise FitError(
            f"--params {text}: bounds '{bounds}' are malformed; expected LOW:HIGH or LOW:HIGH:log"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise FitError(f"--params {text}: bounds [{low}, {high}] need finite LOW < HIGH")
    if log and low <= 0:
        raise FitError(f"--params {text}: log bounds need LOW > 0, got {low}")
    return ParamSpec(key, low, high, log)


# --------------------------------------------------------------------------------------------------
# The search.
# --------------------------------------------------------------------------------------------------


def round_value(value: float) -> float:
    """Four significant digits: what is written to the YAML (and evaluated as the fitted result)."""
    return float(f"{value:.4g}")


def fitted_tree(
    tree: Tree, values: Mapping[str, float], params: Sequence[ParamSpec], spread: float = 0.0
) -> Tree:
    """``tree`` with each fitted value fixed, or with ``spread > 0`` a range ``[v·(1 − spread), v·(1 + spread)]``
    clipped to the search bounds (drawn per sample in training)."""
    if not 0.0 <= spread < 1.0:
        raise FitError(f"--spread must be in [0, 1), got {spread}")
    out: dict[str, Any] = {}
    for p in params:
        v = round_value(values[p.key])
        if spread == 0:
            out[p.key] = v
        else:
            lo = round_value(max(p.low, v * (1 - spread)))
            hi = round_value(min(p.high, v * (1 + spread)))
            out[p.key] = [min(lo, v), max(hi, v)]
    return set_keys(tree, out)


@dataclass(frozen=True)
class FitResult:
    """The fitted values (rounded as written), the distance of the preset and of the fitted tree."""

    values: dict[str, float]
    tree: Tree
    before: Distance
    after: Distance
    n_trials: int
    history: list[float]


def check_params(tree: Tree, params: Sequence[ParamSpec], build: Build, source: str) -> None:
    """Build the crappifier at the low and the high end of every bound: out-of-range bounds fail here."""
    if not params:
        raise FitError(f"{source} has no parameter to fit by default; name them with --params KEY=LOW:HIGH")
    keys = [p.key for p in params]
    if len(set(keys)) != len(keys):
        raise FitError(f"--params names a key twice: {', '.join(keys)}")
    for p in params:
        for end in (p.low, p.high):
            try:
                build(set_keys(tree, {p.key: end}))
            except ValueError as err:
                raise FitError(f"--params {p}: {source} with {p.key}={end:g} is invalid: {err}") from None


def fit(
    tree: Tree,
    params: Sequence[ParamSpec],
    data: Sequence[FitCrops],
    build: Build,
    n_trials: int = 50,
    seed: int = 0,
    spread: float = 0.0,
    source: str = "the preset",
    progress: Callable[[int, float, dict[str, float]], None] | None = None,
) -> FitResult:
    """Minimise :func:`distance` over ``params`` with Optuna's TPE sampler (seeded by ``seed``).

    ``build`` turns a tree into a crappifier working at the pairs' grid (``${scale}`` = 1) and raises
    ``ValueError`` for invalid parameters. The preset's own values (clipped to the bounds) are the first
    trial. ``progress`` is called after every trial with its number, distance and values.
    """
    import optuna

    if n_trials < 1:
        raise FitError(f"--n-trials must be >= 1, got {n_trials}")
    check_params(tree, params, build, source)
    try:
        before = distance(build(tree), data, seed)
    except ValueError as err:
        if isinstance(err, FitError):
            raise
        raise FitError(f"{source} cannot be built: {err}") from None

    def objective(trial: optuna.trial.Trial) -> float:
        values = {p.key: trial.suggest_float(p.key, p.low, p.high, log=p.log) for p in params}
        try:
            op = build(set_keys(tree, values))
        except ValueError:
            return math.inf
        return distance(op, data, seed).total

    history: list[float] = []

    def callback(study: optuna.study.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = trial.value if trial.value is not None else math.inf
        history.append(value)
        if progress is not None:
            progress(trial.number, value, {k: float(v) for k, v in trial.params.items()})

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(1, n_trials // 3)))
    study = optuna.create_study(direction="minimize", sampler=sampler)
    start = {p.key: min(p.high, max(p.low, current_value(get_key(tree, p.key)))) for p in params}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.enqueue_trial(start)
    study.optimize(objective, n_trials=n_trials, callbacks=[callback])
    best = {k: float(v) for k, v in study.best_params.items()}
    out_tree = fitted_tree(tree, best, params, spread)
    after = distance(build(out_tree), data, seed)
    values = {p.key: round_value(best[p.key]) for p in params}
    return FitResult(values, out_tree, before, after, n_trials, history)


# --------------------------------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Block style like the hand-written presets: indented lists, ``[low, high]`` ranges inline."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(not isinstance(v, dict | list) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def dump_preset(tree: Tree, header: Sequence[str]) -> str:
    """The YAML text: ``header`` as ``#`` comment lines, then the tree."""
    comments = "".join(f"# {line}".rstrip() + "\n" for line in header)
    body = yaml.dump(tree, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=110)
    return comments + body


def write_preset(path: Path, tree: Tree, header: Sequence[str]) -> Path:
    """Write the preset atomically: a temporary file beside ``path`` (not ``*.yaml``), renamed when complete."""
    text = dump_preset(tree, header)
    if yaml.safe_load(text) != tree:  # a round trip guards against a representer surprise
        raise FitError(f"the fitted preset for {path} does not survive a YAML round trip")
    return write_atomic(path, text)


__all__ = [
    "DEFAULT_BOUNDS",
    "Distance",
    "FitError",
    "FitResult",
    "FitCrops",
    "PairError",
    "PairSource",
    "ParamSpec",
    "ResidualStats",
    "crop_pair",
    "default_params",
    "distance",
    "dump_preset",
    "fit",
    "fitted_tree",
    "get_key",
    "load_preset",
    "numeric_keys",
    "pair_source_from_config",
    "parse_param",
    "prepare",
    "read_pairs",
    "residual",
    "residual_stats",
    "ring_spectrum",
    "set_keys",
    "stats_distance",
    "write_preset",
]
