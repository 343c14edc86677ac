"""A hyperparameter search sweep (`hparams_search=optuna`): its trials, the best one, and the
best one retrained beside the study's best, for the report and `python -m cifar_cnn.search`.

A search sweep directory holds one directory per trial, named by its number in the Optuna
study (`0/`, `1/`, ...), the study itself (`optuna.db`), the sweep's config (`multirun.yaml`,
whose `hydra.sweeper.params` is the search space) and `optimization_results.yaml`.
`python -m cifar_cnn.search run` (make search) adds `retrain/found/` (the best trial's settings
over seeds) and `retrain/study/` (the study's best configuration over the same seeds, at the
same budget and on the same validation split), each a sweep of its own. The trials' states are
read through Optuna (imported only then, so that reports on other sweeps need no `search`
extra), for the study the sweep's config names.

cifar_cnn.analysis.search_tables writes the report on it (`python -m cifar_cnn.report SEARCH_DIR`).
Free of torch, Lightning and Hydra, like the rest of the report.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml

from cifar_cnn.analysis.rows import Row
from cifar_cnn.analysis.runs import ReportError, Run, collect_runs, read_run
from cifar_cnn.core.published import PUBLISHED
from cifar_cnn.core.runfiles import SEARCH_RESULTS_FILE, SQLITE_PREFIX, STUDY_FILE, SWEEP_CONFIG
from cifar_cnn.core.study_storage import StorageError, kind, load_study, local_file

RETRAIN_DIR = "retrain"
FOUND, STUDY = "found", "study"  # retrain/found: the best trial; retrain/study: the study's best
# The study's best configuration (row 7, batchnorm), the one a search has to beat.
STUDY_BEST = max(PUBLISHED, key=lambda run: run.recall).name
# Command-line overrides that are a search dimension rather than a value.
_SWEEP_VALUE = re.compile(r"^(choice|range|interval|tag)\(")


@dataclass
class Trial:
    """One trial of a search: its run directory and the settings the sampler chose."""

    number: int
    run: Run
    params: dict[str, str]  # searched key -> the value this trial ran with
    state: str | None = None  # the study's state (COMPLETE, PRUNED, FAIL, RUNNING, ...)

    def score(self, key: str) -> float | None:
        """The trial's `val_recall` or `test_recall` (a pruned trial's: when it was stopped);
        None unless it finished or was pruned."""
        if self.run.record is None:
            return None
        return self.run.record.val_recall if key == "val_recall" else self.run.record.test.recall


@dataclass
class Search:
    """What a search sweep directory holds."""

    path: Path
    space: dict[str, str]  # searched key -> its distribution, as configured
    sweeper: dict  # the sweeper's settings from multirun.yaml (sampler, n_trials, ...)
    trials: list[Trial]
    study_states: Counter | None  # trials of the stored study by state; None without one
    found: Row | None  # the best trial retrained over seeds (retrain/found)
    study_best: Row | None  # the study's best configuration retrained (retrain/study)
    study: object | None = None  # the Optuna study, when it could be read

    @property
    def objective(self) -> str:
        """The metrics.json key the search maximised: `val_recall` on a validation split, else
        `test_recall` (a search with data.val_size=0, optimistically scored)."""
        finished = [t for t in self.trials if t.run.status == "finished"]
        if finished and all(t.score("val_recall") is None for t in finished):
            return "test_recall"
        return "val_recall"

    def ranked(self) -> list[Trial]:
        """Trials best first by the objective; then the pruned ones (by their value when
        stopped, which is not comparable to a whole budget's), then the failed and unfinished
        ones in order."""
        finished = [t for t in self.trials if t.run.status == "finished"]
        scored = [t for t in finished if t.score(self.objective) is not None]
        pruned = [t for t in self.trials if t.run.status == "pruned"]
        rest = [t for t in self.trials if t not in scored and t not in pruned]
        by_score = lambda t: -(t.score(self.objective) or 0.0)  # noqa: E731
        return sorted(scored, key=by_score) + sorted(pruned, key=by_score) + rest

    @property
    def best(self) -> Trial | None:
        ranked = self.ranked()
        first = ranked[0] if ranked else None
        if first is None or first.run.status != "finished" or first.score(self.objective) is None:
            return None
        return first

    def retrained_trial(self) -> Trial | None:
        """The trial whose settings every finished run of `retrain/found/` has."""
        runs = self.found.finished if self.found else []
        matches = (
            t
            for t in self.trials
            if t.params
            and runs
            and all(same_setting(r.overrides.get(k), v) for r in runs for k, v in t.params.items())
        )
        return next(matches, None)


def same_setting(a: str | None, b: str | None) -> bool:
    """Whether two override values are one setting: Hydra writes a sweep's values back as
    Python does (`True`, `[5, 3, 3]`) and a command line as typed (`true`, `[5,3,3]`)."""
    if a is None or b is None:
        return a == b

    def value(text: str) -> object:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text

    return a == b or value(a) == value(b)


# --- reading ------------------------------------------------------------------------------------


def search_config(sweep_dir: Path) -> dict:
    """The sweep's config (multirun.yaml), or the first trial's Hydra config; {} without."""
    candidates = [sweep_dir / SWEEP_CONFIG, *sorted(sweep_dir.glob("[0-9]*/.hydra/hydra.yaml"))]
    for path in candidates:
        try:
            config = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        return config if path.name == SWEEP_CONFIG else {"hydra": config.get("hydra", {})}
    return {}


def is_search(sweep_dir: Path) -> bool:
    """Whether `sweep_dir` is an Optuna search (its study, its results, or its sweeper)."""
    if (sweep_dir / STUDY_FILE).is_file() or (sweep_dir / SEARCH_RESULTS_FILE).is_file():
        return True
    if not (sweep_dir / SWEEP_CONFIG).is_file():
        return False
    target = str(search_config(sweep_dir).get("hydra", {}).get("sweeper", {}).get("_target_"))
    return "optuna" in target.lower()


def search_space(config: dict) -> dict[str, str]:
    """Searched key -> distribution: the sweeper's params, plus sweep-valued command-line
    overrides (`optimizer.lr=interval(0.001,0.1)`)."""
    hydra = config.get("hydra", {})
    space = {str(k): str(v) for k, v in (hydra.get("sweeper", {}).get("params") or {}).items()}
    for item in hydra.get("overrides", {}).get("task") or []:
        key, _, value = str(item).partition("=")
        if _SWEEP_VALUE.match(value):
            space[key.lstrip("+~")] = value
    return space


def study_location(sweep_dir: Path, sweeper: dict) -> str | None:
    """Where the search's study is: the sweep directory's optuna.db (where optuna.yaml keeps
    it, wherever the directory has moved since), else the sweeper's `storage` as
    multirun.yaml records it (a database URL or a journal file); None when there is no study
    to read."""
    if (sweep_dir / STUDY_FILE).is_file():
        return f"{SQLITE_PREFIX}{(sweep_dir / STUDY_FILE).resolve()}"
    storage = sweeper.get("storage")
    if kind(storage) is None or "${" in storage:
        return None
    path = local_file(storage)
    if path is not None and not path.is_file():
        return None  # reading would create an empty study file
    return storage


def open_search_study(sweep_dir: Path, sweeper: dict) -> object | None:
    """The search's Optuna study, for the study the sweep's config names; None without one.
    A ReportError when the storage cannot be read or Optuna is missing."""
    storage = study_location(sweep_dir, sweeper)
    if storage is None:
        return None
    try:
        import optuna  # noqa: F401
    except ImportError as e:
        raise ReportError(
            f"{sweep_dir} is a hyperparameter search: reading its study needs Optuna ({e}); "
            "install it with: pip install 'cifar_cnn[search]'"
        ) from e
    try:
        study = load_study(storage, sweeper.get("study_name"))
        study.get_trials(deepcopy=False)
    except (KeyError, ValueError):
        return None  # the storage holds no study of this name (or, unnamed, not one)
    except StorageError as e:
        where = storage.removeprefix(SQLITE_PREFIX)
        cause = e.__cause__ or e
        reason = f"{type(cause).__name__}: {(str(cause).strip() or '-').splitlines()[0]}"
        raise ReportError(
            f"{where}: not a readable Optuna study ({reason}). Upgrade a study of an older "
            f"Optuna with `optuna storage upgrade --storage {storage}`; a damaged {STUDY_FILE} "
            "cannot be read, but the trial directories can: once no search uses it, move it "
            "away to report on them alone"
        ) from e
    return study


def study_states(study: object | None) -> tuple[Counter | None, dict[int, str]]:
    """The study's trials by state, and each trial number's state; (None, {}) without one."""
    if study is None:
        return None, {}
    states = {t.number: t.state.name for t in study.get_trials(deepcopy=False)}
    return Counter(states.values()), states


def _retrained(sweep_dir: Path, name: str, experiment: str | None) -> Row | None:
    path = sweep_dir / RETRAIN_DIR / name
    if not path.is_dir():
        return None
    try:
        runs, _ = collect_runs([path])
    except ReportError:
        return None
    return Row(experiment, {}, runs)


def read_search(sweep_dir: Path) -> Search:
    """The trials of a search sweep directory, best first, with the retrained comparison."""
    if not sweep_dir.is_dir():
        raise ReportError(f"{sweep_dir}: no such directory (pass a search sweep directory)")
    config = search_config(sweep_dir)
    space = search_space(config)
    sweeper = config.get("hydra", {}).get("sweeper") or {}
    study = open_search_study(sweep_dir, sweeper)
    counts, states = study_states(study)
    trial_dirs = sorted(
        (p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()),
        key=lambda p: int(p.name),
    )
    trials = []
    for path in trial_dirs:
        run = read_run(path, path.name)
        params = {k: run.overrides[k] for k in space if k in run.overrides}
        trials.append(Trial(int(path.name), run, params, states.get(int(path.name))))
    if not trials:
        raise ReportError(
            f"{sweep_dir} holds no trials (directories 0/, 1/, ...); start the search with "
            "python -m cifar_cnn.train -m hparams_search=optuna hydra.sweep.dir=DIR, or make "
            "search"
        )
    found = _retrained(sweep_dir, FOUND, None)
    study_best = _retrained(sweep_dir, STUDY, STUDY_BEST)
    return Search(sweep_dir, space, sweeper, trials, counts, found, study_best, study)


def best_overrides(sweep_dir: Path) -> list[str]:
    """The best trial's searched settings as overrides (`key=value`), to retrain it."""
    search = read_search(sweep_dir)
    if search.best is None:
        raise ReportError(f"{sweep_dir}: no trial has finished yet, so there is no best trial")
    if not search.space:
        raise ReportError(f"{sweep_dir}: no search space found ({SWEEP_CONFIG} is missing)")
    return [f"{k}={v}" for k, v in search.best.params.items()]
