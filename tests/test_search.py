"""The hyperparameter search (hparams_search=optuna): its config, the sweeper (on a stand-in
launcher, then for real), the search model and report on hand-made sweeps, the search app, and
tiny real searches: interrupted and resumed, two sharing one study, refused settings."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cifar_cnn.analysis.runs import ReportError
from cifar_cnn.analysis.trials import (
    STUDY_BEST,
    best_overrides,
    is_search,
    read_search,
    same_setting,
)
from cifar_cnn.app import compose_config
from cifar_cnn.core.errors import UserError
from cifar_cnn.core.record import DataSummary, Failure, read_record, write_record
from cifar_cnn.core.runfiles import FAILED_FILE, METRICS_FILE
from cifar_cnn.core.study_storage import TRIAL_ENV, PrunedTrial, running_trial
from cifar_cnn.report import write_sweep_report
from cifar_cnn.search import main, retrain_commands, search_command
from cifar_cnn.training.config_checks import validate_config
from helpers import FAST, REPO, clean_env, fake_record, run_cli
from hydra_plugins.cifar_cnn_search.resumable_optuna_sweeper import (
    ResumableOptunaSweeper,
    SearchError,
    build_pruner,
    failures_allowed,
    job_failed,
    job_pruned,
    open_study,
    sqlite_path,
)
from hydra_plugins.cifar_cnn_search.space import as_override, parse_space

SEARCHED = {
    "model.filters", "model.kernel_sizes", "model.activation", "model.dropout",
    "model.batch_norm", "data.batch_size", "optimizer.lr", "optimizer.momentum",
    "optimizer.weight_decay", "data.shuffle",
}  # fmt: skip
STUDY_NAME = "cifar_cnn_search"
optuna = pytest.importorskip("optuna")  # the search extra


# --- the config and the sweeper -----------------------------------------------------------------


def test_the_search_config_maximises_validation_recall_over_the_issue_s_space():
    cfg = compose_config(["hparams_search=optuna"], hydra_config=True)
    sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=False)
    assert sweeper["_target_"].endswith("ResumableOptunaSweeper")
    assert sweeper["direction"] == "maximize" and "TPESampler" in sweeper["sampler"]["_target_"]
    assert sweeper["storage"] == "sqlite:///${hydra.sweep.dir}/optuna.db"
    assert sweeper["study_name"] == STUDY_NAME and sweeper["n_trials"] > 0
    assert set(sweeper["params"]) == SEARCHED
    assert cfg.data.val_size > 0 and cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    assert sweeper["pruner"]["_target_"] == "optuna.pruners.MedianPruner"


@pytest.mark.parametrize(
    ("choice", "pruner"),
    [("halving", "SuccessiveHalvingPruner"), ("hyperband", "HyperbandPruner"),
     ("median", "MedianPruner"), ("none", None)],
)  # fmt: skip
def test_each_pruner_of_the_search_pruner_group_builds(choice, pruner):
    cfg = compose_config(["hparams_search=optuna", f"search_pruner={choice}"], hydra_config=True)
    built = build_pruner(cfg.hydra.sweeper.pruner)
    assert type(built).__name__ == pruner if pruner else built is None
    off = compose_config(["hparams_search=optuna", "hydra.sweeper.pruner=null"], hydra_config=True)
    assert build_pruner(off.hydra.sweeper.pruner) is None


def test_every_value_at_the_edges_of_the_search_space_is_a_valid_run():
    from optuna.distributions import CategoricalDistribution

    params = compose_config(["hparams_search=optuna"], hydra_config=True).hydra.sweeper.params
    space, fixed = parse_space(OmegaConf.to_container(params), [])
    assert set(space) == SEARCHED and not fixed
    for key, distribution in space.items():
        if isinstance(distribution, CategoricalDistribution):
            values = distribution.choices
        else:
            values = (distribution.low, distribution.high)
        for value in values:
            cfg = compose_config([as_override(key, value)])
            validate_config(cfg)
            instantiate(cfg.model)


def test_the_space_syntax_gives_optuna_distributions_and_the_command_line_wins():
    from optuna.distributions import FloatDistribution, IntDistribution

    params = {"a": "choice(1, [2,3], x)", "b": "tag(log, interval(0.001, 0.1))", "c": "5"}
    args = ["c=range(1, 10, 3)", "d=tag(log, range(1, 64))", "e=interval(0, 1)", "f=z"]
    space, fixed = parse_space(params, args)
    assert space["a"] == optuna.distributions.CategoricalDistribution([1, "[2,3]", "x"])
    assert space["b"] == FloatDistribution(0.001, 0.1, log=True)
    assert space["c"] == IntDistribution(1, 7, step=3)  # Hydra's range: 10 excluded
    assert space["d"] == IntDistribution(1, 63, log=True)
    assert space["e"] == FloatDistribution(0.0, 1.0) and fixed == ["f=z"]
    for bad in ("g=tag(log, choice(1, 2))", "g=glob(*)", "g=tag(int, interval(1, 2))"):
        with pytest.raises(Exception, match="g"):
            parse_space({}, [bad])
    assert as_override("k", True) == "k=true" and as_override("k", "[5,3,3]") == "k=[5,3,3]"


def _result(value=None, error: Exception | None = None) -> JobReturn:
    result = JobReturn()
    result.status = JobStatus.FAILED if error else JobStatus.COMPLETED
    result.return_value = error or value
    return result


def test_a_trial_fails_when_it_raises_or_returns_no_finite_number():
    assert not job_failed(_result(0.5))
    assert job_failed(_result(error=RuntimeError("boom")))
    assert job_failed(_result(math.nan)) and job_failed(_result(None))
    assert job_failed(_result(math.inf)) and job_failed(_result("x"))


def test_the_failure_budget_is_a_share_of_all_trials_and_a_sqlite_storage_names_its_file():
    assert failures_allowed(0.25, 8) == 2 and failures_allowed(0.3, 10) == 3
    assert failures_allowed(0.0, 20) == 0 and failures_allowed(1.0, 3) == 3
    assert sqlite_path("sqlite:///out/search/optuna.db") == Path("out/search/optuna.db")
    assert sqlite_path("sqlite:////tmp/s/optuna.db") == Path("/tmp/s/optuna.db")
    assert sqlite_path("postgresql://host/db") is None and sqlite_path(None) is None


class Launcher:
    """Hydra's launcher stand-in: each job returns `value(its overrides)` or raises."""

    def __init__(self, value=lambda job: 0.5):
        self.value, self.jobs = value, []

    def launch(self, job_overrides, initial_job_idx):
        results = []
        for overrides in job_overrides:
            job = dict(item.lstrip("+").split("=", 1) for item in overrides)
            self.jobs.append(job)
            try:
                results.append(_result(self.value(job)))
            except RuntimeError as e:
                results.append(_result(error=e))
        return results


