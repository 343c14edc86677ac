"""A run directory under concurrency, signals and hand-edited files: one writer at a time, a
finished run never rewritten by other settings, interruptions recorded and resumed, invalid
results redone, and reports swapped in whole."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from filelock import FileLock

from cifar_cnn.analysis import tables
from cifar_cnn.analysis.runs import read_run
from cifar_cnn.core.errors import ConfigError, RunRefused
from cifar_cnn.core.record import RunRecord, read_record
from cifar_cnn.core.runfiles import LOCK_FILE, write_json
from cifar_cnn.report import write_sweep_report
from cifar_cnn.training.checkpoint import AtomicCheckpointIO
from cifar_cnn.training.run import train
from helpers import FAST, REPO, clean_env, config, run_cli


def test_a_run_directory_in_use_by_another_process_is_refused(tmp_path):
    with FileLock(tmp_path / LOCK_FILE), pytest.raises(RunRefused, match="in use by another"):
        train(config(FAST), tmp_path)
    assert not (tmp_path / "metrics.json").exists()


def test_more_epochs_continue_a_finished_run_from_its_checkpoint(tmp_path, caplog):
    first = train(config([*FAST, "trainer.max_epochs=1"]), tmp_path)
    caplog.set_level("INFO", logger="cifar_cnn")
    again = train(config([*FAST, "trainer.max_epochs=1"]), tmp_path)
    assert again == first and "already finished; skipping" in caplog.text
    more = train(config([*FAST, "trainer.max_epochs=2"]), tmp_path)
    assert "resuming from" in caplog.text
    assert more.epochs == 2 and more.history.train_loss[0] == first.history.train_loss[0]
    assert read_record(tmp_path / "metrics.json", RunRecord) == more


def test_an_invalid_metrics_file_counts_as_unfinished_and_is_redone(tmp_path, caplog):
    record = train(config(FAST), tmp_path)
    path = tmp_path / "metrics.json"
    data = json.loads(path.read_text())
    data["test"]["recall"] = 7.0
    path.write_text(json.dumps(data))
    run = read_run(tmp_path, "run")
    assert run.status == "unfinished" and "field test.recall: 7.0 is outside" in run.detail
    again = train(config(FAST), tmp_path)  # resumes the finished checkpoint: tests again
    assert "field test.recall" in caplog.text
    assert again.test == record.test and again.history == record.history
    path.write_text(path.read_text()[:100])  # truncated
    assert "not readable JSON" in read_run(tmp_path, "run").detail


def test_a_failing_report_keeps_the_previous_one(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    train(config(FAST), sweep / "0_seed=0", overrides=["seed=0"])
    report = write_sweep_report([sweep])
    before = (report / "results.md").read_text()

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(tables, "write_csv", broken)
    with pytest.raises(OSError, match="disk full"):
        write_sweep_report([sweep])
    assert (report / "results.md").read_text() == before
    assert sorted(p.name for p in sweep.iterdir()) == ["0_seed=0", "report"]


@pytest.mark.slow
def test_a_finished_run_of_other_settings_is_refused_and_left_as_it_was(tmp_path):
    run_cli([*FAST, "trainer.max_epochs=1", f"hydra.run.dir={tmp_path}"])
    files = {
        p: p.read_bytes() for p in (tmp_path / "metrics.json", tmp_path / ".hydra" / "config.yaml")
    }
    result = run_cli(
        [*FAST, "trainer.max_epochs=1", "optimizer.lr=0.05", "model.batch_norm=true",
         f"hydra.run.dir={tmp_path}"],
        check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "holds a finished run of other settings" in result.stdout
    assert "model.batch_norm: False (checkpoint) vs True (now)" in result.stdout
    assert "optimizer.lr: 0.1 (checkpoint) vs 0.05 (now)" in result.stdout
    assert all(path.read_bytes() == data for path, data in files.items())
    assert not (tmp_path / "failed.json").exists()


@pytest.mark.slow
def test_two_identical_runs_started_together_train_once(tmp_path):
    args = [*FAST, "data.synthetic_train_size=2048", f"hydra.run.dir={tmp_path}"]
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "cifar_cnn.train", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=clean_env(),
        )  # fmt: skip
        for _ in range(2)
    ]
    outputs = [child.communicate(timeout=300)[0] for child in children]
    codes = sorted(child.returncode for child in children)
    refused = [out for out in outputs if "in use by another process" in out]
    skipped = [out for out in outputs if "already finished; skipping" in out]
    # The second either found the lock held, or (if the first finished first) skipped it.
    assert codes in ([0, 1], [0, 0]) and len(refused) + len(skipped) == 1
    events = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    assert len({p.name.split(".")[-2] for p in events}) == 1  # written by one process (pid)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_exits_non_zero_records_the_interruption_and_a_rerun_resumes(tmp_path, signum):
    args = [*FAST, "trainer.max_epochs=30", "compute.threads=1", f"hydra.run.dir={tmp_path}"]
    child = subprocess.Popen(
        [sys.executable, "-m", "cifar_cnn.train", *args],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env(),
    )  # fmt: skip
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    while not checkpoint.exists() and child.poll() is None:
        time.sleep(0.05)
    child.send_signal(signum)
    assert child.wait(timeout=120) == 128 + signum
    failed = json.loads((tmp_path / "failed.json").read_text())
    assert failed["signal"] == signal.Signals(signum).name
    run = read_run(tmp_path, "run")
    assert run.status == "interrupted" and "rerunning the sweep resumes it" in run.detail
    assert yaml.safe_load((tmp_path / ".hydra" / "overrides.yaml").read_text()) == args[:-1]
    result = run_cli([*args[:-2], "trainer.max_epochs=3", "compute.threads=1", args[-1]])
    assert "resuming from" in result.stdout
    assert read_record(tmp_path / "metrics.json", RunRecord).epochs == 3
    assert not (tmp_path / "failed.json").exists()


def test_a_checkpoint_that_cannot_be_written_is_named_and_the_previous_one_kept(
    tmp_path, monkeypatch
):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"epoch": 1}, path)
    before = path.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(ConfigError, match=rf"cannot write the checkpoint {path} \(No space left"):
        AtomicCheckpointIO().save_checkpoint({"epoch": 2}, path)
    assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [path]


def test_a_results_file_that_cannot_be_written_leaves_the_old_one_and_no_temporary_file(
    tmp_path, monkeypatch
):
    path = tmp_path / "metrics.json"
    write_json(path, {"a": 1})

    def full_disk(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1} and sorted(tmp_path.iterdir()) == [path]
