"""Watching a long study: one log line per epoch, progress.json, and `cifar-cnn-status` on
sweeps of every kind (basic, joblib, a search's trials, SLURM's layout) while they run."""

import dataclasses
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from filelock import FileLock
from lightning.pytorch.callbacks import Callback

from cifar_cnn.analysis.status import held_locks, read_jobs, sweep_estimate
from cifar_cnn.core.keys import run_name
from cifar_cnn.core.progress import Progress, read_progress, write_progress
from cifar_cnn.core.record import Failure, write_record
from cifar_cnn.status import main, sweep_lines
from helpers import FAST, REPO, config, fake_record

LINE = r"epoch (\d+)/(\d+): loss \d+\.\d{4}(?:, test recall (\d\.\d{4}))?, \d+\.\d s"
needs_proc_locks = pytest.mark.skipif(held_locks() is None, reason="reads /proc/locks (Linux)")


# --- the training side: log lines and progress.json ---------------------------------------------


def test_a_run_logs_a_line_per_epoch_and_keeps_progress_json(tmp_path, caplog):
    from cifar_cnn.training.run import train

    bars = []

    class SeeBar(Callback):
        def on_train_start(self, trainer, pl_module):
            bars.append(trainer.progress_bar_callback)

    # A parallel job (2 at once): no progress bar although progress_bar_refresh asks for one,
    # and its lines carry its job number.
    cfg = config([*FAST, "trainer.max_epochs=3", "progress_bar_refresh=5"])
    with caplog.at_level(logging.INFO, logger="cifar_cnn"):
        record = train(cfg, tmp_path / "run", concurrent_jobs=2, job_number=3, callbacks=[SeeBar()])
    assert bars == [None]
    lines = [r.getMessage() for r in caplog.records if " epoch " in f" {r.getMessage()}"]
    assert len(lines) == 3 and all(line.startswith("[job 3] ") for line in lines), lines
    parsed = [re.search(LINE, line).groups() for line in lines]
    assert [(int(k), int(n)) for k, n, _ in parsed] == [(1, 3), (2, 3), (3, 3)]
    assert [float(r) for *_, r in parsed] == [round(r, 4) for r in record.history.test_recall]
    progress = read_progress(tmp_path / "run")
    assert (progress.epoch, progress.max_epochs, progress.recall_split) == (3, 3, "test")
    assert progress.recall == record.history.test_recall[-1] and progress.seconds_per_epoch > 0
    assert progress.pid == os.getpid() and progress.seconds_left == 0
    # Continued to 4 epochs: only the new epoch is logged, timed in this process.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cifar_cnn"):
        train(config([*FAST, "trainer.max_epochs=4"]), tmp_path / "run")
    lines = [r.getMessage() for r in caplog.records if re.match(LINE, r.getMessage())]
    assert [re.match(LINE, line).group(1, 2) for line in lines] == [("4", "4")]
    assert read_progress(tmp_path / "run").epoch == 4


def test_no_bar_in_parallel_jobs_nor_in_a_slurm_jobs_log_file(monkeypatch):
    from cifar_cnn.training.progress import bar_refresh

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert [bar_refresh(25, 1), bar_refresh(25, 2), bar_refresh(0, 1)] == [25, 0, 0]
    monkeypatch.setenv("SLURM_JOB_ID", "12345")
    assert bar_refresh(25, 1) == 0
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # srun --pty: a terminal
    assert bar_refresh(25, 1) == 25


# --- the status of a sweep, from files ----------------------------------------------------------


def progress(epoch=3, max_epochs=10, pace=10.0, ago=1.0, **fields) -> Progress:
    return Progress(epoch, max_epochs, pace, time.time() - ago, 1.0, 0.5, "test", epoch,
                    **{"host": socket.gethostname(), "pid": os.getpid(), **fields})  # fmt: skip


def make_job(sweep: Path, name: str, what: str, **fields) -> Path:
    run_dir = sweep / name
    run_dir.mkdir(parents=True)
    if what == "finished":
        (run_dir / "metrics.json").write_text(
            json.dumps(dataclasses.asdict(fake_record(0.61, epochs=10)))
        )
    elif what in ("failed", "interrupted"):
        signal = "SIGTERM" if what == "interrupted" else None
        write_record(run_dir / "failed.json", Failure("ValueError: boom", 4, signal=signal))
    if "progress" in fields:
        write_progress(run_dir, fields["progress"])
    return run_dir