def _sweeper(sweep_dir: Path, *overrides: str, launcher: Launcher | None = None):
    """The sweeper as hparams_search=optuna builds it, with a stand-in launcher."""
    cfg = compose_config(
        ["hparams_search=optuna", f"hydra.sweep.dir={sweep_dir}", *overrides], hydra_config=True
    )
    settings = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    settings = {k: v for k, v in settings.items() if k not in ("_target_", "_recursive_")}
    sweeper = ResumableOptunaSweeper(**{k: OmegaConf.create(v) if isinstance(v, dict) else v
                                        for k, v in settings.items()})  # fmt: skip
    sweeper.config, sweeper.launcher = cfg, launcher or Launcher()
    return sweeper


def _trials(sweep_dir: Path) -> list:
    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    return optuna.load_study(study_name=STUDY_NAME, storage=storage).get_trials()


def test_each_trial_runs_in_the_directory_of_its_study_number_and_a_rerun_continues(tmp_path):
    sweep = tmp_path / "search"
    first = _sweeper(sweep, "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2")
    first.sweep(["trainer.max_epochs=1"])
    assert [job["hydra.sweep.subdir"] for job in first.launcher.jobs] == ["0", "1", "2"]
    assert all(job["trainer.max_epochs"] == "1" for job in first.launcher.jobs)
    assert set(first.launcher.jobs[0]) >= SEARCHED
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    optuna.load_study(study_name=STUDY_NAME, storage=storage).ask()  # left running: interrupted
    values = iter([0.9, 0.1])
    rerun = _sweeper(sweep, "hydra.sweeper.n_trials=5", "hydra.sweeper.n_jobs=2",
                     launcher=Launcher(lambda job: next(values)))  # fmt: skip
    rerun.sweep([])
    assert [job["hydra.sweep.subdir"] for job in rerun.launcher.jobs] == ["4", "5"]
    states = [t.state.name for t in _trials(sweep)]
    assert states == ["COMPLETE"] * 3 + ["RUNNING"] + ["COMPLETE"] * 2
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_trial"] == 4 and results["best_value"] == 0.9
    saved = yaml.safe_load((sweep / "multirun.yaml").read_text())["hydra"]["sweeper"]
    assert saved["storage"] == storage and set(saved["params"]) == SEARCHED
    _sweeper(sweep, "hydra.sweeper.n_trials=5", launcher=(done := Launcher())).sweep([])
    assert done.jobs == []  # the study already holds 5 finished trials


