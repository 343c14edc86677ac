"""What each job of a sweep is doing now, and how long the sweep has left (`cifar-cnn-status`).

Reads what the runs write: metrics.json (finished), failed.json (failed or interrupted),
progress.json (the epoch reached and the pace, rewritten after every epoch), and whether a
process holds the run directory's lock. That is read from /proc/locks, never by taking the
lock, so that watching a sweep can never make one of its jobs find its directory in use. A
lock held on another machine (SLURM on a shared file system) is not listed there; a job whose
progress.json comes from another machine and is fresh counts as running there.
Free of torch, Lightning and Hydra: it answers in a fraction of a second while a sweep runs.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from cifar_cnn.analysis.text import fmt_duration
from cifar_cnn.core.progress import Progress, read_progress
from cifar_cnn.core.record import Failure, RecordError, RunRecord, read_record
from cifar_cnn.core.runfiles import FAILED_FILE, LAST_CHECKPOINT, LOCK_FILE, METRICS_FILE

PROC_LOCKS = Path("/proc/locks")
# A progress.json from another machine counts as a running job while it is younger than this
# many epochs at its pace (plus a minute for evaluation and checkpoints).
FRESH_EPOCHS = 3

FINISHED, RUNNING, INTERRUPTED, FAILED = "finished", "running", "interrupted", "failed"
UNFINISHED, NOT_STARTED = "unfinished", "not started"


@dataclass
class Job:
    """One job of a sweep as it stands now."""

    name: str  # its directory name (or, not started, the name it will get)
    state: str  # finished, running, interrupted, failed, unfinished or not started
    detail: str = ""
    progress: Progress | None = None

    def line(self) -> str:
        return f"{self.name}: {self.state}{': ' if self.detail else ''}{self.detail}"


Locks = dict[tuple[int, int, int], int]  # (device major, minor, inode) -> the holder's pid


def held_locks(proc_locks: Path = PROC_LOCKS) -> Locks | None:
    """Every file lock held on this machine, and its holder; None where the kernel does not
    list them (not Linux)."""
    try:
        text = proc_locks.read_text()
    except OSError:
        return None
    held = {}
    for line in text.splitlines():
        words = line.split()
        for before, word in zip(words, words[1:], strict=False):
            parts = word.split(":")
            if len(parts) == 3 and parts[2].isdigit():
                try:
                    key = (int(parts[0], 16), int(parts[1], 16), int(parts[2]))
                    held[key] = int(before)
                except ValueError:
                    continue
    return held


def lock_holder(run_dir: Path, held: Locks | None) -> int | None:
    """The pid of the process on this machine that holds `run_dir`'s lock: 0 where the
    kernel does not say, None when no process here holds it (or locks are not listed)."""
    if held is None:
        return None
    try:
        st = (run_dir / LOCK_FILE).stat()
    except OSError:
        return None
    return held.get((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino))


def _running_elsewhere(progress: Progress | None, now: float, listed: bool) -> bool:
    """A fresh progress.json written on another machine (or where locks are not listed)."""
    if progress is None or (listed and progress.host == socket.gethostname()):
        return False
    return now - progress.updated < FRESH_EPOCHS * progress.seconds_per_epoch + 60


def _progress_text(p: Progress) -> str:
    text = (
        f"epoch {p.epoch}/{p.max_epochs}, {fmt_duration(p.seconds_per_epoch)} per epoch, "
        f"about {fmt_duration(p.seconds_left)} left"
    )
    if p.recall is not None:
        text += f", {p.recall_split} recall {p.recall:.4f} after epoch {p.recall_epoch}"
    return text


def read_job(run_dir: Path, held: Locks | None, now: float) -> Job:
    """The state of the job in `run_dir` (see the module docstring)."""
    name = run_dir.name
    try:
        progress = read_progress(run_dir)
        problem = ""
    except RecordError as e:
        progress, problem = None, f" ({e})"
    holder = lock_holder(run_dir, held)
    if holder is not None or _running_elsewhere(progress, now, held is not None):
        where = "" if holder is not None else f" on {progress.host}"
        if progress is None or holder not in (None, 0, progress.pid):  # an earlier attempt's
            return Job(name, RUNNING, "starting (no epoch finished yet in this attempt)")
        return Job(name, RUNNING, _progress_text(progress) + where, progress)
    if (run_dir / METRICS_FILE).exists():
        try:
            record = read_record(run_dir / METRICS_FILE, RunRecord)
        except RecordError as e:
            return Job(name, UNFINISHED, f"{e}", progress)
        held_out = record.val_recall
        return Job(
            name,
            FINISHED,
            f"test recall {record.test.recall:.4f}"
            + ("" if held_out is None else f", validation recall {held_out:.4f}")
            + f" after {record.epochs} epochs",
            progress,
        )
    resumes = (
        f"; {LAST_CHECKPOINT} exists (rerunning the sweep resumes it)"
        if (run_dir / LAST_CHECKPOINT).is_file()
        else ""
    )
    if (run_dir / FAILED_FILE).exists():
        try:
            failure = read_record(run_dir / FAILED_FILE, Failure)
        except RecordError as e:
            return Job(name, FAILED, str(e), progress)
        epoch = f" in epoch {failure.epoch}" if failure.epoch else ""
        if failure.signal:
            return Job(name, INTERRUPTED, f"by {failure.signal}{epoch}{resumes}", progress)
        return Job(name, FAILED, f"{failure.error}{epoch}", progress)
    if progress is not None:
        return Job(
            name,
            INTERRUPTED,
            f"no process holds it and it left no record after epoch {progress.epoch}/"
            f"{progress.max_epochs} (killed?){resumes}",
            progress,
        )
    return Job(
        name,
        UNFINISHED,
        f"no epoch finished and no process holds it (starting, or stopped before training)"
        f"{problem}{resumes}",
    )


def job_number(name: str) -> int | None:
    """The job number that starts a job directory's name (`3_experiment=...` -> 3)."""
    head = name.partition("_")[0]
    return int(head) if head.isdigit() else None


