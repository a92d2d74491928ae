"""psr's Optuna sweeper for Hydra: ``hydra/sweeper=psr_optuna``, selected by ``hparams_search=optuna``.

It is Hydra's Optuna sweeper with resumable studies: a re-run of the same command tops the stored study
up to ``n_trials`` instead of adding ``n_trials`` more, trials left running by a killed process are marked
failed and replaced, and a trial whose training diverged fails alone without ending the study. Hydra
imports :mod:`.sweeper` when it scans the ``hydra_plugins`` namespace package (which must keep no
``__init__.py`` of its own); the implementation in :mod:`._study` (which imports Optuna) is loaded only
when a sweep starts, so ordinary runs do not pay for it.
"""
