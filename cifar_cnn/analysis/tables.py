"""The study report: `python -m cifar_cnn.report [SWEEP_DIR ...]` (or `make report`).

Reads every job directory of a sweep, groups the runs into rows (the experiment and any
other overrides, seeds pooled; see cifar_cnn.analysis.rows) and writes into
`SWEEP_DIR/report/`: `results.md` and `results.csv` (one row per configuration: mean test
recall over seeds, its spread, the published recall where there is one, and a verdict
against its parent row) and the PNG figures of cifar_cnn.analysis.plots. A section per
folder of conf/experiment/: the study first, then "Beyond the study" (its figures named
`beyond_*.png`, the published best as their reference line), then any other folder. Runs
that did not finish are listed, never dropped. A search sweep (`hparams_search=optuna`) gets
cifar_cnn.analysis.search_tables instead.
"""

from __future__ import annotations

import csv
import statistics
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from cifar_cnn.analysis.plots import write_figures
from cifar_cnn.analysis.rows import (
    Row,
    Verdict,
    common_overrides,
    group_runs,
    sections,
    setup_notes,
)
from cifar_cnn.analysis.runs import REPORT_DIR, Run, collect_runs, config_dirs
from cifar_cnn.analysis.stats import ALPHA, POWER, fmt_p
from cifar_cnn.analysis.text import data_text, fmt, fmt_duration, joined, md_table, precision_text
from cifar_cnn.core.cifar10 import TRAIN_SIZE
from cifar_cnn.core.experiments import STUDY, read_catalog, section_title
from cifar_cnn.core.published import (
    BEST,
    BY_NAME,
    CLAIMED_LARGEST_GAIN,
    EPOCHS,
    PUBLISHED,
    SOURCE,
    PublishedRun,
)

# --- formatting and tables ----------------------------------------------------------------------


def row_record(row: Row) -> dict:
    """One row of the results table, full precision (None where there is no value)."""
    s, pub, v = row.summary, row.published, row.verdict
    t = v.test if v else None
    statuses = Counter(r.status for r in row.runs)
    seconds = [r.record.history.train_seconds for r in row.finished]
    at_best = [r.record.at_best_val for r in row.finished if r.record.at_best_val]
    return {
        "row": pub.row if pub else None,
        "section": section_title(row.section),
        "configuration": row.label,
        "experiment": row.experiment,
        "change": row.change,
        "runs_finished": s.n,
        "runs_total": len(row.runs),
        "runs_failed": statuses["failed"],
        "runs_interrupted": statuses["interrupted"],
        "runs_unfinished": statuses["unfinished"],
        "seeds": " ".join(str(r.seed) for r in row.finished),
        "mean_recall": s.mean,
        "sd_recall": s.sd,
        "ci95_low": s.interval[0] if s.interval else None,
        "ci95_high": s.interval[1] if s.interval else None,
        "published_recall": pub.recall if pub else None,
        "diff_vs_published": s.mean - pub.recall if pub and s.n else None,
        "mean_recall_at_best_val": (
            statistics.fmean(b.test.recall for b in at_best) if at_best else None
        ),
        "best_val_epochs": " ".join(str(b.epoch) for b in at_best) or None,
        "params": row.record_values(lambda r: r.params) if s.n else None,
        "epochs": row.record_values(lambda r: r.epochs) if s.n else None,
        "train_seconds_mean": statistics.fmean(seconds) if seconds else None,
        "best": "yes" if row.best else None,
        "parent": v.parent if v else None,
        "diff_vs_parent": v.diff if v else None,
        "published_diff_vs_parent": v.published_diff if v else None,
        "diff_ci95_low": t.low if t else None,
        "diff_ci95_high": t.high if t else None,
        "welch_df": t.df if t else None,
        "p_value": t.p_value if t else None,
        "p_holm": v.p_holm if v else None,
        "verdict": v.verdict if v else None,
        "seeds_to_resolve": v.seeds_to_resolve if v else None,
    }


def write_csv(path: Path, rows: Sequence[Row]) -> None:
    """results.csv: `row_record` of every row, empty cells where there is no value."""
    records = [row_record(row) for row in rows]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in records)


