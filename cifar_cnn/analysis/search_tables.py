"""The report on a search sweep (`hparams_search=optuna`), which `python -m cifar_cnn.report
SEARCH_DIR` writes into SEARCH_DIR/report/: `results.md` (what was searched and what selected,
the trials best first with their settings, what mattered (parameter importances and the
search's figures, search_figures.py), then the best trial and the study's best retrained over
the same seeds, with the study report's verdict), `results.csv` (the trials) and the figures.
Free of torch, Lightning and Hydra.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from datetime import datetime
from pathlib import Path

from cifar_cnn.analysis.rows import Row
from cifar_cnn.analysis.runs import REPORT_DIR, Run
from cifar_cnn.analysis.search_figures import (
    EVALUATOR,
    SEARCH_FIGURES,
    Importances,
    importances,
    write_search_figures,
)
from cifar_cnn.analysis.stats import ALPHA, Summary, decide, fmt_p, untestable, welch
from cifar_cnn.analysis.text import data_text, fmt, fmt_duration, joined, md_table
from cifar_cnn.analysis.trials import (
    FOUND,
    RETRAIN_DIR,
    STUDY,
    STUDY_BEST,
    Search,
    Trial,
    read_search,
    study_location,
)
from cifar_cnn.core.cifar10 import TRAIN_SIZE
from cifar_cnn.core.published import BY_NAME, EPOCHS
from cifar_cnn.core.runfiles import STUDY_FILE


def _value(text: str) -> str:
    """A setting for the tables: floats to 3 significant digits, the rest as given."""
    if re.fullmatch(r"-?\d*\.\d+(e-?\d+)?|-?\d+e-?\d+", text):
        return f"{float(text):.3g}"
    return text


def _short(key: str) -> str:
    return key.rpartition(".")[2]


def _budget(run: Run) -> str:
    return f"{run.record.epochs} epochs on {data_text(run.record)}"


def setup_section(search: Search) -> list[str]:
    """What was searched, how, and what selected the best trial."""
    finished = [t.run for t in search.trials if t.run.status == "finished"]
    statuses = Counter(t.run.status for t in search.trials)
    sampler = search.sweeper.get("sampler") or {}
    seed = f", seed {sampler['seed']} + trial number" if sampler.get("seed") is not None else ""
    text = [
        "## What was searched",
        "",
        f"- sweep: `{search.path}`; trials here: {len(search.trials)} ("
        + ", ".join(f"{n} {s}" for s, n in statuses.most_common())
        + ")",
    ]
    if search.study_states is not None:
        states = ", ".join(f"{n} {s.lower()}" for s, n in search.study_states.most_common())
        where = study_location(search.path, search.sweeper) or STUDY_FILE
        where = STUDY_FILE if where.endswith(f"/{STUDY_FILE}") else where
        text.append(
            f"- study (`{where}`): {sum(search.study_states.values())} trials ({states}); "
            f"requested: {search.sweeper.get('n_trials', '–')}, "
            f"{search.sweeper.get('n_jobs', '–')} launched together"
        )
    pruner = search.sweeper.get("pruner") or {}
    pruner_text = str(pruner.get("_target_", "–")).rpartition(".")[2] if pruner else "none"
    settings = ", ".join(f"{k} {v}" for k, v in pruner.items() if k != "_target_")
    text.append(f"- pruner: {pruner_text}" + (f" ({settings})" if settings else ""))
    text += [
        f"- sampler: {str(sampler.get('_target_', '–')).rpartition('.')[2]}{seed}; direction: "
        f"{search.sweeper.get('direction', '–')}",
        f"- every trial: {joined(list(dict.fromkeys(_budget(r) for r in finished)))}",
        "- search space: " + (", ".join(f"`{k}`: `{v}`" for k, v in search.space.items()) or "–"),
        "",
    ]
    if search.objective == "val_recall":
        text.append(
            "**Validation recall selected.** Each trial returned its recall on the validation "
            "split (training images held out by `data.val_size`, stratified by class, the same "
            "for every trial and seed) after its last epoch; the search maximised that. Each "
            "trial evaluated the test set once, at its end: the *test recall* column is shown "
            "for information, and nothing was chosen by it."
        )
    else:
        text.append(
            "**Test recall selected** (the trials held out no validation split, "
            "`data.val_size=0`): the best trial's score is optimistic, as the study's was. "
            "Search with `data.val_size` > 0 for an honest choice."
        )
    return [*text, ""]


def trials_section(search: Search) -> list[str]:
    """Every trial, best first, with its settings; failed and unfinished ones last."""
    keys = list(search.space)
    header = ("rank", "trial", "val recall", "test recall", "status", *map(_short, keys),
              "train time")  # fmt: skip
    lines = []
    for rank, trial in enumerate(search.ranked(), start=1):
        run = trial.run
        status = run.status
        expected = {"finished": "COMPLETE", "failed": "FAIL", "pruned": "PRUNED"}.get(status)
        if trial.state and trial.state != expected:
            status += f" (study: {trial.state.lower()})"
        if run.status == "pruned":
            status = f"pruned after epoch {run.record.epochs}"
        elif run.status != "finished":
            status = f"**{status}**: {run.detail}"
        scored = trial.score(search.objective) is not None
        lines.append((
            rank if scored else "–",
            f"**{trial.number}** ★" if trial is search.best else trial.number,
            fmt(trial.score("val_recall")),
            fmt(trial.score("test_recall")),
            status,
            *(_value(trial.params[k]) if k in trial.params else "–" for k in keys),
            fmt_duration(run.record.history.train_seconds if run.record else None),
        ))  # fmt: skip
    selected = "validation" if search.objective == "val_recall" else "test"
    return [
        "## Trials, best first",
        "",
        f"Ranked by {selected} recall (★: the best trial). *trial* is the trial's number in "
        "the study and the name of its directory. A pruned trial was stopped by the pruner "
        "before its last epoch: its recall is from then, listed after the complete trials, and "
        "it cannot be the best.",
        "",
        *md_table(header, lines),
    ]


def mattered_section(search: Search, found: Importances | None, figures: list[str]) -> list[str]:
    """Which searched keys mattered (importances, and how many trials they rest on), and the
    search's figures."""
    text = ["## What mattered", ""]
    if found is None:
        return [*text, "No study to read (its storage is gone): no importances.", ""]
    if found.values:
        text += [
            f"Importance of each searched key for reaching the best validation recalls, by "
            f"{EVALUATOR}, over the study's **{found.trials} complete trials** (pruned and "
            "failed ones have no final value). The importances sum to 1; with few trials they "
            "are rough, and they say what mattered within this search space and budget only.",
            "",
            *md_table(("key", "importance"),
                      [(f"`{k}`", f"{v:.3f}") for k, v in found.values.items()]),
        ]  # fmt: skip
    else:
        text += [f"No importances: {found.reason}.", ""]
    for name in figures:
        text += [f"![{SEARCH_FIGURES[name]}]({name})", "", f"*{SEARCH_FIGURES[name]}.*", ""]
    return text


