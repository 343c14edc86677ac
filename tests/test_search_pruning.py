"""Pruning in the search (hydra.sweeper.pruner): a tiny real search whose poor region is
pruned, recorded as PRUNED and never retrained, in parallel trials; a pruned run directory is
skipped when rerun; the report lists pruned trials and shows what mattered."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from cifar_cnn.analysis.trials import read_search
from cifar_cnn.core.record import RunRecord, read_record, write_record
from cifar_cnn.core.runfiles import METRICS_FILE
from cifar_cnn.report import write_sweep_report
from cifar_cnn.training.run import train
from helpers import FAST, MAKE, REPO, clean_env, config, run_cli

optuna = pytest.importorskip("optuna")
STUDY_NAME = "cifar_cnn_search"
TINY_LR = "0.0000001"  # so small that nothing is learnt in 4 epochs: recall stays at chance


def _study(sweep: Path) -> list:
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    return optuna.load_study(study_name=STUDY_NAME, storage=storage).get_trials()


@pytest.mark.slow
def test_a_poor_region_is_pruned_recorded_as_pruned_and_a_rerun_trains_nothing(tmp_path):
    sweep = tmp_path / "search"
    # Sampler seed 0 draws the tiny learning rate for trials 0, 3 and 4 and 0.1 for 1, 2, 5
    # (the sampler is seeded with seed + trial number); trials 0 and 1 run first, so the
    # median pruner has a learning trial to compare with from trial 2 on. Two trials at a
    # time (joblib workers): each reports to its own trial and is pruned on its own.
    args = [
        "-m", "hparams_search=optuna",
        *(a for a in FAST if not a.startswith(("optimizer.lr=", "trainer.max_epochs="))),
        "trainer.max_epochs=4", "data.val_size=100", "data.batch_size=64", "model.filters=small",
        f"optimizer.lr=choice(0.1,{TINY_LR})", "hydra.sweeper.n_trials=6",
        "hydra.sweeper.n_jobs=2", "hydra.launcher.n_jobs=2", "hydra.sweeper.sampler.seed=0",
        "search_pruner=median", "hydra.sweeper.pruner.n_startup_trials=2",
        "hydra.sweeper.pruner.n_warmup_steps=1", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    run_cli(args)
    trials = _study(sweep)
    assert len(trials) == 6
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned, [(t.number, t.state.name, t.intermediate_values) for t in trials]
    for trial in trials:
        record = read_record(sweep / str(trial.number) / METRICS_FILE, RunRecord)
        # every epoch reported to its own trial, the step being the epoch
        assert sorted(trial.intermediate_values) == list(range(1, record.epochs + 1))
        assert trial.intermediate_values[record.epochs] == pytest.approx(record.val_recall)
        assert record.pruned == (trial.state.name == "PRUNED")
    # the poor region is pruned (a learning trial slow to start may be pruned too)
    assert any(t.params["optimizer.lr"] == float(TINY_LR) for t in pruned)
    for trial in pruned:
        record = read_record(sweep / str(trial.number) / METRICS_FILE, RunRecord)
        assert record.epochs < 4 and trial.value == pytest.approx(record.val_recall)
        assert (sweep / str(trial.number) / "checkpoints" / "last.ckpt").is_file()
    search = read_search(sweep)
    assert search.best.params["optimizer.lr"] == "0.1" and search.best.run.status == "finished"
    assert {t.number for t in search.trials if t.run.status == "pruned"} == {
        t.number for t in pruned
    }

    rerun = run_cli(args)  # the same n_trials: nothing is launched, nothing trained
    assert "6 of 6 trials finished" in rerun.stdout and "network" not in rerun.stdout
    assert len(_study(sweep)) == 6

    text = (write_sweep_report([sweep]) / "results.md").read_text()
    assert f"pruned after epoch {max(pruned[0].intermediate_values)}" in text
    assert "## What mattered" in text and "pruner: MedianPruner" in text
    complete = sum(t.state.name == "COMPLETE" for t in trials)
    assert f"over the study's **{complete} complete trials**" in text
    for name in ("search_history.png", "search_parallel.png", "search_curves.png"):
        assert (sweep / "report" / name).stat().st_size > 10_000 and f"]({name})" in text
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(search.best.score("val_recall"))


def test_a_pruned_run_is_never_continued_when_its_directory_is_rerun(tmp_path):
    cfg = config([*FAST, "trainer.max_epochs=1"])
    record = train(cfg, tmp_path)
    pruned = RunRecord(**{**record.__dict__, "pruned": True})
    write_record(tmp_path / METRICS_FILE, pruned)
    more = config([*FAST, "trainer.max_epochs=2"])  # would continue a finished run
    again = train(more, tmp_path)
    assert again.pruned and again.epochs == 1
    assert read_record(tmp_path / METRICS_FILE, RunRecord) == pruned


@pytest.mark.slow
def test_the_pruning_benchmark_runs_in_quick_mode(tmp_path):
    output = tmp_path / "pruning.json"
    result = subprocess.run(
        [*MAKE, "bench-pruning", f"BENCH_ARGS=--quick --output {output}"],
        cwd=REPO, capture_output=True, text=True, timeout=900, env=clean_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    measured = json.loads(output.read_text())
    assert [r["mode"] for r in measured["runs"]] == ["none", "median"]
    none, median = measured["runs"]
    assert none["trials"] == median["trials"] == 2 and none["pruned"] == 0
    assert none["epochs_per_trial"] and set(none["epochs_per_trial"]) == {2}  # no pruning
    assert none["trial_epochs"] == sum(none["epochs_per_trial"])
    assert set(measured["summary"]) == {"none", "median"} and "trial-epochs" in result.stdout


def test_importances_name_the_key_that_decides_the_value_and_the_figures_are_drawn(tmp_path):
    from cifar_cnn.analysis.search_figures import SEARCH_FIGURES, importances, write_search_figures

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    for _ in range(30):
        trial = study.ask()
        lr = trial.suggest_float("optimizer.lr", 1e-4, 1e-1, log=True)
        trial.suggest_float("model.dropout", 0.0, 0.5)  # noise: it decides nothing
        trial.suggest_categorical("data.shuffle", [True, False])
        trial.report(0.1, 1)
        study.tell(trial, 0.2 + lr)
    pruned = study.ask()
    for key, low, high in (("optimizer.lr", 1e-4, 1e-1), ("model.dropout", 0.0, 0.5)):
        pruned.suggest_float(key, low, high, log=key == "optimizer.lr")
    pruned.suggest_categorical("data.shuffle", [True, False])
    pruned.report(0.05, 1)
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    found = importances(study)
    assert found.trials == 30 and next(iter(found.values)) == "optimizer.lr"
    assert sum(found.values.values()) == pytest.approx(1.0)
    assert found.values["optimizer.lr"] > 0.5
    few = optuna.create_study(direction="maximize")
    few.enqueue_trial({"x": 1})
    few.optimize(lambda t: t.suggest_float("x", 0, 2), n_trials=2)
    assert not importances(few).values and "2 complete trial(s)" in importances(few).reason
    names = write_search_figures(tmp_path, study, list(found.values))
    assert names == list(SEARCH_FIGURES)
    assert all((tmp_path / name).stat().st_size > 10_000 for name in names)