def results_section(rows: Sequence[Row], study: bool = True) -> list[str]:
    """The results table of one section's rows; the study's also gives the published notes,
    another section's the published best as its reference."""
    header = (
        "#", "configuration", "change", "runs", "mean recall", "sd", "95% interval",
        "published", "diff", "params", "epochs", "train time / run",
    )  # fmt: skip
    records = [row_record(row) for row in rows]
    selected = any(r["mean_recall_at_best_val"] is not None for r in records)
    header += ("test recall at best validation (epoch)",) if selected else ()
    lines = []
    for row, r in zip(rows, records, strict=True):
        runs = f"{r['runs_finished']} of {r['runs_total']}"
        runs += "".join(
            f", {r[f'runs_{s}']} {s}"
            for s in ("failed", "interrupted", "unfinished")
            if r[f"runs_{s}"]
        )
        interval = {0: "no finished run", 1: "none (one seed)"}.get(r["runs_finished"])
        lines.append((
            r["row"] or "",
            f"**{row.label}** ★ best" if row.best else row.label,
            r["change"],
            runs,
            fmt(r["mean_recall"]),
            "– (one seed)" if r["runs_finished"] == 1 else fmt(r["sd_recall"]),
            interval or f"[{r['ci95_low']:.4f}, {r['ci95_high']:.4f}]",
            fmt(r["published_recall"]),
            fmt(r["diff_vs_published"], signed=True),
            r["params"] or "–",
            r["epochs"] or "–",
            fmt_duration(r["train_seconds_mean"]),
            *([f"{fmt(r['mean_recall_at_best_val'])} ({r['best_val_epochs'] or '–'})"]
              if selected else []),
        ))  # fmt: skip
    published = [f"#{run.row} {run.name}: {run.note}." for run in PUBLISHED if run.note] + [
        f"#{run.row} {run.name} trained for {fmt_duration(run.train_seconds)} "
        f"({EPOCHS} epochs on the authors' hosted GPU)."
        for run in PUBLISHED
        if run.train_seconds
    ]
    text = f"{RESULTS_TEXT} {AT_BEST_VAL_TEXT}" if selected else RESULTS_TEXT
    if study:
        return ["## Results", "", text, "", *md_table(header, lines),
                "Published notes: " + " ".join(published), ""]  # fmt: skip
    return ["### Results", "", text, "", *md_table(header, lines), REFERENCE_TEXT, ""]


RESULTS_TEXT = (
    "Test recall is the average top-1 recall over the 10 classes (the study's metric). "
    "*mean recall* and *sd* are over the seeds of a row (sample standard deviation); the "
    "95% interval is mean ± t(0.975, n−1)·sd/√n (clipped to [0, 1]); "
    "*diff* = mean − published (– for a row without a published number). Training time "
    "excludes evaluation. ★ marks the best mean."
)
AT_BEST_VAL_TEXT = (
    "With a validation split, *mean recall* is the test recall after the last epoch, and the "
    "last column the mean test recall of the checkpoint of each run's best validation recall "
    "(checkpoints/best.ckpt; its epoch per seed), selected on the validation split, never on "
    "test. Verdicts and figures use the last epoch."
)
REFERENCE_TEXT = (
    f"Reference: the published best, #{BEST.row} {BEST.name}, {BEST.recall:.4f} (one seed, "
    f"{EPOCHS} epochs on the full CIFAR-10), the dashed line of the recall figures. These "
    "rows have no published number: each is judged against its parent row below."
)


def _seeds_text(v: Verdict) -> str | int:
    """A step's seeds to resolve: `none` where its rows agree exactly (zero spread)."""
    if v.verdict != "within noise" or v.published_diff is None:
        return "–"
    return "none (identical rows)" if v.seeds_to_resolve is None else v.seeds_to_resolve


def _published_step(run: PublishedRun) -> str:
    gain = run.recall - BY_NAME[run.parent].recall
    return f"{run.name} ({fmt(gain, signed=True)} over {run.parent})"


