"""Where a search's Optuna study lives (`hydra.sweeper.storage`), opened safely.

The storage is one of:

- an SQLite URL, `sqlite:///PATH` (the default: `SEARCH_DIR/optuna.db`), for one machine;
- another database URL, e.g. `postgresql://user:password@host/db` (driver: psycopg2), for
  several machines;
- a file path with no `://`, Optuna's journal file storage (JournalFileBackend), for several
  machines sharing a file system (NFS), where SQLite's locking cannot be trusted.

`open_storage` turns it into an Optuna storage and refuses, naming the key, what cannot work
(a database that cannot be reached or refuses the password, a URL whose driver is missing, a
file that is not a journal) before anything is written to it. `create_or_load_study` is safe
against another process creating the same study at the same moment. The sweeper, the trials'
workers (pruning), the report and the dashboard all open the study here. Optuna and
SQLAlchemy are imported inside the functions (the `search` extra); free of torch and Hydra.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from cifar_cnn.core.errors import UserError
from cifar_cnn.core.runfiles import SQLITE_PREFIX

KEY = "hydra.sweeper.storage"
SQLITE_TIMEOUT_S = 60  # how long a process waits for another's write to a shared SQLite file
CONNECT_TIMEOUT_S = 10  # how long to wait for a database server to answer
CREATE_ATTEMPTS = 8  # creating one study's tables from two machines at once may collide
CREATE_LOCK_TIMEOUT_S = 120
# The packages of the drivers SQLAlchemy imports (postgresql:// is psycopg 3 in SQLAlchemy
# 2.1, psycopg2 in 2.0; the search extra installs both).
INSTALL_DRIVER = {
    "psycopg": "pip install 'psycopg[binary]' (or pip install 'cifar_cnn[search]')",
    "psycopg2": "pip install psycopg2-binary (or pip install 'cifar_cnn[search]')",
    "MySQLdb": "pip install mysqlclient, or pip install pymysql and write mysql+pymysql://...",
}
# Errors a second process creating the same tables or study at the same moment can meet.
_RACES = ("already exists", "duplicate key", "unique constraint", "database is locked")
# What a server's refusal says: a wrong address or password is not worth retrying.
_UNREACHABLE = (
    "could not connect", "connection refused", "could not translate host",
    "no such file or directory", "timeout expired", "name or service not known",
)  # fmt: skip
_PASSWORD = ("password authentication failed", "no password supplied", "access denied")


# The sweeper passes each trial's number to its job as this environment variable, through
# `hydra.job.env_set` (a hydra.* key: it names no run, and the run directory stays the number).
TRIAL_ENV = "CIFAR_CNN_SEARCH_TRIAL"


class StorageError(UserError):
    """A storage that cannot hold or give back the search's study."""


@dataclass(frozen=True)
class PrunedTrial:
    """What a search trial's job returns when the pruner stopped it: its last reported value
    and the epoch it was reported at (the sweeper stores the trial as PRUNED)."""

    value: float
    epoch: int


def kind(storage: object) -> str | None:
    """'sqlite', 'rdb' (another database URL), 'journal' (a file path) or None (in memory)."""
    if not isinstance(storage, str) or not storage:
        return None
    if storage.startswith(SQLITE_PREFIX):
        return "sqlite"
    return "rdb" if "://" in storage else "journal"


def local_file(storage: object) -> Path | None:
    """The file an SQLite URL or a journal path names (relative: from the working
    directory); None for a database server or in memory."""
    found = kind(storage)
    if found == "sqlite":
        return Path(str(storage)[len(SQLITE_PREFIX) :])
    return Path(str(storage)) if found == "journal" else None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_journal(path: Path) -> None:
    """StorageError unless `path` is absent, empty or starts with an Optuna journal record."""
    if path.is_dir():
        raise StorageError(f"{KEY}={path} is a directory; name a journal file in it, e.g. "
                           f"{KEY}={path / 'optuna.journal'}")  # fmt: skip
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("rb") as f:
        head = f.read(1 << 16).split(b"\n", 1)[0]
    try:
        record = json.loads(head)
    except (ValueError, UnicodeDecodeError):
        record = None
    if not isinstance(record, dict) or "op_code" not in record:
        hint = (f" (an SQLite study is named by a URL: {KEY}={SQLITE_PREFIX}{path})"
                if head.startswith(b"SQLite format") else "")  # fmt: skip
        raise StorageError(
            f"{KEY}={path} is not an Optuna journal file{hint}; it was left as it is. Name "
            "another file (a new one starts a new study)"
        )


