"""Reading sweeps: every job directory of one or more sweeps (metrics.json, failed.json, or
neither) as a Run, and the config directories the sweep composed its runs from.

cifar_cnn.analysis.rows groups the runs into rows and judges them. Free of torch, Lightning
and Hydra.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from cifar_cnn.core.errors import UserError
from cifar_cnn.core.experiments import CONFIG_DIR
from cifar_cnn.core.keys import splits_rows
from cifar_cnn.core.record import Failure, RecordError, RunRecord, read_record
from cifar_cnn.core.runfiles import (
    FAILED_FILE,
    HYDRA_DIR,
    LAST_CHECKPOINT,
    METRICS_FILE,
    RUN_MARKERS,
    SWEEP_CONFIG,
    TENSORBOARD_DIR,
)

DEFAULT_SWEEPS_ROOT = Path("outputs/multiruns")
REPORT_DIR = "report"


class ReportError(UserError):
    """A sweep directory that cannot be reported on."""


# --- reading runs -------------------------------------------------------------------------------


@dataclass
class Run:
    """One job directory of a sweep, finished or not."""

    path: Path
    name: str  # the directory name, prefixed by its sweep when several are pooled
    status: str  # "finished", "failed", "interrupted", "unfinished" or "pruned" (a search's)
    experiment: str | None
    overrides: dict[str, str]  # every override of the job, key -> value
    seed: int | None
    record: RunRecord | None = None  # a finished run's metrics.json
    detail: str = ""  # why a run did not finish, and how far it got

    @property
    def job(self) -> str:
        """The job number that starts the directory name (after the sweep name, if any)."""
        sweep, _, job_dir = self.name.rpartition("/")
        job = job_dir.partition("_")[0]
        return f"{sweep}/{job}" if sweep else job

    @property
    def defining(self) -> dict[str, str]:
        """The overrides that split report rows (core/keys.py: no seed, paths or display)."""
        return {k: v for k, v in self.overrides.items() if splits_rows(k)}


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """`["a.b=1", "+c=x"]` -> `{"a.b": "1", "c": "x"}` (Hydra's +/++/~ prefixes dropped)."""
    return {key.lstrip("+~"): value for key, _, value in (i.partition("=") for i in items)}


def overrides_from_dirname(name: str) -> list[str]:
    """The overrides of a job directory named `<job>_<k=v,k=v,...>` (Hydra's override_dirname).

    A comma splits two overrides only where a `key=` follows it, so list values such as
    `model.kernel_sizes=[7,5,3]` stay whole.
    """
    rest = name.partition("_")[2]
    return re.split(r",(?=[+~]*[\w.\-]+=)", rest) if rest else []


def _seed(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def tensorboard_progress(run_dir: Path) -> str:
    """How far an unfinished run got, from its TensorBoard events."""
    tb_dir = run_dir / TENSORBOARD_DIR
    if not any(tb_dir.glob("events.out.tfevents.*")):
        return "nothing logged"
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
        events.Reload()
        tags = events.Tags().get("scalars", [])
        losses = events.Scalars("train/loss") if "train/loss" in tags else []
        recalls = events.Scalars("test/recall") if "test/recall" in tags else []
    except Exception:  # a corrupt or half-written event file: report what the files say
        return "nothing logged"
    text = f"{len(losses)} epoch(s) logged"
    return text + (f", last test recall {recalls[-1].value:.4f}" if recalls else "")


def read_run(run_dir: Path, name: str) -> Run:
    """What one job directory holds: a valid metrics.json (finished), failed.json (failed or
    interrupted), or neither (unfinished: also when metrics.json is invalid)."""
    problem = ""
    if (run_dir / METRICS_FILE).exists():
        try:
            record = read_record(run_dir / METRICS_FILE, RunRecord)
        except RecordError as e:
            problem = f"{e} (counted as unfinished)"
        else:
            overrides = parse_overrides(record.overrides)
            experiment = record.experiment or overrides.get("experiment")
            # A search trial its pruner stopped: a final record, but not of a whole budget.
            status = "pruned" if record.pruned else "finished"
            detail = f"stopped by the search's pruner after {record.epochs} epochs" * record.pruned
            return Run(run_dir, name, status, experiment, overrides, record.seed, record, detail)

    failed = None
    if (run_dir / FAILED_FILE).exists():
        try:
            failed = read_record(run_dir / FAILED_FILE, Failure)
        except RecordError as e:
            problem = problem or str(e)
    hydra_overrides = run_dir / HYDRA_DIR / "overrides.yaml"
    if failed is not None:
        overrides = parse_overrides(failed.overrides)
    elif hydra_overrides.is_file():
        overrides = parse_overrides(yaml.safe_load(hydra_overrides.read_text()) or [])
    else:
        overrides = parse_overrides(overrides_from_dirname(run_dir.name))
    if failed is not None:
        status = "interrupted" if failed.signal else "failed"
        epoch = f" in epoch {failed.epoch}" if failed.epoch else ""
        detail = f"{failed.error}{epoch}"
    else:
        status = "unfinished"
        detail = problem or f"no {METRICS_FILE}: killed or still running"
    detail += f"; {tensorboard_progress(run_dir)}"
    if status in ("unfinished", "interrupted") and (run_dir / LAST_CHECKPOINT).is_file():
        detail += f"; {LAST_CHECKPOINT} exists (rerunning the sweep resumes it)"
    experiment = (failed.experiment if failed else None) or overrides.get("experiment")
    return Run(
        run_dir, name, status, experiment, overrides, _seed(overrides.get("seed")), None, detail
    )


def _job_order(path: Path) -> tuple[int, str]:
    head = path.name.partition("_")[0]
    return (int(head) if head.isdigit() else sys.maxsize, path.name)


def find_run_dirs(sweep_dir: Path) -> tuple[list[Path], list[str]]:
    """The job directories of a sweep in job order, and the names of subdirectories left out.

    In a Hydra sweep (it holds multirun.yaml) every subdirectory is a job, even an empty one
    (a job that has not written anything yet). Elsewhere, as in outputs/runs/, only the
    subdirectories that hold a run's files count.
    """
    if not sweep_dir.exists():
        raise ReportError(f"{sweep_dir}: no such directory")
    if not sweep_dir.is_dir():
        raise ReportError(f"{sweep_dir}: not a directory (pass a sweep directory)")
    if (sweep_dir / METRICS_FILE).exists() or (sweep_dir / FAILED_FILE).exists():
        raise ReportError(
            f"{sweep_dir} is a single run directory; pass the sweep directory that holds it "
            f"({sweep_dir.parent})"
        )
    subdirs = sorted(
        (
            p
            for p in sweep_dir.iterdir()
            if p.is_dir() and not p.name.startswith((".", "_")) and p.name != REPORT_DIR
        ),
        key=_job_order,
    )
    run_dirs = subdirs
    if not (sweep_dir / SWEEP_CONFIG).is_file():
        run_dirs = [p for p in subdirs if any((p / m).exists() for m in RUN_MARKERS)]
    if not run_dirs:
        raise ReportError(
            f"{sweep_dir} holds no runs: a sweep directory holds one directory per job "
            "(python -m cifar_cnn.train -m ... writes them; see `make sweep`)"
        )
    return run_dirs, [p.name for p in subdirs if p not in run_dirs]


def collect_runs(sweep_dirs: Sequence[Path]) -> tuple[list[Run], list[str]]:
    """Every run of the given sweeps, and notes on subdirectories that were left out."""
    runs, notes = [], []
    for sweep_dir in sweep_dirs:
        run_dirs, skipped = find_run_dirs(sweep_dir)
        for run_dir in run_dirs:
            name = run_dir.name if len(sweep_dirs) == 1 else f"{sweep_dir.name}/{run_dir.name}"
            runs.append(read_run(run_dir, name))
        if skipped:
            notes.append(
                f"{sweep_dir} is not a Hydra sweep (no multirun.yaml); {len(skipped)} "
                f"subdirectories without run files were left out: {', '.join(skipped)}."
            )
    return runs, notes


def newest_sweep(root: Path = DEFAULT_SWEEPS_ROOT) -> Path:
    """The newest sweep under `root`: the last by name (Hydra names sweeps by their start)."""
    if not root.is_dir():
        raise ReportError(
            f"no sweep given and {root} does not exist (in {Path.cwd()}); run a sweep first "
            "(make sweep) or pass its directory: python -m cifar_cnn.report SWEEP_DIR"
        )
    sweeps = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not sweeps:
        raise ReportError(f"no sweep given and {root} holds none; run `make sweep` first")
    return sweeps[-1]


def config_dirs(sweep_dirs: Sequence[Path]) -> list[Path]:
    """The config directories the sweeps' runs were composed from, in Hydra's search order
    (`hydra.runtime.config_sources` of multirun.yaml, else of each run's .hydra/hydra.yaml),
    those that still exist, then this install's conf/ (core/experiments.py)."""
    found: list[Path] = []
    for sweep_dir in sweep_dirs:
        files = [sweep_dir / SWEEP_CONFIG, *sorted(sweep_dir.glob(f"*/{HYDRA_DIR}/hydra.yaml"))]
        for path in files:
            try:
                hydra = (yaml.safe_load(path.read_text()) or {}).get("hydra") or {}
                sources = (hydra.get("runtime") or {}).get("config_sources") or []
            except (OSError, yaml.YAMLError, AttributeError):
                continue  # absent or unreadable: the next file, or this install's conf/
            for source in sources:
                if isinstance(source, dict) and source.get("schema") == "file":
                    found.append(Path(source.get("path", "")))
            if sources:
                break
    dirs = [d for d in dict.fromkeys([*found, CONFIG_DIR]) if d.is_dir()]
    return dirs or [CONFIG_DIR]
