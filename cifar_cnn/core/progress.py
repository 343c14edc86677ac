"""How far a training run has got: `progress.json`, rewritten atomically after every epoch.

Training writes it (cifar_cnn.training.progress); `cifar-cnn-status` reads it to say which
epoch a running job is at and how long it has left. Free of torch, Lightning and Hydra.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from cifar_cnn.core.record import NON_NEGATIVE, UNIT, read_record
from cifar_cnn.core.runfiles import PROGRESS_FILE, write_json


@dataclass(frozen=True)
class Progress:
    """A run's state after its latest epoch."""

    epoch: int = field(metadata=NON_NEGATIVE)  # epochs done
    max_epochs: int = field(metadata=NON_NEGATIVE)
    # Mean wall seconds of the epochs this process trained, evaluation and checkpoint included.
    seconds_per_epoch: float = field(metadata=NON_NEGATIVE)
    updated: float = field(metadata=NON_NEGATIVE)  # when it was written (Unix time)
    loss: float | None = None  # the epoch's mean training loss
    recall: float | None = field(default=None, metadata=UNIT)  # the latest evaluation's
    recall_split: str | None = None  # "test" or "val"
    recall_epoch: int | None = field(default=None, metadata=NON_NEGATIVE)
    host: str | None = None  # the machine training it (socket.gethostname())
    pid: int | None = None  # its process there

    @property
    def seconds_left(self) -> float:
        """The time the remaining epochs take at this run's pace so far."""
        return max(0, self.max_epochs - self.epoch) * self.seconds_per_epoch


def write_progress(run_dir: Path, progress: Progress) -> None:
    """Replace `run_dir/progress.json` atomically (a reader sees the old file or the new)."""
    write_json(run_dir / PROGRESS_FILE, dataclasses.asdict(progress))


def read_progress(run_dir: Path) -> Progress | None:
    """The run's progress.json, or None where there is none; RecordError when it is damaged."""
    path = run_dir / PROGRESS_FILE
    return read_record(path, Progress) if path.is_file() else None
