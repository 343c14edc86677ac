"""Bad input is refused early with a message naming the problem; no finished work is lost."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from cifar_cnn.core.errors import ConfigError, DataError
from cifar_cnn.core.record import RunRecord, read_record
from cifar_cnn.training.checkpoint import config_mismatches
from cifar_cnn.training.config_checks import validate_config
from cifar_cnn.training.data import BATCHES_DIR, CACHE_NAME, load_arrays
from helpers import FAST, REPO, clean_env, config, make_folder, make_pickles, run_cli


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.filters=huge", r"model.filters='huge' is not a preset: use one of small, large"),
        ("model.filters=[24,48]", r"model.filters \(\[24, 48\]\) and model.kernel_sizes"),
        ("model.filters=[24,0,96]", r"model.filters=\[24, 0, 96\] contains 0"),
        ("model.kernel_sizes=[5,3.5,3]", r"model.kernel_sizes=\[5, 3.5, 3\] contains 3.5"),
        ("model.kernel_sizes=[9,9,9]", r"conv3 has kernel 9 but its input is only 2x2"),
        ("model.dropout=1.0", r"model.dropout=1.0 must be a number >= 0 and < 1"),
        ("model.dropout=-0.1", r"model.dropout=-0.1 must be a number >= 0"),
        ("optimizer.lr=0", r"optimizer.lr=0 must be a number > 0"),
        ("data.batch_size=0", r"data.batch_size=0 must be a positive whole number"),
        ("data.batch_size=6.4", r"data.batch_size=6.4 must be a positive whole number"),
        ("model.activation=tanh", r"model.activation='tanh' is unknown; use one of relu, leaky"),
        ("data.source=imagenet", r"data.source='imagenet' is unknown; use one of cifar10, folder"),
        ("trainer.max_epochs=0", r"trainer.max_epochs=0 must be a positive whole number"),
    ],
)
def test_impossible_config_values_are_refused_with_the_key_and_value(override, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(config([override]))


@pytest.mark.slow
def test_the_cli_explains_a_bad_value_without_a_traceback(tmp_path):
    result = run_cli([*FAST, "model.dropout=1.5", f"hydra.run.dir={tmp_path}"], check=False)
    assert result.returncode == 1
    assert "model.dropout=1.5 must be a number >= 0 and < 1" in result.stdout
    assert "Traceback" not in result.stdout
    assert "model.dropout=1.5" in json.loads((tmp_path / "failed.json").read_text())["error"]


@pytest.mark.slow
def test_an_unknown_experiment_is_refused_by_hydra(tmp_path):
    result = run_cli(["experiment=nonsense", f"hydra.run.dir={tmp_path}"], check=False)
    assert result.returncode != 0
    assert "nonsense" in result.stdout and "Available options" in result.stdout


def test_a_truncated_batch_file_is_named(tmp_path):
    root = make_pickles(tmp_path)
    batch = root / BATCHES_DIR / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"data_batch_3 is unreadable or truncated"):
        load_arrays("cifar10", root)


def test_a_missing_batch_file_is_named(tmp_path):
    root = make_pickles(tmp_path)
    (root / BATCHES_DIR / "test_batch").unlink()
    with pytest.raises(DataError, match=r"lacks test_batch"):
        load_arrays("cifar10", root, download=False)


def test_missing_class_folders_are_named(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=1)
    for name in ("cat", "dog"):
        for path in (root / "test" / name).iterdir():
            path.unlink()
        (root / "test" / name).rmdir()
    with pytest.raises(DataError, match=r"imgs/test lacks the class folders cat, dog"):
        load_arrays("folder", root)


def test_an_image_of_the_wrong_size_is_named(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=1)
    Image.new("RGB", (28, 28)).save(root / "train" / "cat" / "x.png")
    with pytest.raises(DataError, match=r"cat/x.png is \(3, 28, 28\).*must be 32x32 RGB"):
        load_arrays("folder", root)


def test_a_file_that_is_not_an_image_is_named(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=1)
    (root / "test" / "frog" / "notes.jpg").write_text("not a picture")
    with pytest.raises(DataError, match=r"frog/notes.jpg is not a readable PNG or JPEG"):
        load_arrays("folder", root)


def test_a_corrupt_cache_is_rebuilt_and_reported(tmp_path, caplog):
    root = make_folder(tmp_path / "imgs", per_class=1)
    expected = load_arrays("folder", root)
    (root / CACHE_NAME).write_bytes(b"garbage")
    with caplog.at_level("WARNING"):
        rebuilt = load_arrays("folder", root)
    assert "is corrupt" in caplog.text and "rebuilding" in caplog.text
    assert all(torch.equal(expected[k], rebuilt[k]) for k in expected)
    assert torch.load(root / CACHE_NAME, weights_only=True)["arrays"].keys() == expected.keys()


@pytest.mark.slow
def test_a_diverging_run_stops_and_records_the_epoch(tmp_path):
    unclipped = [*FAST, "trainer.gradient_clip_val=null", "optimizer.lr=1e4"]
    result = run_cli([*unclipped, f"hydra.run.dir={tmp_path}"], check=False)
    assert result.returncode == 1
    assert re.search(r"training loss became (nan|-?inf) in epoch 1", result.stdout)
    failed = json.loads((tmp_path / "failed.json").read_text())
    assert failed["epoch"] == 1 and not (tmp_path / "metrics.json").exists()


@pytest.mark.slow
def test_a_checkpoint_from_another_configuration_is_refused(tmp_path):
    run_cli([*FAST, "trainer.max_epochs=1", f"hydra.run.dir={tmp_path}"])
    (tmp_path / "metrics.json").unlink()
    result = run_cli([*FAST, "model.filters=large", f"hydra.run.dir={tmp_path}"], check=False)
    assert result.returncode == 1
    assert "does not match this configuration: model.filters: small (checkpoint) vs large" in (
        result.stdout
    )
    assert "resume=false" in result.stdout
    run_cli([*FAST, "model.filters=large", "resume=false", f"hydra.run.dir={tmp_path}"])
    assert read_record(tmp_path / "metrics.json", RunRecord).epochs == 2


@pytest.mark.parametrize(
    "override",
    [
        "seed=1",
        "data.root=elsewhere",
        "data.synthetic_train_size=256",
        "trainer.precision=16-mixed",
    ],
)
def test_resuming_refuses_a_checkpoint_when_a_key_that_changes_the_result_differs(override):
    saved = OmegaConf.to_container(config(FAST))
    now = OmegaConf.to_container(config([*FAST, override]))
    assert config_mismatches(saved, now) == [
        f"{key}: {_get(saved, key)} (checkpoint) vs {_get(now, key)} (now)"
        for key in [override.partition("=")[0]]
    ]


def test_resuming_accepts_more_epochs_and_other_speed_settings():
    saved = OmegaConf.to_container(config(FAST))
    now = OmegaConf.to_container(
        config([*FAST, "trainer.max_epochs=9", "compute.threads=2", "progress_bar_refresh=5"])
    )
    assert config_mismatches(saved, now) == []


def _get(config: dict, dotted: str) -> object:
    for key in dotted.split("."):
        config = config[key]
    return config


# Shuffling and dropout make the exact match depend on the restored data order and RNG.
RESUMABLE = [
    *FAST,
    "trainer.max_epochs=4",
    "data.synthetic_train_size=2048",
    "data.shuffle=true",
    "model.dropout=0.3",
    "compute.threads=1",
]


# Every remedy of the beyond rows at once, with a validation split (best.ckpt, at_best_val).
REMEDIES = [
    *RESUMABLE,
    "data.augment.flip=true",
    "data.augment.crop_padding=4",
    "scheduler=onecycle",
    "optimizer=adamw",
    "optimizer.lr=0.01",
    "loss.label_smoothing=0.1",
    "data.val_size=200",
]


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [RESUMABLE, REMEDIES], ids=["study", "remedies"])
def test_a_killed_run_resumes_and_matches_an_uninterrupted_one(tmp_path, overrides):
    reference = tmp_path / "reference"
    run_cli([*overrides, f"hydra.run.dir={reference}"])
    expected = read_record(reference / "metrics.json", RunRecord)

    run_dir = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "cifar_cnn.train", *overrides, f"hydra.run.dir={run_dir}"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=clean_env(),
    )
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    while not checkpoint.exists() and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (run_dir / "metrics.json").exists(), "the run finished before it could be killed"
    epochs_done = torch.load(checkpoint, weights_only=False)["epoch"] + 1
    assert epochs_done < 4, "the kill came after training ended; nothing left to resume"

    result = run_cli([*overrides, f"hydra.run.dir={run_dir}"])
    assert f"resuming from {checkpoint} ({epochs_done} epochs done)" in result.stdout
    resumed = read_record(run_dir / "metrics.json", RunRecord)
    assert resumed.history == replace(expected.history, train_seconds=resumed.history.train_seconds)
    assert resumed.test == expected.test
    assert resumed.at_best_val == expected.at_best_val
    assert (expected.at_best_val is None) == (overrides is RESUMABLE)


@pytest.mark.slow
def test_a_sweep_survives_a_failing_job_and_a_rerun_trains_nothing(tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "model.kernel_sizes=[9,9,9],[5,3,3]",
        *FAST,
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep}",
    ]
    first = run_cli(args, check=False)
    assert first.returncode != 0
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert "conv3 has kernel 9" in json.loads((jobs[0] / "failed.json").read_text())["error"]
    assert (jobs[1] / "metrics.json").is_file()  # the job after the failure still ran

    checkpoint = jobs[1] / "checkpoints" / "last.ckpt"
    stamp = checkpoint.stat().st_mtime_ns
    second = run_cli(args, check=False)
    assert "this run already finished; skipping it" in second.stdout
    assert checkpoint.stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_unfinished_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "seed=0,1,2", *FAST, f"hydra.sweep.dir={sweep}"]
    run_cli(args)
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    finished = [read_record(j / "metrics.json", RunRecord) for j in jobs]
    (jobs[1] / "metrics.json").unlink()  # as if killed after its last checkpoint
    for path in (jobs[2] / "metrics.json", jobs[2] / "checkpoints" / "last.ckpt"):
        path.unlink()  # as if never started
    result = run_cli(args)
    assert result.stdout.count("already finished; skipping") == 1
    assert result.stdout.count("resuming from") == 1
    rerun = [read_record(j / "metrics.json", RunRecord) for j in jobs]
    for before, after in zip(finished, rerun, strict=True):
        assert before.test.recall == after.test.recall
        assert before.history.train_loss == after.history.train_loss
