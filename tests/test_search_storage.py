"""Where a search's study lives (hydra.sweeper.storage): a real PostgreSQL server (pgserver,
started and stopped here, no network) and Optuna's journal file, each shared by two search
processes; creating a study while another process creates it; storages that cannot work,
refused naming the key with nothing lost; the live dashboard over HTTP."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from cifar_cnn.analysis.trials import read_search
from cifar_cnn.core.study_storage import (
    StorageError,
    check_journal,
    create_or_load_study,
    load_study,
)
from cifar_cnn.search import dashboard_command
from helpers import FAST, MAKE, REPO, clean_env, run_cli
from hydra_plugins.cifar_cnn_search.resumable_optuna_sweeper import SearchError, open_study

optuna = pytest.importorskip("optuna")
STUDY_NAME = "cifar_cnn_search"
TINY = [
    *(arg for arg in FAST if not arg.startswith("optimizer.lr=")),
    "trainer.max_epochs=1", "data.val_size=100", "hydra/launcher=basic",
]  # fmt: skip


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of the pgserver package on a Unix socket (no network): yields a
    function giving the URL of a new database; stopped and removed at the end."""
    pgserver = pytest.importorskip("pgserver")
    pytest.importorskip("psycopg")
    # A short path: a Unix socket's path is limited to about 100 bytes.
    root = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))
    server = pgserver.get_server(root / "data", cleanup_mode="stop")
    made = []

    def database() -> str:
        name = f"study{len(made)}"
        server.psql(f"CREATE DATABASE {name};")
        made.append(name)
        return server.get_uri(name)

    database.server = server
    try:
        yield database
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def _two_searches(sweep: Path, storage: str) -> list[str]:
    """Two search processes started together on one new study in `storage`."""
    args = ["-m", "hparams_search=optuna", *TINY, "hydra.sweeper.n_trials=4",
            "hydra.sweeper.n_jobs=1", f"hydra.sweep.dir={sweep}",
            f"hydra.sweeper.storage='{storage}'"]  # fmt: skip
    command = [sys.executable, "-m", "cifar_cnn.train", *args]
    processes = [
        subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env()
        )  # fmt: skip
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0].decode() for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    return outputs


def _check_shared(sweep: Path, storage: str) -> None:
    """What the SQLite shared-study test checks: every trial in its own directory with its
    value, none lost, the total reached; and the report reads the study from `storage`."""
    trials = load_study(storage, STUDY_NAME).get_trials()
    complete = {t.number: t.value for t in trials if t.state.name == "COMPLETE"}
    assert len(complete) >= 4
    search = read_search(sweep)
    scores = {t.number: t.score("val_recall") for t in search.trials}
    assert set(scores) == {t.number for t in trials}  # a directory for every trial
    assert {n: scores[n] for n in complete} == pytest.approx(complete)
    assert search.study_states is not None and search.study_states["COMPLETE"] == len(complete)
    saved = yaml.safe_load((sweep / "multirun.yaml").read_text())["hydra"]["sweeper"]
    assert saved["storage"] == storage and not (sweep / "optuna.db").exists()


@pytest.mark.slow
def test_two_searches_share_one_study_through_a_real_postgresql_server(tmp_path, postgres):
    storage = postgres()
    _two_searches(tmp_path / "search", storage)
    _check_shared(tmp_path / "search", storage)


@pytest.mark.slow
def test_two_searches_share_one_study_through_a_journal_file(tmp_path):
    storage = str(tmp_path / "shared" / "optuna.journal")
    _two_searches(tmp_path / "search", storage)
    _check_shared(tmp_path / "search", storage)
    command = dashboard_command(tmp_path / "search", 8080, "127.0.0.1")
    assert command[1:] == [storage, "--port", "8080", "--host", "127.0.0.1"]


_CREATE = (
    "import sys, time; from cifar_cnn.core.study_storage import create_or_load_study as c\n"
    "start = float(sys.argv[2])\n"
    "while time.time() < start: time.sleep(0.005)\n"
    "c(sys.argv[1], 'raced', 'maximize').ask()\n"
)


def _race(storage: str, processes: int = 4) -> None:
    """`processes` processes create (or load) one new study at the same moment."""
    start = time.time() + 8  # after every process has imported Optuna
    running = [
        subprocess.Popen([sys.executable, "-c", _CREATE, storage, str(start)], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env())
        for _ in range(processes)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=300)[0].decode() for p in running]
    assert [p.returncode for p in running] == [0] * processes, outputs
    study = load_study(storage, "raced")
    assert len(study.trials) == processes  # one study, every process's trial in it


@pytest.mark.slow
def test_creating_a_study_is_safe_against_concurrent_creators(tmp_path, postgres):
    _race(f"sqlite:///{tmp_path / 'new' / 'optuna.db'}")
    _race(str(tmp_path / "optuna.journal"))
    _race(postgres())


def _study_with_a_trial(storage: str) -> None:
    study = create_or_load_study(storage, STUDY_NAME, "maximize")
    study.tell(study.ask(), 0.5)


def test_without_a_pruner_nothing_is_pruned(tmp_path):
    # Optuna's own default for pruner=None is the median pruner: the study and the trials'
    # workers get one that never prunes instead
    from cifar_cnn.core.study_storage import running_trial

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = create_or_load_study(storage, STUDY_NAME, "maximize", pruner=None)
    assert isinstance(study.pruner, optuna.pruners.NopPruner)
    for value in (0.9,) * 5:  # past the median pruner's 5 start-up trials
        trial = study.ask()
        trial.report(value, 1)
        study.tell(trial, value)
    worker = running_trial(storage, STUDY_NAME, study.ask().number, pruner=None)
    worker.report(0.0, 1)  # far below the others: a median pruner would stop it
    assert not worker.should_prune()


