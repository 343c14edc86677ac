"""Learning-rate schedules, AdamW, Nesterov and label smoothing (conf/scheduler/, conf/optimizer/,
loss.label_smoothing): the curves, their checks, exact resumption, and the per-step log."""

import csv
import json
import math
from dataclasses import replace

import pytest
import torch
from hydra.errors import MissingConfigException
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from cifar_cnn.core.errors import ConfigError, RunRefused
from cifar_cnn.core.keys import run_name
from cifar_cnn.core.record import AtBestVal, RecordError, RunRecord, read_record, write_record
from cifar_cnn.training.checkpoint import config_mismatches
from cifar_cnn.training.config_checks import validate_config
from cifar_cnn.training.run import train
from cifar_cnn.training.schedules import build_scheduler
from helpers import FAST, config, fake_record

BASE_LR = 0.1


def curve(scheduler: dict, total_steps: int = 100, epochs: int = 10) -> list[float]:
    """The rate of each step, as Lightning steps the schedule after every optimiser step."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=BASE_LR, momentum=0.9)
    schedule = build_scheduler(optimizer, scheduler, total_steps, epochs)
    rates = []
    for _ in range(total_steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if schedule is not None:
            schedule.step()
    return rates


def test_no_schedule_keeps_the_rate_constant():
    assert curve({"name": "none"}) == [BASE_LR] * 100
    assert curve(None) == [BASE_LR] * 100


def test_cosine_warms_up_linearly_then_falls_to_min_lr_at_the_last_step():
    rates = curve({"name": "cosine", "warmup_epochs": 2, "min_lr": 0.001})  # 10 steps an epoch
    warmup, decay = rates[:20], rates[19:]
    assert warmup == pytest.approx([BASE_LR * (s + 1) / 20 for s in range(20)])
    assert max(rates) == pytest.approx(BASE_LR) and rates[19] == pytest.approx(BASE_LR)
    assert all(a > b for a, b in zip(decay[1:], decay[2:], strict=False))  # falls throughout
    assert rates[-1] == pytest.approx(0.001)
    midway = 20 + (99 - 20) / 2  # the cosine's half-way point: half-way between lr and min_lr
    assert rates[int(midway)] == pytest.approx((BASE_LR + 0.001) / 2, rel=0.05)


def test_onecycle_rises_to_max_lr_at_pct_start_and_ends_far_below():
    config = {"name": "onecycle", "max_lr": 0.5, "pct_start": 0.25, "div_factor": 25.0,
              "final_div_factor": 1e4, "cycle_momentum": False}  # fmt: skip
    rates = curve(config)
    peak = rates.index(max(rates))
    assert abs(peak - 0.25 * 100) <= 1 and max(rates) == pytest.approx(0.5)
    assert rates[0] == pytest.approx(0.5 / 25)
    assert rates[-1] == pytest.approx(0.5 / 25 / 1e4)
    assert all(a < b for a, b in zip(rates[:peak], rates[1 : peak + 1], strict=True))
    assert all(a > b for a, b in zip(rates[peak:], rates[peak + 1 :], strict=False))


def test_step_drops_by_gamma_at_each_boundary_after_its_warm_up():
    rates = curve({"name": "step", "step_epochs": 4, "gamma": 0.1, "warmup_epochs": 1})
    assert rates[:10] == pytest.approx([BASE_LR * (s + 1) / 10 for s in range(10)])
    assert rates[10:40] == pytest.approx([BASE_LR] * 30)
    assert rates[40:80] == pytest.approx([BASE_LR * 0.1] * 40)  # the boundary: epoch 4
    assert rates[80:] == pytest.approx([BASE_LR * 0.01] * 20)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["scheduler=cosine", "scheduler.warmup_epochs=-1"],
         r"scheduler.warmup_epochs=-1 must be a number >= 0"),
        (["scheduler=step", "scheduler.warmup_epochs=2"],
         r"scheduler.warmup_epochs=2 must be less than trainer.max_epochs=2"),
        (["scheduler=cosine", "scheduler.min_lr=1.0"],
         r"scheduler.min_lr=1.0 must not exceed optimizer.lr=0.1"),
        (["scheduler=onecycle", "scheduler.pct_start=1.0"],
         r"scheduler.pct_start=1.0 must be a number > 0 and < 1"),
        (["scheduler=step", "scheduler.gamma=0"], r"scheduler.gamma=0 must be a number > 0"),
        (["scheduler=onecycle", "scheduler.cycle_momentum=maybe"],
         r"scheduler.cycle_momentum='maybe' must be true or false"),
        (["loss.label_smoothing=1.5"], r"loss.label_smoothing=1.5 must be a number >= 0 and < 1"),
        (["loss.label_smoothing=-0.1"], r"loss.label_smoothing=-0.1 must be a number >= 0"),
        (["optimizer.nesterov=true", "optimizer.momentum=0"],
         r"optimizer.nesterov=true needs optimizer.momentum > 0 and optimizer.dampening=0"),
        (["optimizer.nesterov=yes"], r"optimizer.nesterov='yes' must be true or false"),
        (["optimizer=adamw", "optimizer.betas=[0.9,1.0]"],
         r"optimizer.betas=\[0.9, 1.0\] is refused by torch.optim.AdamW"),
        (["optimizer=adamw", "optimizer.eps=0"], r"optimizer.eps=0 must be a number > 0"),
        (["optimizer=adamw", "+optimizer.momentum=0.9"], r"optimizer.momentum: no such key"),
    ],
)  # fmt: skip
def test_bad_values_are_refused_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(config([*FAST, *overrides]))


def test_the_new_choices_pass_the_checks():
    for overrides in (["scheduler=cosine", "scheduler.warmup_epochs=0.5"], ["scheduler=step"],
                      ["scheduler=onecycle", "optimizer=adamw", "loss.label_smoothing=0.1"],
                      ["optimizer.nesterov=true"]):  # fmt: skip
        validate_config(config([*FAST, *overrides]))


def test_an_unknown_schedule_is_refused_by_hydra_naming_it():
    with pytest.raises(MissingConfigException, match="scheduler/nosuch"):
        config(["scheduler=nosuch"])


def test_the_new_keys_name_the_run():
    name = run_name(["scheduler=onecycle", "scheduler.pct_start=0.2", "optimizer=adamw",
                     "optimizer.nesterov=true", "loss.label_smoothing=0.1",
                     "trainer.log_every_n_steps=1"])  # fmt: skip
    assert name == ("_loss.label_smoothing=0.1,optimizer.nesterov=true,optimizer=adamw,"
                    "scheduler.pct_start=0.2,scheduler=onecycle")  # fmt: skip


def test_a_stored_config_from_before_these_keys_resumes_as_their_defaults():
    now = OmegaConf.to_container(config(FAST), resolve=True)
    older = OmegaConf.to_container(config(FAST), resolve=True)
    del older["scheduler"], older["loss"], older["optimizer"]["nesterov"]
    assert config_mismatches(older, now) == []
    smoothed = OmegaConf.to_container(config([*FAST, "loss.label_smoothing=0.1"]), resolve=True)
    assert config_mismatches(older, smoothed) == [
        "loss.label_smoothing: 0.0 (checkpoint) vs 0.1 (now)"
    ]


def test_a_scheduled_run_cannot_change_its_epochs_but_a_constant_rate_one_can():
    def mismatches(extra: list[str]) -> list[str]:
        saved = OmegaConf.to_container(config([*FAST, *extra]), resolve=True)
        now = OmegaConf.to_container(config([*FAST, *extra, "trainer.max_epochs=4"]), resolve=True)
        return config_mismatches(saved, now)

    assert mismatches([]) == []
    (message,) = mismatches(["scheduler=cosine"])
    assert message.startswith("trainer.max_epochs: 2 (checkpoint) vs 4 (now), which a run with "
                              "scheduler=cosine cannot change")  # fmt: skip


ONECYCLE = [
    *FAST,
    "scheduler=onecycle",
    "optimizer=adamw",
    "optimizer.lr=0.01",
    "loss.label_smoothing=0.1",
    "data.val_size=100",
    "compute.threads=1",
]


def test_continuing_a_finished_scheduled_run_to_more_epochs_is_refused(tmp_path):
    first = train(config([*ONECYCLE, "trainer.max_epochs=1"]), tmp_path)
    with pytest.raises(RunRefused, match=r"trainer.max_epochs: 1 \(checkpoint\) vs 2 \(now\).*"
                                         r"scheduler=onecycle"):  # fmt: skip
        train(config([*ONECYCLE, "trainer.max_epochs=2"]), tmp_path)
    assert read_record(tmp_path / "metrics.json", RunRecord) == first  # left as it was


class StopAtEpoch(Callback):
    """Fails the run as the epoch `epoch` (0-based) starts: its checkpoint holds `epoch` epochs."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("stopped by the test")


