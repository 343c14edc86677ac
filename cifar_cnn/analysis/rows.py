"""The rows of a report: the runs of a sweep grouped into configurations, with their statistics.

Groups the runs by configuration (the experiment and any other overrides, seeds pooled),
summarises each group's test recall over seeds, and judges each row against its parent row:
a published row against the published step, a row without a published number (any
experiment file, core/experiments.py) on its own. Rows fall into sections by the
experiment's folder: the study, then "Beyond the study", then any other folder; each
section's steps are one family for Holm's adjustment. cifar_cnn.analysis.tables writes the
rows out; cifar_cnn.analysis.plots draws them. Free of torch, Lightning and Hydra.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from cifar_cnn.analysis.runs import Run
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
from cifar_cnn.core.experiments import STUDY, Experiment, read_catalog, section_of
from cifar_cnn.core.published import BY_NAME, STUDY_ORDER, PublishedRun
from cifar_cnn.core.record import RunRecord

NOT_IN_SWEEP = "parent not in this sweep"


@dataclass(frozen=True)
class Verdict:
    """How one step (a row vs its parent row) came out on rerun."""

    parent: str  # the parent row's label
    diff: float | None  # mean(row) - mean(parent)
    published_diff: float | None  # None for a row without a published number
    verdict: str
    test: Welch | None = None  # Welch's t test of `diff`; None below two seeds on a side
    p_holm: float | None = None  # the test's p-value, Holm-adjusted over its section's tests
    # Seeds per side to resolve `published_diff` (t test); None untested or without spread.
    seeds_to_resolve: int | None = None


@dataclass
class Row:
    """One configuration: the runs that share everything but the seed."""

    experiment: str | None
    extra: dict[str, str]  # defining overrides besides the experiment, not common to the sweep
    runs: list[Run] = field(default_factory=list)
    best: bool = False  # the best mean of its section
    verdict: Verdict | None = None
    entry: Experiment | None = None  # its experiment file, when the catalog has it

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
    def section(self) -> str:
        """The experiment's folder: `""` for the study (and runs without an experiment)."""
        return section_of(self.experiment)

    @property
    def parent(self) -> str | None:
        """The experiment this row changes: the published parent, else its file's."""
        if self.published:
            return self.published.parent
        return self.entry.parent if self.entry else None

    @property
    def change(self) -> str:
        """What the row changes: the published text, else its file's header comment."""
        if self.published:
            return self.published.change
        if self.entry:
            return self.entry.description or f"(no comment in {self.entry.path.name})"
        return "(not an experiment file)" if self.experiment else "(not a published run)"

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


def published_step(row: Row) -> float | None:
    """The published recall difference of a row over its parent; None without one."""
    pub = row.published
    return pub.recall - BY_NAME[pub.parent].recall if pub and pub.parent in BY_NAME else None


def judge(row: Row, parent: Row | None, parent_name: str | None = None) -> Verdict:
    """Compare a row with its parent by Welch's t test, on its own (`judge_family` adjusts the
    verdicts of several steps for multiplicity): a published step holds, is reversed, is
    within noise or cannot be judged; a row without a published number is better, worse or
    within noise."""
    claimed = published_step(row)
    name = parent_name or row.parent or "?"
    if parent is None:
        return Verdict(name, None, claimed, f"{NOT_IN_SWEEP}: {name}")
    mine, theirs = row.summary, parent.summary
    diff = mine.mean - theirs.mean if mine.n and theirs.n else None
    reason = untestable(mine, theirs, claimed)
    if reason:
        return Verdict(parent.label, diff, claimed, reason)
    test = welch(mine, theirs)
    spread = pooled_sd(mine, theirs)
    # No spread and no difference (identical rows): more seeds would repeat the same numbers.
    seeds = seeds_to_resolve(claimed, spread) if claimed and spread > 0 else None
    verdict = decide(diff, test.p_value, claimed)
    return Verdict(parent.label, diff, claimed, verdict, test, test.p_value, seeds)


def judge_family(rows: Sequence[Row]) -> None:
    """Decide the tested steps among `rows` together: Holm's step-down adjustment of their
    p-values keeps the chance of any false "holds", "reversed", "better" or "worse" at ALPHA
    (family-wise)."""
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


def _depth(row: Row, catalog: Mapping[str, Experiment]) -> int:
    """How many parents lie above the row's experiment (a chain sorts parents first)."""
    depth, name, seen = 0, row.parent, set()
    while name and name not in seen:
        seen.add(name)
        depth += 1
        name = catalog[name].parent if name in catalog else None
    return depth


def group_runs(runs: Sequence[Run], catalog: Mapping[str, Experiment] | None = None) -> list[Row]:
    """Rows by section (the study first, in its published order, then "beyond", then any
    other folder), parents before children within a section, then the order the sweep ran
    them; each step judged against its parent, Holm within each section, the best row of
    each section marked. `catalog` (default: this install's conf/) names each experiment's
    parent."""
    catalog = read_catalog() if catalog is None else catalog
    common = common_overrides(runs)
    rows: dict[tuple, Row] = {}
    for run in runs:
        extra = {
            k: v
            for k, v in sorted(run.defining.items())
            if k != "experiment" and common.get(k) != v
        }
        key = (run.experiment, tuple(extra.items()))
        if key not in rows:
            rows[key] = Row(run.experiment, extra, entry=catalog.get(run.experiment or ""))
        rows[key].runs.append(run)
    for key, row in rows.items():
        if row.parent:
            row.verdict = judge(row, rows.get((row.parent, key[1])), row.parent)

    def order(row: Row) -> tuple:
        rank = {STUDY: 0, "beyond": 1}.get(row.section, 2)
        place = STUDY_ORDER.index(row.experiment) if row.experiment in STUDY_ORDER else 99
        return rank, row.section, place, _depth(row, catalog)

    ordered = sorted(rows.values(), key=order)  # stable: the sweep's order within a rank
    for _, members in sections(ordered):
        judge_family(members)
        reported = [r for r in members if r.summary.n]
        if reported:
            max(reported, key=lambda r: r.summary.mean).best = True
    return ordered


def sections(rows: Sequence[Row]) -> list[tuple[str, list[Row]]]:
    """(section, its rows) in the order of `rows`; sections without rows left out."""
    found: dict[str, list[Row]] = {}
    for row in rows:
        found.setdefault(row.section, []).append(row)
    return list(found.items())


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
