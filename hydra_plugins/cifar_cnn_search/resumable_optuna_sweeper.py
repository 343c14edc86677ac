"""hydra-optuna-sweeper's Optuna sweeper, resumable to a total and with a study-wide failure limit.

`hparams_search=optuna` (conf/hparams_search/optuna.yaml) selects this sweeper. It runs the
stock `OptunaSweeperImpl` of hydra-optuna-sweeper 1.3 (TPE sampling, ask-and-tell over the
launcher, `optimization_results.yaml`) and changes three things around it:

- Resuming. The stock sweeper runs `n_trials` more trials every time it starts, even when its
  storage already holds the study, and numbers the jobs from 0 again, so job directories of a
  rerun would collide with the stored trials'. This one counts the trials the stored study has
  finished (complete, failed or pruned) and runs only the rest, numbering the jobs after the
  stored trials: rerunning the same command continues an interrupted search to `n_trials`.
  A seeded sampler would replay the random numbers of the first command and repeat its
  trials, so a resumed search reseeds it (its further draws are not reproducible).
- Failures. The stock `max_failure_rate` applies to each batch of `n_jobs` trials launched
  together (with `n_jobs=1`, any failure stops the search). Here it is a share of `n_trials`:
  up to `floor(max_failure_rate * n_trials)` trials of the study may fail (raise, or return a
  value that is not a finite number); they are stored as failed and the search goes on. The
  failure after that stops it, after the study has recorded its batch.
- Files. The directory of a SQLite storage is created before the study is opened, and the
  sweep's config is saved as `multirun.yaml` in the sweep directory, as Hydra's own sweeper
  does (the stock Optuna sweeper saves none).

Only the Hydra sweeper API is imported at module level: Hydra imports every plugin module on
every start, and this one must load without the optional `search` dependencies.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

INSTALL = "pip install 'cifar_cnn[search]'"
SQLITE_PREFIX = "sqlite:///"


def job_failed(result: JobReturn) -> bool:
    """Whether the stock sweeper stores this job's trial as failed: it raised, or its return
    value is not a finite number (Optuna refuses NaN and infinity)."""
    if result.status != JobStatus.COMPLETED:
        return True
    values = result.return_value
    values = values if isinstance(values, list | tuple) else [values]  # one value per objective
    try:
        return not all(math.isfinite(float(v)) for v in values)
    except (TypeError, ValueError):
        return True


def sqlite_directory(storage: str | None) -> Path | None:
    """The directory of a `sqlite:///PATH` storage URL (relative PATHs from the working
    directory); None for other storages."""
    if not isinstance(storage, str) or not storage.startswith(SQLITE_PREFIX):
        return None
    return Path(storage[len(SQLITE_PREFIX) :]).parent


class _FailureLimit:
    """Wraps the launcher: after each batch, sets the stock sweeper's per-batch
    `max_failure_rate` so that it raises exactly when the study's failures pass the limit."""

    def __init__(self, launcher: Any, sweeper: Any, failed_before: int, allowed: int):
        self.launcher, self.sweeper = launcher, sweeper
        self.failed, self.allowed = failed_before, allowed

    def launch(self, job_overrides: Any, initial_job_idx: int) -> Any:
        results = self.launcher.launch(job_overrides, initial_job_idx=initial_job_idx)
        self.failed += sum(job_failed(r) for r in results)
        # The stock check is `failures in this batch / batch size > max_failure_rate`.
        self.sweeper.max_failure_rate = 0.0 if self.failed > self.allowed else 1.0
        if self.failed > self.allowed:
            log.error(
                "%d trials of this study failed, more than max_failure_rate x n_trials = %d "
                "allows; the search stops (raise hydra.sweeper.max_failure_rate to go on)",
                self.failed,
                self.allowed,
            )
        return results

    def __getattr__(self, name: str) -> Any:
        return getattr(self.launcher, name)


class ResumableOptunaSweeper(Sweeper):
    """The Optuna sweeper with the settings of hydra-optuna-sweeper's `OptunaSweeperConf`
    (sampler, direction, storage, study_name, n_trials, n_jobs, max_failure_rate, params, ...).
    """

    def __init__(self, **settings: Any) -> None:
        try:
            import optuna  # noqa: F401  (fails here, with the fix, rather than mid-sweep)
            from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
        except ImportError as e:
            raise ImportError(
                f"hparams_search=optuna needs hydra-optuna-sweeper with Optuna 2 and "
                f"SQLAlchemy 1.4 ({e}); install them with: {INSTALL}"
            ) from e
        self.impl = OptunaSweeperImpl(**settings)
        self.total_trials = self.impl.n_trials
        self.max_failure_rate = self.impl.max_failure_rate

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def _stored_trials(self) -> tuple[int, int, int]:
        """(trials stored, finished, failed) of the study in the storage; zeros for a new one."""
        import optuna
        from optuna.trial import TrialState

        if self.impl.storage is None or self.impl.study_name is None:
            return 0, 0, 0  # in memory, or an unnamed study: nothing to resume
        storage = optuna.storages.get_storage(self.impl.storage)
        try:
            study_id = storage.get_study_id_from_name(self.impl.study_name)
        except KeyError:
            return 0, 0, 0
        states = [t.state for t in storage.get_all_trials(study_id, deepcopy=False)]
        finished = sum(s.is_finished() for s in states)
        return len(states), finished, states.count(TrialState.FAIL)

    def sweep(self, arguments: list[str]) -> Any:
        directory = sqlite_directory(self.impl.storage)
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        sweep_dir = Path(self.impl.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.impl.config, sweep_dir / "multirun.yaml")
        stored, finished, failed = self._stored_trials()
        if stored and hasattr(self.impl.sampler, "reseed_rng"):
            self.impl.sampler.reseed_rng()
        self.impl.n_trials = max(0, self.total_trials - finished)
        self.impl.job_idx = stored  # job numbers follow the stored trials' numbers
        if stored:
            log.info(
                "resuming study %r in %s: %d of %d trials finished (%d failed), %d left "
                "running by an interrupted command (or running elsewhere now); running %d more",
                self.impl.study_name,
                self.impl.storage,
                finished,
                self.total_trials,
                failed,
                stored - finished,
                self.impl.n_trials,
            )
        allowed = math.floor(self.max_failure_rate * self.total_trials + 1e-9)
        self.impl.launcher = _FailureLimit(self.impl.launcher, self.impl, failed, allowed)
        return self.impl.sweep(arguments)
