"""The benchmarks' estimator (benchmarks/estimate.py): seconds per epoch from a job's own
epoch times, unaffected by its start-up, and the study scheduled longest first."""

import importlib.util
import sys

import pytest
from torch.utils.tensorboard import SummaryWriter

from helpers import REPO

_spec = importlib.util.spec_from_file_location("estimate", REPO / "benchmarks" / "estimate.py")
estimate = sys.modules["estimate"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(estimate)


def synthetic_job(startup: float, epoch: float, epochs: int, jitter: float = 0.0):
    """Epoch end times and wall time of a job with a fixed start-up cost and a per-epoch
    cost; the first epoch also pays a warm-up of 3 epochs, and each epoch +-jitter."""
    ends, t = [], 1_000.0 + startup + 3 * epoch
    for k in range(epochs):
        t += epoch + (jitter if k % 2 else -jitter)
        ends.append(t)
    final_test = 0.5
    return ends, ends[-1] + final_test - 1_000.0


@pytest.mark.parametrize("startup", [2.0, 40.0])
def test_seconds_per_epoch_do_not_depend_on_start_up(startup):
    ends, wall = synthetic_job(startup, epoch=1.5, epochs=5, jitter=0.01)
    timing = estimate.job_timing(ends, wall)
    assert timing.epoch_s == pytest.approx(1.5, abs=0.03)
    # start-up, warm-up and final test are the fixed cost
    assert timing.fixed_s == pytest.approx(startup + 3 * 1.5 + 0.5, abs=0.2)
    assert timing.seconds(300) == pytest.approx(timing.fixed_s + 300 * timing.epoch_s)


def test_one_epoch_is_not_enough():
    with pytest.raises(ValueError, match="at least 2 epochs"):
        estimate.job_timing([5.0], 6.0)


def test_longest_first_fills_the_slots():
    assert estimate.longest_first([5, 4, 3, 3, 3], slots=2) == 10  # {5,3}, {4,3,3}
    assert estimate.longest_first([5, 4, 3], slots=1) == 12
    assert estimate.longest_first([5, 4, 3], slots=8) == 5
    assert estimate.longest_first([], slots=2) == 0
    with pytest.raises(ValueError, match="slots"):
        estimate.longest_first([1.0], slots=0)


def test_the_study_is_every_configuration_times_seeds_longest_first():
    timings = {
        "slow": estimate.JobTiming(epoch_s=2.0, fixed_s=10.0),
        "fast": estimate.JobTiming(epoch_s=1.0, fixed_s=10.0),
    }
    # 3 seeds x (10 + 300 x 2) and 3 x (10 + 300 x 1) on 2 slots: 610+610+310 | 610+310+310
    assert estimate.study_seconds(timings, seeds=3, epochs=300, slots=2) == 1530
    assert estimate.study_seconds(timings, seeds=1, epochs=300, slots=1, scale=0.5) == 470


def test_configurations_not_measured_are_scaled_by_the_measured_slowdown():
    reference = {
        "a": estimate.JobTiming(epoch_s=1.0, fixed_s=5.0),
        "b": estimate.JobTiming(epoch_s=2.0, fixed_s=5.0),
        "c": estimate.JobTiming(epoch_s=4.0, fixed_s=5.0),
    }
    measured = {"a": estimate.JobTiming(epoch_s=3.0, fixed_s=9.0)}  # 3x slower with N jobs
    filled = estimate.fill_from_reference(measured, reference, ["a", "b", "c", "d"])
    assert filled["a"] == measured["a"]
    assert filled["b"] == estimate.JobTiming(epoch_s=6.0, fixed_s=9.0)
    assert filled["c"] == estimate.JobTiming(epoch_s=12.0, fixed_s=9.0)
    assert "d" not in filled  # in neither
    assert estimate.fill_from_reference(measured, {}, ["a", "b"]) == measured


def test_epoch_end_times_are_read_from_the_runs_tensorboard_events(tmp_path):
    writer = SummaryWriter(str(tmp_path / "tensorboard" / "version_0"))
    for epoch, wall in enumerate([100.0, 101.5, 103.0]):
        writer.add_scalar("train/loss", 2.0 - epoch / 10, epoch, walltime=wall)
        writer.add_scalar("test/recall", 0.1, epoch, walltime=wall - 0.2)
    writer.close()
    assert estimate.epoch_end_times(tmp_path) == [100.0, 101.5, 103.0]
