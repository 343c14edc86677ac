"""Issue 23's cases: a finished run never replaced by other flags, a newer record left alone,
a record that cannot be written named with where the results are, NaN and infinity refused,
and other values named before they reach torch or Lightning."""

import errno
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from cifar_cnn.analysis.runs import read_run
from cifar_cnn.core.errors import ConfigError, ResultsNotSaved, RunRefused
from cifar_cnn.core.record import RunRecord, read_record
from cifar_cnn.training import run as run_module
from cifar_cnn.training.checkpoint import read_checkpoint
from cifar_cnn.training.config_checks import validate_config
from cifar_cnn.training.run import train
from helpers import FAST, REPO, clean_env, config

ONE_EPOCH = [*FAST, "trainer.max_epochs=1"]


def _files(run_dir):
    return {p: p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_a_finished_run_is_replaced_by_no_flag_but_overwrite_finished(tmp_path):
    train(config(ONE_EPOCH), tmp_path)
    before = _files(tmp_path)
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    refusals = {
        "resume=false optimizer.lr=0.05": "holds a finished run of other settings",
        "resume=false": "which resume=false would train again",
        f"ckpt_path={checkpoint}": f"which ckpt_path={checkpoint} would train again",
        f"ckpt_path={checkpoint} optimizer.lr=0.05": r"optimizer.lr: 0.1 \(checkpoint\) vs 0.05",
    }
    for overrides, message in refusals.items():
        with pytest.raises(RunRefused, match=message) as refused:
            train(config([*ONE_EPOCH, *overrides.split()]), tmp_path)
        assert "overwrite_finished=true" in str(refused.value)
        assert _files(tmp_path) == before
    again = train(config([*ONE_EPOCH, "optimizer.lr=0.05", "overwrite_finished=true"]), tmp_path)
    assert again.config["optimizer"]["lr"] == 0.05
    assert read_record(tmp_path / "metrics.json", RunRecord) == again


def test_a_record_of_a_newer_format_is_left_alone_and_named(tmp_path):
    record = tmp_path / "metrics.json"
    record.write_text(json.dumps({"format": 3, "something_new": [1, 2]}))
    before = record.read_bytes()
    message = r"written by a newer cifar_cnn \(record format 3; this version reads format 2\)"
    with pytest.raises(RunRefused, match=message):
        train(config(ONE_EPOCH), tmp_path)
    with pytest.raises(RunRefused, match=message):
        train(config([*ONE_EPOCH, "overwrite_finished=true"]), tmp_path)
    assert record.read_bytes() == before
    assert "newer cifar_cnn" in read_run(tmp_path, "run").detail


def test_a_record_that_cannot_be_written_says_where_the_results_are_and_a_rerun_tests_them(
    tmp_path, monkeypatch
):
    def full_disk(path, record):
        raise OSError(errno.ENOSPC, "No space left on device")

    overrides = [*ONE_EPOCH, "checkpoint_every_n_epochs=5"]  # no periodic checkpoint
    monkeypatch.setattr(run_module, "write_record", full_disk)
    message = (
        r"training finished \(test recall 0\.\d+, accuracy 0\.\d+ after 1 epochs\), but .*"
        r"metrics.json could not be written \(No space left on device\)\. The trained network "
        r"is in .*last.ckpt: .* without training again"
    )
    with pytest.raises(ResultsNotSaved, match=message):
        train(config(overrides), tmp_path)
    monkeypatch.undo()
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert len(checkpoint["cifar_cnn"]["history"]["train_loss"]) == 1
    record = train(config(overrides), tmp_path)  # tests the checkpoint: no epoch trained
    assert (
        record.epochs == 1
        and record.history.train_loss == (checkpoint["cifar_cnn"]["history"]["train_loss"])
    )
    assert read_record(tmp_path / "metrics.json", RunRecord) == record


def test_a_checkpoint_of_more_epochs_than_max_epochs_is_not_resumed(tmp_path):
    train(config(FAST), tmp_path)  # 2 epochs
    (tmp_path / "metrics.json").unlink()  # unfinished, with a checkpoint at epoch 2
    with pytest.raises(ConfigError, match=r"holds 2 epochs, more than trainer.max_epochs=1"):
        train(config(ONE_EPOCH), tmp_path)
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=nan", r"optimizer.lr=nan is not a finite number"),
        ("optimizer.lr=1e400", r"optimizer.lr=inf is not a finite number"),
        ("optimizer.weight_decay=inf", r"optimizer.weight_decay=inf is not a finite number"),
        ("trainer.gradient_clip_val=nan", r"trainer.gradient_clip_val=nan is not a finite"),
        ("model.leaky_slope=nan", r"model.leaky_slope=nan is not a finite number"),
        ("model.dropout=-inf", r"model.dropout=-inf is not a finite number"),
        ("+trainer.limit_train_batches=inf", r"trainer.limit_train_batches=inf holds a value"),
        ("+optimizer.foreach=nan", r"optimizer.foreach=nan holds a value that is not a finite"),
    ],
)
def test_nan_and_infinity_are_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(config([*FAST, override]))


