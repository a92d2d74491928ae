"""Resumable Optuna studies for Hydra sweeps (the ``psr_optuna`` sweeper's implementation).

Hydra's Optuna sweeper loads an existing study but then runs ``n_trials`` *more* trials, counts a trial
left ``RUNNING`` by a killed process as neither done nor failed, restarts a seeded sampler's random
stream (so a re-run repeats the first run's draws), and stops the whole study at the first trial that
fails. Here ``n_trials`` is the study's budget, kept in its storage:

* a trial *counts* when it completed, or when it failed because of its hyper-parameters (training
  diverged: ``FloatingPointError``; or the run returned NaN or no metric at all). Such trials fail alone,
  are recorded with the reason in the trial's ``psr_failure`` user attribute, and are not retried;
* a trial that crashed for another reason (an exception in the run) is recorded as failed
  (``psr_failure=crashed``) and does not count; once the crashed share of the trials launched by this
  invocation exceeds ``max_failure_rate`` the sweep stops with that error;
* a launch that ends the sweep (train.py exits 2 on a config error, an override Hydra cannot apply,
  Ctrl-C, SIGTERM) marks its trials failed (``crashed``; ``interrupted`` for Ctrl-C and SIGTERM) before
  the sweep stops;
* at start-up, trials still ``RUNNING`` in the storage were cut off by a killed process: they are
  marked failed (``psr_failure=interrupted``) and do not count.

Each invocation launches the trials missing from the budget when it starts, so re-running the same
command after an interruption or a crash completes the study, and re-running a complete study does
nothing but report it. One sweep process per study: a second process sharing the storage would see the
first one's running trials as interrupted.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution
from optuna.study import Study
from optuna.trial import FrozenTrial, Trial, TrialState
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

FAILURE_ATTR = "psr_failure"
OUTPUT_DIR_ATTR = "output_dir"
# Failures decided by the hyper-parameters themselves: they use up budget and are not retried.
COUNTED_FAILURES = ("diverged", "no_value")
FAILURE_REASONS = {"diverged": "training diverged", "no_value": "no finite metric", "crashed": "crashed"}


def prepare_storage(storage: Any) -> None:
    """Create the folder of an SQLite storage file (SQLite does not create missing parent folders)."""
    if not isinstance(storage, str) or not storage.startswith("sqlite:"):
        return
    database = make_url(storage).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def counts_towards_budget(trial: FrozenTrial) -> bool:
    """Whether a stored trial uses up one of ``n_trials``: it completed, or failed because of its values."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and trial.user_attrs.get(FAILURE_ATTR) in COUNTED_FAILURES


def fail_interrupted(study: Study) -> list[int]:
    """Mark the trials left ``RUNNING`` (their process was killed) as failed; return their numbers."""
    numbers = []
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # A Trial handle on the stored trial: FrozenTrial keeps its storage id only privately.
        trial = Trial(study, frozen._trial_id)
        trial.set_user_attr(FAILURE_ATTR, "interrupted")
        study.tell(trial, state=TrialState.FAIL)
        numbers.append(frozen.number)
    return numbers


def job_outcome(
    ret: JobReturn, n_objectives: int
) -> tuple[list[float] | None, str | None, BaseException | None]:
    """``(values, failure, error)`` of one finished job.

    ``values`` when the job returned finite numbers (``failure`` and ``error`` are ``None``); otherwise
    ``failure`` is ``diverged`` (the run raised ``FloatingPointError``), ``no_value`` (it returned ``None``,
    NaN or infinity) or ``crashed`` (any other exception, or a value that is not a number), with the error.
    """
    try:
        raw = ret.return_value
    except FloatingPointError as err:
        return None, "diverged", err
    except Exception as err:
        return None, "crashed", err
    if raw is None:
        return None, "no_value", None
    items = list(raw) if isinstance(raw, Sequence) and not isinstance(raw, str) else [raw]
    try:
        values = [float(v) for v in items]
    except (TypeError, ValueError):
        return None, "crashed", TypeError(f"the task returned {raw!r}; expected a number to optimise")
    if len(values) != n_objectives:
        return (
            None,
            "crashed",
            ValueError(
                f"the task returned {len(values)} value(s) for a study of {n_objectives} objective(s)"
            ),
        )
    if not all(math.isfinite(v) for v in values):
        return None, "no_value", None
    return values, None, None


def stop_failure(stop: BaseException) -> str:
    """How a launch that raised ``stop`` out of the launcher ended its trials.

    ``interrupted`` for Ctrl-C and for a SIGTERM (Lightning finishes the step, then raises its
    ``SIGTERMException``, a ``SystemExit``); ``crashed`` for anything else, e.g. train.py's exit 2 on a
    config error.
    """
    if isinstance(stop, KeyboardInterrupt):
        return "interrupted"
    try:
        from lightning.pytorch.utilities.exceptions import SIGTERMException
    except ImportError:
        return "crashed"
    return "interrupted" if isinstance(stop, SIGTERMException) else "crashed"


def write_results(path: Path, results: dict[str, Any]) -> None:
    """Write the study's summary as YAML under a temporary name, then rename it into place."""
    from psr.atomic import write_atomic

    write_atomic(path, OmegaConf.to_yaml(OmegaConf.create(results)))


