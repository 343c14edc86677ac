"""Matplotlib figures: the confusion matrix logged to TensorBoard, and the report's figures.

Drawn with matplotlib's object-oriented API (no pyplot): importing this module sets no
backend, and every figure is a plain Figure that `savefig` renders through Agg.
"""

import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cifar_cnn.analysis.rows import Row
from cifar_cnn.core.cifar10 import CLASSES
from cifar_cnn.core.confusion_figure import confusion_matrix_figure
from cifar_cnn.core.published import EPOCHS, PublishedRun

# The report's figures: file name -> caption in results.md.
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
# The captions that differ for a section with a reference line (the rows beyond the study).
REFERENCE_CAPTIONS = {
    "loss_curves.png": "Training loss per epoch, one panel per configuration; thin lines are "
    "seeds, the thick line their mean",
    "recall_overlay.png": "Mean test recall per epoch, all configurations; the dashed line is "
    "the study's published best",
    "recall_bars.png": "Mean test recall with 95% intervals, seeds as dots; the dashed line is "
    "the study's published best",
}
Curve = tuple[list[int], list[float]]  # epochs, values


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


def _curves(row: Row, kind: str) -> list[Curve]:
    """Each finished run's training loss (`kind` "loss") or test recall per epoch."""
    histories = [r.record.history for r in row.finished]
    if kind == "loss":
        return [(list(range(1, h.epochs + 1)), h.train_loss) for h in histories]
    return [(h.test_recall_epochs, h.test_recall) for h in histories]


def _mean_curve(curves: Sequence[Curve]) -> Curve:
    """Mean over runs at each epoch that any run reached (runs may stop at different epochs)."""
    at: dict[int, list[float]] = {}
    for epochs, values in curves:
        for epoch, value in zip(epochs, values, strict=False):
            at.setdefault(epoch, []).append(value)
    return sorted(at), [statistics.fmean(at[e]) for e in sorted(at)]


def _style_epochs(ax: Axes, max_epoch: int, values: Sequence[float], ylabel: str) -> None:
    """Integer epochs on x; a log-scale y when the values span more than a factor 20."""
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlim(0.8, max(max_epoch, 1) + 0.2)
    ax.grid(alpha=0.3)
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 20:
        ax.set_yscale("log")


def _title(row: Row) -> str:
    s, pub = row.summary, row.published
    if s.n == 0:
        recall = "no finished run"
    elif s.n == 1:
        recall = f"recall {s.mean:.4f} (1 seed)"
    else:
        recall = f"recall {s.mean:.4f} ± {s.sd:.4f} ({s.n} seeds)"
    number = f"#{pub.row} " if pub else ""
    published = f"\npublished {pub.recall:.4f}" if pub else ""
    return f"{number}{wrapped(row.label, 45)}\n{recall}{published}"


