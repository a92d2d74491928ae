"""W&B sweep files (conf/sweeps/*.yaml), validated offline: the W&B schema, psr's conventions, every proposed
run composed as the agent would pass it, broken files rejected, and one proposed run trained for real."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml
from omegaconf import OmegaConf

from tests.conftest import ROOT, TINY

SWEEP_FILES = sorted((ROOT / "conf" / "sweeps").glob("*.yaml"))


def _load_validator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("validate_sweeps", ROOT / "scripts" / "validate_sweeps.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vs = _load_validator()


def test_there_are_sweep_files() -> None:
    assert {p.stem for p in SWEEP_FILES} >= {"degradation_ablation", "hparams"}


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_sweep_file_conforms_to_the_wandb_schema_and_psr(path: Path) -> None:
    spec = yaml.safe_load(path.read_text())
    schema_file = Path(vs._sweeps().__file__).parent / "config" / "schema.json"
    jsonschema.Draft7Validator(json.loads(schema_file.read_text())).validate(spec)
    assert vs.schema_errors(spec) == []
    assert vs.psr_errors(spec) == []
    assert spec["command"] == ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_every_proposed_run_composes_with_its_values(path: Path) -> None:
    spec = vs.load_spec(path)
    runs = vs.proposals(spec, n_random=4)
    params = spec["parameters"]
    if spec["method"] == "grid":
        assert len(runs) == math.prod(len(p.get("values", [None])) for p in params.values())
        assert len({json.dumps(r, sort_keys=True) for r in runs}) == len(runs)
    else:
        assert len(runs) >= 4
    for name, param in params.items():  # every listed value is tried
        assert {json.dumps(v) for v in param.get("values", [])} <= {json.dumps(r[name]) for r in runs}
    for run in runs:
        assert set(run) == set(params)
        assert vs.composition_errors(run) == []


def test_agent_arguments_are_hydra_overrides() -> None:
    args = vs.agent_args(
        {"module.optimizer.lr": 1e-05, "crappifier": "gaussian", "data.percentiles": [1.0, 99.8]}
    )
    assert args == ["module.optimizer.lr=1e-05", "crappifier=gaussian", "data.percentiles=[1.0, 99.8]"]
    assert vs.composition_errors({"module.optimizer.lr": 1e-05, "data.percentiles": [2.0, 99.0]}) == []
    # A value that lands elsewhere than asked is reported, not silently accepted.
    errors = vs.composition_errors({"model.n_feats": None})
    assert len(errors) == 1 and "'None'" in errors[0]


GOOD = {
    "method": "bayes",
    "program": "train.py",
    "metric": {"name": "val/psnr", "goal": "maximize"},
    "command": ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"],
    "parameters": {
        "module.optimizer.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
        "crappifier": {"values": ["poisson", "gaussian"]},
    },
}


def _broken(change: dict[str, Any]) -> dict[str, Any]:
    spec = json.loads(json.dumps(GOOD))
    for key, value in change.items():
        target, *path = key.split("/")
        node = spec
        for part in [target, *path][:-1]:
            node = node[part]
        if value is ...:
            del node[[target, *path][-1]]
        else:
            node[[target, *path][-1]] = value
    return spec


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"method": "bayse"}, "'bayse' is not one of"),
        ({"paramters": {}}, "'paramters' was unexpected"),
        ({"parameters/crappifier": {"valuess": ["poisson"]}}, "not valid under any of the given schemas"),
        ({"parameters/module.optimizer.lr/max": 1e-5}, "is not less than max"),
        ({"command": ["${env}", "${interpreter}", "${program}", "${args}"]}, "does not pass the parameters"),
        (
            {"command": ["${program}", "${args_no_hyphens}", "${args_override_hydra}"]},
            "use ${args_no_hyphens} alone",
        ),
        ({"program": "psr/tasks/train.py"}, "expected 'train.py'"),
        ({"metric": {"name": "val/psrn", "goal": "maximize"}}, "metric.name is 'val/psrn'"),
        ({"parameters/seed": {"values": [0, None]}}, "null value"),
        ({"parameters/module.optimiser.lr": {"value": 0.001}}, "Could not override 'module.optimiser.lr'"),
        ({"parameters/crappifier": {"values": ["poisson", "poison"]}}, "Could not find 'crappifier/poison'"),
    ],
    ids=lambda v: str(v)[:40] if isinstance(v, dict) else None,
)
def test_a_broken_sweep_file_is_rejected(tmp_path: Path, change: dict[str, Any], expected: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(_broken(change)))
    errors, _ = vs.validate_file(path, n_random=2)
    assert any(expected in e for e in errors), errors


def test_the_good_spec_used_above_passes(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    errors, n_runs = vs.validate_file(path, n_random=2)
    assert errors == [] and n_runs >= 2


def test_cli_reports_errors_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(_broken({"method": "bayse"})))
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(GOOD))
    assert vs.main([str(good), str(broken), "--random-runs", "1"]) == 2
    out, err = capsys.readouterr()
    assert out.strip().startswith(f"ok: {good} (")
    assert err.strip().splitlines() == [
        f"error: {broken}: 'bayse' is not one of ['bayes', 'random', 'grid', 'custom']"
    ]
    assert vs.main([str(good), "--random-runs", "1"]) == 0


@pytest.mark.slow
def test_a_proposed_run_trains_and_logs_the_sweep_metric(tmp_path: Path, cache_dir: Path) -> None:
    """The agent's command line for one proposal of hparams.yaml, with tiny data, runs train.py to the end."""
    spec = vs.load_spec(ROOT / "conf" / "sweeps" / "hparams.yaml")
    proposal = vs.proposals(spec, n_random=1)[0]
    macros = {
        "${env}": ["/usr/bin/env"],
        "${interpreter}": [sys.executable],  # the agent runs `python` from PATH: the active environment
        "${program}": [spec["program"]],
        "${args_no_hyphens}": vs.agent_args(proposal),
    }
    command = [part for item in spec["command"] for part in macros.get(item, [item])]
    tiny = [o for o in TINY if not o.startswith("logger=")]
    command += [
        *tiny,
        "logger=csv",
        "trainer.max_epochs=1",
        f"paths.cache_dir={cache_dir}",
        f"hydra.run.dir={tmp_path}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    config = OmegaConf.load(tmp_path / ".hydra" / "config.yaml")
    assert config.module.optimizer.lr == pytest.approx(proposal["module.optimizer.lr"])
    assert config.loss.alpha == pytest.approx(proposal["loss.alpha"])
    with (tmp_path / "csv" / "metrics.csv").open() as f:
        columns = set(next(csv.reader(f)))
    assert spec["metric"]["name"] in columns
    assert {c for c in columns if c.startswith("val/")} == set(vs.VALIDATION_METRICS)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert math.isfinite(summary["best"][spec["metric"]["name"]])