def sweep_config(sweep: Path, task: list[str], **hydra: object) -> None:
    config = {"trainer": {"max_epochs": 10}, "hydra": {"overrides": {"task": task}, **hydra}}
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(config))


@needs_proc_locks
def test_each_state_of_a_job_and_the_sweeps_estimate(tmp_path):
    sweep = tmp_path / "sweep"
    names = [f"{i}{run_name([f'seed={i}'])}" for i in range(6)]
    make_job(sweep, names[0], "finished")
    make_job(sweep, names[1], "failed")
    make_job(sweep, names[2], "interrupted", progress=progress(epoch=4, ago=500))
    killed = make_job(sweep, names[3], "killed", progress=progress(epoch=5, ago=300))
    running = make_job(sweep, names[4], "running", progress=progress(epoch=3))
    sweep_config(sweep, ["seed=0,1,2,3,4,5"], launcher={"n_jobs": 2})
    lock = FileLock(running / ".lock")
    with lock:
        lines = sweep_lines(sweep)
    assert lines[0] == (
        f"{sweep}: 6 jobs (1 finished, 1 failed, 2 interrupted, 1 running, 1 not started)"
    )
    assert lines[1:7] == [
        f"  {names[0]}: finished: test recall 0.6100 after 10 epochs",
        f"  {names[1]}: failed: ValueError: boom in epoch 4",
        f"  {names[2]}: interrupted: by SIGTERM in epoch 4",
        f"  {names[3]}: interrupted: no process holds it and it left no record after epoch 5/10 "
        "(killed?)",
        f"  {names[4]}: running: epoch 3/10, 10.0 s per epoch, about 1 min 10 s left, "
        "test recall 0.5000 after epoch 3",
        f"  {names[5]}: not started",
    ]
    # 70 s left on the running job, 10 x 10 s for the one to start, 2 at a time: 85 s
    assert lines[7].startswith("whole sweep: about 1 min 25 s left: 1 running, 1 to start, 2 at")
    assert "(3 failed or interrupted job(s) not counted" in lines[7]
    # Without the lock the running job is seen as stopped; a checkpoint says it resumes.
    (killed / "checkpoints").mkdir()
    (killed / "checkpoints" / "last.ckpt").write_bytes(b"x")
    jobs = read_jobs([running, killed])
    assert [j.state for j in jobs] == ["interrupted", "interrupted"]
    assert jobs[0].detail.endswith("(rerunning the sweep resumes it)")


def test_a_job_on_another_machine_counts_as_running_while_its_progress_is_fresh(tmp_path):
    fresh = make_job(tmp_path, "0", "running", progress=progress(host="node042", ago=20))
    stale = make_job(tmp_path, "1", "running", progress=progress(host="node042", ago=3600))
    jobs = read_jobs([fresh, stale])
    assert [j.state for j in jobs] == ["running", "interrupted"]
    assert jobs[0].detail.endswith("on node042")


def test_the_estimate_waits_for_a_first_epoch_and_says_when_all_is_done():
    from cifar_cnn.analysis.status import Job

    assert sweep_estimate([Job("0", "not started")], 1, 10).startswith("no estimate until")
    assert sweep_estimate([Job("0", "finished")], 1, 10) == "nothing left to run"


def test_a_slurm_sweep_lists_its_jobs_and_those_not_started(tmp_path):
    # submitit's layout: the job directories as in any sweep, its own files in .submitit/
    sweep = tmp_path / "slurm"
    task = ["hydra/launcher=slurm", "experiment=default,filters", "seed=0,1"]
    jobs = [["experiment=default", "seed=0"], ["experiment=default", "seed=1"],
            ["experiment=filters", "seed=0"], ["experiment=filters", "seed=1"]]  # fmt: skip
    names = [f"{i}{run_name(['hydra/launcher=slurm', *job])}" for i, job in enumerate(jobs)]
    make_job(sweep, names[0], "finished")
    make_job(sweep, names[1], "running", progress=progress(host="gpu-node-7", ago=5))
    (sweep / ".submitit" / "12345_0").mkdir(parents=True)
    sweep_config(sweep, task, launcher={"array_parallelism": 10})
    lines = sweep_lines(sweep)
    assert lines[0] == f"{sweep}: 4 jobs (1 finished, 1 running, 2 not started)"
    assert [line.split(": ")[0].strip() for line in lines[1:5]] == names
    assert "on gpu-node-7" in lines[2] and lines[3].endswith(": not started")
    assert "2 to start, 3 at a time" in lines[5]


