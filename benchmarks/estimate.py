"""Seconds per epoch from each job's own records, and the whole study's time from them.

A job's TensorBoard events hold the wall-clock time at which each epoch's training loss was
logged: the end of that epoch (its training, its evaluation and its checkpoint). The gaps
between consecutive ends are whole epochs in the steady state; the first epoch, which also
pays for warm-up (cuDNN's algorithm search, compilation, CUDA graphs), has no gap before it
and is left out. The median gap is the job's seconds per epoch, and its fixed cost (start-up,
the first epoch's warm-up, the final test) is its wall time less that many epochs. Whole-
process wall times, by contrast, are dominated by start-up jitter on a GPU.

The study's time is then the jobs' durations (fixed cost + epochs x seconds per epoch)
scheduled longest first onto the parallel slots (`longest_first`).
`read_jobs` reads every job of a sweep directory. Used by grid.py (`make bench-grid`) and
gpu.py (`make bench-gpu`); tested in tests/test_bench_estimator.py.
"""

from __future__ import annotations

import heapq
import itertools
import statistics
from dataclasses import dataclass
from pathlib import Path

EPOCH_TAG = "train/loss"  # logged once per epoch, when the epoch ends


@dataclass(frozen=True)
class JobTiming:
    """One job's steady seconds per epoch and its fixed cost, from its own records."""

    epoch_s: float
    fixed_s: float

    def seconds(self, epochs: int, scale: float = 1.0) -> float:
        """The job's duration for `epochs` epochs, each `scale` times the measured one."""
        return self.fixed_s + epochs * self.epoch_s * scale


def epoch_end_times(run_dir: Path) -> list[float]:
    """The wall-clock times (s since the epoch of the clock) at which each epoch of the run
    in `run_dir` ended, from its TensorBoard event files."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    times = []
    for path in sorted(run_dir.rglob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            if any(value.tag == EPOCH_TAG for value in event.summary.value):
                times.append(event.wall_time)
    return sorted(times)


def job_timing(epoch_ends: list[float], wall_s: float) -> JobTiming:
    """A job's timing from its epochs' end times and its wall time (`wall_s`, covering every
    epoch); it needs at least two epochs."""
    if len(epoch_ends) < 2:
        raise ValueError(
            f"{len(epoch_ends)} epoch end(s) recorded; the steady state needs at least 2 epochs"
        )
    gaps = [later - earlier for earlier, later in itertools.pairwise(epoch_ends)]
    epoch_s = statistics.median(gaps)
    return JobTiming(epoch_s=epoch_s, fixed_s=max(0.0, wall_s - len(epoch_ends) * epoch_s))


def read_jobs(sweep_dir: Path) -> list[dict]:
    """Every finished job of a sweep: its experiment, precision, device and timing."""
    from cifar_cnn.core.record import RunRecord, read_record
    from cifar_cnn.core.runfiles import METRICS_FILE

    jobs = []
    for path in sorted(sweep_dir.glob(f"*/{METRICS_FILE}")):
        record = read_record(path, RunRecord)
        timing = job_timing(epoch_end_times(path.parent), record.wall_seconds_this_process)
        jobs.append({
            "experiment": record.experiment, "epochs": record.history.epochs,
            "precision": record.environment.precision, "device": record.environment.device,
            "epoch_s": timing.epoch_s, "fixed_s": timing.fixed_s,
            "wall_s": record.wall_seconds_this_process, "threads": record.environment.threads,
            "test_recall": record.test.recall,
        })  # fmt: skip
    return jobs


def fill_from_reference(
    measured: dict[str, JobTiming], reference: dict[str, JobTiming], names: list[str]
) -> dict[str, JobTiming]:
    """`measured` plus the configurations of `names` it lacks, estimated as their `reference`
    seconds per epoch (e.g. one job at a time) times the median ratio measured / reference of
    the configurations both have, with the median measured fixed cost."""
    common = [n for n in measured if n in reference]
    if not common:
        return dict(measured)
    ratio = statistics.median(measured[n].epoch_s / reference[n].epoch_s for n in common)
    fixed = statistics.median(t.fixed_s for t in measured.values())
    missing = [n for n in names if n not in measured and n in reference]
    return {**measured, **{n: JobTiming(reference[n].epoch_s * ratio, fixed) for n in missing}}


def longest_first(durations: list[float], slots: int) -> float:
    """The wall time of jobs of these durations on `slots` parallel slots, started longest
    first, each as soon as a slot is free (as a pool of N sweep jobs runs them)."""
    if slots < 1:
        raise ValueError(f"slots={slots} must be at least 1")
    finish = [0.0] * min(slots, len(durations))
    for duration in sorted(durations, reverse=True):
        heapq.heappush(finish, heapq.heappop(finish) + duration)
    return max(finish, default=0.0)


def study_seconds(
    timings: dict[str, JobTiming], seeds: int, epochs: int, slots: int, scale: float = 1.0
) -> float:
    """The study's wall time: every configuration of `timings` x `seeds` runs of `epochs`
    epochs (each `scale` times a measured epoch), longest first on `slots` slots."""
    durations = [t.seconds(epochs, scale) for t in timings.values() for _ in range(seeds)]
    return longest_first(durations, slots)