def _row_line(label: str, row: Row) -> tuple:
    s = row.summary
    val = Summary.of([r.record.val_recall for r in row.finished if r.record.val_recall is not None])
    interval = f"[{s.interval[0]:.4f}, {s.interval[1]:.4f}]" if s.interval else "–"
    return (label, joined(sorted(r.seed for r in row.finished)), fmt(s.mean), fmt(s.sd),
            interval, fmt(val.mean), f"{len(row.finished)} of {len(row.runs)}")  # fmt: skip


def comparison_section(search: Search) -> list[str]:
    """The best trial and the study's best, retrained over the same seeds, and the verdict."""
    text = ["## Did the search beat the study?", ""]
    found, study = search.found, search.study_best
    if found is None or study is None or not found.finished or not study.finished:
        missing = [f"`{RETRAIN_DIR}/{n}/`" for n, r in ((FOUND, found), (STUDY, study))
                   if r is None or not r.finished]  # fmt: skip
        return [
            *text,
            f"Not answered yet: {' and '.join(missing)} hold no finished runs. `make search "
            f"SEARCH_DIR={search.path}` retrains the best trial and `experiment={STUDY_BEST}` "
            "over seeds 0, 1, 2 at the trials' budget, then writes this report again.",
            "",
        ]
    best, trial = search.best, search.retrained_trial()
    label = f"trial {trial.number}: " if trial else "the settings of no trial here: "
    label += ", ".join(
        f"{_short(k)}={_value(v)}" for k, v in (trial.params if trial else {}).items()
    )
    published = BY_NAME[STUDY_BEST]
    header = ("configuration", "seeds", "mean test recall", "sd", "95% interval",
              "mean val recall", "runs")  # fmt: skip
    lines = [
        _row_line(f"search's best, {label}", found),
        _row_line(f"study's best: `experiment={STUDY_BEST}` (row {published.row})", study),
    ]
    reason = untestable(found.summary, study.summary, claimed=1.0)
    test = None if reason else welch(found.summary, study.summary)
    verdict = reason or decide(test.diff, test.p_value, claimed=1.0)
    interval = f"[{test.low:+.4f}, {test.high:+.4f}]" if test else "–"
    claim = ("the search's best beats the study's best",
             fmt(found.summary.mean - study.summary.mean, signed=True), interval,
             fmt_p(test.p_value if test else None), f"**{verdict}**")  # fmt: skip
    meaning = {
        "holds": f"the search's configuration beats the study's best (p ≤ {ALPHA:g})",
        "reversed": f"the study's best beats the search's configuration (p ≤ {ALPHA:g})",
        "within noise": f"p > {ALPHA:g}: at this spread and number of seeds this comparison "
        "cannot tell them apart",
    }.get(verdict.split(":")[0], verdict)
    text += [
        "Both configurations retrained from scratch over the same seeds, at the trials' "
        "budget and on the same training images (the validation split held out), then scored "
        "once on the test set, which no choice has seen. The published recall of "
        f"`{STUDY_BEST}` ({published.recall:.4f}) is for {EPOCHS} epochs on all "
        f"{TRAIN_SIZE:,} training images: context, not a comparison.",
        "",
        *md_table(header, lines),
        *md_table(
            ("claim", "test Δ (search − study)", "95% interval of Δ", "p", "verdict"), [claim]
        ),
        "*p* is Welch's t test of the difference of means (two-sided, Welch–Satterthwaite "
        "degrees of freedom, exact t distribution), as in the study report; one comparison, so "
        f"no multiplicity adjustment: **{verdict}** means {meaning}.",
        "",
    ]
    budgets = Counter(_budget(r) for row in (found, study) for r in row.finished)
    trial_budgets = {_budget(t.run) for t in search.trials if t.run.status == "finished"}
    if len(budgets) > 1 or not set(budgets) <= trial_budgets:
        text += [
            f"> **Note:** the retrained runs do not all share the trials' budget and data "
            f"({joined(list(budgets))}; trials: {joined(sorted(trial_budgets))}); the "
            "comparison is only fair at one budget.",
            "",
        ]
    if trial is not best:
        text += [
            f"> **Note:** `{RETRAIN_DIR}/{FOUND}/` does not hold the best trial's settings (the "
            "search went on after it was retrained?): delete it and run `make search "
            f"SEARCH_DIR={search.path}` again to retrain trial {best.number if best else '–'}.",
            "",
        ]
    return text


