"""The sweeper of `hparams_search=optuna`: Optuna's ask-and-tell over Hydra's launcher.

conf/hparams_search/optuna.yaml selects it (`hydra/sweeper: cifar_cnn_optuna`, registered
below). It opens (or creates) the Optuna study named `study_name` in `storage` and, batch by
batch, asks the study for up to `n_jobs` trials, launches them together through Hydra's
launcher and tells the study each result:

- Identity. A trial's number in the study names its run directory (`hydra.sweep.subdir` is set
  to it), so several processes sharing one study (one sweep directory, or one database for
  several machines) never write to the same directory.
- Resuming. The study counts: a command runs trials until the study holds `n_trials` finished
  ones (complete, pruned or failed), counting those of earlier commands and of other
  processes running now. Trials left running by an interrupted command are not counted (they
  stay RUNNING in the study, and their place is taken by new trials).
- Failures. A trial that raises, or returns a value that is not a finite number, is stored as
  failed and the search goes on, until the study holds more than
  `floor(max_failure_rate * n_trials)` failed trials: then it stops with an error.
- Pruning. With `pruner` set (an Optuna pruner, e.g. MedianPruner), each trial's worker
  reports its validation recall after every epoch to its trial in the study (the trial's
  number reaches it as `hydra.job.env_set.CIFAR_CNN_SEARCH_TRIAL`, which names no run) and
  stops when the pruner says so; the job returns `PrunedTrial` and the trial is stored as
  PRUNED with its last reported value. A pruned trial counts toward n_trials.
- Storage. `storage` is an SQLite URL, another database's URL or a journal file's path
  (cifar_cnn.core.study_storage), opened before anything is written; a new study is created
  safely while another process creates it too.
- Seeds. With `sampler.seed` set, each trial's sampler is seeded with `seed + trial number`, so
  a search reproduces its draws, a resumed one does not repeat the first trials', and two
  processes sharing a study draw differently.
- Files. `multirun.yaml` (the sweep's config) in the sweep directory at the start, and
  `optimization_results.yaml` (the study's best trial) when the command ends.

Only Hydra is imported at module level: Hydra imports every plugin module on every start, and
this one must load without the optional `search` extra (Optuna, SQLAlchemy).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import MISSING, DictConfig, OmegaConf

from cifar_cnn.core.errors import UserError
from cifar_cnn.core.runfiles import SEARCH_RESULTS_FILE, SQLITE_PREFIX, SWEEP_CONFIG
from cifar_cnn.core.study_storage import (
    TRIAL_ENV,
    PrunedTrial,
    StorageError,
    create_or_load_study,
)
from hydra_plugins.cifar_cnn_search.space import as_override, parse_space, suggest

log = logging.getLogger(__name__)

INSTALL = "pip install 'cifar_cnn[search]'"


class SearchError(UserError, CompactHydraException):
    """A search that cannot start or go on; Hydra prints the message without a traceback."""


@dataclass
class SearchSweeperConf:
    """The sweeper's settings (`hydra.sweeper.*`); their values are in optuna.yaml."""

    _target_: str = "hydra_plugins.cifar_cnn_search.resumable_optuna_sweeper.ResumableOptunaSweeper"
    _recursive_: bool = False  # the sampler is built per trial, not when Hydra builds this
    sampler: Any = None  # an Optuna sampler to instantiate (_target_, seed, ...); None: default
    direction: str = MISSING  # maximize or minimize the value the app returns
    storage: Any = None  # a database URL or a journal file (None: in memory, not resumable)
    pruner: Any = None  # an Optuna pruner to instantiate (_target_, ...); None: no pruning
    study_name: Any = None
    n_trials: int = MISSING
    n_jobs: int = MISSING
    max_failure_rate: float = MISSING
    params: Any = None  # searched key -> choice(...)/range(...)/interval(...), or a fixed value


ConfigStore.instance().store(
    group="hydra/sweeper", name="cifar_cnn_optuna", node=SearchSweeperConf, provider="cifar_cnn"
)


def job_failed(result: JobReturn) -> bool:
    """Whether the job's trial is stored as failed: it raised, or its return value is not a
    finite number (Optuna refuses NaN and infinity)."""
    if result.status != JobStatus.COMPLETED:
        return True
    try:
        return not math.isfinite(float(result.return_value))
    except (TypeError, ValueError):
        return True