def verdict_section(rows: Sequence[Row], study: bool = True) -> list[str]:
    """Each step of one section's rows against its parent row, Holm-adjusted together."""
    judged = [r for r in rows if r.verdict]
    tested = sum(1 for r in judged if r.verdict.test)
    title = "## Does each step of the ablation hold up?" if study else "### Does each step help?"
    text = [
        title,
        "",
        "Each row changes one thing in its parent row (the experiment its file's `defaults` "
        "names; for a published row, the study's parent). *published Δ* is the "
        "study's recall difference (one run each), *rerun Δ* the difference of the means "
        "here, with its 95% interval. Each step is tested by Welch's t test (two-sided, "
        "the two rows' spreads need not be equal; Welch–Satterthwaite degrees of freedom, "
        f"exact t distribution): *p*. The {tested} step(s) here with two or more seeds per row are "
        "judged at once, so their p-values are adjusted by Holm's step-down method, "
        "*p (Holm)*: the chance that any of them is wrongly called holds, reversed, better or "
        f"worse stays "
        f"at {ALPHA:g}. **holds**: p (Holm) ≤ {ALPHA:g} and the rerun moves the recall in "
        f"the published direction; **reversed**: p (Holm) ≤ {ALPHA:g}, the other way; "
        f"**within noise**: p (Holm) > {ALPHA:g}, so this rerun cannot confirm the step, "
        "and *seeds to resolve* says how many seeds per row a t test (two-sided, "
        f"α = {ALPHA:g}, power {POWER:g}) would need to detect a difference of the published "
        "size at the spread seen here (the two rows' pooled sd). The interval is each step's "
        "own, not adjusted. With one seed per row there is no spread, and the step cannot "
        "be judged. *none*: both rows hold the same recall on every seed (zero spread), and "
        "no number of seeds resolves a difference of zero. A row without a published number "
        "has no claim to test: **better** or "
        f"**worse** when p (Holm) ≤ {ALPHA:g}, else **within noise**, and *published Δ* and "
        "*seeds to resolve* are –. A row whose parent did not run in this sweep says so. "
        "docs/statistics.md explains the method.",
        "",
    ]
    if not judged:
        return [*text, "No row of this sweep has its parent row in the sweep.", ""]
    header = ("step", "change", "vs", "published Δ", "rerun Δ", "95% interval of Δ", "p",
              "p (Holm)", "verdict", "seeds to resolve")  # fmt: skip
    lines = [
        (r.label, r.change, v.parent, fmt(v.published_diff, signed=True),
         fmt(v.diff, signed=True), f"[{v.test.low:+.4f}, {v.test.high:+.4f}]" if v.test else "–",
         fmt_p(v.test.p_value if v.test else None), fmt_p(v.p_holm), f"**{v.verdict}**",
         _seeds_text(v))
        for r in judged
        for v in [r.verdict]
    ]  # fmt: skip
    text += md_table(header, lines)
    counts = Counter(r.verdict.verdict.split(":")[0] for r in judged)
    parts = ", ".join(f"{verdict}: {n}" for verdict, n in counts.most_common())
    text.append(f"- Steps compared: {len(judged)} ({parts}).")
    steps = [r for r in judged if r.verdict.diff is not None]
    if steps and not study:
        gain = max(steps, key=lambda r: r.verdict.diff)
        best = max((r for r in rows if r.summary.n), key=lambda r: r.summary.mean)
        text += [
            f"- Largest gain on rerun: {gain.label} ({fmt(gain.verdict.diff, signed=True)} over "
            f"{gain.verdict.parent}; {gain.verdict.verdict}).",
            f"- Best row: {best.label}, {fmt(best.summary.mean)} "
            f"({fmt(best.summary.mean - BEST.recall, signed=True)} against the published best, "
            f"{BEST.recall:.4f} after {EPOCHS} epochs).",
        ]
    elif steps:
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
    """The runs that did not finish, then every finished run."""
    lost = [r for r in runs if r.status != "finished"]
    text = ["## Failed, interrupted and unfinished runs", ""]
    if lost:
        text += md_table(
            ("run", "experiment", "seed", "status", "detail"),
            [(f"`{r.name}`", r.experiment or "–", "–" if r.seed is None else r.seed,
              f"**{r.status}**", r.detail) for r in lost],
        )  # fmt: skip
    else:
        text += ["None: every run finished.", ""]
    finished = [
        (f"`{r.job}`", row.label, r.seed, fmt(r.record.test.recall), r.record.epochs,
         fmt_duration(r.record.history.train_seconds))
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
        *md_table(header, finished),
    ]