def _rdb_error(storage: str, error: BaseException) -> StorageError:
    """A StorageError naming the key and the likely fix for a database that failed."""
    text = _first_line(error)
    lowered = str(error).lower()
    if isinstance(error, ImportError):
        # Optuna re-raises the driver's ImportError with a message of its own
        missing = getattr(error.__cause__, "name", None) or getattr(error, "name", None)
        fix = INSTALL_DRIVER.get(missing, f"pip install {missing}" if missing else
                                 "install the database driver the URL names")  # fmt: skip
        return StorageError(f"{KEY}={storage}: the database driver is not installed (no "
                            f"module {missing or text}); {fix}")  # fmt: skip
    if any(p in lowered for p in _PASSWORD):
        return StorageError(f"{KEY}={storage}: the database refused the user or password "
                            f"({text}); correct them in the URL")  # fmt: skip
    if any(p in lowered for p in _UNREACHABLE):
        return StorageError(f"{KEY}={storage}: the database cannot be reached ({text}); "
                            "check the host, port and that the server runs")  # fmt: skip
    if storage.startswith(SQLITE_PREFIX):
        return StorageError(
            f"{local_file(storage)} is not a readable Optuna study ({type(error).__name__}: "
            f"{text}). A study of Optuna 2 or 3 is upgraded with `optuna storage upgrade "
            f"--storage {storage}`; otherwise it was left as it is: point {KEY} (or "
            "hydra.sweep.dir) at a new location to start a new study"
        )
    return StorageError(
        f"{KEY}={storage}: not a readable Optuna storage ({type(error).__name__}: {text}); "
        "check the URL and the database server (an older Optuna's study is upgraded with "
        f"`optuna storage upgrade --storage URL`)"
    )


def _is_race(error: BaseException) -> bool:
    return any(p in str(error).lower() for p in _RACES) or type(error).__name__ == "IntegrityError"


def _pruner(pruner: Any) -> Any:
    """`pruner`, or Optuna's pruner that never prunes for None (Optuna's own default for None
    is the median pruner)."""
    import optuna

    return optuna.pruners.NopPruner() if pruner is None else pruner


def _make_parent(storage: str, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"{KEY}={storage}: cannot make the folder {path.parent} "
                           f"({_first_line(e)}); name a storage in a folder that can be made"
                           ) from e  # fmt: skip


def open_storage(storage: str | None) -> Any:
    """The Optuna storage `storage` names (None: in memory); a StorageError naming the key
    when it cannot be opened. Nothing is written to an existing storage here."""
    import optuna

    found = kind(storage)
    if found is None:
        return None
    if found == "journal":
        path = Path(storage)
        check_journal(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = optuna.storages.journal.JournalFileBackend(str(path))
            return optuna.storages.JournalStorage(backend)
        except (OSError, ValueError, KeyError) as e:
            raise StorageError(f"{KEY}={storage}: cannot open the journal file ({_first_line(e)})"
                               "; name another file") from e  # fmt: skip
    import sqlalchemy.exc

    if found == "sqlite":
        _make_parent(storage, local_file(storage))
        connect_args: dict = {"timeout": SQLITE_TIMEOUT_S}
    else:
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if "postgres" in storage else {}
    for attempt in range(CREATE_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(storage, engine_kwargs={"connect_args": connect_args})
        except (sqlalchemy.exc.SQLAlchemyError, ImportError, RuntimeError) as e:
            if attempt < CREATE_ATTEMPTS - 1 and _is_race(e):
                time.sleep(0.5 + attempt)  # another process is creating the same tables
                continue
            raise _rdb_error(storage, e) from e
        except Exception as e:  # Optuna's and the drivers' own errors (an invalid URL, ...)
            raise _rdb_error(storage, e) from e
    raise AssertionError("unreachable")


def create_or_load_study(
    storage: str | None, study_name: str | None, direction: str, sampler: Any = None,
    pruner: Any = None,
) -> Any:  # fmt: skip
    """The study `study_name` in `storage`, created when new. Safe when another process
    creates it at the same moment: on a local file the creation is serialised by a lock
    file beside it; on a database server a collision is retried."""
    import optuna

    path = local_file(storage)
    lock = None
    if path is not None:
        _make_parent(storage, path)
        lock = FileLock(path.with_name(f".{path.name}.create.lock"))
    for attempt in range(CREATE_ATTEMPTS):
        try:
            if lock is not None:
                lock.acquire(timeout=CREATE_LOCK_TIMEOUT_S)
            try:
                return optuna.create_study(
                    storage=open_storage(storage), study_name=study_name, direction=direction,
                    sampler=sampler, pruner=_pruner(pruner), load_if_exists=True,
                )  # fmt: skip
            finally:
                if lock is not None:
                    lock.release()
        except StorageError:
            raise
        except Exception as e:
            if attempt < CREATE_ATTEMPTS - 1 and _is_race(e):
                time.sleep(0.5 + attempt)
                continue
            raise _rdb_error(str(storage), e) from e
    raise AssertionError("unreachable")


def load_study(storage: str, study_name: str | None, pruner: Any = None) -> Any:
    """The existing study `study_name` in `storage` (KeyError when it holds none of that
    name); a StorageError when the storage cannot be read."""
    import optuna

    opened = open_storage(storage)
    try:
        return optuna.load_study(study_name=study_name, storage=opened, pruner=_pruner(pruner))
    except (KeyError, ValueError):
        raise
    except Exception as e:
        raise _rdb_error(storage, e) from e


def running_trial(storage: str, study_name: str | None, number: int, pruner: Any = None) -> Any:
    """The running trial `number` of the study, as an `optuna.Trial` a worker process reports
    to (`report`, `should_prune`); a StorageError when the study or the trial is not there."""
    import optuna

    try:
        study = load_study(storage, study_name, pruner)
    except (KeyError, ValueError) as e:
        raise StorageError(f"{KEY}={storage}: no study {study_name!r} to report to ({e})") from e
    try:
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    except KeyError as e:
        raise StorageError(f"study {study_name!r} in {storage} has no trial {number}") from e
    return optuna.Trial(study, trial_id)
