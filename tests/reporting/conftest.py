"""The fake sweep shared by the dashboard's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reporting.test_dashboard import make_sweep


@pytest.fixture
def sweep(tmp_path: Path) -> tuple[Path, dict[str, dict[tuple[str, ...], float]]]:
    """A fake multirun folder and the numbers written into its summaries (see ``make_sweep``)."""
    folder = tmp_path / "multirun" / "2026-01-02" / "03-04-05"
    return folder, make_sweep(folder)