def test_a_pruned_trial_is_stored_pruned_with_its_last_report_and_counts_toward_n_trials(
    tmp_path,
):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"

    def value(job):  # what the train app does: report per epoch, return PrunedTrial if stopped
        number = int(job[f"hydra.job.env_set.{TRIAL_ENV}"])
        assert job["hydra.sweep.subdir"] == str(number)  # the run is still named by its number
        trial = running_trial(storage, STUDY_NAME, number)
        for epoch, recall in enumerate((0.2, 0.3, 0.4)[: 1 + (number != 1) * 2], start=1):
            trial.report(recall, epoch)
        return PrunedTrial(0.2, 1) if number == 1 else 0.4

    sweeper = _sweeper(tmp_path, "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2",
                       launcher=Launcher(value))  # fmt: skip
    sweeper.sweep([])
    trials = _trials(tmp_path)
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED", "COMPLETE"]
    assert trials[1].value == 0.2 and trials[1].intermediate_values == {1: 0.2}
    assert trials[0].intermediate_values == {1: 0.2, 2: 0.3, 3: 0.4}
    _sweeper(tmp_path, "hydra.sweeper.n_trials=3", launcher=(rerun := Launcher())).sweep([])
    assert rerun.jobs == []  # 3 finished trials, the pruned one among them
    assert job_pruned(_result(PrunedTrial(0.1, 2))) and not job_pruned(_result(0.5))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["hydra.sweeper.pruner._target_=optuna.pruners.NoSuchPruner"],
         r"hydra.sweeper.pruner._target_=optuna.pruners.NoSuchPruner: cannot build"),
        (["hydra.sweeper.pruner._target_=collections.OrderedDict", "search_pruner=halving"],
         "is not an Optuna pruner"),
        (["+hydra.sweeper.pruner.n_warmup_stepz=1"], "hydra.sweeper.pruner._target_=.*Median"),
        (["hydra.sweeper.storage=null"], "pruner needs a study the trials can reach"),
    ],
)  # fmt: skip
def test_a_pruner_that_cannot_work_is_refused_before_the_study_is_touched(
    tmp_path, overrides, message
):
    study = open_study(f"sqlite:///{tmp_path / 'optuna.db'}", STUDY_NAME, "maximize", None)
    study.tell(study.ask(), 0.5)
    (tmp_path / "multirun.yaml").write_text("kept: true\n")
    sweeper = _sweeper(tmp_path, *overrides)
    with pytest.raises(SearchError, match=message):
        sweeper.check_settings()
    assert [t.value for t in _trials(tmp_path)] == [0.5]
    assert (tmp_path / "multirun.yaml").read_text() == "kept: true\n"