def read_jobs(
    run_dirs: list[Path], expected: dict[int, str] | None = None, now: float | None = None
) -> list[Job]:
    """Every job: those with a directory, and the `expected` ones (job number -> directory
    name) that have none yet, as not started; in job order."""
    now = time.time() if now is None else now
    held = held_locks()
    jobs = {run_dir.name: read_job(run_dir, held, now) for run_dir in run_dirs}
    numbers = {job_number(name) for name in jobs}
    for number, name in (expected or {}).items():
        if number not in numbers:
            jobs[name] = Job(name, NOT_STARTED)
    order = sorted(jobs, key=lambda n: (job_number(n) is None, job_number(n) or 0, n))
    return [jobs[n] for n in order]


def sweep_estimate(jobs: list[Job], width: int, epochs: int | None) -> str:
    """How long the running and not-started jobs have left, `width` jobs at a time, at the
    median pace (seconds per epoch) of the jobs that finished an epoch; `epochs`: a job's
    epochs where no job says."""
    running = [j for j in jobs if j.state == RUNNING]
    waiting = [j for j in jobs if j.state in (NOT_STARTED, UNFINISHED)]
    if not running and not waiting:
        return "nothing left to run"
    paces = [j.progress.seconds_per_epoch for j in jobs if j.progress and j.progress.epoch]
    epochs = next((j.progress.max_epochs for j in jobs if j.progress), epochs)
    if not paces or not epochs:
        return "no estimate until a job has finished an epoch"
    pace = statistics.median(paces)
    left = [j.progress.seconds_left if j.progress else epochs * pace for j in running]
    work = sum(left) + len(waiting) * epochs * pace
    at_once = max(1, min(width, len(running) + len(waiting)))
    seconds = max(max(left, default=0.0), work / at_once)
    ignored = sum(j.state in (INTERRUPTED, FAILED) for j in jobs)
    return (
        f"about {fmt_duration(seconds)} left: {len(running)} running, {len(waiting)} to start, "
        f"{at_once} at a time, {fmt_duration(pace)} per epoch"
        + (f" ({ignored} failed or interrupted job(s) not counted: they rerun only when the "
           "sweep is run again)" if ignored else "")
    )  # fmt: skip


def sweep_width(config: dict) -> int:
    """How many jobs the sweep's launcher runs at once, from its multirun.yaml: joblib's
    n_jobs (-1: every CPU), SLURM's array_parallelism, a search's trials per batch."""
    hydra = config.get("hydra") or {}
    launcher, sweeper = hydra.get("launcher") or {}, hydra.get("sweeper") or {}
    width = launcher.get("n_jobs") or launcher.get("array_parallelism") or 1
    if not isinstance(width, int):
        return 1
    if width < 0:
        width += (os.cpu_count() or 1) + 1
    batch = sweeper.get("n_jobs")
    if isinstance(batch, int) and batch > 0:
        width = min(width, batch)
    return max(1, width)
