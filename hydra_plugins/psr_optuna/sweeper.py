"""The ``psr_optuna`` sweeper's config (registered in Hydra's ConfigStore) and its plugin class.

Only dataclasses and Hydra are imported here: Hydra imports this module in every run when it scans
its plugins, and Optuna (with SQLAlchemy) takes a second to import. No ``from __future__ import annotations``: Hydra
executes this module before registering it in ``sys.modules``, where ``dataclass`` would look string
annotations up.
"""

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from omegaconf import DictConfig


@dataclass
class PsrOptunaSweeperConf(OptunaSweeperConf):
    """Hydra's Optuna sweeper options, with psr's meaning of ``n_trials`` and ``max_failure_rate``.

    ``n_trials`` is the study's budget: trials that ran to an end (completed, or failed because of their
    hyper-parameters: a diverged loss or a NaN metric), counted in the storage across re-runs.
    ``max_failure_rate`` bounds the trials of one invocation that crashed for any other reason; beyond
    it the sweep stops with that trial's error.
    """

    _target_: str = "hydra_plugins.psr_optuna.sweeper.PsrOptunaSweeper"
    n_jobs: int = 1
    max_failure_rate: float = 0.25


ConfigStore.instance().store(
    group="hydra/sweeper", name="psr_optuna", node=PsrOptunaSweeperConf, provider="psr"
)


class PsrOptunaSweeper(Sweeper):
    """Hydra's entry to :class:`hydra_plugins.psr_optuna._study.PsrOptunaSweeperImpl`."""

    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: Any | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        search_space: DictConfig | None,
        custom_search_space: str | None,
        params: DictConfig | None,
    ) -> None:
        from hydra_plugins.psr_optuna._study import PsrOptunaSweeperImpl

        self.sweeper = PsrOptunaSweeperImpl(
            sampler,
            direction,
            storage,
            study_name,
            n_trials,
            n_jobs,
            max_failure_rate,
            search_space,
            custom_search_space,
            params,
        )

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        self.sweeper.sweep(arguments)