def test_failed_trials_are_stored_and_the_search_stops_past_the_study_wide_budget(tmp_path):
    def value(job):
        if job["hydra.sweep.subdir"] in ("1", "2", "4"):
            raise RuntimeError("diverged")
        return math.nan if job["hydra.sweep.subdir"] == "5" else 0.5

    # 2 failures of 8 allowed; a whole batch failing (trials 1 and 2) does not stop the search
    sweeper = _sweeper(tmp_path, "hydra.sweeper.n_trials=8", "hydra.sweeper.n_jobs=2",
                       "hydra.sweeper.max_failure_rate=0.25", launcher=Launcher(value))  # fmt: skip
    with pytest.raises(SearchError, match="4 trials .* failed, more than .* 2 allows"):
        sweeper.sweep([])
    assert [t.state.name for t in _trials(tmp_path)] == ["COMPLETE", "FAIL", "FAIL", "COMPLETE",
                                                         "FAIL", "FAIL"]  # fmt: skip
    assert (tmp_path / "optimization_results.yaml").is_file()


def test_a_seeded_search_repeats_its_draws_and_a_resumed_one_draws_new_ones(tmp_path):
    def searched(launcher):
        return [{k: job[k] for k in SEARCHED} for job in launcher.jobs]

    one, two = _sweeper(tmp_path / "one", "hydra.sweeper.n_trials=2"), _sweeper(tmp_path / "two")
    one.sweep([])
    two.settings["n_trials"] = 2
    two.sweep([])
    assert searched(one.launcher) == searched(two.launcher)
    resumed = _sweeper(tmp_path / "one", "hydra.sweeper.n_trials=4")
    resumed.sweep([])
    assert not set(map(str, searched(resumed.launcher))) & set(map(str, searched(one.launcher)))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("hydra.sweeper.n_trials=0", "n_trials=0: a search needs at least 1 trial"),
        ("hydra.sweeper.n_trials=-3", "n_trials=-3"),
        ("hydra.sweeper.n_jobs=0", "n_jobs=0: launch at least 1"),
        ("hydra.sweeper.max_failure_rate=1.5", "max_failure_rate=1.5: a share of n_trials"),
    ],
)
def test_settings_that_cannot_run_are_refused(tmp_path, override, message):
    with pytest.raises(SearchError, match=message):
        _sweeper(tmp_path, override).check_settings()


def test_a_corrupt_study_is_named_with_its_fix_and_never_advised_away(tmp_path):
    (tmp_path / "optuna.db").write_bytes(b"not a database" * 100)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    with pytest.raises(SearchError, match=f"{tmp_path / 'optuna.db'} is not a readable Optuna .*"
                       "left as it is: point hydra.sweeper.storage") as refused:  # fmt: skip
        open_study(storage, STUDY_NAME, "maximize", None)
    # another process may be using it: no advice to delete or move it
    assert not {"delete", "move", "remove"} & set(str(refused.value).lower().split())
    assert (tmp_path / "optuna.db").read_bytes() == b"not a database" * 100


# --- the search model and report on hand-made sweeps ----------------------------------------------

SPACE = {"model.dropout": "interval(0.0, 0.5)", "optimizer.lr": "tag(log, interval(0.0001, 0.1))"}
FIXED = ["hparams_search=optuna", "trainer.max_epochs=1", "data.val_size=100"]


def _finished(run_dir: Path, overrides: list[str], seed: int, test: float, val: float | None):
    """A finished run's metrics.json in `run_dir` (on the trials' data: 100 images held out)."""
    experiment = next((o.partition("=")[2] for o in overrides if "experiment=" in o), None)
    data = DataSummary("synthetic", test_size=200, train_size=412, val_size=100)
    record = fake_record(test, seed=seed, val_recall=val, overrides=overrides, data=data,
                         experiment=experiment)  # fmt: skip
    write_record(run_dir / METRICS_FILE, record)


