"""The one table of what each config key means for a run.

For every key (or prefix, ending in "." or "/"): whether it changes what the run computes,
whether it names the run directory, whether it splits the report's rows, and whether it may
differ when a run resumes from its checkpoint. The run-directory names (`run_name`, the
resolver conf/hydra/default.yaml uses), the resume check and the report's grouping read it.
A key not in the table is taken to change the result: it names the run, splits rows and must
match on resume. Free of torch, Lightning and Hydra.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Key:
    """What one key (or every key under a prefix ending in ".") means for a run."""

    key: str
    changes_result: bool  # a different value computes different numbers
    names_run: bool  # appears in the run directory's name
    splits_rows: bool  # runs that differ in it are different rows of the report
    resume_may_differ: bool  # a checkpoint written with another value may be resumed
    why: str


_RESULT = dict(changes_result=True, names_run=True, splits_rows=True, resume_may_differ=False)
_SETTING = dict(changes_result=False, names_run=False, splits_rows=False, resume_may_differ=True)

KEYS: tuple[Key, ...] = (
    Key("experiment", **_RESULT, why="a published configuration"),
    Key("model.", **_RESULT, why="the network"),
    Key("optimizer.", **_RESULT, why="the optimiser"),
    Key("data._target_", **_RESULT, why="the data module built"),
    Key("trainer._target_", **_RESULT, why="the Trainer built"),
    Key("data.source", **_RESULT, why="which images"),
    Key("data.batch_size", **_RESULT, why="the SGD batch"),
    Key("data.shuffle", **_RESULT, why="the order of training images"),
    Key("data.val_size", **_RESULT, why="the images held out for validation"),
    Key("data.split_seed", **_RESULT, why="which images are held out"),
    Key("data.train_subset", **_RESULT, why="which training images are used"),
    Key("data.drop_last", **_RESULT, why="whether the last short batch trains"),
    Key("data.synthetic_train_size", **_RESULT, why="the synthetic data"),
    Key("data.synthetic_test_size", **_RESULT, why="the synthetic data"),
    Key("trainer.precision", **_RESULT, why="the arithmetic"),
    Key("trainer.gradient_clip_val", **_RESULT, why="the SGD step"),
    Key("trainer.accumulate_grad_batches", **_RESULT, why="the SGD step"),
    Key("compute.allow_tf32", **_RESULT, why="the arithmetic on a GPU"),
    Key("trainer.max_epochs", changes_result=True, names_run=True, splits_rows=True,
        resume_may_differ=True, why="a finished run may be continued for more epochs"),
    Key("seed", changes_result=True, names_run=True, splits_rows=False,
        resume_may_differ=False, why="seeds are pooled into one row"),
    Key("data.seed", changes_result=True, names_run=True, splits_rows=False,
        resume_may_differ=False, why="follows `seed`"),
    Key("data.root", changes_result=False, names_run=False, splits_rows=False,
        resume_may_differ=False, why="a path: the data it holds must stay the same"),
    Key("data.download", **_SETTING, why="fetching, not training"),
    Key("data.eval_batch_size", **_SETTING, why="evaluation speed only"),
    Key("trainer.check_val_every_n_epoch", **_SETTING, why="how often the curve is sampled"),
    Key("trainer.accelerator", **_SETTING, why="the device (the report notes mixed devices)"),
    Key("trainer.devices", **_SETTING, why="the device"),
    Key("trainer.benchmark", **_SETTING, why="speed (exactness: docs/gpu.md)"),
    Key("trainer.deterministic", **_SETTING, why="speed (exactness: docs/gpu.md)"),
    Key("trainer.num_sanity_val_steps", **_SETTING, why="a check before training"),
    Key("trainer.enable_model_summary", **_SETTING, why="display"),
    Key("compute.", **_SETTING, why="threads, memory layout and compilation: speed"),
    Key("logger", **_SETTING, why="where metrics go; the run directory's files are the record"),
    Key("logger.", **_SETTING, why="where metrics go; the run directory's files are the record"),
    Key("resume", **_SETTING, why="how to start, not what to compute"),
    Key("ckpt_path", **_SETTING, why="how to start, not what to compute"),
    Key("checkpoint_every_n_epochs", **_SETTING, why="how often to save"),
    Key("progress_bar_refresh", **_SETTING, why="display"),
    Key("images", **_SETTING, why="predict: the files to label (a path)"),
    Key("top_k", **_SETTING, why="predict: how many classes to list"),
    Key("batch_size", **_SETTING, why="predict: speed only"),
    Key("hparams_search", **_SETTING, why="the search's settings (hydra.sweeper)"),
    # --- search: the pruner's config group (issue 24) ---
    Key("search_pruner", **_SETTING, why="the search's pruner (hydra.sweeper.pruner)"),
    # --- end of search block ---
    Key("hydra.", **_SETTING, why="where and how Hydra runs jobs"),
    Key("hydra/", **_SETTING, why="the launcher and sweeper (hydra/launcher=joblib, slurm)"),
)  # fmt: skip
_UNKNOWN = Key("", **_RESULT, why="not in the table: taken to change the result")
# Characters that must not reach a directory name (a `/` would nest directories).
_UNSAFE = str.maketrans({"/": "_", "\\": "_", "\0": "_"})


def lookup(key: str) -> Key:
    """The table's entry for `key`: an exact entry, else the longest prefix, else _UNKNOWN."""
    key = key.lstrip("+~")
    exact = [k for k in KEYS if k.key == key]
    if exact:
        return exact[0]
    prefixes = [k for k in KEYS if k.key.endswith((".", "/")) and key.startswith(k.key)]
    return max(prefixes, key=lambda k: len(k.key)) if prefixes else _UNKNOWN


def run_name(overrides: Iterable[str]) -> str:
    """`_k=v,k=v` from the overrides that name a run (sorted, as Hydra's override_dirname),
    with path separators in values replaced; "" when none do."""
    items = []
    for item in overrides:
        key, _, value = str(item).partition("=")
        if lookup(key).names_run:
            items.append(f"{key}={value.translate(_UNSAFE)}")
    return f"_{','.join(sorted(items))}" if items else ""


def splits_rows(key: str) -> bool:
    """Whether runs that differ in `key` are different rows of the report."""
    return lookup(key).splits_rows


def resume_mismatches(saved: Mapping[str, object], now: Mapping[str, object]) -> list[str]:
    """The keys of two flattened configs that differ and must match on resume, as text."""
    return [
        f"{key}: {saved.get(key)} (checkpoint) vs {now.get(key)} (now)"
        for key in sorted(saved.keys() | now.keys())
        if not lookup(key).resume_may_differ and saved.get(key) != now.get(key)
    ]


def flatten(config: Mapping, prefix: str = "") -> dict[str, object]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`."""
    flat: dict[str, object] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def markdown_table() -> str:
    """The table as markdown, for docs/configuration.md (a test keeps the page in step)."""

    def mark(flag: bool) -> str:
        return "yes" if flag else "–"

    lines = [
        "| key | changes the result | names the run | splits report rows "
        "| may differ on resume | why |",
        "|---|---|---|---|---|---|",
    ]
    for k in (*KEYS, _UNKNOWN):
        name = (
            f"`{k.key}*`" if k.key.endswith((".", "/")) else f"`{k.key}`" if k.key else "any other"
        )
        flags = (k.changes_result, k.names_run, k.splits_rows, k.resume_may_differ)
        lines.append(f"| {name} | {' | '.join(map(mark, flags))} | {k.why} |")
    return "\n".join(lines) + "\n"
