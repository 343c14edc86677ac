"""The check of `hydra.sweeper.storage` before a search opens it (issue 23): a URL whose
database driver is missing, or an SQLite file whose folder cannot be made, is named with the
fix instead of ending in a traceback. Kept apart from the sweeper, which only calls it."""

from __future__ import annotations

from pathlib import Path

from hydra.errors import CompactHydraException

from cifar_cnn.core.errors import UserError
from cifar_cnn.core.runfiles import SQLITE_PREFIX


class StorageError(UserError, CompactHydraException):
    """A storage URL that cannot be opened; Hydra prints it without a traceback."""


def check_storage(storage: object) -> None:
    """StorageError when the Optuna storage URL `storage` cannot be opened: an SQLite file
    below a path that is a file, an unknown database, or one whose driver is not installed."""
    if not isinstance(storage, str):
        return  # None: an in-memory study
    if storage.startswith(SQLITE_PREFIX):
        folder = Path(storage[len(SQLITE_PREFIX) :]).parent
        blocking = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if blocking is not None and not blocking.is_dir():
            raise StorageError(
                f"hydra.sweeper.storage={storage}: {blocking} is a file, so the study's folder "
                f"{folder} cannot be made; point hydra.sweeper.storage (or hydra.sweep.dir) "
                "at a folder"
            )
        return
    import sqlalchemy
    import sqlalchemy.exc

    try:
        sqlalchemy.create_engine(storage).dispose()  # loads the driver; does not connect
    except ImportError as e:
        raise StorageError(
            f"hydra.sweeper.storage={storage} needs its database driver, which is not "
            f"installed ({e}); install the module it names into this environment, or use "
            f"{SQLITE_PREFIX}PATH"
        ) from None
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ValueError) as e:
        raise StorageError(
            f"hydra.sweeper.storage={storage} is not a database URL Optuna can open ({e}); "
            f"use e.g. {SQLITE_PREFIX}PATH or postgresql://USER@HOST/DB"
        ) from None