class PsrOptunaSweeperImpl(OptunaSweeperImpl):
    """Hydra's Optuna sweeper whose ``sweep`` resumes a stored study up to ``n_trials`` (see the module)."""

    def _search_space(self, arguments: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, Any]]:
        """The sampled distributions and the fixed overrides, from ``hydra.sweeper.params`` and the command line."""
        self._process_searchspace_config()
        distributions, fixed = create_params_from_overrides(
            [*self._parse_sweeper_params_config(), *arguments]
        )
        if self.search_space_distributions:
            distributions = {**self.search_space_distributions, **distributions}
        for name in fixed:
            distributions.pop(name, None)
        return distributions, fixed

    def _continue_sampler(self, study: Study) -> None:
        """Give a seeded sampler of a resumed study the seed plus the number of trials already stored.

        The same seed would replay the first invocation's random start-up draws as new trials; the offset
        keeps the draws new and the whole sequence reproducible.
        """
        assert self.config is not None
        node = OmegaConf.select(self.config, "hydra.sweeper.sampler")
        seed = node.get("seed") if isinstance(node, DictConfig) else None
        n_stored = len(study.get_trials(deepcopy=False))
        if seed is None or n_stored == 0:
            return
        study.sampler = instantiate(node, seed=int(seed) + n_stored)

    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None and self.launcher is not None
        if isinstance(self.sampler, functools.partial) and self.sampler.func is optuna.samplers.GridSampler:
            raise ValueError(
                "hydra/sweeper/sampler=grid is not supported by the psr_optuna sweeper; for a grid use Hydra's "
                "basic sweeper (python train.py -m key=a,b,c) or a W&B grid sweep (conf/sweeps/)"
            )
        distributions, fixed = self._search_space(arguments)
        directions = self._get_directions()
        prepare_storage(self.storage)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            sampler=self.sampler,
            directions=directions,
            load_if_exists=True,
        )
        interrupted = fail_interrupted(study)
        if interrupted:
            log.warning(f"Trials {interrupted} were left running by an interrupted sweep: marked failed")
        self._continue_sampler(study)
        stored = study.get_trials(deepcopy=False)
        counted = sum(counts_towards_budget(t) for t in stored)
        to_launch = max(0, self.n_trials - counted)
        log.info(
            f"Study {study.study_name} in {self.storage}: {counted} of {self.n_trials} trials done, "
            f"launching {to_launch} ({type(study.sampler).__name__}, {', '.join(directions)})"
        )
        # Job numbers are trial numbers: run folder N belongs to trial N, also across re-runs.
        self.job_idx = len(stored)
        launched = crashed = 0
        while to_launch > 0:
            trials = [study.ask() for _ in range(min(self.n_jobs, to_launch))]
            overrides = self._configure_trials(trials, distributions, fixed)
            try:
                returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            except BaseException as stop:  # train.py exits 2 on a config error; Ctrl-C; a bad override
                failure = stop_failure(stop)
                for trial in trials:
                    trial.set_user_attr(FAILURE_ATTR, failure)
                    study.tell(trial, state=TrialState.FAIL)
                raise
            self.job_idx += len(returns)
            launched += len(returns)
            to_launch -= len(returns)
            error: BaseException | None = None
            for trial, ret in zip(trials, returns, strict=True):
                crashed_error = self._record(study, trial, ret, len(directions))
                if crashed_error is not None:
                    crashed += 1
                    error = crashed_error
            if error is not None and crashed / launched > self.max_failure_rate:
                log.error(
                    f"{crashed} of {launched} trials crashed, above max_failure_rate={self.max_failure_rate}: "
                    "stopping the sweep (re-run the command to resume the study once fixed)"
                )
                raise error
        self._report(study, len(directions))

    def _record(self, study: Study, trial: Trial, ret: JobReturn, n_objectives: int) -> BaseException | None:
        """Tell the study how ``trial`` ended; return the error when the trial crashed."""
        output_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg else None
        if output_dir is not None:
            trial.set_user_attr(OUTPUT_DIR_ATTR, str(output_dir))
        values, failure, error = job_outcome(ret, n_objectives)
        if values is not None:
            study.tell(trial, values=values)
            shown = values if n_objectives > 1 else values[0]
            log.info(f"Trial {trial.number}: {shown} {dict(trial.params)}")
            return None
        trial.set_user_attr(FAILURE_ATTR, failure)
        study.tell(trial, state=TrialState.FAIL)
        reason = FAILURE_REASONS.get(str(failure), str(failure))
        log.warning(
            f"Trial {trial.number} failed ({reason}{f': {error}' if error else ''}) {dict(trial.params)}"
        )
        return error if failure == "crashed" else None

    def _report(self, study: Study, n_objectives: int) -> None:
        """Log the best trial(s) and write ``optimization_results.yaml`` in the sweep folder."""
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if not complete:
            raise ValueError(
                f"study {study.study_name} in {self.storage} has no completed trial ({len(trials)} failed); "
                "see the trials' psr_failure attribute and their run logs"
            )
        results: dict[str, Any] = {
            "name": "psr_optuna",
            "study_name": study.study_name,
            "storage": str(self.storage),
            "n_trials": len(trials),
            "n_complete": len(complete),
            "n_failed": sum(t.state == TrialState.FAIL for t in trials),
        }
        if n_objectives == 1:
            best = study.best_trial
            results.update(
                best_trial=best.number,
                best_params=best.params,
                best_value=best.value,
                best_output_dir=best.user_attrs.get(OUTPUT_DIR_ATTR),
            )
            log.info(f"Best trial {best.number}: value {best.value}, parameters {best.params}")
        else:
            results["solutions"] = [
                {"trial": t.number, "params": t.params, "values": t.values} for t in study.best_trials
            ]
            log.info(f"{len(study.best_trials)} Pareto-optimal trials")
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        write_results(sweep_dir / "optimization_results.yaml", results)
