"""The Optuna search (``hparams_search=optuna``): resumable studies, failure handling, a killed sweep resumed.

The sweeper's policy is tested in-process with a fake launcher (fast); the kill-and-resume test runs the
real command in a subprocess with tiny settings.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import OmegaConf
from optuna.trial import TrialState

from hydra_plugins.psr_optuna._study import FAILURE_ATTR, PsrOptunaSweeperImpl, job_outcome
from tests.conftest import ROOT, TINY

optuna.logging.set_verbosity(optuna.logging.WARNING)

STUDY = "psr_optuna"  # conf/hparams_search/optuna.yaml's study_name


class FakeLauncher:
    """Runs ``objective(x)`` for each job's ``x=`` override, as Hydra's launcher runs the task."""

    def __init__(self, objective: Callable[[float], Any]) -> None:
        self.objective = objective
        self.job_numbers: list[int] = []

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        returns = []
        for i, overrides in enumerate(job_overrides):
            self.job_numbers.append(initial_job_idx + i)
            x = float(dict(o.split("=", 1) for o in overrides)["x"])
            ret = JobReturn(overrides=list(overrides))
            try:
                ret.return_value = self.objective(x)
                ret.status = JobStatus.COMPLETED
            except Exception as err:
                ret.return_value = err
                ret.status = JobStatus.FAILED
            returns.append(ret)
        return returns


def sweeper(
    tmp_path: Path, objective: Callable[[float], Any], n_trials: int, max_failure_rate: float = 0.0
) -> PsrOptunaSweeperImpl:
    """A psr_optuna sweeper over ``x ∈ [0, 1]`` whose storage folder does not exist yet."""
    impl = PsrOptunaSweeperImpl(
        sampler=optuna.samplers.TPESampler(seed=0),
        direction="maximize",
        storage=f"sqlite:///{tmp_path / 'db' / 'study.db'}",
        study_name="fake",
        n_trials=n_trials,
        n_jobs=1,
        max_failure_rate=max_failure_rate,
        search_space=None,
        custom_search_space=None,
        params=OmegaConf.create({"x": "interval(0.0, 1.0)"}),
    )
    impl.config = OmegaConf.create(
        {
            "hydra": {
                "sweep": {"dir": str(tmp_path / "sweep")},
                "sweeper": {"sampler": {"_target_": "optuna.samplers.TPESampler", "seed": 0}},
            }
        }
    )
    impl.launcher = FakeLauncher(objective)  # type: ignore[assignment]
    return impl


def job_numbers(impl: PsrOptunaSweeperImpl) -> list[int]:
    """The job numbers the sweeper gave its (fake) launcher."""
    assert isinstance(impl.launcher, FakeLauncher)
    return impl.launcher.job_numbers


def load(tmp_path: Path, name: str = "fake") -> optuna.study.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'db' / 'study.db'}")


def test_diverged_and_nan_trials_fail_alone_and_count_towards_the_budget(tmp_path: Path) -> None:
    calls = iter(range(100))

    def objective(x: float) -> float:
        n = next(calls)
        if n == 1:
            raise FloatingPointError("training loss became nan at step 3")
        if n == 2:
            return math.nan
        return x

    sweeper(tmp_path, objective, n_trials=5).sweep([])
    trials = load(tmp_path).trials
    assert len(trials) == 5  # the two failures used up budget: nothing was retried
    failures = {t.number: t.user_attrs.get(FAILURE_ATTR) for t in trials if t.state == TrialState.FAIL}
    assert failures == {1: "diverged", 2: "no_value"}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert [t.value for t in complete] == [t.params["x"] for t in complete]
    results = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    assert results.best_value == max(t.params["x"] for t in complete)
    assert (results.n_complete, results.n_failed) == (3, 2)


def test_a_crash_stops_the_sweep_and_the_rerun_replaces_the_crashed_trial(tmp_path: Path) -> None:
    def crash(x: float) -> float:
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        sweeper(tmp_path, crash, n_trials=3).sweep([])
    trials = load(tmp_path).trials
    assert [(t.state, t.user_attrs[FAILURE_ATTR]) for t in trials] == [(TrialState.FAIL, "crashed")]

    resumed = sweeper(tmp_path, lambda x: x, n_trials=3)
    resumed.sweep([])
    trials = load(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.COMPLETE] * 3
    assert job_numbers(resumed) == [1, 2, 3]  # job number = trial number


@pytest.mark.parametrize(
    ("stop", "failure"),
    [
        (SystemExit(2), "crashed"),  # what train.py does after printing `error: ...`
        (KeyboardInterrupt(), "interrupted"),
        (SIGTERMException(), "interrupted"),  # Lightning's answer to SIGTERM
    ],
)
def test_a_launch_that_stops_the_sweep_marks_its_trial_failed(
    tmp_path: Path, stop: BaseException, failure: str
) -> None:
    def stopping(x: float) -> float:
        raise stop

    with pytest.raises(type(stop)):
        sweeper(tmp_path, stopping, n_trials=3).sweep([])
    trials = load(tmp_path).trials
    assert [(t.state, t.user_attrs[FAILURE_ATTR]) for t in trials] == [(TrialState.FAIL, failure)]


def test_crashes_within_max_failure_rate_are_tolerated(tmp_path: Path) -> None:
    calls = iter(range(100))

    def sometimes(x: float) -> float:
        if next(calls) == 2:
            raise RuntimeError("one bad trial")
        return x

    sweeper(tmp_path, sometimes, n_trials=4, max_failure_rate=0.5).sweep([])
    states = [t.state for t in load(tmp_path).trials]
    assert states.count(TrialState.COMPLETE) == 3 and states.count(TrialState.FAIL) == 1


def test_a_trial_left_running_is_marked_interrupted_and_replaced(tmp_path: Path) -> None:
    first = sweeper(tmp_path, lambda x: x, n_trials=2)
    first.sweep([])
    study = load(tmp_path)
    study.ask()  # a trial whose process was killed: still RUNNING in the storage

    resumed = sweeper(tmp_path, lambda x: x, n_trials=4)
    resumed.sweep([])
    trials = load(tmp_path).trials
    assert trials[2].state == TrialState.FAIL and trials[2].user_attrs[FAILURE_ATTR] == "interrupted"
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 4
    assert len(trials) == 5
    # The resumed sampler draws new values: the same seed alone would replay trials 0 and 1.
    xs = [t.params["x"] for t in trials if t.state == TrialState.COMPLETE]
    assert len(set(xs)) == len(xs)


def test_a_complete_study_launches_nothing(tmp_path: Path) -> None:
    sweeper(tmp_path, lambda x: x, n_trials=2).sweep([])
    again = sweeper(tmp_path, lambda x: x, n_trials=2)
    again.sweep([])
    assert job_numbers(again) == []
    assert len(load(tmp_path).trials) == 2


def test_command_line_sweeps_join_the_search_space(tmp_path: Path) -> None:
    impl = sweeper(tmp_path, lambda x: x, n_trials=1)
    distributions, fixed = impl._search_space(["model.n_feats=choice(32,48)", "seed=3", "x=0.5"])
    assert isinstance(distributions["model.n_feats"], optuna.distributions.CategoricalDistribution)
    assert distributions["model.n_feats"].choices == (32, 48)
    assert fixed == {"seed": "3", "x": "0.5"}  # a fixed value on the command line overrides the searched one
    assert "x" not in distributions


def test_job_outcome_classifies_returns() -> None:
    def ret(value: Any, failed: bool = False) -> JobReturn:
        job = JobReturn(overrides=[])
        job.return_value = value
        job.status = JobStatus.FAILED if failed else JobStatus.COMPLETED
        return job

    assert job_outcome(ret(21.5), 1) == ([21.5], None, None)
    assert job_outcome(ret(None), 1)[1] == "no_value"
    assert job_outcome(ret(math.inf), 1)[1] == "no_value"
    assert job_outcome(ret("21.5 dB"), 1)[1] == "crashed"
    assert job_outcome(ret([1.0, 2.0]), 1)[1] == "crashed"
    assert job_outcome(ret(FloatingPointError("nan"), failed=True), 1)[1] == "diverged"
    assert job_outcome(ret(KeyError("x"), failed=True), 1)[1] == "crashed"


def test_grid_sampler_is_refused_in_one_sentence(tmp_path: Path) -> None:
    import functools

    impl = sweeper(tmp_path, lambda x: x, n_trials=2)
    impl.sampler = functools.partial(optuna.samplers.GridSampler)
    with pytest.raises(ValueError, match="grid is not supported"):
        impl.sweep([])


@pytest.mark.parametrize(
    ("search", "study", "base"),
    [
        ("optuna", STUDY, []),
        # The degradation search is meant for recipes that validate on real pairs.
        ("optuna_degradation", "psr_optuna_degradation", ["crappifier=calibrated_w2s"]),
    ],
)
def test_the_search_space_addresses_existing_keys(
    compose_cfg, search: str, study: str, base: list[str]
) -> None:  # noqa: ANN001
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"hparams_search={search}", *base], return_hydra_config=True)
    sweeper_cfg = cfg.hydra.sweeper
    assert sweeper_cfg._target_ == "hydra_plugins.psr_optuna.sweeper.PsrOptunaSweeper"
    assert sweeper_cfg.direction == "maximize" and cfg.optimized_metric == "val/psnr"
    assert sweeper_cfg.storage == f"sqlite:///outputs/optuna/{study}.db"
    assert (
        sweeper_cfg.sampler._target_ == "optuna.samplers.TPESampler" and sweeper_cfg.sampler.seed is not None
    )
    for key in sweeper_cfg.params:
        assert OmegaConf.select(cfg, key) is not None, (
            f"hydra.sweeper.params.{key} is not a key of the config"
        )
    # Every value a trial can draw composes into a config that trains (the bounds of each interval).
    lows = [f"{key}={_bounds(str(expr))[0]}" for key, expr in sweeper_cfg.params.items()]
    highs = [f"{key}={_bounds(str(expr))[1]}" for key, expr in sweeper_cfg.params.items()]
    from hydra.utils import instantiate

    for overrides in (lows, highs):
        trial_cfg = compose_cfg(f"hparams_search={search}", *base, *overrides)
        instantiate(trial_cfg.loss)
        instantiate(trial_cfg.crappifier)
        for override in overrides:
            key, value = override.split("=", 1)
            assert OmegaConf.select(trial_cfg, key) == pytest.approx(float(value))


def _bounds(expr: str) -> tuple[float, float]:
    """``(low, high)`` of a Hydra ``interval(low, high)`` sweep, possibly inside ``tag(...)``."""
    inner = expr.split("interval(", 1)[1].split(")", 1)[0]
    low, high = (float(v) for v in inner.split(","))
    return low, high


def _trial_states(db: Path) -> list[str]:
    """The stored trials' states, read without creating anything (``optuna.load_study`` would create the
    schema, racing the sweep that is creating it)."""
    if not db.exists():
        return []
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)) as con:
            return [row[0] for row in con.execute("SELECT state FROM trials")]
    except sqlite3.OperationalError:  # no table yet, or locked by the writer
        return []


@pytest.mark.slow
def test_a_killed_sweep_resumes_to_n_trials(tmp_path: Path, cache_dir: Path) -> None:
    n_trials = 2
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "hparams_search=optuna",
        *TINY,
        "trainer.max_epochs=1",
        "trainer.enable_model_summary=false",
        f"paths.cache_dir={cache_dir}",
        f"hydra.sweeper.n_trials={n_trials}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    db = tmp_path / "outputs" / "optuna" / f"{STUDY}.db"
    storage = f"sqlite:///{db}"
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 300  # a guard against hanging, not a timing assertion
        while time.monotonic() < deadline and proc.poll() is None:
            states = _trial_states(db)
            if "COMPLETE" in states and "RUNNING" in states:
                break
            time.sleep(0.2)
        assert proc.poll() is None, (
            f"the sweep ended before it could be interrupted:\n{(tmp_path / 'first.log').read_text()[-3000:]}"
        )
        os.killpg(proc.pid, signal.SIGKILL)  # mid-trial: the running trial stays RUNNING in the storage
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    before = {
        t.number: t.value
        for t in optuna.load_study(study_name=STUDY, storage=storage).trials
        if t.value is not None
    }
    assert before

    rerun = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    trials = optuna.load_study(study_name=STUDY, storage=storage).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == n_trials
    assert {t.number: t.value for t in complete if t.number in before} == before  # earlier trials kept
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.user_attrs[FAILURE_ATTR] for t in interrupted] == ["interrupted"]
    assert len(trials) == n_trials + 1
    values = [t.value for t in complete if t.value is not None]
    assert len(values) == n_trials and all(math.isfinite(v) for v in values)
    results = OmegaConf.load(next((tmp_path / "outputs" / "multirun").glob("*/*/optimization_results.yaml")))
    assert results.best_value == max(values)
    assert set(results.best_params) == {"module.optimizer.lr", "module.optimizer.weight_decay", "loss.alpha"}
    # Each trial's run has the trial's number as job number, and its summary holds the value told.
    for trial in complete:
        folder = Path(trial.user_attrs["output_dir"])
        assert OmegaConf.load(folder / ".hydra" / "hydra.yaml").hydra.job.num == trial.number
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["best"]["val/psnr"] == pytest.approx(trial.value)
