"""The task-based evaluations of a sweep folder: every ``evaluate.py task=segment`` ``summary.json`` under
it, one row per method (segmentation of the high, raw, restored and filtered images), for the dashboard."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from psr.reporting.summary import number

# The per-method scores the dashboard shows, as evaluate.py task=segment writes them.
SCORES = ("iou", "dice", "recovered", "f1", "ap")


def segmentation_rows(root: Path) -> list[dict[str, Any]]:
    """One row per method of every task=segment summary under ``root`` (recursively), ordered by folder.

    Summaries of other kinds, and files that are not JSON objects, are left to the run collection
    (:func:`psr.reporting.runs.scan_runs`), which reports unreadable ones."""
    rows: list[dict[str, Any]] = []
    for path in sorted(root.rglob("summary.json")):
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(summary, dict) or summary.get("task") != "segment":
            continue
        methods = summary.get("methods")
        folder = path.parent.relative_to(root).as_posix() if path.parent != root else root.name
        for method in methods if isinstance(methods, list) else []:
            if not isinstance(method, dict):
                continue
            rows.append(
                {
                    "evaluation": folder,
                    "name": str(summary.get("name", "")),
                    "reference": str(summary.get("reference", "")),
                    "method": str(method.get("method", "")),
                    "best_classical": method.get("method") == summary.get("best_classical"),
                    "n": number(method.get("n")),
                    **{key: number(method.get(key)) for key in SCORES},
                }
            )
    return rows
