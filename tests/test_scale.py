"""Running at scale: parallel sweep jobs (joblib, submitit's local executor) and the report
on their sweeps, the data cache shared by jobs that start together, one device per run, and
bf16 mixed precision."""

import json
import logging
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cifar_cnn.analysis.rows import group_runs, setup_notes
from cifar_cnn.analysis.runs import Run
from cifar_cnn.core.errors import ConfigError, TrainingDiverged
from cifar_cnn.core.record import RunRecord, read_record
from cifar_cnn.report import write_sweep_report
from cifar_cnn.training import runtime
from cifar_cnn.training.config_checks import validate_config
from cifar_cnn.training.data import CACHE_NAME, load_arrays
from cifar_cnn.training.run import train
from helpers import FAST, REPO, clean_env, config, fake_record, make_folder, run_cli

SWEEP = [*FAST, "seed=0,1", "trainer.max_epochs=1", "data.synthetic_train_size=256"]
LAUNCHERS = {
    # two jobs at once in joblib's worker processes; threads: the usable CPUs / 2
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    # submitit's local executor starts every job at once: one thread each
    "submitit_local": ["hydra/launcher=submitit_local", "compute.threads=1"],
}


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 2-job sweep (seeds 0 and 1) through each parallel launcher."""
    found = {}
    for name, launcher in LAUNCHERS.items():
        sweep_dir = tmp_path_factory.mktemp(name) / "sweep"
        run_cli(["-m", *launcher, *SWEEP, f"hydra.sweep.dir={sweep_dir}"])
        found[name] = sweep_dir
    return found


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_parallel_launcher_writes_a_run_directory_per_job(sweeps, launcher):
    runs = sorted(sweeps[launcher].glob("*/metrics.json"))
    assert len(runs) == 2
    metrics = [read_record(path, RunRecord) for path in runs]
    assert sorted(m.seed for m in metrics) == [0, 1]
    assert all((path.parent / "train.log").is_file() for path in runs)  # Hydra's job log
    expected_threads = max(1, runtime.usable_cpus() // 2) if launcher == "joblib" else 1
    assert [m.environment.threads for m in metrics] == [expected_threads] * 2
    assert {m.environment.precision for m in metrics} == {"32-true"}


@pytest.mark.slow
def test_the_report_reads_the_sweeps_of_every_launcher(sweeps, tmp_path):
    for sweep_dir in sweeps.values():  # one report each (submitit's .submitit/ is no job)
        markdown = (write_sweep_report([sweep_dir]) / "results.md").read_text()
        assert "- runs: 2 (2 finished); seeds: 0, 1" in markdown
        assert "- precision: 32-true" in markdown
    pooled = write_sweep_report(list(sweeps.values()), tmp_path / "pooled")
    assert "- runs: 4 (4 finished)" in (pooled / "results.md").read_text()


@pytest.mark.slow
def test_a_job_that_fails_in_a_joblib_worker_records_it_and_the_other_job_finishes(tmp_path):
    sweep = tmp_path / "sweep"
    kept = [o for o in SWEEP if not o.startswith(("optimizer.lr", "trainer.gradient_clip", "seed"))]
    args = [*LAUNCHERS["joblib"], *kept, "trainer.gradient_clip_val=null", "optimizer.lr=0.01,1e4"]
    result = run_cli(["-m", *args, f"hydra.sweep.dir={sweep}"], check=False)
    assert result.returncode != 0  # the sweep reports the failure at the end
    assert "TrainingDiverged: training loss became" in result.stdout  # unpickled in the sweep
    ok, diverged = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert (ok / "metrics.json").is_file()
    failed = json.loads((diverged / "failed.json").read_text())
    assert failed["epoch"] == 1 and "optimizer.lr=10000.0" in failed["overrides"]
    assert "training loss became" in (diverged / "train.log").read_text()


def child_processes(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended meanwhile
        if parent == pid:
            children.append(int(stat.parent.name))
    return children


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc (Linux)")
def test_a_preempted_submitit_job_is_requeued_and_resumes_from_its_checkpoint(tmp_path):
    sweep, epochs = tmp_path / "sweep", 30
    proc = subprocess.Popen(
        [sys.executable, "-m", "cifar_cnn.train", "-m", "hydra/launcher=submitit_local",
         *FAST, f"trainer.max_epochs={epochs}", "compute.threads=1",
         f"hydra.sweep.dir={sweep}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env(),
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while not list(sweep.glob("*/checkpoints/last.ckpt")):  # epoch 1 is done
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    # The job's id is the pid of submitit's local controller, which runs the job as its child.
    (controller,) = [int(p.name) for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]
    (job,) = child_processes(controller)
    os.kill(job, signal.SIGUSR2)  # what SLURM sends before a time limit or a preemption
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, output
    (run_dir,) = [p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")]
    log = (run_dir / "train.log").read_text()  # Hydra's job log also holds submitit's lines
    assert "Requeued job" in log
    assert "resuming from" in log.partition("Requeued job")[2]  # in the same run directory
    metrics = read_record(run_dir / "metrics.json", RunRecord)
    assert metrics.history.test_recall_epochs == list(range(1, epochs + 1))


CHILD = """
import hashlib, json, logging, sys, time
from pathlib import Path
from cifar_cnn.training.data import load_arrays

