"""What mattered in a search: parameter importances and the search's figures, from its study.

- `importances`: how much each searched key explains of which trials reached the best
  values, by Optuna's PED-ANOVA evaluator (PedAnovaImportanceEvaluator: it needs only NumPy,
  which the `search` extra's Optuna brings; fANOVA and mean decrease impurity would need
  scikit-learn). It rests on the study's complete trials (pruned and failed ones have no
  final value) and says how many.
- `write_search_figures`: matplotlib PNGs drawn with the object-oriented API, like the
  study's figures: the optimisation history (every trial's value, pruned ones at their last
  reported value, and the best so far), parallel coordinates (each complete trial's settings,
  coloured by its value) and the per-epoch curves each trial reported (pruned ones cut short).

Optuna is imported inside the functions; free of torch, Lightning and Hydra.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# File name -> caption in results.md.
SEARCH_FIGURES = {
    "search_history.png": "Optimisation history: each trial's validation recall by trial "
    "number (complete: dots; pruned: crosses, at their last reported value) and the best so far",
    "search_parallel.png": "Parallel coordinates: each complete trial's settings, one axis per "
    "searched key (most important first), coloured by its validation recall",
    "search_curves.png": "Validation recall per epoch as each trial reported it to the study "
    "(pruned trials dashed, ending where they were stopped)",
}
EVALUATOR = "PED-ANOVA (optuna.importance.PedAnovaImportanceEvaluator)"
MIN_TRIALS = 3  # fewer complete trials give no importances worth stating


@dataclass(frozen=True)
class Importances:
    """Each searched key's importance (summing to 1, largest first), or why there are none."""

    values: dict[str, float]
    trials: int  # the complete trials they rest on
    reason: str = ""  # why `values` is empty


def importances(study: Any) -> Importances:
    """The searched keys' importances over the study's complete trials."""
    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS:
        return Importances({}, len(complete), f"{len(complete)} complete trial(s); at least "
                           f"{MIN_TRIALS} are needed")  # fmt: skip
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PED-ANOVA warns when the top quantile is small
            values = get_param_importances(study, evaluator=PedAnovaImportanceEvaluator())
    except (ValueError, RuntimeError) as e:  # e.g. keys searched in some trials only
        return Importances({}, len(complete), f"not computable: {e}")
    total = sum(values.values())
    if not values or not total > 0:
        return Importances({}, len(complete), "the complete trials' values do not differ")
    ranked = sorted(values.items(), key=lambda kv: -kv[1])
    return Importances({k: v / total for k, v in ranked}, len(complete))


def _state(trial: Any) -> str:
    return trial.state.name


def history_figure(trials: Sequence[Any], maximize: bool) -> Figure:
    """Each trial's value by number, pruned ones marked, and the best so far."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    best, line = None, ([], [])
    for kind, marker, colour in (("COMPLETE", "o", "tab:blue"), ("PRUNED", "x", "tab:orange")):
        shown = [t for t in trials if _state(t) == kind and t.value is not None]
        ax.scatter([t.number for t in shown], [t.value for t in shown], marker=marker,
                   color=colour, label=kind.lower(), zorder=3)  # fmt: skip
    for t in sorted(trials, key=lambda t: t.number):
        if _state(t) == "COMPLETE" and t.value is not None:
            better = best is None or (t.value > best if maximize else t.value < best)
            best = t.value if better else best
        if best is not None:
            line[0].append(t.number)
            line[1].append(best)
    if line[0]:
        ax.step(*line, where="post", color="tab:red", label="best so far")
    ax.set_xlabel("trial number")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("validation recall")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("Optimisation history")
    return fig


def _axis_position(value: Any, distribution: Any) -> float:
    """`value` placed on [0, 1] of its distribution's axis (log scale where searched so)."""
    choices = getattr(distribution, "choices", None)
    if choices is not None:
        index = choices.index(value) if value in choices else 0
        return index / max(1, len(choices) - 1)
    low, high = float(distribution.low), float(distribution.high)
    if getattr(distribution, "log", False):
        low, high, value = math.log(low), math.log(high), math.log(float(value))
    return 0.5 if high == low else (float(value) - low) / (high - low)


def _ends(distribution: Any) -> tuple[str, str]:
    choices = getattr(distribution, "choices", None)
    if choices is not None:
        return str(choices[0]), str(choices[-1])
    return f"{distribution.low:.3g}", f"{distribution.high:.3g}"


def parallel_figure(trials: Sequence[Any], keys: Sequence[str]) -> Figure:
    """Complete trials as lines across one axis per searched key, coloured by value."""
    complete = [t for t in trials if _state(t) == "COMPLETE" and t.value is not None]
    keys = [k for k in keys if all(k in t.params for t in complete)]
    fig = Figure(figsize=(max(6, 1.3 * len(keys) + 2), 4.5), layout="constrained")
    ax = fig.add_subplot()
    values = [t.value for t in complete]
    low, high = (min(values), max(values)) if values else (0, 1)
    cmap = matplotlib.colormaps["viridis"]
    norm = matplotlib.colors.Normalize(low, high if high > low else low + 1e-9)
    for t in sorted(complete, key=lambda t: t.value):  # the best drawn last, on top
        ys = [_axis_position(t.params[k], t.distributions[k]) for k in keys]
        ax.plot(range(len(keys)), ys, color=cmap(norm(t.value)), alpha=0.8, lw=1.5)
    for i, key in enumerate(keys):
        ax.axvline(i, color="grey", lw=0.8)
        if complete:
            bottom, top = _ends(complete[0].distributions[key])
            ax.annotate(bottom, (i, -0.04), ha="center", va="top", fontsize=7)
            ax.annotate(top, (i, 1.04), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(keys)), [k.rpartition(".")[2] for k in keys], rotation=30,
                  ha="right")  # fmt: skip
    ax.set_yticks([])
    ax.set_ylim(-0.12, 1.12)
    colourbar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax)
    colourbar.set_label("validation recall")
    ax.set_title(f"Parallel coordinates ({len(complete)} complete trials)")
    return fig


def curves_figure(trials: Sequence[Any]) -> Figure:
    """The value each trial reported after every epoch; pruned trials dashed."""
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    for t in trials:
        steps = sorted(t.intermediate_values)
        if not steps:
            continue
        pruned = _state(t) == "PRUNED"
        ax.plot(steps, [t.intermediate_values[s] for s in steps], ls="--" if pruned else "-",
                marker="x" if pruned else ".", color="tab:orange" if pruned else "tab:blue",
                alpha=0.7)  # fmt: skip
    ax.plot([], [], color="tab:blue", label="complete")
    ax.plot([], [], color="tab:orange", ls="--", label="pruned")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("validation recall")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("Per-epoch reports")
    return fig


def write_search_figures(out_dir: Path, study: Any, keys: Sequence[str]) -> list[str]:
    """Draw SEARCH_FIGURES into `out_dir` (keys: the searched keys, most important first);
    none when the study holds no trial with a value."""
    trials = study.get_trials(deepcopy=False)
    if not any(t.value is not None for t in trials):
        return []
    maximize = study.direction.name == "MAXIMIZE"
    figures = {
        "search_history.png": history_figure(trials, maximize),
        "search_parallel.png": parallel_figure(trials, keys),
        "search_curves.png": curves_figure(trials),
    }
    for name, fig in figures.items():
        fig.savefig(out_dir / name, dpi=110)
    return list(figures)