def _trial_overrides(dropout: str) -> list[str]:
    return [f"model.dropout={dropout}", "optimizer.lr=0.01", *FIXED]


def _trial(sweep: Path, number: int, dropout: str, test=None, val=None, error=None) -> None:
    run_dir = sweep / str(number)
    (run_dir / ".hydra").mkdir(parents=True)
    overrides = _trial_overrides(dropout)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if error:
        write_record(run_dir / FAILED_FILE, Failure(error, overrides=overrides))
    elif test is not None:
        _finished(run_dir, overrides, 0, test, val)


def _retrain(sweep: Path, name: str, overrides: list[str], recalls: list[float]) -> None:
    directory = sweep / "retrain" / name
    directory.mkdir(parents=True)
    (directory / "multirun.yaml").write_text("hydra: {}\n")
    for seed, recall in enumerate(recalls):
        run_dir = directory / f"{seed}_seed{seed}"
        run_dir.mkdir()
        args = [*overrides, f"seed={seed}", "trainer.max_epochs=1", "data.val_size=100"]
        _finished(run_dir, args, seed, recall, recall + 0.01)


@pytest.fixture
def search_dir(tmp_path: Path) -> Path:
    """Four trials (best: 2, then 0; 1 failed; 3 interrupted) and their Optuna study."""
    sweep = tmp_path / "search"
    sweep.mkdir()
    hydra = {
        "sweeper": {"_target_": "hydra_plugins.cifar_cnn_search.ResumableOptunaSweeper",
                    "study_name": STUDY_NAME, "params": SPACE, "n_trials": 4, "n_jobs": 2,
                    "direction": "maximize",
                    "sampler": {"_target_": "optuna.samplers.TPESampler", "seed": 0}},
        "overrides": {"task": FIXED},
    }  # fmt: skip
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra}))
    _trial(sweep, 0, "0.1", test=0.61, val=0.50)
    _trial(sweep, 1, "0.2", error="ConfigError: model.kernel_sizes=[9, 9, 9]: too large")
    _trial(sweep, 2, "0.30000000000000004", test=0.40, val=0.70)
    _trial(sweep, 3, "0.4")
    study = open_study(f"sqlite:///{sweep / 'optuna.db'}", STUDY_NAME, "maximize", None)
    for value in (0.50, None, 0.70):
        study.tell(study.ask(), value, state=None if value else optuna.trial.TrialState.FAIL)
    study.ask()  # trial 3: running
    return sweep


def test_trials_rank_by_validation_recall_with_failed_and_unfinished_last(search_dir: Path):
    search = read_search(search_dir)
    assert is_search(search_dir) and search.objective == "val_recall"
    assert [t.number for t in search.ranked()] == [2, 0, 1, 3]
    assert search.best.number == 2 and search.best.params["model.dropout"] == "0.30000000000000004"
    statuses = ["finished", "finished", "failed", "unfinished"]
    assert [t.run.status for t in search.ranked()] == statuses
    assert search.study_states == {"COMPLETE": 2, "FAIL": 1, "RUNNING": 1}
    assert best_overrides(search_dir) == ["model.dropout=0.30000000000000004", "optimizer.lr=0.01"]


def test_best_overrides_prints_them_and_refuses_a_search_without_a_finished_trial(
    search_dir: Path, tmp_path: Path, capsys
):
    main(["best-overrides", str(search_dir)])
    assert capsys.readouterr().out.split() == best_overrides(search_dir)
    empty = tmp_path / "empty"
    (empty / "0").mkdir(parents=True)
    (empty / "optuna.db").touch()
    with pytest.raises(SystemExit, match="error: .*no trial has finished"):
        main(["best-overrides", str(empty)])


