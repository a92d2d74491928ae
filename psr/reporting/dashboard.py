"""The sweep dashboard: every run's ``summary.json`` under a folder in, one self-contained HTML file out.

The work is split along its seams, and this module gathers the public names:

- :mod:`psr.reporting.runs`: :func:`scan_runs` / :func:`collect_runs` read the runs
  (:mod:`psr.reporting.summary` types each ``summary.json``);
- :mod:`psr.reporting.aggregate`: :func:`ablation`, :func:`seed_spread` and friends aggregate over seeds;
- :mod:`psr.reporting.render`: :func:`report_data` and :func:`build_report` make the page from the
  templates in ``psr/reporting/templates/``, :func:`write_report` writes it atomically.
"""

from __future__ import annotations

from psr.reporting.aggregate import (
    METRICS,
    Ablation,
    Cell,
    Column,
    ablation,
    cross_mean_spread,
    gain_spread,
    seed_spread,
    spread,
)
from psr.reporting.render import build_report, report_data, write_report
from psr.reporting.runs import ReportError, RunRecord, Skipped, collect_runs, read_run, scan_runs
from psr.reporting.summary import NotARunSummary, RunSummary

__all__ = [
    "METRICS",
    "Ablation",
    "Cell",
    "Column",
    "NotARunSummary",
    "ReportError",
    "RunRecord",
    "RunSummary",
    "Skipped",
    "ablation",
    "build_report",
    "collect_runs",
    "cross_mean_spread",
    "gain_spread",
    "read_run",
    "report_data",
    "scan_runs",
    "seed_spread",
    "spread",
    "write_report",
]
