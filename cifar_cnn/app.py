"""What the Hydra entry points share: where `conf/` is, its resolvers, composing it in code,
and turning a user error into a message instead of a traceback.

Only the entry points (`train`, `evaluate`, `predict`, and the benchmarks and tests that
compose configs) import this module; everything below them takes plain arguments.
"""

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from cifar_cnn.core import experiments
from cifar_cnn.core.errors import UserError
from cifar_cnn.core.keys import run_name
from cifar_cnn.core.runfiles import HYDRA_DIR
from cifar_cnn.core.study_storage import TRIAL_ENV, running_trial
from cifar_cnn.training.config_checks import validate_launch
from cifar_cnn.training.runtime import usable_cpus
from hydra_plugins.cifar_cnn_search.resumable_optuna_sweeper import (
    ResumableOptunaSweeper,
    build_pruner,
)

log = logging.getLogger("cifar_cnn")

# The packaged conf/ of a wheel, or the checkout's (core/experiments.py: the report reads it too).
CONFIG_DIR = str(experiments.CONFIG_DIR)

# `_k=v,...` from the overrides that name a run (conf/hydra/default.yaml).
OmegaConf.register_new_resolver("run_name", run_name, replace=True)
# This process's id: evaluations and predictions started in the same second get their own
# folders (conf/evaluate.yaml, conf/predict.yaml).
OmegaConf.register_new_resolver("pid", os.getpid, replace=True)
# The sweeper of hparams_search=optuna. Hydra finds plugins by scanning the hydra_plugins
# namespace, which misses one installed in editable mode (pip install -e); registering it here
# works in every install.
Plugins.instance().register(ResumableOptunaSweeper)


def blocking_file(directory: str | Path) -> Path | None:
    """The file that keeps `directory` from being made (it, or a folder above it, is a file)."""
    directory = Path(directory).expanduser().absolute()
    existing = next((p for p in (directory, *directory.parents) if p.exists()), None)
    return existing if existing is not None and not existing.is_dir() else None


class OutputDirCheck(Callback):
    """Exits with a message when the run's or sweep's output directory is a file (or lies
    below one): Hydra would fail making it with a traceback (conf/hydra/default.yaml)."""

    def on_run_start(self, config: DictConfig, **kwargs: object) -> None:
        self._check("hydra.run.dir", config)

    def on_multirun_start(self, config: DictConfig, **kwargs: object) -> None:
        self._check("hydra.sweep.dir", config)

    @staticmethod
    def _check(key: str, config: DictConfig) -> None:
        try:
            directory = OmegaConf.select(config, key)
        except Exception:  # resolved again (and reported) by Hydra itself
            return
        blocking = blocking_file(str(directory))
        if blocking is not None:
            sys.exit(
                f"error: {key}={directory} cannot be made: {blocking} is a file, not a folder; "
                f"pass a folder for {key} (the run's files go there)"
            )


def compose_config(
    overrides: Sequence[str] = (),
    hydra_config: bool = False,
    config_name: str = "config",
    config_dir: str | Path = CONFIG_DIR,
) -> DictConfig:
    """The config `python -m cifar_cnn.train OVERRIDES` would run, composed without a run.

    `config_name="evaluate"` or `"predict"` composes those apps' configs instead;
    `config_dir` a copy of conf/ (as `--config-path DIR` does on the command line).
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(
            config_name=config_name, overrides=list(overrides), return_hydra_config=hydra_config
        )


def run_directory() -> Path:
    """The output directory Hydra made for this job."""
    return Path(HydraConfig.get().runtime.output_dir)


def save_run_config(cfg: DictConfig) -> None:
    """Save the job's config, overrides and Hydra config into `<run dir>/.hydra/`, as Hydra
    would (conf/hydra/default.yaml turns Hydra's own saving off so that a finished run's files
    are never rewritten by a run that is then refused)."""
    hydra_config = HydraConfig.get()
    out = run_directory() / HYDRA_DIR
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": hydra_config}), out / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(list(hydra_config.overrides.task)), out / "overrides.yaml")


def experiment_name() -> str | None:
    """The `experiment=` choice of this job, if any."""
    return HydraConfig.get().runtime.choices.get("experiment")


def task_overrides() -> list[str]:
    """The command-line overrides of this job."""
    return list(HydraConfig.get().overrides.task)


def check_launch() -> None:
    """Check the launcher's and sweeper's counts of this job's Hydra config."""
    validate_launch(HydraConfig.get().launcher, HydraConfig.get().sweeper)


def job_number() -> int | None:
    """This sweep job's number; None in a single run."""
    return HydraConfig.get().job.num if HydraConfig.get().mode == RunMode.MULTIRUN else None


def concurrent_jobs() -> int:
    """How many sweep jobs the launcher runs at once on this machine (1 outside a sweep)."""
    launcher = HydraConfig.get().launcher or {}
    n_jobs = launcher.get("n_jobs") or 1
    if n_jobs < 0:  # joblib's -1 is every CPU, -2 all but one, ...
        n_jobs += usable_cpus() + 1
    # The Optuna sweeper (hparams_search=optuna) launches n_jobs trials at a time.
    batch = (HydraConfig.get().sweeper or {}).get("n_jobs")
    if isinstance(batch, int) and batch > 0:
        n_jobs = min(n_jobs, batch)
    return max(1, n_jobs)


def search_trial() -> object | None:
    """The Optuna trial this job runs when the search's sweeper launched it (its number in
    `hydra.job.env_set`, its study in `hydra.sweeper.storage`), to report each epoch to;
    None outside a search. A StorageError when the study cannot be reached."""
    hydra = HydraConfig.get()
    number = (hydra.job.get("env_set") or {}).get(TRIAL_ENV)
    sweeper = hydra.sweeper or {}
    if number is None or hydra.mode != RunMode.MULTIRUN or not sweeper.get("storage"):
        return None
    pruner = build_pruner(sweeper.get("pruner"))
    return running_trial(sweeper.storage, sweeper.get("study_name"), int(number), pruner)


def refuse_search_without_multirun() -> None:
    """Exit with a message when `hparams_search=...` is given without `-m`: Hydra would run
    one default run instead of the search."""
    search = HydraConfig.get().runtime.choices.get("hparams_search")
    if search and HydraConfig.get().mode == RunMode.RUN:
        sys.exit(
            f"error: hparams_search={search} is a search over many runs; add -m: "
            f"python -m cifar_cnn.train -m hparams_search={search} ..."
        )


def exit_on_user_error(error: UserError) -> None:
    """Log a user error; in a single run exit with its message and no traceback.

    In a sweep the caller re-raises instead, so this job fails while the others run.
    """
    log.error("%s", error)
    if HydraConfig.get().mode == RunMode.RUN:
        sys.exit(1)
