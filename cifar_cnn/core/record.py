"""A run's record: the typed contents of `metrics.json` (a finished training run) and
`eval.json` (a checkpoint evaluated) and `failed.json` (a run that stopped), and the one
checked reader for all three.

Training fills a `History` epoch by epoch (checkpoints carry it whole), tests once into a
`TestResults`, and writes a `RunRecord`; evaluation writes an `EvalRecord`. The report, the
figures and the search read these records' attributes. `read_record` checks every field's
type and range: a missing, mistyped or out-of-range field is a `RecordError` naming the file
and the field, and callers count such a run as unfinished, so rerunning redoes it.
Free of torch, Lightning and Hydra.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cifar_cnn.core.errors import UserError
from cifar_cnn.core.runfiles import write_json

FORMAT = 2  # the layout of metrics.json and eval.json; 1 was the flat layout before records
UNIT = {"range": (0.0, 1.0)}  # recalls and accuracies
NON_NEGATIVE = {"range": (0, math.inf)}


class RecordError(UserError):
    """A results file that is missing, truncated or holds an invalid field."""


class NewerRecord(RecordError):
    """A results file of a format newer than this version reads: not damaged, so it is never
    rewritten; a newer cifar_cnn reads it."""


@dataclass
class History:
    """Per-epoch curves: the mean training loss of every epoch, and the recall of every
    evaluation (on the test set, or with `data.val_size` on the validation split) with the
    epoch it followed."""

    train_loss: list[float] = field(default_factory=list)
    test_recall: list[float] = field(default_factory=list, metadata=UNIT)
    test_recall_epochs: list[int] = field(default_factory=list, metadata=NON_NEGATIVE)
    val_recall: list[float] = field(default_factory=list, metadata=UNIT)
    val_recall_epochs: list[int] = field(default_factory=list, metadata=NON_NEGATIVE)
    train_seconds: float = field(default=0.0, metadata=NON_NEGATIVE)  # evaluation excluded

    @property
    def epochs(self) -> int:
        """The epochs trained so far."""
        return len(self.train_loss)


@dataclass(frozen=True)
class TestResults:
    """The test set's macro recall, accuracy, per-class recall and confusion matrix (rows:
    true class, columns: predicted class)."""

    recall: float = field(metadata=UNIT)
    accuracy: float = field(metadata=UNIT)
    recall_per_class: dict[str, float] = field(metadata=UNIT)
    confusion_matrix: list[list[int]] = field(metadata=NON_NEGATIVE)


@dataclass(frozen=True)
class AtBestVal:
    """With `data.val_size`: the epoch of the best validation recall (the first of equals),
    that recall, and the test results of that epoch's checkpoint (checkpoints/best.ckpt).
    Selected on validation only, never on test."""

    epoch: int = field(metadata={"range": (1, math.inf)})
    val_recall: float = field(metadata=UNIT)
    test: TestResults


def best_validation(history: History) -> tuple[int, float] | None:
    """The epoch of the best validation recall so far (the first of equals) and that recall;
    None without validation."""
    if not history.val_recall:
        return None
    recall = max(history.val_recall)
    return history.val_recall_epochs[history.val_recall.index(recall)], recall


@dataclass(frozen=True)
class DataSummary:
    """Where the images came from and how many each split had."""

    source: str
    test_size: int = field(metadata=NON_NEGATIVE)
    train_size: int | None = field(default=None, metadata=NON_NEGATIVE)  # None in eval.json
    val_size: int | None = field(default=None, metadata=NON_NEGATIVE)  # with data.val_size
    root: str | None = None  # the data folder (eval.json; None for synthetic data)


@dataclass(frozen=True)
class Environment:
    """What a reader needs to reproduce the numbers: device, precision, threads, package
    versions (and CUDA's when used) and the project's git commit when run from a checkout."""

    device: str
    precision: str  # 32-true (the study's fp32), bf16-mixed, ...
    tf32: bool  # whether TF32 matmuls and convolutions were allowed (GPU only)
    threads: int = field(metadata=NON_NEGATIVE)
    versions: dict[str, str]
    commit: str | None = None  # with "-dirty" when the checkout had uncommitted changes


@dataclass(frozen=True)
class RunRecord:
    """A finished training run: `metrics.json`."""

    experiment: str | None
    overrides: list[str]
    seed: int
    params: int = field(metadata=NON_NEGATIVE)
    history: History
    test: TestResults
    data: DataSummary
    environment: Environment
    wall_seconds_this_process: float = field(metadata=NON_NEGATIVE)
    config: dict[str, Any]  # the resolved run configuration
    # Stopped early by a search's pruner after `epochs` epochs (hydra.sweeper.pruner): a final
    # result of its search trial, never continued.
    pruned: bool = False
    format: int = FORMAT
    # With data.val_size: the test results at the epoch of best validation recall (optional,
    # so records written before it read as None and FORMAT stays).
    at_best_val: AtBestVal | None = None

    @property
    def epochs(self) -> int:
        return self.history.epochs

    @property
    def val_recall(self) -> float | None:
        """The validation recall after the last epoch (what a search optimises), if any."""
        return self.history.val_recall[-1] if self.history.val_recall else None


@dataclass(frozen=True)
class EvalRecord:
    """A checkpoint tested on a data set: `eval.json`."""

    ckpt_path: str
    epochs: int = field(metadata=NON_NEGATIVE)  # epochs trained when it was saved
    test: TestResults
    data: DataSummary
    environment: Environment
    config: dict[str, Any]  # the checkpoint's run configuration
    format: int = FORMAT


@dataclass(frozen=True)
class Failure:
    """A run that stopped before finishing: `failed.json`. `signal` names the signal that
    interrupted it (the run resumes when rerun); otherwise `error` says what went wrong."""

    error: str
    epoch: int | None = field(default=None, metadata=NON_NEGATIVE)
    overrides: list[str] = field(default_factory=list)
    experiment: str | None = None
    signal: str | None = None


Record = TypeVar("Record")


def write_record(path: Path, record: RunRecord | EvalRecord | Failure) -> None:
    """Write `record` as JSON atomically (readers see the old file or the new one)."""
    write_json(path, dataclasses.asdict(record))


def read_record(path: Path, cls: type[Record]) -> Record:
    """The record in `path`, every field checked; RecordError names the file and the field."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise RecordError(f"{path}: no such file") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecordError(f"{path}: not readable JSON ({e}); rerun the run to rewrite it") from e
    version = data.get("format") if isinstance(data, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT:
        raise NewerRecord(
            f"{path} was written by a newer cifar_cnn (record format {version}; this version "
            f"reads format {FORMAT}); upgrade cifar_cnn to read it"
        )
    try:
        return from_dict(cls, data)
    except _FieldError as e:
        raise RecordError(
            f"{path}: field {e.where or '(top level)'}: {e.problem}; rerun the run to rewrite it"
        ) from None


def from_dict(cls: type[Record], data: object) -> Record:
    """Build the dataclass `cls` from plain data, checking every field (`_FieldError`)."""
    return _check(cls, data, "", {})


class _FieldError(Exception):
    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}")
        self.where, self.problem = where, problem


def _check(kind: Any, value: object, where: str, meta: typing.Mapping) -> Any:
    """`value` checked against the type `kind` (and a field's `range` metadata)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check(inner, value, where, meta)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise _FieldError(where, f"expected an object, got {value!r:.60}")
        hints = typing.get_type_hints(kind)
        values = {}
        for f in dataclasses.fields(kind):
            path = f"{where}.{f.name}" if where else f.name
            if f.name not in value:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise _FieldError(path, "missing")
                continue
            values[f.name] = _check(hints[f.name], value[f.name], path, f.metadata)
        if values.get("format", FORMAT) != FORMAT:
            raise _FieldError(f"{where}format", f"format {values['format']}, expected {FORMAT}")
        return kind(**values)
    if origin is list:
        if not isinstance(value, list):
            raise _FieldError(where, f"expected a list, got {value!r:.60}")
        return [_check(args[0], v, f"{where}[{i}]", meta) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise _FieldError(where, f"expected an object, got {value!r:.60}")
        return {k: _check(args[1], v, f"{where}.{k}", meta) for k, v in value.items()}
    if kind is Any:
        return value
    return _scalar(kind, value, where, meta)


def _scalar(kind: type, value: object, where: str, meta: typing.Mapping) -> object:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise _FieldError(where, f"expected {kind.__name__}, got {value!r:.60}")
    if kind is float and not math.isfinite(value):
        raise _FieldError(where, f"expected a finite number, got {value}")
    low, high = meta.get("range", (-math.inf, math.inf))
    if kind in (int, float) and not low <= value <= high:
        raise _FieldError(where, f"{value} is outside [{low}, {high}]")
    return value
