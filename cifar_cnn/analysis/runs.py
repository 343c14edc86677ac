"""The sweep model: the runs of a sweep, grouped into configurations, with their statistics.

Reads every job directory of one or more sweeps (metrics.json, failed.json, or neither),
groups the runs by configuration (the experiment and any other overrides, seeds pooled),
summarises each group's test recall over seeds and judges each ablation step against the
published one. cifar_cnn.analysis.tables writes it out; cifar_cnn.analysis.plots draws
it. Free of torch, Lightning and Hydra.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from cifar_cnn.analysis.stats import (
    Summary,
    Welch,
    decide,
    holm,
    pooled_sd,
    seeds_to_resolve,
    untestable,
    welch,
)
from cifar_cnn.analysis.text import data_text, joined, precision_text
from cifar_cnn.core.errors import UserError
from cifar_cnn.core.keys import splits_rows
from cifar_cnn.core.published import BY_NAME, STUDY_ORDER, PublishedRun
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


# --- statistics, grouping and verdicts ----------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """How one ablation step (a row vs its parent row) came out on rerun."""

    parent: str  # the parent row's label
    diff: float | None  # mean(row) - mean(parent)
    published_diff: float
    verdict: str
    test: Welch | None = None  # Welch's t test of `diff`; None below two seeds on a side
    p_holm: float | None = None  # the test's p-value, Holm-adjusted over the steps tested
    seeds_to_resolve: int | None = None  # seeds per side to resolve `published_diff` (t test)


@dataclass
class Row:
    """One configuration: the runs that share everything but the seed."""

    experiment: str | None
    extra: dict[str, str]  # defining overrides besides the experiment, not common to the sweep
    runs: list[Run] = field(default_factory=list)
    best: bool = False
    verdict: Verdict | None = None

    @property
    def label(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.extra.items())
        if self.experiment:
            return f"{self.experiment} ({extra})" if extra else self.experiment
        return extra or "base config"

    @property
    def published(self) -> PublishedRun | None:
        return BY_NAME.get(self.experiment or "")

    @property
    def finished(self) -> list[Run]:
        return [r for r in self.runs if r.status == "finished"]

    @property
    def recalls(self) -> list[float]:
        return [r.record.test.recall for r in self.finished]

    @property
    def summary(self) -> Summary:
        return Summary.of(self.recalls)

    def record_values(self, value: Callable[[RunRecord], object]) -> str:
        """The distinct values of `value(record)` among the finished runs, joined."""
        return joined(dict.fromkeys(value(r.record) for r in self.finished))


def judge(row: Row, parent: Row | None, published: PublishedRun) -> Verdict:
    """Compare a row with its parent by Welch's t test, on its own (`judge_family` adjusts the
    verdicts of several steps for multiplicity): holds, reversed, within noise, or cannot be
    judged."""
    published_diff = published.recall - BY_NAME[published.parent].recall
    if parent is None:
        return Verdict(published.parent, None, published_diff, "parent not in this sweep")
    mine, theirs = row.summary, parent.summary
    diff = mine.mean - theirs.mean if mine.n and theirs.n else None
    reason = untestable(mine, theirs, published_diff)
    if reason:
        return Verdict(parent.label, diff, published_diff, reason)
    test = welch(mine, theirs)
    seeds = seeds_to_resolve(published_diff, pooled_sd(mine, theirs))
    verdict = decide(diff, test.p_value, published_diff)
    return Verdict(parent.label, diff, published_diff, verdict, test, test.p_value, seeds)


def judge_family(rows: Sequence[Row]) -> None:
    """Decide the tested steps among `rows` together: Holm's step-down adjustment of their
    p-values keeps the chance of any false "holds" or "reversed" at ALPHA (family-wise)."""
    tested = [row for row in rows if row.verdict and row.verdict.test]
    adjusted = holm([row.verdict.test.p_value for row in tested])
    for row, p_holm in zip(tested, adjusted, strict=True):
        v = row.verdict
        row.verdict = replace(v, p_holm=p_holm, verdict=decide(v.diff, p_holm, v.published_diff))


def common_overrides(runs: Sequence[Run]) -> dict[str, str]:
    """Defining overrides that every run shares (shown once, not in every label)."""
    shared = set(runs[0].defining.items()) if runs else set()
    for run in runs[1:]:
        shared &= set(run.defining.items())
    return dict(sorted(shared))


def group_runs(runs: Sequence[Run]) -> list[Row]:
    """Rows in the study's order (then the order the sweep ran them), best row marked."""
    common = common_overrides(runs)
    rows: dict[tuple, Row] = {}
    for run in runs:
        extra = {
            k: v
            for k, v in sorted(run.defining.items())
            if k != "experiment" and common.get(k) != v
        }
        key = (run.experiment, tuple(extra.items()))
        rows.setdefault(key, Row(run.experiment, extra)).runs.append(run)
    for key, row in rows.items():
        published = row.published
        if published and published.parent:
            row.verdict = judge(row, rows.get((published.parent, key[1])), published)
    judge_family(list(rows.values()))

    def study_order(row: Row) -> int:
        return STUDY_ORDER.index(row.experiment) if row.experiment in STUDY_ORDER else 99

    ordered = sorted(rows.values(), key=study_order)  # stable: the sweep's order within a rank
    reported = [r for r in ordered if r.summary.n]
    if reported:
        max(reported, key=lambda r: r.summary.mean).best = True
    return ordered


def setup_notes(rows: Sequence[Row]) -> list[str]:
    """Warnings about a sweep that mixes epochs, data, devices or precisions, repeats seeds or
    lost runs."""
    runs = [run for row in rows for run in row.runs]
    finished = [r for r in runs if r.status == "finished"]
    notes = []
    for what, values, advice in (
        ("epoch counts", [f"{r.record.epochs} epochs" for r in finished],
         "Only rows with the same epoch count compare."),
        ("data sources or sizes", [data_text(r.record) for r in finished],
         "Only rows on the same data compare."),
        ("devices", [r.record.environment.device for r in finished],
         "Training times do not compare across devices."),
        ("precisions", [precision_text(r.record) for r in finished],
         "bf16 can change the recall as well as the time; compare rows of one precision."),
    ):  # fmt: skip
        counts = Counter(values)
        if len(counts) > 1:
            parts = ", ".join(f"{v} ({n} run{'s' * (n != 1)})" for v, n in counts.items())
            notes.append(f"This sweep mixes {what}: {parts}. {advice}")
    for row in rows:
        repeated = sorted(s for s, n in Counter(r.seed for r in row.finished).items() if n > 1)
        if repeated:
            notes.append(
                f"{row.label} has finished runs with the same seed ({repeated}): they are not "
                "independent samples, and its spread understates the seed-to-seed noise."
            )
    lost = Counter(r.status for r in runs if r.status != "finished")
    if lost:
        parts = " and ".join(f"{n} {status}" for status, n in lost.items())
        notes.append(
            f"{parts} run(s): see 'Failed, interrupted and unfinished runs'; they count in no mean."
        )
    return notes