def setup_section(runs: Sequence[Run], sweep_dirs: Sequence[Path]) -> list[str]:
    finished = [r for r in runs if r.status == "finished"]
    statuses = Counter(r.status for r in runs)
    seeds = sorted({r.seed for r in runs if r.seed is not None})
    epochs = list(dict.fromkeys(r.record.epochs for r in finished))
    devices = dict.fromkeys(
        f"{r.record.environment.device}, {r.record.environment.threads} threads" for r in finished
    )
    common = common_overrides(runs)
    text = [
        "## What was run",
        "",
        f"- sweep: {', '.join(f'`{d}`' for d in sweep_dirs)}",
        f"- runs: {len(runs)} ("
        + ", ".join(f"{n} {s}" for s, n in statuses.most_common())
        + f"); seeds: {', '.join(map(str, seeds)) or '–'}",
        f"- data: {joined(list(dict.fromkeys(data_text(r.record) for r in finished)))}",
        f"- epochs: {joined(epochs)}",
        f"- device: {joined(list(devices))}",
        f"- precision: {joined(list(dict.fromkeys(precision_text(r.record) for r in finished)))}",
        "- settings shared by every run: "
        + (", ".join(f"`{k}={v}`" for k, v in common.items()) or "none besides the defaults"),
        f"- published numbers: {SOURCE}; one seed each, {EPOCHS} epochs on the full "
        f"CIFAR-10 ({TRAIN_SIZE:,} training images).",
        "",
    ]
    if any(e != EPOCHS for e in epochs) or any(
        r.record.data.train_size != TRAIN_SIZE for r in finished
    ):
        text += [
            f"These runs differ from the published setup ({EPOCHS} epochs, {TRAIN_SIZE:,} "
            "training images): the *published* and *diff* columns are context here, not a "
            "test of the reproduction.",
            "",
        ]
    return text


def section_text(
    section: str, rows: Sequence[Row], figures: Sequence[tuple[str, str]]
) -> list[str]:
    """One section of results.md: the study's rows as the study's report, any other folder
    of conf/experiment/ under its own title; results, verdicts and figures each."""
    study = section == STUDY
    text = [] if study else [
        f"## {section_title(section)}",
        "",
        f"The rows of `conf/experiment/{section}/`: each changes one thing in its parent row "
        "(the experiment its file's `defaults` names) and is judged against it.",
        "",
    ]  # fmt: skip
    text += results_section(rows, study) + verdict_section(rows, study)
    text += ["## Figures" if study else "### Figures", ""]
    for name, caption in figures:
        text += [f"**{caption}**", "", f"![{caption}]({name})", ""]
    if not figures:
        text += ["Not drawn: no finished runs to draw.", ""]
    return text


def write_markdown(
    path: Path,
    rows: Sequence[Row],
    runs: Sequence[Run],
    sweep_dirs: Sequence[Path],
    figures: dict[str, list[tuple[str, str]]],
    notes: Sequence[str],
) -> None:
    """results.md: notes, setup, each section's results, verdicts and figures (`figures`:
    section -> (file, caption)), and the runs one by one."""
    command = " ".join(["python -m cifar_cnn.report", *map(str, sweep_dirs)])
    text = [f"# Study report\n\nWritten {datetime.now():%Y-%m-%d %H:%M} by `{command}`.\n"]
    text += [f"> **Note:** {note}\n" for note in [*notes, *setup_notes(rows)]]
    text += setup_section(runs, sweep_dirs)
    for section, members in sections(rows):
        text += section_text(section, members, figures[section])
    text += runs_sections(runs, rows)
    path.write_text("\n".join(text))


def write_report(sweep_dirs: Sequence[Path], out_dir: Path | None = None) -> Path:
    """Read the sweeps and write the report; returns the report directory. The experiment
    files come from the config directories the sweeps recorded (`runs.config_dirs`)."""
    runs, notes = collect_runs(sweep_dirs)
    rows = group_runs(runs, read_catalog(config_dirs(sweep_dirs)))
    out_dir = out_dir or sweep_dirs[0] / REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = {
        section: write_figures(out_dir, members, section, None if section == STUDY else BEST)
        for section, members in sections(rows)
    }
    write_csv(out_dir / "results.csv", rows)
    write_markdown(out_dir / "results.md", rows, runs, sweep_dirs, figures, notes)
    return out_dir