def trial_record(trial: Trial) -> dict:
    """One row of the search's results.csv (full precision)."""
    return {
        "trial": trial.number,
        "status": trial.run.status,
        "study_state": trial.state or "",
        "val_recall": trial.score("val_recall"),
        "test_recall": trial.score("test_recall"),
        "epochs": trial.run.record.epochs if trial.run.record else None,
        "train_seconds": trial.run.record.history.train_seconds if trial.run.record else None,
        **trial.params,
        "detail": trial.run.detail,
    }


def write_search_report(sweep_dir: Path, out_dir: Path | None = None) -> Path:
    """results.md (setup, trials best first, the retrained comparison) and results.csv (the
    trials) in `out_dir` (default SWEEP_DIR/report); returns the report directory."""
    search = read_search(sweep_dir)
    out_dir = out_dir or sweep_dir / REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    records = [trial_record(t) for t in search.ranked()]
    fields = list(dict.fromkeys(k for r in records for k in r))
    with (out_dir / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows({k: "" if r.get(k) is None else r[k] for k in fields} for r in records)
    command = f"python -m cifar_cnn.report {sweep_dir}"
    text = [f"# Search report\n\nWritten {datetime.now():%Y-%m-%d %H:%M} by `{command}`.\n"]
    found = importances(search.study) if search.study is not None else None
    keys = [*(found.values if found else {}), *search.space]
    keys = list(dict.fromkeys(keys))  # the most important first
    figures = write_search_figures(out_dir, search.study, keys) if search.study else []
    text += setup_section(search) + trials_section(search)
    text += mattered_section(search, found, figures)
    text += comparison_section(search)
    (out_dir / "results.md").write_text("\n".join(text))
    return out_dir
