"""The typed form of a training run's ``summary.json``.

Training (``psr.tasks.train``) writes the summary as JSON; :class:`RunSummary` is what readers get back:
checked types, absent sections as ``None``, NaN and infinities dropped. :meth:`RunSummary.from_dict`
raises ``ValueError`` naming the key whose value has the wrong type, and :class:`NotARunSummary` for a
well-formed summary of something else (an ``evaluate.py`` summary).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psr.errors import PsrError
from psr.metrics.keys import DEFAULT_MONITOR

Scores = dict[str, float]


class NotARunSummary(PsrError):
    """A well-formed summary of something else than a training run (an evaluation)."""


def number(value: Any) -> float | None:
    """A finite number as ``float``; anything else (booleans, strings, NaN, ±inf) as ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def integer(value: Any) -> int | None:
    """A whole number as ``int``; anything else as ``None``."""
    found = number(value)
    return int(found) if found is not None and found == int(found) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _scores(value: Any, key: str) -> Scores:
    """A flat ``{name: number}`` object; non-numeric entries (e.g. ``null``) are dropped."""
    if not isinstance(value, Mapping):
        raise ValueError(f"'{key}' is {type(value).__name__}; expected an object of numbers")
    return {str(k): n for k, v in value.items() if (n := number(v)) is not None}


def _optional_list(summary: Mapping[str, Any], key: str) -> list[Scores] | None:
    value = summary.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValueError(f"'{key}' is {type(value).__name__}; expected a list of objects")
    return [_scores(entry, f"{key}[{i}]") for i, entry in enumerate(value)]


def _optional_sets(summary: Mapping[str, Any], key: str) -> dict[str, Scores] | None:
    value = summary.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"'{key}' is {type(value).__name__}; expected an object of test sets")
    return {str(name): _scores(entry, f"{key}.{name}") for name, entry in value.items()}


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    """One training run as its ``summary.json`` describes it.

    ``best`` holds the best validation epoch by ``monitor`` (``val/psnr``, ``val/baseline_psnr``, …,
    ``epoch``); ``history`` one such row per validation epoch; ``cross_eval`` and ``real_eval`` map a test
    degradation or real pair set to its scores (``psnr``, ``ssim``, ``baseline_psnr``, ``baseline_ssim``).
    """

    model: str
    crappifier: str
    data: str | None = None
    scale: int | None = None
    seed: int | None = None
    monitor: str = DEFAULT_MONITOR
    baseline: str = "bilinear"  # the interpolation the baseline figures come from
    best: Scores = field(default_factory=dict)
    gain_db: float | None = None
    steps: int | None = None
    epochs: int | None = None
    wall_time_s: float | None = None
    best_checkpoint: str | None = None
    last_checkpoint: str | None = None
    history: list[Scores] | None = None
    cross_eval: dict[str, Scores] | None = None
    real_eval: dict[str, Scores] | None = None
    test: Scores | None = None
    job_num: int | None = None  # the run's number in its Hydra multirun (``sweep.job_num``)
    crappifier_config: dict[str, Any] | None = None  # the resolved crappifier node (``_target_`` and values)

    @classmethod
    def fields_from(cls, summary: Any) -> dict[str, Any]:
        """The checked constructor arguments of ``summary`` (a parsed ``summary.json``)."""
        if not isinstance(summary, Mapping):
            raise ValueError(f"holds a JSON {type(summary).__name__}; expected an object")
        if isinstance(summary.get("methods"), list) and "checkpoint" in summary:
            raise NotARunSummary("an evaluate.py summary")
        if summary.get("task") == "segment":  # segment.py and evaluate.py task=segment (their own table)
            raise NotARunSummary("a segmentation summary")
        for key in ("model", "crappifier"):
            if not isinstance(summary.get(key), str):
                found = "missing" if key not in summary else f"{summary[key]!r}"
                raise ValueError(f"is not a training-run summary: '{key}' is {found}; expected a name")
        raw_sweep = summary.get("sweep")
        sweep: Mapping[str, Any] = raw_sweep if isinstance(raw_sweep, Mapping) else {}
        test = summary.get("test")
        crappifier_config = summary.get("crappifier_config")
        if crappifier_config is not None and not isinstance(crappifier_config, Mapping):
            raise ValueError(f"'crappifier_config' is {type(crappifier_config).__name__}; expected an object")
        return {
            "model": summary["model"],
            "crappifier": summary["crappifier"],
            "data": _text(summary.get("data")),
            "scale": integer(summary.get("scale")),
            "seed": integer(summary.get("seed")),
            "monitor": str(summary.get("monitor") or DEFAULT_MONITOR),
            "baseline": str(summary.get("baseline") or "bilinear"),
            "best": _scores(summary.get("best") or {}, "best"),
            "gain_db": number(summary.get("gain_db")),
            "steps": integer(summary.get("steps")),
            "epochs": integer(summary.get("epochs")),
            "wall_time_s": number(summary.get("wall_time_s")),
            "best_checkpoint": _text(summary.get("best_checkpoint")),
            "last_checkpoint": _text(summary.get("last_checkpoint")),
            "history": _optional_list(summary, "history"),
            "cross_eval": _optional_sets(summary, "cross_eval"),
            "real_eval": _optional_sets(summary, "real_eval"),
            "test": _scores(test, "test") if test is not None else None,
            "job_num": integer(sweep.get("job_num")),
            "crappifier_config": dict(crappifier_config) if crappifier_config is not None else None,
        }

    @classmethod
    def from_dict(cls, summary: Any) -> RunSummary:
        """Check and type a parsed ``summary.json``; ``ValueError`` names what is wrong."""
        return cls(**cls.fields_from(summary))

    @staticmethod
    def load(path: str | Path) -> Any:
        """The parsed JSON of ``path``; ``ValueError`` when it cannot be read or is not JSON."""
        try:
            return json.loads(Path(path).read_text())
        except OSError as err:
            raise ValueError(f"cannot be read ({err.strerror or err})") from err
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"is not valid JSON ({err})") from err

    @classmethod
    def read(cls, path: str | Path) -> RunSummary:
        """The summary in the file ``path``."""
        return cls.from_dict(cls.load(path))