def test_the_report_names_a_corrupt_study_and_how_to_go_on(search_dir: Path):
    (search_dir / "optuna.db").write_bytes(b"not a database" * 100)
    with pytest.raises(ReportError, match=r"optuna\.db: not a readable Optuna study .* move it"):
        read_search(search_dir)
    (search_dir / "optuna.db").unlink()  # the trials alone, as the message says
    assert read_search(search_dir).study_states is None


def test_the_report_lists_the_trials_and_says_validation_recall_selected(search_dir: Path):
    text = (write_sweep_report([search_dir]) / "results.md").read_text()
    assert "**Validation recall selected.**" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "0." in line]
    assert [row.split(" | ")[1] for row in rows] == ["**2** ★", "0", "1", "3"]
    assert "**failed**: ConfigError: model.kernel_sizes=[9, 9, 9]" in text
    assert "unfinished (study: running)" in text
    assert "study (`optuna.db`): 4 trials (2 complete, 1 fail, 1 running)" in text
    assert "Not answered yet" in text
    csv_rows = (search_dir / "report" / "results.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in csv_rows[1:]] == ["2", "0", "1", "3"]


def test_the_report_compares_the_retrained_best_with_the_study_s_best(search_dir: Path):
    best = best_overrides(search_dir)
    _retrain(search_dir, "found", best, [0.60, 0.62, 0.64])
    _retrain(search_dir, "study", [f"experiment={STUDY_BEST}"], [0.50, 0.52, 0.54])
    text = (write_sweep_report([search_dir]) / "results.md").read_text()
    half = 2.7764 * math.hypot(0.02 / math.sqrt(3), 0.02 / math.sqrt(3))  # t(0.975, 4) x se
    assert f"| +0.1000 | [{0.1 - half:+.4f}, {0.1 + half:+.4f}] | 0.0036 | **holds** |" in text
    assert "Welch's t test" in text and "no multiplicity adjustment" in text
    assert "search's best, trial 2: dropout=0.3, lr=0.01 | 0 / 1 / 2 | 0.6200 | 0.0200" in text
    assert f"`experiment={STUDY_BEST}` (row 7) | 0 / 1 / 2 | 0.5200" in text
    assert "Note:" not in text.partition("## Did the search")[2]


def test_the_report_flags_retrained_runs_of_another_trial(search_dir: Path):
    _retrain(search_dir, "found", ["model.dropout=0.1", "optimizer.lr=0.01"], [0.5, 0.51, 0.52])
    _retrain(search_dir, "study", [f"experiment={STUDY_BEST}"], [0.50, 0.52, 0.54])
    text = (write_sweep_report([search_dir]) / "results.md").read_text()
    assert "search's best, trial 0:" in text and "**within noise**" in text
    assert "does not hold the best trial's settings" in text and "retrain trial 2" in text


def test_a_search_without_a_validation_split_says_test_recall_selected(search_dir: Path):
    _finished(search_dir / "0", _trial_overrides("0.1"), 0, 0.61, None)
    _finished(search_dir / "2", _trial_overrides("0.30000000000000004"), 0, 0.40, None)
    search = read_search(search_dir)
    assert search.objective == "test_recall" and search.best.number == 0
    text = (write_sweep_report([search_dir]) / "results.md").read_text()
    assert "**Test recall selected**" in text and "optimistic" in text


def test_the_search_app_retrains_the_best_settings_at_the_trials_budget(search_dir: Path):
    config = yaml.safe_load((search_dir / "multirun.yaml").read_text())
    budget = {"trainer": {"max_epochs": 3}, "data": {"val_size": 100}}
    (search_dir / "multirun.yaml").write_text(yaml.safe_dump({**config, **budget}))
    extra = ["data.source=synthetic", "trainer.max_epochs=9", "model.dropout=choice(0.1,0.2)"]
    search = search_command(search_dir, 5, None, None, 2, extra)
    assert search[:2] == ["-m", "hparams_search=optuna"] and search[3:6] == extra
    assert search[6:] == ["hydra.sweeper.n_trials=5", "hydra.sweeper.n_jobs=2"]
    found, study = retrain_commands(search_dir, "0,1", 2, extra)
    assert "model.dropout=choice(0.1,0.2)" not in found  # searched: the best trial's value
    assert "model.dropout=0.30000000000000004" in found and f"experiment={STUDY_BEST}" in study
    assert found.index("trainer.max_epochs=3") > found.index("trainer.max_epochs=9")
    assert "seed=0,1" in study and "hydra.launcher.n_jobs=2" in study
    assert found[-1] == f"hydra.sweep.dir={search_dir / 'retrain' / 'found'}"
    _retrain(search_dir, "found", ["model.dropout=0.1", "optimizer.lr=0.01"], [0.5])
    with pytest.raises(UserError, match="other settings than the best trial's"):
        retrain_commands(search_dir, "0,1", None, extra)


def test_a_setting_written_by_hydra_or_typed_is_the_same():
    assert same_setting("true", "True") and same_setting("[5,3,3]", "[5, 3, 3]")
    assert same_setting("0.1", "0.1") and not same_setting("0.1", "0.2")
    assert not same_setting(None, "x") and same_setting("a:b", "a:b")


# --- a tiny real search --------------------------------------------------------------------------


def _study(sweep: Path) -> dict[int, str]:
    return {t.number: t.state.name for t in _trials(sweep)}


# A key set on the command line leaves the search space, so FAST's learning rate is left out.
TINY = [
    *(arg for arg in FAST if not arg.startswith("optimizer.lr=")),
    "trainer.max_epochs=1", "data.val_size=100", "hydra/launcher=basic",
]  # fmt: skip


def _scores(sweep: Path) -> dict[int, float | None]:
    """Each trial directory's validation recall, as the report reads it."""
    return {t.number: t.score("val_recall") for t in read_search(sweep).trials}


@pytest.mark.slow
def test_a_tiny_search_survives_a_failing_trial_and_resumes_to_its_total(tmp_path):
    sweep = tmp_path / "search"
    # TPE's first trials are random; with seed 2 trial 1 draws the impossible kernels [9,9,9]
    # (ConfigError before training), trials 0 and 2 possible ones.
    args = [
        "-m", "hparams_search=optuna", *TINY, "model.kernel_sizes=choice([5,3,3],[9,9,9])",
        "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1", "hydra.sweeper.max_failure_rate=0.7",
        "hydra.sweeper.sampler.seed=2", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "cifar_cnn.train", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=clean_env(),
    )
    while not (sweep / "2").is_dir() and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # an interruption during trial 2
    process.wait()
    assert not (sweep / "2" / "metrics.json").exists(), "trial 2 finished before the kill"
    assert _study(sweep) == {0: "COMPLETE", 1: "FAIL", 2: "RUNNING"}
    assert "kernel" in read_record(sweep / "1" / FAILED_FILE, Failure).error

    rerun = run_cli(args)  # the same command: 2 of 3 finished, so one more trial, numbered 3
    assert "2 of 3 trials finished (1 failed), 1 left running" in rerun.stdout
    study = _study(sweep)
    assert len(study) == 4 and study[3] in ("COMPLETE", "FAIL") and study[2] == "RUNNING"
    scores = {n: v for n, v in _scores(sweep).items() if v is not None}
    assert 0 in scores and set(scores) <= {0, 3}
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(scores.values()))  # the app returned it

    text = (write_sweep_report([sweep]) / "results.md").read_text()
    for number in range(4):
        assert f"| {number} |" in text or f"| **{number}** ★ |" in text
    assert "unfinished (study: running)" in text and "**failed**: ConfigError" in text