messages = []
handler = logging.Handler()
handler.emit = lambda record: messages.append(record.getMessage())
logging.getLogger("cifar_cnn.training.data").addHandler(handler)
logging.getLogger("cifar_cnn.training.data").setLevel(logging.INFO)
root, ready, go = (Path(a) for a in sys.argv[1:4])
ready.touch()
while not go.exists():
    time.sleep(0.005)
arrays = load_arrays("folder", root)
digest = hashlib.sha256(b"".join(arrays[k].numpy().tobytes() for k in sorted(arrays)))
decoded = any(m.startswith("decoding") for m in messages)
print(json.dumps({"digest": digest.hexdigest(), "decoded": decoded}))
"""


@pytest.mark.slow
def test_jobs_that_start_together_on_an_empty_cache_decode_once_and_load_the_same(tmp_path):
    root = make_folder(tmp_path / "images", per_class=10)
    go = tmp_path / "go"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(root), str(tmp_path / f"ready{i}"), str(go)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
        assert time.monotonic() < deadline, "the loaders did not start"
        time.sleep(0.01)
    go.touch()  # both call load_arrays now
    results = [json.loads(child.communicate(timeout=120)[0]) for child in children]
    assert all(child.returncode == 0 for child in children)
    assert results[0]["digest"] == results[1]["digest"]
    assert sorted(r["decoded"] for r in results) == [False, True]  # one built, one waited
    assert (root / CACHE_NAME).is_file()
    assert not list(root.glob("*.tmp"))
    arrays = load_arrays("folder", root)  # what a later job reads from the cache
    assert len(arrays["train_y"]) == 100 and len(arrays["test_y"]) == 100


@pytest.mark.parametrize("devices", ["2", "[0,1]"])
def test_more_than_one_device_per_run_is_refused_pointing_to_parallel_jobs(devices, tmp_path):
    cfg = config([*FAST, f"trainer.devices={devices}"])
    with pytest.raises(ConfigError, match=r"trainer\.devices=.*hydra/launcher=joblib"):
        validate_config(cfg)
    with pytest.raises(ConfigError, match=r"trainer\.devices"):
        train(cfg, tmp_path)
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_a_bf16_run_on_cpu_finishes_and_records_its_precision(tmp_path):
    metrics = train(config([*FAST, "trainer.precision=bf16-mixed"]), tmp_path)
    assert metrics.environment.precision == "bf16-mixed"
    assert read_record(tmp_path / "metrics.json", RunRecord) == metrics
    assert all(math.isfinite(loss) for loss in metrics.history.train_loss)
    assert 0 <= metrics.test.recall <= 1


def test_emulated_bf16_is_warned_about_naming_the_setting(monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="cifar_cnn.training.runtime")
    monkeypatch.setattr(runtime, "native_cpu_bf16", lambda: False)
    runtime.check_precision("bf16-mixed", "cpu")
    assert "trainer.precision=bf16-mixed" in caplog.text and "emulated" in caplog.text
    caplog.clear()
    runtime.check_precision("32-true", "cpu")
    monkeypatch.setattr(runtime, "native_cpu_bf16", lambda: True)
    runtime.check_precision("bf16-mixed", "cpu")
    assert not caplog.text


def test_a_sweep_that_mixes_precisions_says_so():
    def run(precision: str, seed: int) -> Run:
        record = fake_record(precision=precision, seed=seed)
        return Run(Path(f"{seed}"), f"{seed}", "finished", "default", {}, seed, record)

    notes = setup_notes(group_runs([run("32-true", 0), run("bf16-mixed", 1)]))
    assert any("mixes precisions: 32-true (1 run), bf16-mixed (1 run)" in n for n in notes)


def test_a_failed_jobs_error_crosses_process_boundaries():
    """joblib's workers and submitit pickle a failed job's error back to the sweep."""
    error = pickle.loads(pickle.dumps(TrainingDiverged(3, math.nan)))
    assert isinstance(error, TrainingDiverged) and error.epoch == 3
    assert "in epoch 3" in str(error)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_study_runs_parallel_jobs_only_when_jobs_is_set():
    def dry_run(*args: str) -> str:
        cmd = ["make", "-n", "study", "SWEEP_DIR=sweep", *args]
        return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout

    assert "hydra/launcher=joblib hydra.launcher.n_jobs=3" in dry_run("JOBS=3")
    assert "hydra/launcher" not in dry_run()
