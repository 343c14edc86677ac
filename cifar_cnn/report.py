"""The study report: `python -m cifar_cnn.report [SWEEP_DIR ...]` (or `make report`).

Reads every run directory of a sweep (its `metrics.json`; `failed.json` or the TensorBoard
events for runs that did not finish), groups the runs by configuration (the experiment and
any other overrides, seeds pooled) and writes into `SWEEP_DIR/report/`:

- `results.md` and `results.csv`: one row per configuration in the study's order, with the
  mean test recall over seeds, its standard deviation and 95% interval, the published recall
  (cifar_cnn.published) and the difference, and a verdict per ablation step: does the change
  the study made move the recall by more than the seed-to-seed spread?
- PNG figures: training loss per configuration (one panel each), all loss curves overlaid,
  test recall per epoch overlaid, mean recall with error bars and the published values,
  per-class recall, and the confusion matrix of the best configuration.

Runs that failed or did not finish are listed as such; a sweep that mixes epoch counts or
data sources says so at the top of the report.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from cifar_cnn.data import CLASSES
from cifar_cnn.errors import UserError
from cifar_cnn.plots import confusion_matrix_figure
from cifar_cnn.published import (
    BEST,
    BY_NAME,
    CLAIMED_LARGEST_GAIN,
    EPOCHS,
    PUBLISHED,
    SOURCE,
    STUDY_ORDER,
    TRAIN_SIZE,
    PublishedRun,
)
from cifar_cnn.train import FAILED_FILE, LAST_CHECKPOINT, METRICS_FILE

DEFAULT_SWEEPS_ROOT = Path("outputs/multiruns")
REPORT_DIR = "report"
# Files a job directory may hold; a subdirectory with none of them is not a run.
RUN_MARKERS = (METRICS_FILE, FAILED_FILE, "checkpoints", "tensorboard", "train.log", ".hydra")
# Overrides that do not change what a run computes: they never split runs into groups.
NON_DEFINING_KEYS = frozenset(
    {
        "seed",
        "data.seed",
        "resume",
        "ckpt_path",
        "data.root",
        "data.download",
        "data.eval_batch_size",
        "progress_bar_refresh",
        "checkpoint_every_n_epochs",
    }
)
NON_DEFINING_PREFIXES = ("hydra.", "compute.")
# A step's effect counts as real when |difference of means| > NOISE_FACTOR x its standard error.
NOISE_FACTOR = 2.0
# Two-sided 95% quantiles of Student's t distribution, t(0.975, df).
T_975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
    9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
    17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064,
    25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000,
    120: 1.980,
}  # fmt: skip
T_975_LIMIT = 1.960  # df -> infinity

FIGURES = {
    "loss_curves.png": "Training loss per epoch, one panel per configuration (the study's "
    "figures 2-10); thin lines are seeds, the thick line their mean",
    "loss_overlay.png": "Mean training loss per epoch, all configurations",
    "recall_overlay.png": "Mean test recall per epoch, all configurations",
    "recall_bars.png": "Mean test recall with 95% intervals, seeds as dots, published values "
    "as red marks",
    "per_class_recall.png": "Test recall per class (mean over seeds)",
    "confusion_best.png": "Confusion matrix of the best configuration (summed over its seeds)",
}


class ReportError(UserError):
    """A sweep directory that cannot be reported on."""


# --- reading runs -----------------------------------------------------------------------------


@dataclass
class Run:
    """One job directory of a sweep, finished or not."""

    path: Path
    name: str  # shown in tables: the directory name (prefixed by its sweep when combining)
    status: str  # "finished", "failed" or "unfinished"
    experiment: str | None
    overrides: dict[str, str]  # every override of the job, key -> value
    seed: int | None
    metrics: dict | None = None
    detail: str = ""  # why a run did not finish, and how far it got

    @property
    def job(self) -> str:
        """The job number that starts the directory name (with the sweep name when combining)."""
        sweep, _, job_dir = self.name.rpartition("/")
        job = job_dir.partition("_")[0]
        return f"{sweep}/{job}" if sweep else job

    @property
    def defining(self) -> dict[str, str]:
        """The overrides that define the configuration (no seed, paths or display settings)."""
        return {
            k: v
            for k, v in self.overrides.items()
            if k not in NON_DEFINING_KEYS and not k.startswith(NON_DEFINING_PREFIXES)
        }


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """`["a.b=1", "+c=x"]` -> `{"a.b": "1", "c": "x"}` (Hydra's +/++/~ prefixes dropped)."""
    parsed = {}
    for item in items:
        key, _, value = item.partition("=")
        parsed[key.lstrip("+~")] = value
    return parsed


def overrides_from_dirname(name: str) -> list[str]:
    """The overrides of a job directory named `<job>_<k=v,k=v,...>` (Hydra's override_dirname).

    A comma splits two overrides only where a `key=` follows it, so list values such as
    `model.kernel_sizes=[7,5,3]` stay whole.
    """
    _, sep, rest = name.partition("_")
    if not sep or not rest:
        return []
    return re.split(r",(?=[+~]*[\w.\-]+=)", rest)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _seed(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def tensorboard_progress(run_dir: Path) -> dict[str, list[float]]:
    """Per-epoch training loss and test recall logged to TensorBoard (for unfinished runs)."""
    tb_dir = run_dir / "tensorboard"
    if not any(tb_dir.glob("events.out.tfevents.*")):
        return {}
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
        events.Reload()
        tags = set(events.Tags().get("scalars", []))
        return {
            tag: [s.value for s in events.Scalars(tag)]
            for tag in ("train/loss", "test/recall")
            if tag in tags
        }
    except Exception:  # a corrupt or half-written event file: report what the files say
        return {}


def _fill_defaults(metrics: dict) -> None:
    """Entries an older or hand-written metrics.json may lack, so that readers need no checks."""
    losses = metrics.setdefault("train_loss_per_epoch", [])
    recalls = metrics.setdefault("test_recall_per_epoch", [])
    metrics.setdefault("test_recall_epochs", list(range(1, len(recalls) + 1)))
    metrics.setdefault("epochs", len(losses))
    metrics.setdefault("test_recall_per_class", {})
    metrics.setdefault("confusion_matrix", None)
    metrics.setdefault("data", {})


def read_run(run_dir: Path, name: str) -> Run:
    """What one job directory holds: metrics.json, failed.json, or neither (unfinished)."""
    metrics = _read_json(run_dir / METRICS_FILE)
    if metrics is not None and "test_recall" in metrics:
        _fill_defaults(metrics)
        overrides = parse_overrides(metrics.get("overrides") or [])
        return Run(
            run_dir,
            name,
            "finished",
            metrics.get("experiment") or overrides.get("experiment"),
            overrides,
            _seed(metrics.get("seed", overrides.get("seed"))),
            metrics,
        )
    failed = _read_json(run_dir / FAILED_FILE)
    hydra_overrides = run_dir / ".hydra" / "overrides.yaml"
    if failed is not None and failed.get("overrides") is not None:
        items = failed["overrides"]
    elif hydra_overrides.is_file():
        import yaml

        items = yaml.safe_load(hydra_overrides.read_text()) or []
    else:
        items = overrides_from_dirname(run_dir.name)
    overrides = parse_overrides(items)
    experiment = (failed or {}).get("experiment") or overrides.get("experiment")
    progress = tensorboard_progress(run_dir)
    epochs_done = len(progress.get("train/loss", []))
    reached = f"{epochs_done} epoch(s) logged" if progress else "nothing logged"
    if progress.get("test/recall"):
        reached += f", last test recall {progress['test/recall'][-1]:.4f}"
    if failed is not None:
        epoch = f" in epoch {failed['epoch']}" if failed.get("epoch") else ""
        detail = f"{failed.get('error', 'unknown error')}{epoch}; {reached}"
        status = "failed"
    else:
        if metrics is not None:
            detail = f"{METRICS_FILE} lacks test_recall"
        else:
            detail = f"no {METRICS_FILE}: killed or still running"
        detail += f"; {reached}"
        if (run_dir / LAST_CHECKPOINT).is_file():
            detail += f"; {LAST_CHECKPOINT} exists (rerunning the sweep resumes it)"
        status = "unfinished"
    return Run(
        run_dir, name, status, experiment, overrides, _seed(overrides.get("seed")), None, detail
    )


def _job_number(path: Path) -> tuple[int, str]:
    head = path.name.partition("_")[0]
    return (int(head) if head.isdigit() else sys.maxsize, path.name)


def find_run_dirs(sweep_dir: Path) -> tuple[list[Path], list[str]]:
    """The job directories of a sweep in job order, and the subdirectories left out.

    In a Hydra sweep (it holds multirun.yaml) every subdirectory is a job, even an empty one
    (a job that has not written anything yet). Elsewhere, as in outputs/runs/, only the
    subdirectories that hold a run's files count; the others are left out.
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
        (p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))),
        key=_job_number,
    )
    subdirs = [p for p in subdirs if p.name != REPORT_DIR]
    if (sweep_dir / "multirun.yaml").is_file():
        run_dirs = subdirs
    else:
        run_dirs = [p for p in subdirs if any((p / m).exists() for m in RUN_MARKERS)]
    if not run_dirs:
        raise ReportError(
            f"{sweep_dir} holds no runs: a sweep directory holds one directory per job "
            "(python -m cifar_cnn.train -m ... writes them; see `make sweep`)"
        )
    return run_dirs, [p.name for p in subdirs if p not in run_dirs]


def collect_runs(sweep_dirs: Sequence[Path]) -> tuple[list[Run], list[str]]:
    """Every run of the given sweeps, and notes on subdirectories that were left out.

    Run names carry the sweep name when there are several sweeps.
    """
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


# --- statistics -------------------------------------------------------------------------------


def t_quantile(df: int) -> float:
    """t(0.975, df), from the table (the next smaller tabulated df: a slightly wider interval)."""
    if df < 1:
        raise ValueError("a t interval needs at least two values")
    return T_975[max(k for k in T_975 if k <= df)] if df <= max(T_975) else T_975_LIMIT


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and 95% interval half-width of a few values."""

    n: int
    mean: float | None
    sd: float | None  # None with fewer than two values
    half_width: float | None  # t(0.975, n-1) * sd / sqrt(n)

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        n = len(values)
        if n == 0:
            return cls(0, None, None, None)
        if n == 1:
            return cls(1, float(values[0]), None, None)
        sd = statistics.stdev(values)
        return cls(n, statistics.fmean(values), sd, t_quantile(n - 1) * sd / math.sqrt(n))

    @property
    def standard_error(self) -> float | None:
        return None if self.sd is None else self.sd / math.sqrt(self.n)

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95% interval, clipped to [0, 1] (a recall lies there); None below two values."""
        if self.half_width is None:
            return None
        return max(0.0, self.mean - self.half_width), min(1.0, self.mean + self.half_width)


# --- grouping and verdicts ----------------------------------------------------------------------


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
        return [r.metrics["test_recall"] for r in self.finished]

    @property
    def summary(self) -> Summary:
        return Summary.of(self.recalls)

    def metric_values(self, key: str) -> list:
        """The distinct values of a metrics.json entry among the finished runs, in run order."""
        return list(dict.fromkeys(r.metrics.get(key) for r in self.finished))


@dataclass(frozen=True)
class Verdict:
    """How one ablation step (a row vs its parent row) came out on rerun."""

    parent: str  # the parent row's label
    diff: float | None  # mean(row) - mean(parent)
    published_diff: float | None
    threshold: float | None  # NOISE_FACTOR x the standard error of `diff`
    verdict: str


def judge(row: Row, parent: Row | None) -> Verdict | None:
    """Compare a row with its parent: holds, reversed, within noise, or cannot be judged."""
    published = row.published
    if published is None or published.parent is None:
        return None
    parent_published = BY_NAME[published.parent]
    published_diff = published.recall - parent_published.recall
    if parent is None:
        return Verdict(published.parent, None, published_diff, None, "parent not in this sweep")
    mine, theirs = row.summary, parent.summary
    if mine.n == 0 or theirs.n == 0:
        return Verdict(parent.label, None, published_diff, None, "no finished runs to compare")
    diff = mine.mean - theirs.mean
    if mine.sd is None or theirs.sd is None:
        direction = "same direction" if diff * published_diff > 0 else "opposite direction"
        return Verdict(
            parent.label, diff, published_diff, None, f"cannot judge: one seed ({direction})"
        )
    threshold = NOISE_FACTOR * math.hypot(mine.standard_error, theirs.standard_error)
    if abs(diff) <= threshold:
        verdict = "within noise"
    elif diff * published_diff > 0:
        verdict = "holds"
    else:
        verdict = "reversed"
    return Verdict(parent.label, diff, published_diff, threshold, verdict)


def common_overrides(runs: Sequence[Run]) -> dict[str, str]:
    """Defining overrides that every run shares (shown once, not in every label)."""
    if not runs:
        return {}
    shared = set(runs[0].defining.items())
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

    position = {id(run): i for i, run in enumerate(runs)}

    def order(row: Row) -> tuple[int, int]:
        study = STUDY_ORDER.index(row.experiment) if row.experiment in STUDY_ORDER else 99
        return (study, position[id(row.runs[0])])

    ordered = sorted(rows.values(), key=order)
    by_key = {(r.experiment, tuple(r.extra.items())): r for r in ordered}
    for row in ordered:
        if row.published and row.published.parent:
            row.verdict = judge(row, by_key.get((row.published.parent, tuple(row.extra.items()))))
    reported = [r for r in ordered if r.summary.n]
    if reported:
        max(reported, key=lambda r: r.summary.mean).best = True
    return ordered


def setup_notes(rows: Sequence[Row]) -> list[str]:
    """Warnings about a sweep that mixes epochs, data or devices, repeats seeds or lost runs."""
    runs = [run for row in rows for run in row.runs]
    finished = [r for r in runs if r.status == "finished"]
    notes = []

    def mix(what: str, values: Counter, advice: str) -> None:
        if len(values) > 1:
            parts = ", ".join(f"{v} ({n} run{'s' * (n != 1)})" for v, n in values.items())
            notes.append(f"This sweep mixes {what}: {parts}. {advice}")

    mix(
        "epoch counts",
        Counter(f"{r.metrics['epochs']} epochs" for r in finished),
        "Only rows with the same epoch count compare.",
    )
    mix(
        "data sources or sizes",
        Counter(_data_text(r.metrics.get("data", {})) for r in finished),
        "Only rows on the same data compare.",
    )
    mix(
        "devices",
        Counter(str(r.metrics.get("device")) for r in finished),
        "Training times do not compare across devices.",
    )
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
        notes.append(f"{parts} run(s): see 'Failed and unfinished runs'; they count in no mean.")
    return notes


def _data_text(data: dict) -> str:
    return f"{data.get('source')} ({data.get('train_size')} train / {data.get('test_size')} test)"


# --- formatting ---------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 4, signed: bool = False) -> str:
    """A number for the markdown tables; an en dash when there is none."""
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def fmt_duration(seconds: float | None) -> str:
    """`12.3 s`, `4 min 05 s`, `1 h 15 min 44 s`."""
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s"


def _joined(values: Sequence) -> str:
    return " / ".join(str(v) for v in values) if values else "–"


def _runs_text(row: Row) -> str:
    lost = Counter(r.status for r in row.runs if r.status != "finished")
    text = f"{len(row.finished)} of {len(row.runs)}"
    return text + "".join(f", {n} {s}" for s, n in lost.items())


def _interval_text(summary: Summary) -> str:
    if summary.n == 0:
        return "no finished run"
    if summary.n == 1:
        return "none (one seed)"
    low, high = summary.interval
    return f"[{low:.4f}, {high:.4f}]"


def _mean_train_seconds(row: Row) -> float | None:
    seconds = [r.metrics["train_seconds"] for r in row.finished if "train_seconds" in r.metrics]
    return statistics.fmean(seconds) if seconds else None


# --- tables -------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "row", "configuration", "experiment", "change", "runs_finished", "runs_total",
    "runs_failed", "runs_unfinished", "seeds", "mean_recall", "sd_recall", "ci95_low",
    "ci95_high", "published_recall", "diff_vs_published", "params", "epochs",
    "train_seconds_mean", "best", "parent", "diff_vs_parent", "published_diff_vs_parent",
    "noise_threshold", "verdict",
)  # fmt: skip


def csv_rows(rows: Sequence[Row]) -> list[dict]:
    """The results table with full-precision numbers (empty cells where there is no value)."""
    out = []
    for row in rows:
        s, pub, v = row.summary, row.published, row.verdict
        lost = Counter(r.status for r in row.runs)
        out.append(
            {
                "row": pub.row if pub else "",
                "configuration": row.label,
                "experiment": row.experiment or "",
                "change": pub.change if pub else "",
                "runs_finished": s.n,
                "runs_total": len(row.runs),
                "runs_failed": lost["failed"],
                "runs_unfinished": lost["unfinished"],
                "seeds": " ".join(str(r.seed) for r in row.finished),
                "mean_recall": s.mean,
                "sd_recall": s.sd,
                "ci95_low": s.interval[0] if s.interval else None,
                "ci95_high": s.interval[1] if s.interval else None,
                "published_recall": pub.recall if pub else None,
                "diff_vs_published": s.mean - pub.recall if pub and s.n else None,
                "params": _joined(row.metric_values("params")) if s.n else None,
                "epochs": _joined(row.metric_values("epochs")) if s.n else None,
                "train_seconds_mean": _mean_train_seconds(row),
                "best": "yes" if row.best else "",
                "parent": v.parent if v else "",
                "diff_vs_parent": v.diff if v else None,
                "published_diff_vs_parent": v.published_diff if v else None,
                "noise_threshold": v.threshold if v else None,
                "verdict": v.verdict if v else "",
            }
        )
    return out


def write_csv(path: Path, rows: Sequence[Row]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for record in csv_rows(rows):
            writer.writerow({k: "" if v is None else v for k, v in record.items()})


def _md_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> list[str]:
    def cells(values: Sequence[str]) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"

    return [cells(header), "|" + "---|" * len(header), *(cells(line) for line in lines)]


def results_table(rows: Sequence[Row]) -> list[str]:
    header = (
        "#", "configuration", "change", "runs", "mean recall", "sd", "95% interval",
        "published", "diff", "params", "epochs", "train time / run",
    )  # fmt: skip
    lines = []
    for row in rows:
        s, pub = row.summary, row.published
        name = f"**{row.label}** ★ best" if row.best else row.label
        lines.append(
            (
                str(pub.row) if pub else "",
                name,
                pub.change if pub else "(not a published run)",
                _runs_text(row),
                fmt(s.mean),
                fmt(s.sd) if s.n != 1 else "– (one seed)",
                _interval_text(s),
                fmt(pub.recall) if pub else "–",
                fmt(s.mean - pub.recall, signed=True) if pub and s.n else "–",
                _joined(row.metric_values("params")),
                _joined(row.metric_values("epochs")),
                fmt_duration(_mean_train_seconds(row)),
            )
        )
    return _md_table(header, lines)


def published_notes() -> list[str]:
    """What the published table says besides the recall: alternative values, training times."""
    notes = [f"#{run.row} {run.name}: {run.note}." for run in PUBLISHED if run.note]
    notes += [
        f"#{run.row} {run.name} trained for {fmt_duration(run.train_seconds)} "
        f"({EPOCHS} epochs on the authors' hosted GPU)."
        for run in PUBLISHED
        if run.train_seconds
    ]
    return ["Published notes: " + " ".join(notes), ""] if notes else []


def verdict_section(rows: Sequence[Row]) -> list[str]:
    judged = [r for r in rows if r.verdict]
    text = [
        "## Does each step of the ablation hold up?",
        "",
        "Each published row changes one thing in its parent row. *published Δ* is the "
        "study's recall difference (one run each), *rerun Δ* the difference of the means "
        "here. The *noise threshold* is "
        f"{NOISE_FACTOR:g} × the standard error of that difference, "
        "√(sd₁²/n₁ + sd₂²/n₂), from the seed-to-seed spread of both rows. "
        "**holds**: the rerun moves the recall in the published direction by more than the "
        "threshold; **reversed**: by more than the threshold, the other way; **within "
        "noise**: the difference is not larger than the seed-to-seed spread, so this rerun "
        "cannot confirm the step; with one seed per row there is no spread to compare with, "
        "and the step cannot be judged.",
        "",
    ]
    seeds = Counter(row.summary.n for row in rows if row.summary.n > 1)
    if seeds:
        n = seeds.most_common(1)[0][0]
        text += [
            f"This is a screen, not a formal test: a two-sided 95% t-test with {n} seeds per "
            f"row would ask for {t_quantile(2 * n - 2):.2f} standard errors, not "
            f"{NOISE_FACTOR:g}; more seeds narrow both.",
            "",
        ]
    if not judged:
        return [*text, "No row of this sweep has its parent row in the sweep.", ""]
    lines = [
        (
            row.label,
            row.published.change,
            v.parent,
            fmt(v.published_diff, signed=True),
            fmt(v.diff, signed=True),
            fmt(v.threshold),
            f"**{v.verdict}**",
        )
        for row in judged
        for v in [row.verdict]
    ]
    header = ("step", "change", "vs", "published Δ", "rerun Δ", "noise threshold", "verdict")
    text += _md_table(header, lines)
    counts = Counter(row.verdict.verdict.split(":")[0] for row in judged)
    parts = ", ".join(f"{verdict}: {n}" for verdict, n in counts.most_common())
    text += ["", f"- Steps compared: {len(judged)} ({parts})."]
    steps = [r for r in judged if r.verdict.diff is not None]
    if steps:
        gain = max(steps, key=lambda r: r.verdict.diff)
        study = max(
            (run for run in PUBLISHED if run.parent),
            key=lambda run: run.recall - BY_NAME[run.parent].recall,
        )
        claimed = BY_NAME[CLAIMED_LARGEST_GAIN]

        def step(run: PublishedRun) -> str:
            gain = run.recall - BY_NAME[run.parent].recall
            return f"{run.name} ({fmt(gain, signed=True)} over {run.parent})"

        text.append(
            f"- Largest gain on rerun: {gain.label} ({fmt(gain.verdict.diff, signed=True)} over "
            f"{gain.verdict.parent}; {gain.verdict.verdict}). Published: the largest step is "
            f"{step(study)}; the study's text names {step(claimed)} its largest gain."
        )
    best = next((r for r in rows if r.best), None)
    if best:
        text.append(
            f"- Best configuration on rerun: {best.label} ({fmt(best.summary.mean)}); "
            f"the study's best: {BEST} ({fmt(BY_NAME[BEST].recall)})."
        )
    return [*text, ""]


def failures_section(runs: Sequence[Run]) -> list[str]:
    lost = [r for r in runs if r.status != "finished"]
    text = ["## Failed and unfinished runs", ""]
    if not lost:
        return [*text, "None: every run finished.", ""]
    lines = [
        (
            f"`{r.name}`",
            r.experiment or "–",
            str(r.seed) if r.seed is not None else "–",
            f"**{r.status}**",
            r.detail,
        )
        for r in lost
    ]
    return [*text, *_md_table(("run", "experiment", "seed", "status", "detail"), lines), ""]


def runs_section(rows: Sequence[Row]) -> list[str]:
    lines = [
        (
            f"`{r.job}`",
            row.label,
            str(r.seed),
            fmt(r.metrics["test_recall"]),
            str(r.metrics.get("epochs")),
            fmt_duration(r.metrics.get("train_seconds")),
        )
        for row in rows
        for r in row.finished
    ]
    header = ("job", "configuration", "seed", "test recall", "epochs", "train time")
    return [
        "## Every finished run",
        "",
        "*job*: the number that starts the run's directory name in the sweep.",
        "",
        *_md_table(header, lines),
        "",
    ]


def setup_section(runs: Sequence[Run], sweep_dirs: Sequence[Path]) -> list[str]:
    finished = [r for r in runs if r.status == "finished"]
    statuses = Counter(r.status for r in runs)
    seeds = sorted({r.seed for r in runs if r.seed is not None})
    data = Counter(_data_text(r.metrics.get("data", {})) for r in finished)
    epochs = Counter(r.metrics["epochs"] for r in finished)
    devices = Counter(
        f"{r.metrics.get('device')}, {r.metrics.get('threads')} threads" for r in finished
    )
    common = common_overrides(runs)
    text = [
        "## What was run",
        "",
        f"- sweep: {', '.join(f'`{d}`' for d in sweep_dirs)}",
        f"- runs: {len(runs)} ("
        + ", ".join(f"{n} {s}" for s, n in statuses.most_common())
        + f"); seeds: {', '.join(map(str, seeds)) or '–'}",
        f"- data: {_joined(list(data))}",
        f"- epochs: {_joined(list(epochs))}",
        f"- device: {_joined(list(devices))}",
        "- settings shared by every run: "
        + (", ".join(f"`{k}={v}`" for k, v in common.items()) or "none besides the defaults"),
        f"- published numbers: {SOURCE}; one seed each, {EPOCHS} epochs on the full "
        f"CIFAR-10 ({TRAIN_SIZE:,} training images).",
    ]
    differs = any(e != EPOCHS for e in epochs) or any(
        r.metrics.get("data", {}).get("train_size") != TRAIN_SIZE for r in finished
    )
    if differs:
        text += [
            "",
            f"These runs differ from the published setup ({EPOCHS} epochs, {TRAIN_SIZE:,} "
            "training images): the *published* and *diff* columns are context here, not a "
            "test of the reproduction.",
        ]
    return [*text, ""]


def write_markdown(
    path: Path,
    rows: Sequence[Row],
    runs: Sequence[Run],
    sweep_dirs: Sequence[Path],
    figures: Sequence[str],
    notes: Sequence[str] = (),
) -> None:
    notes = [*notes, *setup_notes(rows)]
    text = [
        "# Study report",
        "",
        f"Written {datetime.now():%Y-%m-%d %H:%M} by `python -m cifar_cnn.report "
        + " ".join(str(d) for d in sweep_dirs)
        + "`.",
        "",
    ]
    text += [f"> **Note:** {note}" + "\n" for note in notes]
    text += setup_section(runs, sweep_dirs)
    text += [
        "## Results",
        "",
        "Test recall is the average top-1 recall over the 10 classes (the study's metric). "
        "*mean recall* and *sd* are over the seeds of a row (sample standard deviation); the "
        "95% interval is mean ± t(0.975, n−1)·sd/√n (clipped to [0, 1]); "
        "*diff* = mean − published. Training time excludes evaluation. ★ marks the best mean.",
        "",
        *results_table(rows),
        "",
        *published_notes(),
    ]
    text += verdict_section(rows)
    text += ["## Figures", ""]
    for name in figures:
        text += [f"**{FIGURES[name]}**", "", f"![{FIGURES[name]}]({name})", ""]
    missing = [name for name in FIGURES if name not in figures]
    if missing:
        text += [f"Not drawn (no finished runs to draw): {', '.join(missing)}.", ""]
    text += failures_section(runs)
    text += runs_section(rows)
    path.write_text("\n".join(text))


# --- figures ------------------------------------------------------------------------------------


def wrapped(label: str, width: int) -> str:
    """A configuration label broken into lines of about `width` characters at its commas."""
    lines = [""]
    for part in label.split(", "):
        if lines[-1] and len(lines[-1]) + len(part) + 2 > width:
            lines[-1] += ","
            lines.append(part)
        else:
            lines[-1] = f"{lines[-1]}, {part}" if lines[-1] else part
    return "\n".join(lines)


def _colours(n: int) -> list:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _mean_curve(series: Sequence[tuple[Sequence[int], Sequence[float]]]) -> tuple[list, list]:
    """Mean over runs at each epoch that any run reached (runs may stop at different epochs)."""
    at: dict[int, list[float]] = {}
    for epochs, values in series:
        for epoch, value in zip(epochs, values, strict=False):
            at.setdefault(epoch, []).append(value)
    epochs = sorted(at)
    return epochs, [statistics.fmean(at[e]) for e in epochs]


def _loss_series(row: Row) -> list[tuple[list[int], list[float]]]:
    return [
        (
            list(range(1, len(r.metrics["train_loss_per_epoch"]) + 1)),
            r.metrics["train_loss_per_epoch"],
        )
        for r in row.finished
    ]


def _recall_series(row: Row) -> list[tuple[list[int], list[float]]]:
    return [
        (r.metrics["test_recall_epochs"], r.metrics["test_recall_per_epoch"]) for r in row.finished
    ]


def _use_log_scale(values: Sequence[float]) -> bool:
    positive = [v for v in values if v > 0]
    return bool(positive) and max(positive) / min(positive) > 20


def _style_epochs(ax, max_epoch: int) -> None:
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlim(0.8, max(max_epoch, 1) + 0.2)
    ax.grid(alpha=0.3)


def _marker(max_epoch: int) -> str | None:
    return "o" if max_epoch <= 20 else None


def _title(row: Row) -> str:
    s, pub = row.summary, row.published
    number = f"#{pub.row} " if pub else ""
    if s.n == 0:
        recall = "no finished run"
    elif s.n == 1:
        recall = f"recall {s.mean:.4f} (1 seed)"
    else:
        recall = f"recall {s.mean:.4f} ± {s.sd:.4f} ({s.n} seeds)"
    published = f"\npublished {pub.recall:.4f}" if pub else ""
    return f"{number}{wrapped(row.label, 45)}\n{recall}{published}"


def loss_panels(rows: Sequence[Row], colours: Sequence) -> Figure:
    """One panel per configuration: each seed's training loss, and their mean."""
    ncols = min(5, len(rows))
    nrows = math.ceil(len(rows) / ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(3.8 * ncols, 3.3 * nrows + 0.6),
        sharey=True,
        layout="constrained",
        squeeze=False,
    )
    all_loss = [v for row in rows for _, values in _loss_series(row) for v in values]
    max_epoch = max((len(v) for row in rows for _, v in _loss_series(row)), default=1)
    for ax, row, colour in zip(axes.flat, rows, colours, strict=False):
        for epochs, values in _loss_series(row):
            ax.plot(epochs, values, color=colour, alpha=0.35, linewidth=1)
        epochs, mean = _mean_curve(_loss_series(row))
        ax.plot(epochs, mean, color=colour, linewidth=2.2, marker=_marker(max_epoch), label="mean")
        if not epochs:
            ax.text(0.5, 0.5, "no finished run", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(_title(row), fontsize=9)
        _style_epochs(ax, max_epoch)
        if _use_log_scale(all_loss):
            ax.set_yscale("log")
    for ax in axes[:, 0]:
        ax.set_ylabel("training loss (mean per epoch)")
    for ax in axes.flat[len(rows) :]:
        ax.set_visible(False)
    fig.suptitle("Training loss per epoch (thin: each seed; thick: mean over seeds)")
    return fig


def overlay(rows: Sequence[Row], colours: Sequence, kind: str) -> Figure:
    """All configurations' mean curves in one plot: `kind` is "loss" or "recall"."""
    fig, ax = plt.subplots(figsize=(10, 5.5), layout="constrained")
    series_of = _loss_series if kind == "loss" else _recall_series
    max_epoch = max((max(e, default=0) for row in rows for e, _ in series_of(row)), default=1)
    values = []
    for row, colour in zip(rows, colours, strict=True):
        epochs, mean = _mean_curve(series_of(row))
        if epochs:
            values += mean
            label = row.label + (f" ({row.summary.mean:.3f})" if kind == "recall" else "")
            label = wrapped(label, 45)
            ax.plot(epochs, mean, color=colour, linewidth=2, marker=_marker(max_epoch), label=label)
    _style_epochs(ax, max_epoch)
    if kind == "loss":
        ax.set_ylabel("training loss (mean per epoch, mean over seeds)")
        ax.set_title("Training loss per epoch, all configurations")
        if _use_log_scale(values):
            ax.set_yscale("log")
    else:
        ax.set_ylabel("test recall (mean over seeds)")
        ax.set_title("Test recall per epoch, all configurations (final recall in the legend)")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    return fig


def recall_bars(rows: Sequence[Row], colours: Sequence) -> Figure:
    """Mean recall per configuration with 95% intervals, seeds as dots, published marked."""
    labels = [wrapped(row.label, 22) for row in rows]
    lines = max(label.count("\n") + 1 for label in labels)
    slot = 1.1 if lines == 1 else 1.7  # inches per bar: wrapped labels sit flat and need room
    fig, ax = plt.subplots(
        figsize=(max(7, slot * len(rows) + 2), 6 + 0.15 * lines), layout="constrained"
    )
    x = range(len(rows))
    means = [row.summary.mean or 0.0 for row in rows]
    intervals = [row.summary.interval or (m, m) for row, m in zip(rows, means, strict=True)]
    errors = [[m - low for m, (low, _) in zip(means, intervals, strict=True)],
              [high - m for m, (_, high) in zip(means, intervals, strict=True)]]  # fmt: skip
    bars = ax.bar(
        x,
        means,
        yerr=errors,
        capsize=5,
        color=colours,
        alpha=0.8,
        error_kw={"linewidth": 1.3},
        label="mean of seeds (95% interval)",
    )
    for i, row in enumerate(rows):
        if row.best:
            bars[i].set_edgecolor("black")
            bars[i].set_linewidth(2)
        ax.scatter(
            [i] * len(row.recalls),
            row.recalls,
            s=14,
            color="black",
            zorder=3,
            label="one seed" if i == 0 else None,
        )
        if row.summary.n:
            text = f"{means[i]:.3f}" + (" ★" if row.best else "")
            ax.text(i, 0.01, text, ha="center", va="bottom", fontsize=8, fontweight="bold")
    published = [(i, row.published.recall) for i, row in enumerate(rows) if row.published]
    if published:
        ax.scatter(
            *zip(*published, strict=True),
            marker="_",
            s=700,
            linewidths=2.5,
            color="crimson",
            zorder=4,
            label=f"published (1 seed, {EPOCHS} epochs)",
        )
    if lines > 1:
        ax.set_xticks(list(x), labels, fontsize=8)
    else:
        ax.set_xticks(list(x), labels, rotation=30, ha="right")
    ax.set_ylabel("test recall (average top-1 recall)")
    ax.set_xlabel("configuration")
    highest = max([*(high for _, high in intervals), *(p for _, p in published), 0.1])
    ax.set_ylim(0, min(1.0, highest + 0.05))
    ax.set_title("Mean test recall per configuration (★: best; error bars: 95% interval)")
    ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=3, fontsize=9, frameon=False)
    return fig


def per_class_heatmap(rows: Sequence[Row]) -> Figure:
    """Mean recall of every class for every configuration that finished a run."""
    shown = [row for row in rows if row.finished]
    matrix = [
        [
            statistics.fmean(
                r.metrics["test_recall_per_class"].get(c, math.nan) for r in row.finished
            )
            for c in CLASSES
        ]
        for row in shown
    ]
    labels = [wrapped(row.label, 40) for row in shown]
    height = sum(max(0.5, 0.2 * (label.count("\n") + 1)) for label in labels)
    fig, ax = plt.subplots(figsize=(10, 1.4 + height), layout="constrained")
    image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for i, values in enumerate(matrix):
        for j, value in enumerate(values):
            ax.text(
                j,
                i,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=8,
                color="black" if value > 0.6 else "white",
            )
    ax.set_xticks(range(len(CLASSES)), CLASSES, rotation=30, ha="right")
    ax.set_yticks(range(len(shown)), labels, fontsize=9)
    ax.set_xlabel("true class")
    ax.set_ylabel("configuration")
    ax.set_title("Test recall per class (mean over seeds)")
    fig.colorbar(image, ax=ax, label="recall", fraction=0.03)
    return fig


def best_confusion(row: Row) -> Figure:
    """The best row's confusion matrix, summed over its seeds (row shares: mean recall)."""
    n = len(CLASSES)
    total = [[0] * n for _ in range(n)]
    for run in row.finished:
        for i, line in enumerate(run.metrics["confusion_matrix"] or []):
            for j, count in enumerate(line):
                total[i][j] += count
    seeds = f"{len(row.finished)} seed{'s' * (len(row.finished) != 1)} summed"
    label = row.label if len(row.label) <= 20 else "\n" + wrapped(row.label, 60)
    title = (
        f"Confusion matrix of the best configuration: {label}\n"
        f"({seeds}; cells: share of the true class)"
    )
    return confusion_matrix_figure(total, CLASSES, title=title)


def write_figures(out_dir: Path, rows: Sequence[Row]) -> list[str]:
    """Draw every figure there is data for; returns the file names written."""
    if not any(row.finished for row in rows):
        return []
    colours = _colours(len(rows))
    figures = {
        "loss_curves.png": lambda: loss_panels(rows, colours),
        "loss_overlay.png": lambda: overlay(rows, colours, "loss"),
        "recall_overlay.png": lambda: overlay(rows, colours, "recall"),
        "recall_bars.png": lambda: recall_bars(rows, colours),
        "per_class_recall.png": lambda: per_class_heatmap(rows),
        "confusion_best.png": lambda: best_confusion(next(r for r in rows if r.best)),
    }
    for name, draw in figures.items():
        fig = draw()
        fig.savefig(out_dir / name, dpi=120)
        plt.close(fig)
    return list(figures)


# --- entry point --------------------------------------------------------------------------------


def write_report(sweep_dirs: Sequence[Path], out_dir: Path | None = None) -> Path:
    """Read the sweeps and write the report; returns the report directory."""
    runs, notes = collect_runs(sweep_dirs)
    rows = group_runs(runs)
    out_dir = out_dir or sweep_dirs[0] / REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = write_figures(out_dir, rows)
    write_csv(out_dir / "results.csv", rows)
    write_markdown(out_dir / "results.md", rows, runs, sweep_dirs, figures, notes)
    return out_dir


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m cifar_cnn.report",
        description="Tables and figures of a sweep, compared with the published study.",
    )
    parser.add_argument(
        "sweep_dirs",
        nargs="*",
        type=Path,
        metavar="SWEEP_DIR",
        help=f"sweep directories (default: the newest under {DEFAULT_SWEEPS_ROOT}/); "
        "each gets its own SWEEP_DIR/report/ unless --out combines them",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="write one report of all the given sweeps (seeds pooled) into this directory",
    )
    args = parser.parse_args(argv)
    try:
        sweeps = args.sweep_dirs or [newest_sweep()]
        groups = [sweeps] if args.out else [[s] for s in sweeps]
        for group in groups:
            out_dir = write_report(group, args.out)
            print(f"report: {out_dir / 'results.md'} (table: results.csv; figures: *.png)")
    except UserError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