@pytest.mark.slow
def test_two_searches_sharing_one_study_keep_every_trial_in_its_own_directory(tmp_path):
    sweep = tmp_path / "search"
    args = ["-m", "hparams_search=optuna", *TINY, "hydra.sweeper.n_trials=4",
            "hydra.sweeper.n_jobs=1", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    command = [sys.executable, "-m", "cifar_cnn.train", *args]
    processes = [
        subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env()
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0].decode() for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    complete = {t.number: t.value for t in _trials(sweep) if t.state.name == "COMPLETE"}
    assert len(complete) >= 4
    scores = _scores(sweep)
    assert set(scores) == {t.number for t in _trials(sweep)}  # a directory for every trial
    assert {n: scores[n] for n in complete} == pytest.approx(complete)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hparams_search=optuna"], "hparams_search=optuna is a search over many runs; add -m"),
        (["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=0"], "n_trials=0: a search"),
        (["-m", "hparams_search=optuna"], "optuna.db is not a readable Optuna study"),
        (
            ["-m", "hparams_search=optuna", "hydra.sweeper.pruner._target_=optuna.pruners.Nope"],
            "hydra.sweeper.pruner._target_=optuna.pruners.Nope: cannot build",
        ),
    ],
)
def test_a_search_that_cannot_run_says_why_without_a_traceback(
    tmp_path, args, message, monkeypatch
):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # as many Hydra users keep it: not inherited
    (tmp_path / "optuna.db").write_bytes(b"not a database" * 100)
    result = run_cli([*args, *TINY, f"hydra.sweep.dir={tmp_path}"], check=False)
    assert result.returncode != 0 and message in result.stdout
    assert "Traceback" not in result.stdout and not (tmp_path / "0").exists()
    assert not (tmp_path / "multirun.yaml").exists()  # nothing written beside the study