def loss_panels(rows: Sequence[Row], colours: Sequence) -> Figure:
    """One panel per configuration: each seed's training loss, and their mean."""
    ncols = min(5, len(rows))
    nrows = math.ceil(len(rows) / ncols)
    fig = Figure(figsize=(3.8 * ncols, 3.3 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False)
    curves = [_curves(row, "loss") for row in rows]
    all_loss = [v for row_curves in curves for _, values in row_curves for v in values]
    max_epoch = max((len(v) for row_curves in curves for _, v in row_curves), default=1)
    for ax, row, row_curves, colour in zip(axes.flat, rows, curves, colours, strict=False):
        for epochs, values in row_curves:
            ax.plot(epochs, values, color=colour, alpha=0.35, linewidth=1)
        epochs, mean = _mean_curve(row_curves)
        marker = "o" if max_epoch <= 20 else None
        ax.plot(epochs, mean, color=colour, linewidth=2.2, marker=marker, label="mean")
        if not epochs:
            ax.text(0.5, 0.5, "no finished run", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(_title(row), fontsize=9)
        _style_epochs(ax, max_epoch, all_loss, "training loss (mean per epoch)")
        if ax not in axes[:, 0]:
            ax.set_ylabel("")
    for ax in axes.flat[len(rows) :]:
        ax.set_visible(False)
    fig.suptitle("Training loss per epoch (thin: each seed; thick: mean over seeds)")
    return fig


def reference_line(ax: Axes, reference: PublishedRun | None) -> None:
    """A dashed horizontal line at a published recall (the study's best, for the rows beyond
    it), with its legend entry."""
    if reference:
        label = f"published best: #{reference.row} {reference.name}, {reference.recall:.4f}"
        ax.axhline(
            reference.recall, color="crimson", linestyle="--", linewidth=1.5,
            label=f"{label} (1 seed, {EPOCHS} epochs)",
        )  # fmt: skip


def overlay(
    rows: Sequence[Row], colours: Sequence, kind: str, reference: PublishedRun | None = None
) -> Figure:
    """All configurations' mean curves in one plot: `kind` is "loss" or "recall"; a recall
    plot draws `reference` as a line."""
    fig = Figure(figsize=(10, 5.5), layout="constrained")
    ax = fig.subplots()
    curves = [_curves(row, kind) for row in rows]
    max_epoch = max((max(e, default=0) for c in curves for e, _ in c), default=1)
    values = []
    for row, row_curves, colour in zip(rows, curves, colours, strict=True):
        epochs, mean = _mean_curve(row_curves)
        if epochs:
            values += mean
            label = row.label + (f" ({row.summary.mean:.3f})" if kind == "recall" else "")
            marker = "o" if max_epoch <= 20 else None
            ax.plot(
                epochs, mean, color=colour, linewidth=2, marker=marker, label=wrapped(label, 45)
            )
    if kind == "loss":
        _style_epochs(ax, max_epoch, values, "training loss (mean per epoch, mean over seeds)")
        ax.set_title("Training loss per epoch, all configurations")
    else:
        _style_epochs(ax, max_epoch, [], "test recall (mean over seeds)")
        reference_line(ax, reference)
        ax.set_title("Test recall per epoch, all configurations (final recall in the legend)")
    if ax.get_legend_handles_labels()[0]:  # none with a validation split (no test curves)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    return fig


def recall_bars(
    rows: Sequence[Row], colours: Sequence, reference: PublishedRun | None = None
) -> Figure:
    """Mean recall per configuration with 95% intervals, seeds as dots, published marked,
    `reference` as a line."""
    labels = [wrapped(row.label, 22) for row in rows]
    lines = max(label.count("\n") + 1 for label in labels)
    slot = 1.1 if lines == 1 else 1.7  # inches per bar: wrapped labels sit flat and need room
    size = (max(7, slot * len(rows) + 2), 6 + 0.15 * lines)
    fig = Figure(figsize=size, layout="constrained")
    ax = fig.subplots()
    means = [row.summary.mean or 0.0 for row in rows]
    intervals = [row.summary.interval or (m, m) for row, m in zip(rows, means, strict=True)]
    errors = [[m - low for m, (low, _) in zip(means, intervals, strict=True)],
              [high - m for m, (_, high) in zip(means, intervals, strict=True)]]  # fmt: skip
    bars = ax.bar(
        range(len(rows)), means, yerr=errors, capsize=5, color=colours, alpha=0.8,
        error_kw={"linewidth": 1.3}, label="mean of seeds (95% interval)",
    )  # fmt: skip
    for i, row in enumerate(rows):
        if row.best:
            bars[i].set_edgecolor("black")
            bars[i].set_linewidth(2)
        seed_label = "one seed" if i == 0 else None
        ax.scatter(
            [i] * len(row.recalls), row.recalls, s=14, color="black", zorder=3, label=seed_label
        )
        if row.summary.n:
            text = f"{means[i]:.3f}" + (" ★" if row.best else "")
            ax.text(i, 0.01, text, ha="center", va="bottom", fontsize=8, fontweight="bold")
    published = [(i, row.published.recall) for i, row in enumerate(rows) if row.published]
    if published:
        ax.scatter(
            *zip(*published, strict=True), marker="_", s=700, linewidths=2.5, color="crimson",
            zorder=4, label=f"published (1 seed, {EPOCHS} epochs)",
        )  # fmt: skip
    reference_line(ax, reference)
    if lines > 1:
        ax.set_xticks(range(len(rows)), labels, fontsize=8)
    else:
        ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right")
    ax.set_ylabel("test recall (average top-1 recall)")
    ax.set_xlabel("configuration")
    references = [reference.recall] if reference else []
    highest = max([*(high for _, high in intervals), *(p for _, p in published), *references, 0.1])
    ax.set_ylim(0, min(1.0, highest + 0.05))
    ax.set_title("Mean test recall per configuration (★: best; error bars: 95% interval)")
    ax.grid(axis="y", alpha=0.3)
    ncols = 3 if size[0] >= 11 else 2  # a narrow figure: the labels would run off its edges
    fig.legend(loc="outside lower center", ncols=ncols, fontsize=9, frameon=False)
    return fig


def per_class_heatmap(rows: Sequence[Row]) -> Figure:
    """Mean recall of every class for every configuration that finished a run."""
    shown = [row for row in rows if row.finished]
    matrix = [
        [statistics.fmean(r.record.test.recall_per_class.get(c, math.nan) for r in row.finished)
         for c in CLASSES]
        for row in shown
    ]  # fmt: skip
    labels = [wrapped(row.label, 40) for row in shown]
    height = sum(max(0.5, 0.2 * (label.count("\n") + 1)) for label in labels)
    fig = Figure(figsize=(10, 1.4 + height), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for i, values in enumerate(matrix):
        for j, value in enumerate(values):
            colour = "black" if value > 0.6 else "white"
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color=colour)
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
        for i, line in enumerate(run.record.test.confusion_matrix):
            for j, count in enumerate(line):
                total[i][j] += count
    seeds = f"{len(row.finished)} seed{'s' * (len(row.finished) != 1)} summed"
    label = row.label if len(row.label) <= 20 else "\n" + wrapped(row.label, 60)
    title = (
        f"Confusion matrix of the best configuration: {label}\n"
        f"({seeds}; cells: share of the true class)"
    )
    return confusion_matrix_figure(total, CLASSES, title=title)


def figure_file(name: str, section: str = "") -> str:
    """A figure's file name in a section: `recall_bars.png` for the study,
    `beyond_recall_bars.png` for the rows of conf/experiment/beyond/."""
    return f"{section.replace('/', '_')}_{name}" if section else name


def write_figures(
    out_dir: Path, rows: Sequence[Row], section: str = "", reference: PublishedRun | None = None
) -> list[tuple[str, str]]:
    """Draw every figure of FIGURES for `rows` into `out_dir`, named by `figure_file`; the
    recall figures draw `reference` as a line. (file name, caption) of each, none without a
    finished run."""
    if not any(row.finished for row in rows):
        return []
    cmap = matplotlib.colormaps["tab10" if len(rows) <= 10 else "tab20"]
    colours = [cmap(i % cmap.N) for i in range(len(rows))]
    draw: dict[str, Callable[[], Figure]] = {
        "loss_curves.png": lambda: loss_panels(rows, colours),
        "loss_overlay.png": lambda: overlay(rows, colours, "loss"),
        "recall_overlay.png": lambda: overlay(rows, colours, "recall", reference),
        "recall_bars.png": lambda: recall_bars(rows, colours, reference),
        "per_class_recall.png": lambda: per_class_heatmap(rows),
        "confusion_best.png": lambda: best_confusion(next(r for r in rows if r.best)),
    }
    for name in FIGURES:
        draw[name]().savefig(out_dir / figure_file(name, section), dpi=120)
    captions = {**FIGURES, **(REFERENCE_CAPTIONS if reference else {})}
    return [(figure_file(name, section), captions[name]) for name in FIGURES]
