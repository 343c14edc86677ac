"""The hyperparameter search (hparams_search=optuna): its config, the resumable sweeper, the
search model and report on hand-made sweeps, and one tiny real search that is interrupted."""

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cifar_cnn.analysis.trials import STUDY_BEST, best_overrides, is_search, read_search
from cifar_cnn.app import compose_config
from cifar_cnn.report import write_sweep_report
from cifar_cnn.search import main
from cifar_cnn.training.config_checks import validate_config
from helpers import FAST, REPO, run_cli
from hydra_plugins.cifar_cnn_search.resumable_optuna_sweeper import (
    _FailureLimit,
    job_failed,
    sqlite_directory,
)

SEARCHED = {
    "model.filters", "model.kernel_sizes", "model.activation", "model.dropout",
    "model.batch_norm", "data.batch_size", "optimizer.lr", "optimizer.momentum",
    "optimizer.weight_decay", "data.shuffle",
}  # fmt: skip


# --- the config and the sweeper -----------------------------------------------------------------


def test_the_search_config_maximises_validation_recall_over_the_issue_s_space():
    cfg = compose_config(["hparams_search=optuna"], hydra_config=True)
    sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=False)
    assert sweeper["_target_"].endswith("ResumableOptunaSweeper")
    assert sweeper["direction"] == "maximize" and "TPESampler" in sweeper["sampler"]["_target_"]
    assert sweeper["storage"] == "sqlite:///${hydra.sweep.dir}/optuna.db"
    assert set(sweeper["params"]) == SEARCHED
    assert cfg.data.val_size > 0 and cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    assert OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["subdir"] == "${hydra.job.num}"


def test_every_value_at_the_edges_of_the_search_space_is_a_valid_run():
    pytest.importorskip("optuna")
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
    from optuna.distributions import CategoricalDistribution

    params = compose_config(["hparams_search=optuna"], hydra_config=True).hydra.sweeper.params
    space, fixed = create_params_from_overrides([f"{k}={v}" for k, v in params.items()])
    assert set(space) == SEARCHED and not fixed
    for key, distribution in space.items():
        if isinstance(distribution, CategoricalDistribution):
            values = distribution.choices
        else:
            values = (distribution.low, distribution.high)
        for value in values:
            cfg = compose_config([f"{key}={value}"])
            validate_config(cfg)
            instantiate(cfg.model)


def _result(value=None, error: Exception | None = None) -> JobReturn:
    result = JobReturn()
    result.status = JobStatus.FAILED if error else JobStatus.COMPLETED
    result.return_value = error or value
    return result


def test_a_trial_fails_when_it_raises_or_returns_no_finite_number():
    assert not job_failed(_result(0.5))
    assert job_failed(_result(error=RuntimeError("boom")))
    assert job_failed(_result(math.nan)) and job_failed(_result(None))


def test_the_failure_limit_is_a_share_of_all_trials_not_of_a_batch():
    class Launcher:
        def __init__(self, batches):
            self.batches = iter(batches)

        def launch(self, overrides, initial_job_idx):
            return next(self.batches)

    class Sweeper:
        max_failure_rate = 0.25

    sweeper = Sweeper()
    ok, bad = _result(0.5), _result(error=RuntimeError("boom"))
    # 1 failure stored before, 2 allowed (e.g. max_failure_rate 0.25 x 8 trials)
    limit = _FailureLimit(Launcher([[bad], [ok, ok], [bad, ok]]), sweeper, 1, 2)
    limit.launch([], 0)  # a whole batch failed: 2 of 2 allowed, the stock rule would stop
    assert sweeper.max_failure_rate == 1.0
    limit.launch([], 1)
    assert sweeper.max_failure_rate == 1.0
    limit.launch([], 3)  # the third failure: the stock check (1/2 > 0) stops the search
    assert sweeper.max_failure_rate == 0.0


def test_a_sqlite_storage_names_its_directory():
    assert sqlite_directory("sqlite:///out/search/optuna.db") == Path("out/search")
    assert sqlite_directory("sqlite:////tmp/search/optuna.db") == Path("/tmp/search")
    assert sqlite_directory("postgresql://host/db") is None and sqlite_directory(None) is None


# --- the search model and report on hand-made sweeps ----------------------------------------------

SPACE = {"model.dropout": "interval(0.0, 0.5)", "optimizer.lr": "tag(log, interval(0.0001, 0.1))"}
FIXED = ["hparams_search=optuna", "trainer.max_epochs=1", "data.val_size=100"]


def _metrics(overrides: list[str], seed: int, test: float, val: float | None) -> dict:
    return {
        "experiment": next((o.partition("=")[2] for o in overrides if "experiment=" in o), None),
        "overrides": overrides, "seed": seed, "test_recall": test, "val_recall": val,
        "epochs": 1, "train_seconds": 1.5, "params": 1000,
        "data": {"source": "synthetic", "train_size": 412, "test_size": 200, "val_size": 100},
    }  # fmt: skip