@pytest.mark.slow
def test_the_search_app_searches_retrains_and_reports_and_a_rerun_continues(tmp_path):
    sweep = tmp_path / "search"
    args = ["run", str(sweep), "--trials", "2", "--epochs", "1", "--val-size", "100",
            "--seeds", "0", "--", *TINY]  # fmt: skip
    run_cli(args, module="cifar_cnn.search")
    assert _study(sweep) == {0: "COMPLETE", 1: "COMPLETE"}
    search = read_search(sweep)
    assert [len(row.finished) for row in (search.found, search.study_best)] == [1, 1]
    assert search.retrained_trial() is search.best
    found = search.found.finished[0]
    assert (
        found.overrides["trainer.max_epochs"] == "1" and found.overrides["data.val_size"] == "100"
    )
    assert (sweep / "report" / "results.md").is_file()
    rerun = run_cli(args, module="cifar_cnn.search")  # nothing left to do: all is skipped
    assert "2 of 2 trials finished" in rerun.stdout and rerun.stdout.count("skipping it") == 2
    assert len(_study(sweep)) == 2


def test_a_search_goes_on_only_at_the_budget_its_trials_had(tmp_path, monkeypatch):
    """`search run DIR` on a search begun at other epochs or another validation split is
    refused before a trial runs: the study would rank trials of different budgets together."""
    import cifar_cnn.search as search_app

    sweep = tmp_path / "search"
    sweep.mkdir()
    budget = {"trainer": {"max_epochs": 1}, "data": {"val_size": 100}}
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(budget))
    started: list[list[str]] = []
    monkeypatch.setattr(search_app, "train", lambda args: started.append(args) or 1)
    for args, message in [
        (["--epochs", "2"], r"max_epochs=1; going on with trainer.max_epochs=2 \(--epochs\)"),
        (["--val-size", "50"], "data.val_size=100; going on with data.val_size=50"),
        (["--", "trainer.max_epochs=3"], "going on with trainer.max_epochs=3"),
    ]:
        with pytest.raises(SystemExit, match=message):
            main(["run", str(sweep), *args])
    assert not started
    with pytest.raises(SystemExit):  # the same budget goes on (the stubbed search fails)
        main(["run", str(sweep), "--epochs", "1"])
    assert len(started) == 1