ADAM = ["optimizer._target_=torch.optim.Adam", "~optimizer.momentum", "~optimizer.nesterov"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([*ADAM, "+optimizer.betas=0.9"], r"optimizer.betas=0.9 is refused by torch.optim.Adam"),
        ([*ADAM, "+optimizer.betas=[0.9,1.5]"], r"optimizer.betas=\[0.9, 1.5\] is refused.*beta"),
        (["+trainer.limit_train_batches=abc"], r"trainer.limit_train_batches='abc' is not acc"),
        (["+trainer.detect_anomaly=maybe"], r"trainer.detect_anomaly='maybe' is not accepted"),
    ],
)
def test_values_torch_or_lightning_would_refuse_mid_run_are_named_first(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(config([*FAST, *overrides]))


@pytest.mark.parametrize(
    "overrides",
    [
        [*ADAM, "+optimizer.betas=[0.9,0.99]"],
        ["+trainer.limit_train_batches=2", "+trainer.limit_val_batches=0.5"],
        ["+trainer.max_time=00:00:01:00"],
    ],
)
def test_values_torch_and_lightning_accept_pass(overrides):
    validate_config(config([*FAST, *overrides]))


@pytest.mark.parametrize("damage", ["truncated", "random bytes"])
def test_a_damaged_checkpoint_of_an_unfinished_run_is_named_with_resume_false(tmp_path, damage):
    train(config(ONE_EPOCH), tmp_path)
    (tmp_path / "metrics.json").unlink()
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[: len(data) // 2] if damage == "truncated" else bytes(range(256)))
    message = r"this run's checkpoint .*last.ckpt cannot be resumed: not a readable .*resume=false"
    with pytest.raises(ConfigError, match=message):
        train(config(FAST), tmp_path)
    assert train(config([*FAST, "resume=false"]), tmp_path).epochs == 2


@pytest.mark.slow
def test_ctrl_c_twice_stops_like_once_without_a_traceback(tmp_path):
    args = [*FAST, "trainer.max_epochs=30", "compute.threads=1", f"hydra.run.dir={tmp_path}"]
    child = subprocess.Popen(
        [sys.executable, "-m", "cifar_cnn.train", *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    while not checkpoint.exists() and child.poll() is None:
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    output = child.communicate(timeout=120)[0]
    assert child.returncode == 130 and "Traceback" not in output, output
    assert json.loads((tmp_path / "failed.json").read_text())["signal"] == "SIGINT"
    assert read_checkpoint(checkpoint)["cifar_cnn"]["history"]["train_loss"]


@pytest.mark.slow
def test_a_file_size_limit_after_training_is_named_with_the_results():
    """The issue's case: `ulimit -f 4` with logger=csv; neither the checkpoint nor metrics.json
    fits, and the message says so, with the numbers (also kept in failed.json)."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))

    args = [
        *(o for o in FAST if not o.startswith(("trainer.max_epochs", "trainer.gradient_clip"))),
        "trainer.max_epochs=1",
        "logger=csv",
        "checkpoint_every_n_epochs=5",
    ]  # fmt: skip (few enough that .hydra/ still fits in 4 KiB)
    # A short run directory: .hydra/hydra.yaml names it three times and must fit in 4 KiB.
    tmp_path = Path(tempfile.mkdtemp(prefix="fsz", dir="/tmp"))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "cifar_cnn.train", *args, f"hydra.run.dir={tmp_path}"],
            cwd=REPO, preexec_fn=limit, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, timeout=600, env=clean_env(),
        )  # fmt: skip
        failed = json.loads((tmp_path / "failed.json").read_text())
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)
    message = r"training finished \(test recall 0\.\d+, accuracy .* after 1 epochs\), but .*"
    message += r"metrics.json could not be written \(File too large\)"
    assert result.returncode == 1 and "Traceback" not in result.stdout, result.stdout
    assert re.search(message, result.stdout)
    assert "test recall" in failed["error"]


@pytest.mark.slow
def test_a_file_size_limit_before_training_is_named_without_a_traceback(tmp_path):
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (512, resource.RLIM_INFINITY))

    result = subprocess.run(
        [sys.executable, "-m", "cifar_cnn.train", *ONE_EPOCH, f"hydra.run.dir={tmp_path}"],
        cwd=REPO, preexec_fn=limit,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stdout, result.stdout
    assert re.search(r"cannot write .* \(File too large\); free space", result.stdout)
