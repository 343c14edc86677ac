"""Upgrading the project under finished and unfinished runs: a key added with a default (one
YAML line and one entry of core/keys.py) leaves every run directory written before it
resumable, continuable and reported as if it held the key's default."""

import json

import pytest
import torch

from cifar_cnn.core.errors import RunRefused
from cifar_cnn.core.keys import NOT_GIVEN, lookup, resume_mismatches
from cifar_cnn.core.record import RunRecord, read_record
from cifar_cnn.training.run import train
from helpers import FAST, config


def test_a_key_an_older_config_lacks_counts_as_its_absent_value():
    assert lookup("optimizer.nesterov").absent is False
    now = {"optimizer.lr": 0.1, "optimizer.nesterov": False}
    assert resume_mismatches({"optimizer.lr": 0.1}, now) == []
    changed = resume_mismatches({"optimizer.lr": 0.1}, {**now, "optimizer.nesterov": True})
    assert changed == ["optimizer.nesterov: False (checkpoint) vs True (now)"]
    # a key with no such value: a config without it differs from one with it
    assert lookup("model.dropout").absent is NOT_GIVEN
    assert resume_mismatches({}, {"model.dropout": 0.0}) == [
        "model.dropout: (absent) (checkpoint) vs 0.0 (now)"
    ]
    # both lack it (another optimizer): nothing to compare
    assert resume_mismatches({"optimizer.lr": 0.1}, {"optimizer.lr": 0.1}) == []


def _written_before(run_dir, key: str) -> None:
    """Make `run_dir` look as if written before `key` ("group.name") existed."""
    group, name = key.split(".")
    metrics = run_dir / "metrics.json"
    record = json.loads(metrics.read_text())
    del record["config"][group][name]
    metrics.write_text(json.dumps(record))
    ckpt_file = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(ckpt_file, weights_only=False)
    del checkpoint["hyper_parameters"]["run_config"][group][name]
    torch.save(checkpoint, ckpt_file)


@pytest.mark.parametrize("finished", [True, False])
def test_a_run_written_before_a_key_existed_continues_to_more_epochs(tmp_path, finished):
    first = train(config([*FAST, "trainer.max_epochs=1"]), tmp_path)
    _written_before(tmp_path, "optimizer.nesterov")
    if not finished:
        (tmp_path / "metrics.json").unlink()  # stopped after its checkpoint
    more = train(config([*FAST, "trainer.max_epochs=2"]), tmp_path)
    assert more.epochs == 2 and more.history.train_loss[0] == first.history.train_loss[0]
    written = read_record(tmp_path / "metrics.json", RunRecord)
    assert written.config["optimizer"]["nesterov"] is False


def test_a_run_written_before_a_key_existed_refuses_another_value_of_it(tmp_path):
    train(config([*FAST, "trainer.max_epochs=1"]), tmp_path)
    _written_before(tmp_path, "optimizer.nesterov")
    with pytest.raises(RunRefused, match=r"optimizer.nesterov: False \(checkpoint\) vs True"):
        train(config([*FAST, "trainer.max_epochs=1", "optimizer.nesterov=true"]), tmp_path)
