"""The runs of a sweep folder: every ``summary.json`` under it, read into :class:`RunRecord`.

A summary that cannot be read (truncated JSON, wrong types, not a training run) is skipped with a reason
that names the file: the report of a sweep shows the runs that finished and lists the ones it left out.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

from psr.errors import PsrError
from psr.reporting.summary import NotARunSummary, RunSummary

# Overrides that define a heatmap cell (or are averaged over); any other override that varies between
# runs of the folder splits a model into variants, e.g. "rcan [loss=mse]".
_CELL_KEYS = {"model", "crappifier", "seed"}
# Overrides that say how a sweep is launched, evaluated or logged, not what is trained: they may differ
# between sweeps merged into one report without making different models.
_BOOKKEEPING = ("ablation", "cross_eval", "hydra", "logger", "paths")
_PANEL = re.compile(r"val_epoch(\d+)\.png$")


class ReportError(PsrError):
    """The folder cannot give a report (missing, or no readable run in it); one sentence naming it."""


@dataclass(frozen=True)
class Skipped:
    """A ``summary.json`` left out of the report, and why."""

    path: Path
    reason: str


@dataclass(frozen=True, kw_only=True)
class RunRecord(RunSummary):
    """One training run of a sweep folder: its summary, where it lies, and how the report groups it."""

    path: Path  # the run folder
    name: str  # the run folder relative to the swept folder
    overrides: dict[str, str] = field(default_factory=dict)
    panel: Path | None = None  # the last validation panel, panels/val_epochNNN.png
    label: str = ""  # the model as the report groups it: the model name, plus varying overrides

    @property
    def group(self) -> str:
        return self.label or self.model


def _overrides(run_dir: Path) -> dict[str, str]:
    """``key=value`` task overrides of the run from ``.hydra/overrides.yaml`` (empty when absent)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    import yaml

    try:
        entries = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    found: dict[str, str] = {}
    for entry in entries if isinstance(entries, list) else []:
        key, sep, value = str(entry).partition("=")
        key = key.lstrip("+~")
        if sep and not key.startswith("hydra"):
            found[key] = value
    return found


def _last_panel(run_dir: Path) -> Path | None:
    panels = [
        (int(m.group(1)), p)
        for p in (run_dir / "panels").glob("val_epoch*.png")
        if (m := _PANEL.search(p.name))
    ]
    return max(panels)[1] if panels else None


def read_run(path: Path, root: Path) -> RunRecord:
    """The run whose ``summary.json`` is ``path``; ``root`` names it. Raises ``ValueError`` naming the
    problem (unreadable, not JSON, not a training-run summary, a value of the wrong type), and
    :class:`~psr.reporting.summary.NotARunSummary` for an evaluation's summary."""
    fields = RunSummary.fields_from(RunSummary.load(path))
    run_dir = path.parent
    name = run_dir.relative_to(root).as_posix() if run_dir != root else run_dir.name
    return RunRecord(
        **fields, path=run_dir, name=name, overrides=_overrides(run_dir), panel=_last_panel(run_dir)
    )


def _labelled(runs: list[RunRecord]) -> list[RunRecord]:
    """Give each run its group label: the model, plus the settings (scale, data, other overrides) that
    vary between runs of the same model, so that only seeds are averaged together. Overrides of how a
    sweep is run (``ablation.*``, ``cross_eval.*``, ``logger``, ``paths``, ``hydra``) do not count."""

    def settings(run: RunRecord) -> dict[str, str]:
        found = {
            k: v
            for k, v in run.overrides.items()
            if k not in _CELL_KEYS and k.split(".", 1)[0].split("/", 1)[0] not in _BOOKKEEPING
        }
        found.setdefault("scale", str(run.scale))
        found.setdefault("data", str(run.data))
        return found

    by_model: dict[str, list[dict[str, str]]] = {}
    for run in runs:
        by_model.setdefault(run.model, []).append(settings(run))
    varying: dict[str, set[str]] = {}
    for model, all_settings in by_model.items():
        keys = set().union(*all_settings)
        varying[model] = {k for k in keys if len({own.get(k) for own in all_settings}) > 1}
    labelled = []
    for run in runs:
        own = settings(run)
        parts = [f"{k}={own.get(k, '–')}" for k in sorted(varying[run.model])]
        labelled.append(replace(run, label=f"{run.model} [{', '.join(parts)}]" if parts else run.model))
    return labelled


def scan_runs(sweep_dir: str | Path) -> tuple[list[RunRecord], list[Skipped]]:
    """Every ``summary.json`` under ``sweep_dir`` (recursively): the runs read, and the files skipped.

    Runs are ordered by job number, then folder. Summaries inside a run folder (its evaluations) and
    ``evaluate.py`` summaries are not runs and are left out silently; a Hydra job folder (``.hydra/``)
    without a summary is reported as skipped. Raises :class:`ReportError` when the folder is missing.
    """
    root = Path(sweep_dir)
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise ReportError(f"{root} {what}; expected a folder of runs (e.g. outputs/multirun/<date>/<time>)")
    found = sorted(root.rglob("summary.json"))
    folders = {p.parent for p in found}
    runs: list[RunRecord] = []
    skipped: list[Skipped] = []
    for path in found:
        # A run's own outputs (e.g. <run>/real_eval/<set>/summary.json from evaluate.py) are not runs.
        if any(parent in folders for parent in path.parent.parents):
            continue
        try:
            runs.append(read_run(path, root))
        except NotARunSummary:
            continue
        except ValueError as err:
            skipped.append(Skipped(path, str(err)))
    # Hydra job folders without a summary: runs still going, or stopped before the end.
    for hydra_dir in sorted(root.rglob(".hydra")):
        job = hydra_dir.parent
        if job not in folders and not any(parent in folders for parent in job.parents):
            skipped.append(
                Skipped(job / "summary.json", "is missing: the run is still going or stopped early")
            )
    runs.sort(key=lambda r: (r.job_num if r.job_num is not None else math.inf, r.name))
    return _labelled(runs), skipped


def collect_runs(sweep_dir: str | Path) -> list[RunRecord]:
    """The runs under ``sweep_dir``; each skipped summary raises a ``UserWarning`` naming the file."""
    runs, skipped = scan_runs(sweep_dir)
    for skip in skipped:
        warnings.warn(f"skipped {skip.path}: {skip.reason}", UserWarning, stacklevel=2)
    return runs
