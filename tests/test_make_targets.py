"""Every make target runs, each in a quick mode (tiny data, a few steps), so that an import or
argument error in a target or a benchmark script fails the suite, not the user.

test_docs.py checks that `make -n` accepts every make command the docs show; here each target
really runs, except those in NOT_RUN (each with its reason). make is called with `-o` on the
install stamps: the suite runs inside the installed environment, which must not be rebuilt
from under it.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from helpers import MAKE, REPO, make_folder

# Every run and sweep here: synthetic data, a few batches, one epoch, no progress bar.
TINY = ("data.source=synthetic data.synthetic_train_size=256 data.synthetic_test_size=50 "
        "trainer.max_epochs=1 trainer.accelerator=cpu trainer.gradient_clip_val=1.0 "
        "compute.threads=1 progress_bar_refresh=0 logger=csv")  # fmt: skip
NOT_RUN = {
    "install": "builds .venv, the environment this suite runs in (make test has just built it)",
    "install-search": "the same, with the search's extra (make test depends on it)",
    "test": "the suite itself",
    "test-fast": "a part of the suite itself",
    "sweep": "the training grid of make study, which runs here (the same GRID command)",
}
# beyond: tests/test_rows.py runs it on a throwaway row; dashboard and bench-pruning:
# tests/test_search_storage.py and tests/test_search_pruning.py.
RUN = {"help", "lint", "study", "beyond", "report", "status", "search", "bench", "bench-grid",
       "bench-gpu", "bench-overhead", "bench-augment", "bench-cache-key", "tensorboard",
       "clean", "dashboard", "bench-pruning"}  # fmt: skip


def make(*args: str, cwd: Path = REPO, timeout: float = 600) -> str:
    """`make ARGS` in `cwd` (install stamps left alone); its output, which must end well."""
    assert shutil.which("make"), "make is needed to run the Makefile's targets"
    command = [*MAKE, *args]
    result = subprocess.run(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, f"{' '.join(args)}: exit {result.returncode}\n{result.stdout}"
    return result.stdout


def test_every_target_is_run_here_or_says_why_not():
    makefile = (REPO / "Makefile").read_text().replace("\\\n", " ")
    targets = set(re.search(r"^\.PHONY:(.*)$", makefile, flags=re.MULTILINE).group(1).split())
    assert targets == RUN | set(NOT_RUN), "add the target to RUN (and a test) or to NOT_RUN"


@pytest.mark.parametrize("target", sorted(NOT_RUN))
def test_a_target_not_run_here_still_parses(target):
    make("-n", target)


@pytest.mark.slow
def test_help_and_lint_run():
    assert "make status" in make("help")
    make("lint")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sweep = tmp_path_factory.mktemp("make") / "study"
    output = make("study", f"SWEEP_DIR={sweep}", f"ARGS={TINY}")
    assert f"sweep directory: {sweep}" in output
    return sweep


@pytest.mark.slow
def test_study_then_report_and_status(study):
    assert len(list(study.glob("*/metrics.json"))) == 10  # every published configuration
    assert (study / "report" / "results.md").is_file()
    (study / "report" / "results.md").unlink()
    assert "report:" in make("report", f"SWEEP={study}")
    assert (study / "report" / "results.md").is_file()
    status = make("status", f"SWEEP_DIR={study}")
    assert f"{study}: 10 jobs (10 finished)" in status
    assert "whole sweep: nothing left to run" in status


@pytest.mark.slow
def test_search(tmp_path):
    search = tmp_path / "search"
    make("search", f"SEARCH_DIR={search}", "TRIALS=1", "EPOCHS=1", "VAL_SIZE=50",
         "SEARCH_SEEDS=0", "JOBS=1", f"ARGS={TINY} hydra/launcher=basic")  # fmt: skip
    assert (search / "report" / "results.md").is_file()


@pytest.mark.slow
def test_bench_targets(tmp_path):
    out = tmp_path / "bench.json"
    output = make("bench", f"BENCH_ARGS=--quick --models default --steps 2 --warmup 1 "
                  f"--output {out}")  # fmt: skip
    assert out.is_file() and "start-up (CLI launch -> first training step done)" in output
    output = make("bench-overhead", "BENCH_ARGS=--rounds 1 --steps 2 --warmup 1")
    assert "Trainer path over the plain loop" in output
    make("bench-grid", "JOBS=1", f"BENCH_ARGS=--quick --modes seq --experiments default "
         f"--output {tmp_path / 'grid.json'}")  # fmt: skip
    assert (tmp_path / "grid.json").is_file()
    make("bench-gpu", f"BENCH_ARGS=--quick --jobs 1 --budget 30 --output {tmp_path / 'gpu.json'}")
    assert (tmp_path / "gpu.json").is_file()
    root = make_folder(tmp_path / "imgs", per_class=1)
    output = make("bench-cache-key", f"DATA_ROOT={root}", "BENCH_ARGS=--rounds 1 --decode")
    assert "20 files in" in output and "decode" in output
    output = make("bench-augment", f"BENCH_ARGS=--quick --output={tmp_path / 'augment.json'}")
    assert "on/off" in output and "CPU: " in output
    measured = json.loads((tmp_path / "augment.json").read_text())
    assert {run["mode"] for run in measured["runs"]} == {"off", "on"}
    assert all(len(run["epoch_seconds"]) == 2 for run in measured["runs"])
    assert measured["ratio_on_off"]["median"] > 0 and measured["machine"]["cpu"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_tensorboard_serves_until_stopped():
    port = free_port()
    command = [*MAKE, "tensorboard", f"TB_PORT={port}"]
    proc = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group: make and tensorboard stop together
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("localhost", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[0]
        socket.create_connection(("localhost", port), timeout=5).close()  # it serves
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=60)


def test_clean_removes_the_environment_and_caches_but_keeps_outputs_and_data(tmp_path):
    # In a copy of the Makefile: the real clean would remove the environment this suite uses.
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    for path in (".venv/bin", ".pytest_cache", ".ruff_cache", "outputs/runs", "data"):
        (tmp_path / path).mkdir(parents=True)
    make("clean", cwd=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Makefile", "data", "outputs"]
    assert (tmp_path / "outputs" / "runs").is_dir()
