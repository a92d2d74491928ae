"""Aggregation of runs over seeds: the train × test degradation heatmap and per-model spreads.

Every figure of the report is a :class:`Cell`: the values of one quantity over the runs (seeds) of a
group, with their mean, standard deviation and range.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from psr.metrics.keys import VAL, metric_key
from psr.reporting.runs import RunRecord

METRICS = ("psnr", "ssim")
_SYNTHETIC, _REAL = "synthetic", "real"


@dataclass(frozen=True)
class Cell:
    """Values of one quantity over the runs (seeds) of a group."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "std": self.std,
            "n": self.n,
            "min": min(self.values),
            "max": max(self.values),
            "values": list(self.values),
        }


@dataclass(frozen=True)
class Column:
    """A test degradation of the heatmap: a ``cross_eval`` crappifier or a ``real_eval`` pair set."""

    name: str
    kind: str  # "synthetic" or "real"

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class Ablation:
    """Train degradation × test degradation, per model, one metric, aggregated over seeds."""

    metric: str
    models: list[str]
    train: list[str]
    columns: list[Column]
    cells: dict[tuple[str, str, str], Cell]  # (model, train crappifier, column key)
    baseline: dict[tuple[str, str], Cell]  # (model, column key): the interpolation baseline


def ordered(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def ablation(runs: Sequence[RunRecord], metric: str = "psnr") -> Ablation:
    """The heatmap of ``metric`` (``psnr`` or ``ssim``): per model, rows are the train crappifiers,
    columns the ``cross_eval`` test crappifiers (the trained ones first) then the ``real_eval`` sets;
    a cell holds the values of its runs (seeds). The baseline holds ``baseline_<metric>`` per column."""
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}; expected one of {', '.join(METRICS)}")
    models = ordered(r.group for r in runs)
    train = ordered(r.crappifier for r in runs)
    tested = ordered(name for r in runs for name in (r.cross_eval or {}))
    real = ordered(name for r in runs for name in (r.real_eval or {}))
    synthetic = [t for t in train if t in tested] + [t for t in tested if t not in train]
    columns = [Column(n, _SYNTHETIC) for n in synthetic] + [Column(n, _REAL) for n in real]
    values: dict[tuple[str, str, str], list[float]] = {}
    base: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        for kind, sets in ((_SYNTHETIC, run.cross_eval), (_REAL, run.real_eval)):
            for name, scores in (sets or {}).items():
                key = Column(name, kind).key
                if metric in scores:
                    values.setdefault((run.group, run.crappifier, key), []).append(scores[metric])
                if f"baseline_{metric}" in scores:
                    base.setdefault((run.group, key), []).append(scores[f"baseline_{metric}"])
    return Ablation(
        metric=metric,
        models=models,
        train=train,
        columns=columns,
        cells={k: Cell(tuple(v)) for k, v in values.items()},
        baseline={k: Cell(tuple(v)) for k, v in base.items()},
    )


def spread(
    runs: Sequence[RunRecord], value: Callable[[RunRecord], float | None]
) -> dict[tuple[str, str], Cell]:
    """``value(run)`` over the seeds of each (model, train crappifier); runs where it is ``None`` are left
    out."""
    found: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        v = value(run)
        if v is not None:
            found.setdefault((run.group, run.crappifier), []).append(v)
    return {k: Cell(tuple(v)) for k, v in found.items()}


def seed_spread(runs: Sequence[RunRecord], key: str) -> dict[tuple[str, str], Cell]:
    """``best[key]`` (e.g. ``val/psnr``) over the seeds of each (model, train crappifier)."""
    return spread(runs, lambda run: run.best.get(key))


def gain_spread(runs: Sequence[RunRecord], metric: str) -> dict[tuple[str, str], Cell]:
    """The best epoch's ``val/<metric>`` minus its ``val/baseline_<metric>``, over seeds."""

    def gain(run: RunRecord) -> float | None:
        own, base = run.best.get(metric_key(VAL, metric)), run.best.get(metric_key(VAL, f"baseline_{metric}"))
        return own - base if own is not None and base is not None else None

    return spread(runs, gain)


def cross_mean_spread(runs: Sequence[RunRecord], metric: str) -> dict[tuple[str, str], Cell]:
    """Per (model, train crappifier), over seeds: each run's mean ``metric`` (e.g. ``psnr`` or
    ``baseline_psnr``) over its test crappifiers."""

    def mean(run: RunRecord) -> float | None:
        scores = [s[metric] for s in (run.cross_eval or {}).values() if metric in s]
        return statistics.fmean(scores) if scores else None

    return spread(runs, mean)