def test_a_file_that_is_not_a_journal_is_refused_and_left_alone(tmp_path):
    sqlite_file = tmp_path / "optuna.db"
    _study_with_a_trial(f"sqlite:///{sqlite_file}")
    before = sqlite_file.read_bytes()
    with pytest.raises(SearchError, match=r"hydra.sweeper.storage=.*optuna.db is not an Optuna "
                       r"journal file \(an SQLite study is named by a URL: "
                       r"hydra.sweeper.storage=sqlite:///"):  # fmt: skip
        open_study(str(sqlite_file), STUDY_NAME, "maximize", None)
    assert sqlite_file.read_bytes() == before
    (tmp_path / "notes.txt").write_text("my notes\n")
    with pytest.raises(StorageError, match="notes.txt is not an Optuna journal file"):
        check_journal(tmp_path / "notes.txt")
    assert (tmp_path / "notes.txt").read_text() == "my notes\n"
    with pytest.raises(StorageError, match="is a directory; name a journal file in it"):
        check_journal(tmp_path)
    journal = tmp_path / "optuna.journal"
    _study_with_a_trial(str(journal))  # a real journal opens again, its trial kept
    check_journal(journal)
    assert [t.value for t in load_study(str(journal), STUDY_NAME).trials] == [0.5]


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ("postgresql://postgres@/db?host=/nonexistent/socket/dir",
         "the database cannot be reached .*check the host, port"),
        ("postgresql://postgres@127.0.0.1:1/db", "the database cannot be reached"),
        ("postgresql+pg8000://postgres@localhost/db",
         r"the database driver is not installed \(no module pg8000\); pip install pg8000"),
    ],
)  # fmt: skip
def test_a_database_that_cannot_be_used_is_refused_naming_the_key(storage, message):
    started = time.perf_counter()
    with pytest.raises(
        SearchError, match=re.escape(f"hydra.sweeper.storage={storage}: ") + message
    ):
        open_study(storage, STUDY_NAME, "maximize", None)
    assert time.perf_counter() - started < 30  # at once, not after retries


def test_a_wrong_password_is_refused_and_the_study_keeps_its_trials(postgres):
    storage = postgres()
    _study_with_a_trial(storage)
    server = postgres.server
    server.psql("CREATE ROLE alice LOGIN PASSWORD 'right';")
    hba = Path(server.pgdata) / "pg_hba.conf"
    hba.write_text("local all alice scram-sha-256\n" + hba.read_text())
    server.psql("SELECT pg_reload_conf();")
    wrong = storage.replace("postgres:@", "alice:wrong@").replace(
        "postgresql://postgres@", "postgresql://alice:wrong@"
    )
    assert "alice:wrong@" in wrong
    with pytest.raises(SearchError, match="refused the user or password .*correct them"):
        open_study(wrong, STUDY_NAME, "maximize", None)
    assert [t.value for t in optuna.load_study(study_name=STUDY_NAME, storage=storage).trials] == [
        0.5
    ]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["journal", "database"])
def test_a_storage_that_cannot_work_stops_the_cli_without_a_traceback(tmp_path, kind):
    if kind == "journal":
        bad = tmp_path / "garbage.journal"
        bad.write_bytes(b"\x00\x01 not json\n")
        storage, message = str(bad), "is not an Optuna journal file"
    else:
        storage, message = "postgresql://postgres@127.0.0.1:1/db", "cannot be reached"
    sweep = tmp_path / "search"
    result = run_cli(["-m", "hparams_search=optuna", *TINY, f"hydra.sweep.dir={sweep}",
                      f"hydra.sweeper.storage='{storage}'"], check=False)  # fmt: skip
    assert (
        result.returncode != 0
        and message in result.stdout
        and "hydra.sweeper.storage=" in (result.stdout)
    )
    assert "Traceback" not in result.stdout and not (sweep / "multirun.yaml").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_the_dashboard_serves_a_finished_study_over_http(tmp_path):
    pytest.importorskip("optuna_dashboard")
    sweep = tmp_path / "search"
    sweep.mkdir()
    study = create_or_load_study(f"sqlite:///{sweep / 'optuna.db'}", STUDY_NAME, "maximize")
    for value in (0.3, 0.6):
        trial = study.ask()
        trial.report(value / 2, 1)
        study.tell(trial, value)
    sweeper = {"study_name": STUDY_NAME, "storage": "sqlite:///${hydra.sweep.dir}/optuna.db"}
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"sweeper": sweeper}}))
    port = _free_port()
    server = subprocess.Popen(
        [*MAKE, "dashboard", f"SEARCH_DIR={sweep}", f"DASHBOARD_PORT={port}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env(),
        start_new_session=True,  # its own process group: make and the server stop together
    )  # fmt: skip
    try:
        deadline, studies = time.time() + 120, None
        while studies is None and time.time() < deadline and server.poll() is None:
            try:
                studies = _get(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
            except OSError:
                time.sleep(0.5)
        assert studies is not None, server.stdout.read1().decode() if server.poll() else "no answer"
        (served,) = [s for s in studies if s["study_name"] == STUDY_NAME]
        trials = _get(f"http://127.0.0.1:{port}/api/studies/{served['study_id']}")["trials"]
        assert [(t["number"], t["state"], t["values"]) for t in trials] == [
            (0, "Complete", [0.3]), (1, "Complete", [0.6])
        ]  # fmt: skip
        assert trials[1]["intermediate_values"] == [{"step": 1, "value": 0.3}]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert server.returncode is not None


def test_the_dashboard_refuses_a_directory_without_a_study(tmp_path):
    from cifar_cnn.core.errors import UserError

    with pytest.raises(UserError, match="no study found"):
        dashboard_command(tmp_path, 8080, "127.0.0.1")
