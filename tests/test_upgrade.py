"""Upgrading the project under finished and unfinished runs: a key added with a default (one
YAML line and one entry of core/keys.py) leaves every run directory written before it
resumable, continuable and reported as if it held the key's default."""

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from cifar_cnn.core.errors import RunRefused
from cifar_cnn.core.keys import NOT_GIVEN, lookup, resume_mismatches
from cifar_cnn.core.record import RunRecord, read_record
from cifar_cnn.training.run import train
from helpers import FAST, REPO, config, run_cli


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


def _copy_project(tmp_path: Path) -> Path:
    """A copy of the package, its configs and its sweeper, to upgrade in place."""
    copy = tmp_path / "project"
    for name in ("cifar_cnn", "conf", "hydra_plugins"):
        shutil.copytree(REPO / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _cli(copy: Path, args: list[str], check: bool = True, module: str = "cifar_cnn.train"):
    """`python -m MODULE ARGS` running the copy's code and configs."""
    return run_cli(args, cwd=copy, check=check, module=module, env={"PYTHONPATH": str(copy)})


NEW_KEY = '    Key("optimizer.maximize", "bool", "false", "the optimiser", absent=False),\n'
# A row without a published number, using the new key, on the study's default row.
NEW_ROW = """# @package _global_
# A throwaway row: dropout 0.2, the new key set.
defaults:
  - /experiment/default
  - _self_
model:
  dropout: 0.2
optimizer:
  maximize: false
"""


@pytest.mark.slow
def test_the_add_a_key_recipe_keeps_earlier_sweeps_and_runs_going(tmp_path):
    """docs/development.md's recipes, done to a copy of the project between two runs of the same
    commands: the sweep started before a key was added finishes after it, a single run
    continues to more epochs, and the report reads both (without the table entry both are
    refused); a new row without a published number, using the key, runs through a sweep and
    the report's "Beyond the study" section."""
    copy = _copy_project(tmp_path)
    sweep, single = tmp_path / "sweep", tmp_path / "single"
    sweep_args = ["-m", *FAST, "trainer.max_epochs=1", "seed=0,1", f"hydra.sweep.dir={sweep}"]
    _cli(copy, sweep_args)
    _cli(copy, [*FAST, "trainer.max_epochs=1", f"hydra.run.dir={single}"])
    stopped = next(sweep.glob("1_*"))
    (stopped / "metrics.json").unlink()  # this job stopped after its checkpoint

    # the upgrade: a key with its default in the YAML ...
    sgd = copy / "conf/optimizer/sgd.yaml"
    sgd.write_text(sgd.read_text() + "maximize: false\n")
    refused = _cli(copy, sweep_args, check=False)
    assert refused.returncode != 0 and "optimizer.maximize: (absent)" in refused.stdout
    # ... and its entry in the one table
    keys = copy / "cifar_cnn/core/keys.py"
    anchor = '    Key("optimizer.nesterov"'
    keys.write_text(keys.read_text().replace(anchor, NEW_KEY + anchor))

    _cli(copy, sweep_args)  # job 0 is skipped as finished, job 1 tests its checkpoint
    records = [read_record(d / "metrics.json", RunRecord) for d in sorted(sweep.glob("[01]_*"))]
    assert [r.seed for r in records] == [0, 1]
    assert records[1].config["optimizer"]["maximize"] is False
    assert "maximize" not in records[0].config["optimizer"]  # written before, left as it was
    more = _cli(copy, [*FAST, "trainer.max_epochs=2", f"hydra.run.dir={single}"])
    assert "resuming from" in more.stdout
    assert read_record(single / "metrics.json", RunRecord).epochs == 2

    _cli(copy, [str(sweep)], module="cifar_cnn.report")
    with open(sweep / "report" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["runs_finished"], r["seeds"]) for r in rows] == [("2", "0 1")]  # one row

    (copy / "conf/experiment/beyond/zz_throwaway.yaml").write_text(NEW_ROW)
    rows_sweep = tmp_path / "rows"
    _cli(copy, ["-m", *FAST, "trainer.max_epochs=1", "experiment=default,beyond/zz_throwaway",
                f"hydra.sweep.dir={rows_sweep}"])  # fmt: skip
    _cli(copy, [str(rows_sweep)], module="cifar_cnn.report")
    with open(rows_sweep / "report" / "results.csv") as f:
        rows = {r["experiment"]: r for r in csv.DictReader(f)}
    row = rows["beyond/zz_throwaway"]
    assert row["section"] == "Beyond the study" and row["parent"] == "default"
    assert row["published_recall"] == "" and row["runs_finished"] == "1"
    assert "A throwaway row" in (rows_sweep / "report" / "results.md").read_text()