def test_a_scheduled_run_stopped_and_resumed_equals_an_uninterrupted_one(tmp_path):
    cfg = [*ONECYCLE, "data.shuffle=true", "model.dropout=0.3"]
    straight = train(config(cfg), tmp_path / "straight")
    with pytest.raises(RuntimeError, match="stopped by the test"):
        train(config(cfg), tmp_path / "resumed", callbacks=[StopAtEpoch(1)])
    checkpoint = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["epoch"] + 1 == 1 and checkpoint["lr_schedulers"][0]["_step_count"] > 1
    resumed = train(config(cfg), tmp_path / "resumed")
    assert resumed.history.train_loss == straight.history.train_loss
    assert resumed.history.val_recall == straight.history.val_recall
    assert resumed.test == straight.test
    assert resumed.at_best_val == straight.at_best_val is not None


class ValidationFalls(Callback):
    """Makes the validation recall of epoch 2 the worst, as a run that overfits would see it."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # before the module's own hook
        if pl_module.history.val_recall_epochs[-1:] == [2]:
            pl_module.history.val_recall[-1] = 0.0


def test_with_a_validation_split_the_best_epoch_is_kept_and_tested(tmp_path):
    one_epoch = train(config([*ONECYCLE, "scheduler=none", "trainer.max_epochs=1"]), tmp_path / "a")
    run_dir = tmp_path / "b"
    record = train(config([*ONECYCLE, "scheduler=none"]), run_dir, callbacks=[ValidationFalls()])
    best = record.at_best_val
    assert best.epoch == 1 and best.val_recall == record.history.val_recall[0]
    # best.ckpt holds epoch 1: its test equals a run trained for one epoch with the same seed
    assert best.test == one_epoch.test
    saved = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=False)
    assert saved["cifar_cnn"]["history"]["val_recall_epochs"] == [1]
    assert read_record(run_dir / "metrics.json", RunRecord) == record
    assert one_epoch.at_best_val.epoch == 1 and one_epoch.at_best_val.test == one_epoch.test


def test_a_missing_best_checkpoint_leaves_the_field_out_with_a_warning(tmp_path, caplog):
    overrides = [*ONECYCLE, "scheduler=none"]
    first = train(config(overrides), tmp_path, callbacks=[ValidationFalls()])
    assert first.at_best_val.epoch == 1
    (tmp_path / "metrics.json").unlink()
    (tmp_path / "checkpoints" / "best.ckpt").unlink()
    again = train(config(overrides), tmp_path)  # resumes the finished checkpoint: tests again
    assert again.at_best_val is None and again.test == first.test
    assert "best.ckpt should hold epoch 1, the best validation recall, but" in caplog.text


def test_without_a_validation_split_there_is_no_best_checkpoint_nor_field(tmp_path):
    record = train(config([*FAST, "trainer.max_epochs=1", "compute.threads=1"]), tmp_path)
    assert record.at_best_val is None
    assert not (tmp_path / "checkpoints" / "best.ckpt").exists()
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_the_learning_rate_is_logged_every_step(tmp_path):
    overrides = [*ONECYCLE, "logger=csv", "trainer.log_every_n_steps=1"]
    record = train(config(overrides), tmp_path)
    with open(tmp_path / "csv" / "metrics.csv") as f:
        logged = {int(row["step"]): float(row["train/lr"]) for row in csv.DictReader(f)
                  if row["train/lr"]}  # fmt: skip
    steps = math.ceil(record.data.train_size / 64) * 2
    assert sorted(logged) == list(range(steps))
    expected = {"name": "onecycle", "max_lr": 0.01, "pct_start": 0.3, "div_factor": 25.0,
                "final_div_factor": 1e4, "cycle_momentum": False}  # fmt: skip
    optimizer = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=0.01)
    schedule = build_scheduler(optimizer, expected, steps, 2)
    for step in range(steps):
        assert logged[step] == pytest.approx(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()


def test_label_smoothing_changes_the_training_loss_only(tmp_path):
    plain = train(config([*FAST, "trainer.max_epochs=1", "compute.threads=1"]), tmp_path / "a")
    smoothed = train(
        config([*FAST, "trainer.max_epochs=1", "compute.threads=1", "loss.label_smoothing=0.2"]),
        tmp_path / "b",
    )
    assert smoothed.history.train_loss != plain.history.train_loss
    assert smoothed.config["loss"] == {"label_smoothing": 0.2}


def test_the_best_epoch_may_be_the_one_validated_after_training(tmp_path):
    overrides = [*ONECYCLE, "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=2"]
    record = train(config(overrides), tmp_path)
    assert record.history.val_recall_epochs == [2, 3]
    best = record.at_best_val
    assert (best.epoch, best.val_recall) == max(
        zip([2, 3], record.history.val_recall, strict=True), key=lambda e: (e[1], -e[0])
    )
    saved = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=False)
    assert len(saved["cifar_cnn"]["history"]["train_loss"]) == best.epoch


def test_records_without_at_best_val_read_as_none_and_a_bad_one_is_named(tmp_path):
    record = fake_record(val_recall=0.5, epochs=2)
    path = tmp_path / "metrics.json"
    write_record(path, record)
    data = json.loads(path.read_text())
    assert data["at_best_val"] is None
    del data["at_best_val"]  # as written before the field existed
    path.write_text(json.dumps(data))
    assert read_record(path, RunRecord) == record
    with_best = replace(record, at_best_val=AtBestVal(epoch=1, val_recall=0.5, test=record.test))
    write_record(path, with_best)
    assert read_record(path, RunRecord) == with_best
    data = json.loads(path.read_text())
    data["at_best_val"]["epoch"] = 0
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match=r"field at_best_val.epoch: 0 is outside \[1, inf\]"):
        read_record(path, RunRecord)


def test_a_scheduled_step_that_logs_its_rate_does_not_wait_for_the_host(tmp_path, monkeypatch):
    from test_gpu_path import SyncWindow  # the project's host-synchronisation counter

    # SGD: AdamW's own step reads its step counter with .item(), a tensor it keeps on the
    # CPU (unless capturable or fused), which this CPU-only counter cannot tell apart.
    window = SyncWindow(epoch=1, first=2, last=6, monkeypatch=monkeypatch)
    overrides = [*FAST, "scheduler=onecycle", "loss.label_smoothing=0.1", "logger=many",
                 "trainer.log_every_n_steps=1", "data.synthetic_test_size=50"]  # fmt: skip
    train(config(overrides), tmp_path, callbacks=[window])
    assert window.steps == 5, "the window of steps was not reached"
    assert window.mode.found == [], "\n".join(window.mode.found)
