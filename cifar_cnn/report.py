"""The study report: `python -m cifar_cnn.report [SWEEP_DIR ...]` (or `make report`).

Reads every job directory of a sweep, groups the runs by configuration (the experiment and
any other overrides, seeds pooled) and writes into `SWEEP_DIR/report/`: `results.md` and
`results.csv` (one row per configuration in the study's order: mean test recall over seeds,
its spread, the published recall, and a verdict per ablation step) and the PNG figures of
cifar_cnn.plots. Failed and unfinished runs are listed, never dropped.
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

import yaml

from cifar_cnn.errors import UserError
from cifar_cnn.plots import FIGURES, write_figures
from cifar_cnn.published import (
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
# Outside a Hydra sweep, a subdirectory with none of these is not a run.
RUN_MARKERS = (METRICS_FILE, FAILED_FILE, "checkpoints", "tensorboard", "train.log", ".hydra")
# Overrides that do not change what a run computes: they never split runs into groups.
NON_DEFINING_KEYS = frozenset((
    "seed", "data.seed", "resume", "ckpt_path", "data.root", "data.download",
    "data.eval_batch_size", "progress_bar_refresh", "checkpoint_every_n_epochs",
))  # fmt: skip
NON_DEFINING_PREFIXES = ("hydra.", "compute.")
# A step's effect counts as real when |difference of means| > NOISE_FACTOR x its standard error.
NOISE_FACTOR = 2.0
# Two-sided 95% quantiles of Student's t distribution, t(0.975, df); 1.960 beyond the table.
T_975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
    9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120,
    17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064,
    25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000,
    120: 1.980,
}  # fmt: skip


class ReportError(UserError):
    """A sweep directory that cannot be reported on."""


# --- reading runs -------------------------------------------------------------------------------


@dataclass
class Run:
    """One job directory of a sweep, finished or not."""

    path: Path
    name: str  # the directory name, prefixed by its sweep when several are pooled
    status: str  # "finished", "failed" or "unfinished"
    experiment: str | None
    overrides: dict[str, str]  # every override of the job, key -> value
    seed: int | None
    metrics: dict | None = None
    detail: str = ""  # why a run did not finish, and how far it got

    @property
    def job(self) -> str:
        """The job number that starts the directory name (after the sweep name, if any)."""
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
    return {key.lstrip("+~"): value for key, _, value in (i.partition("=") for i in items)}


def overrides_from_dirname(name: str) -> list[str]:
    """The overrides of a job directory named `<job>_<k=v,k=v,...>` (Hydra's override_dirname).

    A comma splits two overrides only where a `key=` follows it, so list values such as
    `model.kernel_sizes=[7,5,3]` stay whole.
    """
    rest = name.partition("_")[2]
    return re.split(r",(?=[+~]*[\w.\-]+=)", rest) if rest else []


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


def tensorboard_progress(run_dir: Path) -> str:
    """How far an unfinished run got, from its TensorBoard events."""
    tb_dir = run_dir / "tensorboard"
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
    """What one job directory holds: metrics.json, failed.json, or neither (unfinished)."""
    metrics = _read_json(run_dir / METRICS_FILE)
    if metrics is not None and "test_recall" in metrics:
        overrides = parse_overrides(metrics.get("overrides") or [])
        experiment = metrics.get("experiment") or overrides.get("experiment")
        seed = _seed(metrics.get("seed", overrides.get("seed")))
        return Run(run_dir, name, "finished", experiment, overrides, seed, metrics)

    failed = _read_json(run_dir / FAILED_FILE)
    hydra_overrides = run_dir / ".hydra" / "overrides.yaml"
    if failed is not None and failed.get("overrides") is not None:
        overrides = parse_overrides(failed["overrides"])
    elif hydra_overrides.is_file():
        overrides = parse_overrides(yaml.safe_load(hydra_overrides.read_text()) or [])
    else:
        overrides = parse_overrides(overrides_from_dirname(run_dir.name))
    if failed is not None:
        status = "failed"
        epoch = f" in epoch {failed['epoch']}" if failed.get("epoch") else ""
        detail = f"{failed.get('error', 'unknown error')}{epoch}"
    else:
        status = "unfinished"
        detail = f"no {METRICS_FILE}: killed or still running"
        if metrics is not None:
            detail = f"{METRICS_FILE} lacks test_recall"
    detail += f"; {tensorboard_progress(run_dir)}"
    if status == "unfinished" and (run_dir / LAST_CHECKPOINT).is_file():
        detail += f"; {LAST_CHECKPOINT} exists (rerunning the sweep resumes it)"
    experiment = (failed or {}).get("experiment") or overrides.get("experiment")
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
    if not (sweep_dir / "multirun.yaml").is_file():
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


def t_quantile(df: int) -> float:
    """t(0.975, df), from the table (the next smaller tabulated df: a slightly wider interval)."""
    if df < 1:
        raise ValueError("a t interval needs at least two values")
    return T_975[max(k for k in T_975 if k <= df)] if df <= max(T_975) else 1.960


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and 95% interval half-width of a few values."""

    n: int
    mean: float | None
    sd: float | None  # None with fewer than two values
    half_width: float | None  # t(0.975, n-1) * sd / sqrt(n)

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        """The summary of `values` (no spread below two values, no mean without any)."""
        n = len(values)
        if n < 2:
            return cls(n, float(values[0]) if n else None, None, None)
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


@dataclass(frozen=True)
class Verdict:
    """How one ablation step (a row vs its parent row) came out on rerun."""

    parent: str  # the parent row's label
    diff: float | None  # mean(row) - mean(parent)
    published_diff: float
    threshold: float | None  # NOISE_FACTOR x the standard error of `diff`
    verdict: str


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

    def metric_values(self, key: str) -> str:
        """The distinct values of a metrics.json entry among the finished runs, joined."""
        return _joined(dict.fromkeys(r.metrics.get(key) for r in self.finished))


def judge(row: Row, parent: Row | None, published: PublishedRun) -> Verdict:
    """Compare a row with its parent: holds, reversed, within noise, or cannot be judged."""
    published_diff = published.recall - BY_NAME[published.parent].recall
    if parent is None:
        return Verdict(published.parent, None, published_diff, None, "parent not in this sweep")
    mine, theirs = row.summary, parent.summary
    if mine.n == 0 or theirs.n == 0:
        return Verdict(parent.label, None, published_diff, None, "no finished runs to compare")
    diff = mine.mean - theirs.mean
    if mine.sd is None or theirs.sd is None:
        direction = "same" if diff * published_diff > 0 else "opposite"
        verdict = f"cannot judge: one seed ({direction} direction)"
        return Verdict(parent.label, diff, published_diff, None, verdict)
    threshold = NOISE_FACTOR * math.hypot(mine.standard_error, theirs.standard_error)
    if abs(diff) <= threshold:
        verdict = "within noise"
    else:
        verdict = "holds" if diff * published_diff > 0 else "reversed"
    return Verdict(parent.label, diff, published_diff, threshold, verdict)


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

    def study_order(row: Row) -> int:
        return STUDY_ORDER.index(row.experiment) if row.experiment in STUDY_ORDER else 99

    ordered = sorted(rows.values(), key=study_order)  # stable: the sweep's order within a rank
    reported = [r for r in ordered if r.summary.n]
    if reported:
        max(reported, key=lambda r: r.summary.mean).best = True
    return ordered


def setup_notes(rows: Sequence[Row]) -> list[str]:
    """Warnings about a sweep that mixes epochs, data or devices, repeats seeds or lost runs."""
    runs = [run for row in rows for run in row.runs]
    finished = [r for r in runs if r.status == "finished"]
    notes = []
    for what, values, advice in (
        ("epoch counts", [f"{r.metrics['epochs']} epochs" for r in finished],
         "Only rows with the same epoch count compare."),
        ("data sources or sizes", [_data_text(r) for r in finished],
         "Only rows on the same data compare."),
        ("devices", [str(r.metrics.get("device")) for r in finished],
         "Training times do not compare across devices."),
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
        notes.append(f"{parts} run(s): see 'Failed and unfinished runs'; they count in no mean.")
    return notes


# --- formatting and tables ----------------------------------------------------------------------


def fmt(value: float | None, signed: bool = False) -> str:
    """A number for the markdown tables (4 decimals); an en dash when there is none."""
    if value is None:
        return "–"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


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


def _data_text(run: Run) -> str:
    data = run.metrics["data"]
    return f"{data.get('source')} ({data.get('train_size')} train / {data.get('test_size')} test)"


def row_record(row: Row) -> dict:
    """One row of the results table, full precision (None where there is no value)."""
    s, pub, v = row.summary, row.published, row.verdict
    statuses = Counter(r.status for r in row.runs)
    seconds = [r.metrics["train_seconds"] for r in row.finished if "train_seconds" in r.metrics]
    return {
        "row": pub.row if pub else None,
        "configuration": row.label,
        "experiment": row.experiment,
        "change": pub.change if pub else None,
        "runs_finished": s.n,
        "runs_total": len(row.runs),
        "runs_failed": statuses["failed"],
        "runs_unfinished": statuses["unfinished"],
        "seeds": " ".join(str(r.seed) for r in row.finished),
        "mean_recall": s.mean,
        "sd_recall": s.sd,
        "ci95_low": s.interval[0] if s.interval else None,
        "ci95_high": s.interval[1] if s.interval else None,
        "published_recall": pub.recall if pub else None,
        "diff_vs_published": s.mean - pub.recall if pub and s.n else None,
        "params": row.metric_values("params") if s.n else None,
        "epochs": row.metric_values("epochs") if s.n else None,
        "train_seconds_mean": statistics.fmean(seconds) if seconds else None,
        "best": "yes" if row.best else None,
        "parent": v.parent if v else None,
        "diff_vs_parent": v.diff if v else None,
        "published_diff_vs_parent": v.published_diff if v else None,
        "noise_threshold": v.threshold if v else None,
        "verdict": v.verdict if v else None,
    }


def write_csv(path: Path, rows: Sequence[Row]) -> None:
    """results.csv: `row_record` of every row, empty cells where there is no value."""
    records = [row_record(row) for row in rows]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in records)


def _md_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> list[str]:
    def cells(values: Sequence[str]) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"

    return [cells(header), "|" + "---|" * len(header), *(cells(line) for line in lines), ""]


def results_section(rows: Sequence[Row]) -> list[str]:
    header = (
        "#", "configuration", "change", "runs", "mean recall", "sd", "95% interval",
        "published", "diff", "params", "epochs", "train time / run",
    )  # fmt: skip
    lines = []
    for row in rows:
        r = row_record(row)
        runs = f"{r['runs_finished']} of {r['runs_total']}"
        runs += "".join(
            f", {r[f'runs_{s}']} {s}" for s in ("failed", "unfinished") if r[f"runs_{s}"]
        )
        interval = {0: "no finished run", 1: "none (one seed)"}.get(r["runs_finished"])
        lines.append((
            r["row"] or "",
            f"**{row.label}** ★ best" if row.best else row.label,
            r["change"] or "(not a published run)",
            runs,
            fmt(r["mean_recall"]),
            "– (one seed)" if r["runs_finished"] == 1 else fmt(r["sd_recall"]),
            interval or f"[{r['ci95_low']:.4f}, {r['ci95_high']:.4f}]",
            fmt(r["published_recall"]),
            fmt(r["diff_vs_published"], signed=True),
            r["params"] or "–",
            r["epochs"] or "–",
            fmt_duration(r["train_seconds_mean"]),
        ))  # fmt: skip
    published = [f"#{run.row} {run.name}: {run.note}." for run in PUBLISHED if run.note] + [
        f"#{run.row} {run.name} trained for {fmt_duration(run.train_seconds)} "
        f"({EPOCHS} epochs on the authors' hosted GPU)."
        for run in PUBLISHED
        if run.train_seconds
    ]
    return [
        "## Results",
        "",
        "Test recall is the average top-1 recall over the 10 classes (the study's metric). "
        "*mean recall* and *sd* are over the seeds of a row (sample standard deviation); the "
        "95% interval is mean ± t(0.975, n−1)·sd/√n (clipped to [0, 1]); "
        "*diff* = mean − published. Training time excludes evaluation. ★ marks the best mean.",
        "",
        *_md_table(header, lines),
        "Published notes: " + " ".join(published),
        "",
    ]


def _published_step(run: PublishedRun) -> str:
    gain = run.recall - BY_NAME[run.parent].recall
    return f"{run.name} ({fmt(gain, signed=True)} over {run.parent})"


def verdict_section(rows: Sequence[Row]) -> list[str]:
    text = [
        "## Does each step of the ablation hold up?",
        "",
        "Each published row changes one thing in its parent row. *published Δ* is the "
        "study's recall difference (one run each), *rerun Δ* the difference of the means "
        f"here. The *noise threshold* is {NOISE_FACTOR:g} × the standard error of that "
        "difference, √(sd₁²/n₁ + sd₂²/n₂). **holds**: the rerun moves the recall in the "
        "published direction by more than the threshold; **reversed**: by more than the "
        "threshold, the other way; **within noise**: not by more than the seed-to-seed "
        "spread, so this rerun cannot confirm the step. With one seed per row there is no "
        "spread, and the step cannot be judged.",
        "",
    ]
    seeds = Counter(row.summary.n for row in rows if row.summary.n > 1).most_common(1)
    if seeds:
        n = seeds[0][0]
        text[-2] += (
            f" This is a screen, not a formal test: a two-sided 95% t-test with {n} seeds per "
            f"row would ask for {t_quantile(2 * n - 2):.2f} standard errors, not "
            f"{NOISE_FACTOR:g}; more seeds narrow both."
        )
    judged = [r for r in rows if r.verdict]
    if not judged:
        return [*text, "No row of this sweep has its parent row in the sweep.", ""]
    header = ("step", "change", "vs", "published Δ", "rerun Δ", "noise threshold", "verdict")
    lines = [
        (r.label, r.published.change, v.parent, fmt(v.published_diff, signed=True),
         fmt(v.diff, signed=True), fmt(v.threshold), f"**{v.verdict}**")
        for r in judged
        for v in [r.verdict]
    ]  # fmt: skip
    text += _md_table(header, lines)
    counts = Counter(r.verdict.verdict.split(":")[0] for r in judged)
    parts = ", ".join(f"{verdict}: {n}" for verdict, n in counts.most_common())
    text.append(f"- Steps compared: {len(judged)} ({parts}).")
    steps = [r for r in judged if r.verdict.diff is not None]
    if steps:
        gain = max(steps, key=lambda r: r.verdict.diff)
        study = max(
            (run for run in PUBLISHED if run.parent),
            key=lambda run: run.recall - BY_NAME[run.parent].recall,
        )
        text.append(
            f"- Largest gain on rerun: {gain.label} ({fmt(gain.verdict.diff, signed=True)} over "
            f"{gain.verdict.parent}; {gain.verdict.verdict}). Published: the largest step is "
            f"{_published_step(study)}; the study's text names "
            f"{_published_step(BY_NAME[CLAIMED_LARGEST_GAIN])} its largest gain."
        )
    return [*text, ""]


def runs_sections(runs: Sequence[Run], rows: Sequence[Row]) -> list[str]:
    """The failed and unfinished runs, then every finished run."""
    lost = [r for r in runs if r.status != "finished"]
    text = ["## Failed and unfinished runs", ""]
    if lost:
        text += _md_table(
            ("run", "experiment", "seed", "status", "detail"),
            [(f"`{r.name}`", r.experiment or "–", "–" if r.seed is None else r.seed,
              f"**{r.status}**", r.detail) for r in lost],
        )  # fmt: skip
    else:
        text += ["None: every run finished.", ""]
    finished = [
        (f"`{r.job}`", row.label, r.seed, fmt(r.metrics["test_recall"]), r.metrics["epochs"],
         fmt_duration(r.metrics.get("train_seconds")))
        for row in rows
        for r in row.finished
    ]  # fmt: skip
    header = ("job", "configuration", "seed", "test recall", "epochs", "train time")
    return [
        *text,
        "## Every finished run",
        "",
        "*job*: the number that starts the run's directory name in the sweep.",
        "",
        *_md_table(header, finished),
    ]


def setup_section(runs: Sequence[Run], sweep_dirs: Sequence[Path]) -> list[str]:
    finished = [r for r in runs if r.status == "finished"]
    statuses = Counter(r.status for r in runs)
    seeds = sorted({r.seed for r in runs if r.seed is not None})
    epochs = list(dict.fromkeys(r.metrics["epochs"] for r in finished))
    devices = dict.fromkeys(
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
        f"- data: {_joined(list(dict.fromkeys(_data_text(r) for r in finished)))}",
        f"- epochs: {_joined(epochs)}",
        f"- device: {_joined(list(devices))}",
        "- settings shared by every run: "
        + (", ".join(f"`{k}={v}`" for k, v in common.items()) or "none besides the defaults"),
        f"- published numbers: {SOURCE}; one seed each, {EPOCHS} epochs on the full "
        f"CIFAR-10 ({TRAIN_SIZE:,} training images).",
        "",
    ]
    if any(e != EPOCHS for e in epochs) or any(
        r.metrics["data"].get("train_size") != TRAIN_SIZE for r in finished
    ):
        text += [
            f"These runs differ from the published setup ({EPOCHS} epochs, {TRAIN_SIZE:,} "
            "training images): the *published* and *diff* columns are context here, not a "
            "test of the reproduction.",
            "",
        ]
    return text


def write_markdown(
    path: Path,
    rows: Sequence[Row],
    runs: Sequence[Run],
    sweep_dirs: Sequence[Path],
    figures: Sequence[str],
    notes: Sequence[str],
) -> None:
    """results.md: notes, setup, results, verdicts, figures, and the runs one by one."""
    command = " ".join(["python -m cifar_cnn.report", *map(str, sweep_dirs)])
    text = [f"# Study report\n\nWritten {datetime.now():%Y-%m-%d %H:%M} by `{command}`.\n"]
    text += [f"> **Note:** {note}\n" for note in [*notes, *setup_notes(rows)]]
    text += setup_section(runs, sweep_dirs) + results_section(rows) + verdict_section(rows)
    text += ["## Figures", ""]
    for name in figures:
        text += [f"**{FIGURES[name]}**", "", f"![{FIGURES[name]}]({name})", ""]
    if not figures:
        text += ["Not drawn: no finished runs to draw.", ""]
    text += runs_sections(runs, rows)
    path.write_text("\n".join(text))


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
    """The command line: one report per sweep, or one pooled report with --out."""
    parser = argparse.ArgumentParser(
        prog="python -m cifar_cnn.report",
        description="Tables and figures of a sweep, compared with the published study.",
    )
    parser.add_argument(
        "sweep_dirs", nargs="*", type=Path, metavar="SWEEP_DIR",
        help=f"sweep directories (default: the newest under {DEFAULT_SWEEPS_ROOT}/); "
        "each gets its own SWEEP_DIR/report/ unless --out combines them",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="one report of all the sweeps, seeds pooled")
    args = parser.parse_args(argv)
    try:
        sweeps = args.sweep_dirs or [newest_sweep()]
        for group in [sweeps] if args.out else [[s] for s in sweeps]:
            out_dir = write_report(group, args.out)
            print(f"report: {out_dir / 'results.md'} (table: results.csv; figures: *.png)")
    except UserError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