def _trial(sweep: Path, number: int, dropout: str, test=None, val=None, error=None) -> None:
    run_dir = sweep / str(number)
    (run_dir / ".hydra").mkdir(parents=True)
    overrides = [f"model.dropout={dropout}", "optimizer.lr=0.01", *FIXED]
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if error:
        failed = {"error": error, "epoch": None, "overrides": overrides, "experiment": None}
        (run_dir / "failed.json").write_text(json.dumps(failed))
    elif test is not None:
        (run_dir / "metrics.json").write_text(json.dumps(_metrics(overrides, 0, test, val)))


def _retrain(sweep: Path, name: str, overrides: list[str], recalls: list[float]) -> None:
    directory = sweep / "retrain" / name
    directory.mkdir(parents=True)
    (directory / "multirun.yaml").write_text("hydra: {}\n")
    for seed, recall in enumerate(recalls):
        run_dir = directory / f"{seed}_seed{seed}"
        run_dir.mkdir()
        args = [*overrides, f"seed={seed}", "trainer.max_epochs=1", "data.val_size=100"]
        metrics = _metrics(args, seed, recall, recall + 0.01)
        (run_dir / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def search_dir(tmp_path: Path) -> Path:
    """Four trials (best: 2, then 0; 1 failed; 3 interrupted) and their Optuna study."""
    sweep = tmp_path / "search"
    sweep.mkdir()
    hydra = {
        "sweeper": {"_target_": "hydra_plugins.cifar_cnn_search.ResumableOptunaSweeper",
                    "params": SPACE, "n_trials": 4, "n_jobs": 2, "direction": "maximize",
                    "sampler": {"_target_": "optuna.samplers.TPESampler", "seed": 0}},
        "overrides": {"task": FIXED},
    }  # fmt: skip
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra}))
    _trial(sweep, 0, "0.1", test=0.61, val=0.50)
    _trial(sweep, 1, "0.2", error="ConfigError: model.kernel_sizes=[9, 9, 9]: too large")
    _trial(sweep, 2, "0.30000000000000004", test=0.40, val=0.70)
    _trial(sweep, 3, "0.4")
    with sqlite3.connect(sweep / "optuna.db") as db:
        db.execute("CREATE TABLE trials (number INTEGER, state TEXT)")
        states = ["COMPLETE", "FAIL", "COMPLETE", "RUNNING"]
        db.executemany("INSERT INTO trials VALUES (?, ?)", enumerate(states))
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
    for path in search_dir.glob("*/metrics.json"):
        metrics = json.loads(path.read_text())
        path.write_text(json.dumps({**metrics, "val_recall": None}))
    search = read_search(search_dir)
    assert search.objective == "test_recall" and search.best.number == 0
    text = (write_sweep_report([search_dir]) / "results.md").read_text()
    assert "**Test recall selected**" in text and "optimistic" in text


# --- a tiny real search --------------------------------------------------------------------------


def _study(sweep: Path) -> dict[int, str]:
    with sqlite3.connect(sweep / "optuna.db") as db:
        return dict(db.execute("SELECT number, state FROM trials ORDER BY number"))


@pytest.mark.slow
def test_a_tiny_search_survives_a_failing_trial_and_resumes_to_its_total(tmp_path):
    pytest.importorskip("optuna")
    sweep = tmp_path / "search"
    # TPE's first trials are random; with seed 1 trial 1 draws the impossible kernels [9,9,9]
    # (ConfigError before training), trials 0 and 2 possible ones. A key set on the command line
    # leaves the search space, so FAST's learning rate is left out to keep the space whole.
    fast = [arg for arg in FAST if not arg.startswith("optimizer.lr=")]
    args = [
        "-m", "hparams_search=optuna", *fast, "trainer.max_epochs=1", "data.val_size=100",
        "model.kernel_sizes=choice([5,3,3],[9,9,9])", "hydra/launcher=basic",
        "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1", "hydra.sweeper.max_failure_rate=0.7",
        "hydra.sweeper.sampler.seed=1",
        f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "cifar_cnn.train", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    while not (sweep / "2").is_dir() and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # an interruption during trial 2
    process.wait()
    assert not (sweep / "2" / "metrics.json").exists(), "trial 2 finished before the kill"
    assert _study(sweep) == {0: "COMPLETE", 1: "FAIL", 2: "RUNNING"}
    assert "kernel" in json.loads((sweep / "1" / "failed.json").read_text())["error"]

    rerun = run_cli(args)  # the same command: 2 of 3 finished, so one more trial, numbered 3
    assert "2 of 3 trials finished (1 failed), 1 left running" in rerun.stdout
    study = _study(sweep)
    assert len(study) == 4 and study[3] in ("COMPLETE", "FAIL") and study[2] == "RUNNING"
    trial = json.loads((sweep / "0" / "metrics.json").read_text())
    assert trial["val_recall"] is not None and trial["test_recall_per_epoch"] == []
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    val_recalls = [json.loads(p.read_text())["val_recall"] for p in sweep.glob("*/metrics.json")]
    assert best["best_value"] == pytest.approx(max(val_recalls))  # the app returned val recall

    text = (write_sweep_report([sweep]) / "results.md").read_text()
    for number in range(4):
        assert f"| {number} |" in text or f"| **{number}** ★ |" in text
    assert "unfinished (study: running)" in text and "**failed**: ConfigError" in text