def test_a_glob_sweep_expands_like_hydra(tmp_path):
    sweep = tmp_path / "study"
    sweep.mkdir()
    sweep_config(sweep, ["experiment=glob(*)", "seed=0"])
    lines = sweep_lines(sweep)
    experiments = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
    assert lines[0] == f"{sweep}: 10 jobs (10 not started)"
    assert lines[1] == f"  0{run_name([f'experiment={experiments[0]}', 'seed=0'])}: not started"


def test_a_search_lists_its_trials_and_its_retraining_sweeps(tmp_path, capsys):
    search = tmp_path / "search"
    make_job(search, "0", "finished")
    make_job(search, "1", "running", progress=progress(host="elsewhere"))
    sweeper = {"_target_": "hydra_plugins.cifar_cnn_search.X.OptunaSweeper", "n_trials": 4}
    sweep_config(search, [], sweeper=sweeper)
    found = search / "retrain" / "found"
    make_job(found, "0_seed=0", "finished")
    sweep_config(found, ["seed=0,1"])
    main([str(search)])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{search}: 4 trials (1 finished, 1 running, 2 not started)"
    assert [line.split(":")[0].strip() for line in out[1:5]] == ["0", "1", "2", "3"]
    assert f"{found}: 2 jobs (1 finished, 1 not started)" in out


def test_no_sweep_gives_a_message_not_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "missing")])
    assert "missing: no such directory" in str(e.value.code)
    with pytest.raises(SystemExit) as e:
        main([])
    assert "run a sweep first" in str(e.value.code)


# --- a real sweep, watched while it runs --------------------------------------------------------


@pytest.mark.slow
@needs_proc_locks
def test_status_follows_a_parallel_sweep_from_running_to_finished(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *FAST, "seed=0,1",
            "trainer.max_epochs=4", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "cifar_cnn.train", *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    seen, deadline = [], time.monotonic() + 300  # generous: a loaded 1-CPU machine
    while proc.poll() is None and time.monotonic() < deadline:
        if (sweep / "multirun.yaml").is_file():
            seen += [line for line in sweep_lines(sweep) if ": running: epoch " in line]
        time.sleep(0.05)
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, output
    assert seen, "status never showed a job running at an epoch"
    assert re.search(r": running: epoch [1-3]/4, [\d.]+ s per epoch, about .* left", seen[0])
    lines = sweep_lines(sweep)
    assert (
        lines[0] == f"{sweep}: 2 jobs (2 finished)"
        and lines[-1] == "whole sweep: nothing left to run"
    )
    # Parallel jobs print per-epoch lines with their job number, not progress bars.
    for job in (0, 1):
        assert len(re.findall(rf"\[job {job}\] {LINE}", output)) == 4, output
        (run_dir,) = sweep.glob(f"{job}_*")
        assert len(re.findall(rf"\[job {job}\] {LINE}", (run_dir / "train.log").read_text())) == 4
    assert "it/s" not in output and "\r" not in output


def test_damaged_files_are_named_and_an_unexpandable_sweep_lists_what_exists(tmp_path):
    sweep = tmp_path / "sweep"
    (make_job(sweep, "0_seed=0", "none") / "progress.json").write_text('{"epoch": "three"')
    sweep_config(sweep, ["seed=0,1", "model.filters=choice(small"])  # not Hydra's grammar
    lines = sweep_lines(sweep)
    assert lines[0] == f"{sweep}: 1 jobs (1 unfinished)"
    assert "progress.json: not readable JSON" in lines[1]
    assert lines[2] == "  (jobs not started are not listed: multirun.yaml could not be expanded)"


def test_the_status_app_imports_neither_torch_nor_lightning():
    code = "import sys, cifar_cnn.status; print(sorted({'torch', 'lightning'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.stdout.strip() == "[]", result.stderr