def job_pruned(result: JobReturn) -> bool:
    """Whether the job's trial was stopped by the pruner (its app returned PrunedTrial)."""
    return result.status == JobStatus.COMPLETED and isinstance(result.return_value, PrunedTrial)


def _save_atomically(config: Any, path: Path) -> None:
    """Save a config so that another process sharing the sweep never reads half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    OmegaConf.save(config, tmp)
    os.replace(tmp, path)


def sqlite_path(storage: str | None) -> Path | None:
    """The file of a `sqlite:///PATH` storage URL (relative PATHs from the working directory);
    None for other storages."""
    if not isinstance(storage, str) or not storage.startswith(SQLITE_PREFIX):
        return None
    return Path(storage[len(SQLITE_PREFIX) :])


def failures_allowed(max_failure_rate: float, n_trials: int) -> int:
    """How many failed trials the study may hold before the search stops."""
    return math.floor(max_failure_rate * n_trials + 1e-9)


def open_study(
    storage: str | None, study_name: str | None, direction: str, sampler: Any, pruner: Any = None
) -> Any:
    """The Optuna study `study_name` in `storage`, created when new (safely, while another
    process may create it too); a SearchError naming hydra.sweeper.storage when it cannot be
    opened."""
    try:
        return create_or_load_study(storage, study_name, direction, sampler, pruner)
    except StorageError as e:
        raise SearchError(str(e)) from e


def build_pruner(config: Any) -> Any:
    """The Optuna pruner `config` describes (None: none); a SearchError naming the key."""
    if config is None:
        return None
    import optuna

    target = config.get("_target_") if hasattr(config, "get") else None
    if not target:
        raise SearchError(
            f"hydra.sweeper.pruner={config}: an Optuna pruner with its _target_, e.g. "
            "{_target_: optuna.pruners.MedianPruner}, or null for no pruning"
        )
    try:
        pruner = instantiate(config)
    except Exception as e:  # Hydra's InstantiationException wraps the import or type error
        cause = str(e.__cause__ or e).strip().splitlines()[0]
        raise SearchError(
            f"hydra.sweeper.pruner._target_={target}: cannot build this pruner ({cause}); use "
            "one of optuna.pruners (MedianPruner, SuccessiveHalvingPruner, HyperbandPruner, "
            "PercentilePruner, ...) with its arguments, or hydra.sweeper.pruner=null"
        ) from e
    if not isinstance(pruner, optuna.pruners.BasePruner):
        raise SearchError(
            f"hydra.sweeper.pruner._target_={target} is not an Optuna pruner (an "
            "optuna.pruners.BasePruner); use e.g. optuna.pruners.MedianPruner"
        )
    return pruner


class ResumableOptunaSweeper(Sweeper):
    """Hydra's `Sweeper` for `hparams_search=optuna` (settings: SearchSweeperConf)."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.check_settings()

    def check_settings(self) -> None:
        """SearchError for settings that cannot run, and when Optuna is not installed."""
        s = self.settings
        if s["n_trials"] < 1:
            raise SearchError(
                f"hydra.sweeper.n_trials={s['n_trials']}: a search needs at least 1 trial "
                "(the total the study reaches, counting earlier commands)"
            )
        if s["n_jobs"] < 1:
            raise SearchError(f"hydra.sweeper.n_jobs={s['n_jobs']}: launch at least 1 trial")
        if not 0 <= s["max_failure_rate"] <= 1:
            raise SearchError(
                f"hydra.sweeper.max_failure_rate={s['max_failure_rate']}: a share of n_trials, "
                "between 0 (stop at the first failure) and 1 (never stop)"
            )
        if s["direction"] not in ("maximize", "minimize"):
            raise SearchError(f"hydra.sweeper.direction={s['direction']}: maximize or minimize")
        try:
            import optuna  # noqa: F401
        except ImportError as e:
            raise SearchError(f"hparams_search=optuna needs Optuna ({e}): {INSTALL}") from e
        if build_pruner(s.get("pruner")) is not None and not s.get("storage"):
            raise SearchError(
                "hydra.sweeper.pruner needs a study the trials can reach: set "
                "hydra.sweeper.storage (a database URL or a journal file), or "
                "hydra.sweeper.pruner=null"
            )

    def _seed_sampler(self, study: Any, trial_number: int) -> None:
        """Give the study the configured sampler, seeded with seed + trial number when the
        config sets a seed (the trial's sampling happens after this, at its suggestions)."""
        sampler = self.settings.get("sampler")
        seed = sampler.get("seed") if sampler else None
        if seed is not None:
            study.sampler = instantiate(sampler, seed=seed + trial_number)

    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        from optuna.trial import TrialState

        assert self.config is not None, "setup() first"
        s = self.settings
        params = OmegaConf.to_container(s.get("params") or {}, resolve=True)
        space, fixed = parse_space(params, arguments)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sampler = instantiate(s["sampler"]) if s.get("sampler") else None
        pruner = build_pruner(s.get("pruner"))
        # Opened first: a storage that cannot be used leaves the sweep directory as it was.
        study = open_study(s["storage"], s["study_name"], s["direction"], sampler, pruner)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        # The storage resolved, so that the report finds the study without Hydra's resolvers.
        resolved = {"hydra": {"sweeper": {"storage": s["storage"], "study_name": s["study_name"]}}}
        _save_atomically(OmegaConf.merge(self.config, resolved), sweep_dir / SWEEP_CONFIG)
        counter = _Counter(study, s["n_trials"])
        if counter.stale or counter.finished():
            log.info(
                "resuming study %r in %s: %d of %d trials finished (%d failed), %d left "
                "running by an interrupted command (or running elsewhere now)",
                study.study_name, s["storage"], counter.finished(), s["n_trials"],
                counter.failed(), len(counter.stale),
            )  # fmt: skip
        allowed = failures_allowed(s["max_failure_rate"], s["n_trials"])
        results: list[JobReturn] = []
        try:
            while batch := self._ask_batch(study, counter, space, allowed):
                overrides = [
                    [*fixed, *(as_override(k, v) for k, v in trial.params.items()),
                     f"hydra.sweep.subdir={trial.number}",
                     f"++hydra.job.env_set.{TRIAL_ENV}={trial.number}"]
                    for trial in batch
                ]  # fmt: skip
                returns = self.launcher.launch(overrides, initial_job_idx=batch[0].number)
                for trial, result in zip(batch, returns, strict=True):
                    if job_pruned(result):
                        study.tell(trial, state=TrialState.PRUNED)  # its last reported value
                    elif job_failed(result):
                        study.tell(trial, state=TrialState.FAIL)
                    else:
                        study.tell(trial, float(result.return_value))
                results += returns
        finally:
            self._write_results(study, sweep_dir)
        return results

    def _ask_batch(self, study: Any, counter: _Counter, space: dict, allowed: int) -> list:
        """Up to n_jobs new trials with their values suggested, as many as the study still
        needs; a SearchError when the study holds more failed trials than allowed."""
        failed = counter.failed()
        if failed > allowed:
            raise SearchError(
                f"{failed} trials of study {study.study_name!r} failed, more than "
                f"max_failure_rate x n_trials = {allowed} allows; the search stops (see the "
                "trials' failed.json, or raise hydra.sweeper.max_failure_rate to go on)"
            )
        batch = []
        while len(batch) < self.settings["n_jobs"] and counter.left() > 0:
            trial = study.ask()
            self._seed_sampler(study, trial.number)
            for key, distribution in space.items():
                suggest(trial, key, distribution)
            batch.append(trial)
        return batch

    def _write_results(self, study: Any, sweep_dir: Path) -> None:
        complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        if not complete:
            log.warning(
                "no trial of study %r is complete: no %s", study.study_name, SEARCH_RESULTS_FILE
            )
            return
        best = study.best_trial
        results = {
            "name": "optuna",
            "study_name": study.study_name,
            "best_trial": best.number,
            "best_params": best.params,
            "best_value": best.value,
        }
        _save_atomically(OmegaConf.create(results), sweep_dir / SEARCH_RESULTS_FILE)
        log.info("best trial %d: value %s, %s", best.number, best.value, best.params)


class _Counter:
    """Counts the study's trials toward n_trials: finished ones, and running ones this command
    did not find running at its start (its own, and other processes' now)."""

    def __init__(self, study: Any, n_trials: int):
        self.study, self.n_trials = study, n_trials
        self.stale = {t.number for t in self._trials() if t.state.name == "RUNNING"}

    def _trials(self) -> list:
        return self.study.get_trials(deepcopy=False)

    def finished(self) -> int:
        return sum(t.state.is_finished() for t in self._trials())

    def failed(self) -> int:
        return sum(t.state.name == "FAIL" for t in self._trials())

    def left(self) -> int:
        taken = sum(
            t.state.is_finished() or (t.state.name == "RUNNING" and t.number not in self.stale)
            for t in self._trials()
        )
        return self.n_trials - taken
