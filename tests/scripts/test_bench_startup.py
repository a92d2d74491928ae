"""``scripts/bench_startup.py``: reading ``python -X importtime`` and attributing the costs."""

from __future__ import annotations

import pytest

from tests.scripts import load_script

bench = load_script("bench_startup")

# As Python prints it: a module after the modules it imported, two more spaces per level.
IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       100 |        100 |     torch._C
import time:      2000 |       2100 |   torch
import time:       300 |       2400 | psr.crappifiers
[a log line in between]
import time:        50 |         50 |       scipy._lib
import time:       450 |        500 |     scipy.special
import time:       200 |        700 |   psr.crappifiers.optics
import time:       100 |        800 | psr.tasks.train
"""


def test_parse_importtime_reads_names_times_and_depths() -> None:
    rows = bench.parse_importtime(IMPORTTIME)
    assert [(r.name, r.self_us, r.cumulative_us, r.depth) for r in rows][:3] == [
        ("torch._C", 100, 100, 2),
        ("torch", 2000, 2100, 1),
        ("psr.crappifiers", 300, 2400, 0),
    ]
    assert len(rows) == 7


def test_import_costs_attribute_third_party_imports_to_psr_modules() -> None:
    costs = bench.import_costs(bench.parse_importtime(IMPORTTIME), top=2)
    assert costs["total_s"] == pytest.approx(3.2e-3)
    assert costs["psr_own_s"] == pytest.approx(0.6e-3)
    assert costs["packages"] == [["torch", pytest.approx(2.1e-3)], ["psr", pytest.approx(0.6e-3)]]
    # scipy._lib is imported by scipy.special, not by psr: only the direct imports count.
    assert costs["imported_by_psr"] == [
        ["torch", "psr.crappifiers", pytest.approx(2.1e-3)],
        ["scipy.special", "psr.crappifiers.optics", pytest.approx(0.5e-3)],
    ]


def test_report_names_every_milestone() -> None:
    result = {
        "overrides": ["model=care_unet"],
        "runs": [{"fit_start": 3.0, "train_start": 3.5, "first_step": 4.0, "cpu_s": 3.8}],
        "best": {"fit_start": 3.0, "train_start": 3.5, "first_step": 4.0, "cpu_s": 3.8},
        "imports": bench.import_costs(bench.parse_importtime(IMPORTTIME), top=3),
        "heavy_imported": [],
        "machine": "test machine",
    }
    text = bench.report(result)
    for expected in (
        "| first optimiser step | 4.00 |",
        "| fit start",
        "| scipy.special | psr.crappifiers.optics |",
    ):
        assert expected in text
    assert "Heavy packages loaded: none" in text


def test_repeats_below_one_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--repeats", "0"])
    assert "--repeats must be at least 1, got 0" in capsys.readouterr().err
