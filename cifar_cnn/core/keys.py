"""The one table of config keys: for every key its type, range and an example (checked before
a run starts), and what it means for a run: whether it changes what the run computes, names
the run directory, splits the report's rows and may differ when a run resumes, and what a run
written before the key existed is taken to have held.

Adding a key is its YAML file and one `Key` here (docs/development.md, "Add a key"). The
schema checks (training/schema.py), the run-directory names (`run_name`, the resolver
conf/hydra/default.yaml uses), the resume check and the report's grouping all read this table.
A prefix entry (ending in "." or "/") covers the keys under it that have no entry of their
own; a key the table lacks is taken to change the result: it names the run, splits rows and
must match on resume. Free of torch, Lightning and Hydra.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from cifar_cnn.core.cifar10 import NUM_CLASSES

ANY = "any"  # a value of any type (checked by its consumer)
NOT_GIVEN = object()  # `absent`: a config without the key cannot be taken to hold any value
SEED_LIMIT = 2**32
APPS = ("train", "evaluate", "predict")


def is_int(value: object) -> bool:
    """Whether `value` is a whole number (a bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """Whether `value` is a finite int or float (a bool, NaN and infinity are not)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_CHECKS: dict[str, Callable[[object], bool]] = {
    "bool": lambda v: isinstance(v, bool),
    "int": is_int,
    "float": is_number,
    "str": lambda v: isinstance(v, str) and v != "",
    "int_list": lambda v: isinstance(v, list) and all(is_int(i) and i > 0 for i in v),
    "float_list": lambda v: isinstance(v, list) and all(is_number(i) for i in v),
    "str_or_list": lambda v: isinstance(v, str | list) and bool(v),
}


@dataclass(frozen=True)
class Key:
    """One config key (or, ending in "." or "/", every key under a prefix).

    Its type `kind` ('bool', 'int', 'float', 'str', 'int_list', 'float_list', 'str_or_list',
    ANY, or None: not checked here), an inclusive `low` and an exclusive `high` (`low_open`:
    `low` itself is refused; `high_closed`: `high` itself is accepted), the accepted `choices`,
    whether null is accepted, whether the key may be absent from a composed config, an example;
    what it means for a run; `absent`, the value a config written before the key existed is
    taken to hold (NOT_GIVEN: such a config differs); and the apps whose top level has it.
    """

    key: str
    kind: str | None
    example: str
    why: str
    changes_result: bool = True  # a different value computes different numbers
    names_run: bool = True  # appears in the run directory's name
    splits_rows: bool = True  # runs that differ in it are different rows of the report
    resume_may_differ: bool = False  # a checkpoint written with another value may be resumed
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_closed: bool = False
    choices: tuple = ()
    nullable: bool = False
    optional: bool = False
    absent: object = NOT_GIVEN
    apps: tuple[str, ...] = APPS
    applies_to: tuple[str, ...] = ()  # scheduler.*: the schedules (scheduler.name) that have it

    @property
    def is_prefix(self) -> bool:
        """Whether this entry covers every key under it."""
        return self.key.endswith((".", "/"))

    def expectation(self) -> str:
        """What this key accepts, in words."""
        if self.choices:
            shown = (str(c).lower() if isinstance(c, bool) else str(c) for c in self.choices)
            text = "one of " + ", ".join(dict.fromkeys(shown))
        elif self.kind == "bool":
            text = "true or false"
        elif self.kind == "int" and self.low == 1 and self.high is None:
            text = "a positive whole number"
        elif self.kind in ("int", "float"):
            text = "a whole number" if self.kind == "int" else "a number"
            if self.low is not None:
                text += f" {'>' if self.low_open else '>='} {self.low:g}"
            if self.high is not None:
                bound = "<=" if self.high_closed else "<"
                text += f"{' and' if self.low is not None else ''} {bound} {self.high:.10g}"
        elif self.kind == "int_list":
            text = "a list of positive whole numbers"
        elif self.kind == "float_list":
            text = "a list of finite numbers"
        elif self.kind == "str_or_list":
            text = "a path or a list of paths"
        elif self.kind == "str":
            text = "text"
        else:
            text = "any value"
        return text + (" (or null)" if self.nullable else "")

    def accepts(self, value: object) -> bool:
        """Whether `value` has this key's type and lies in its range."""
        if value is None:
            return self.nullable
        if self.choices:
            # True == 1 in Python: a bool matches only a bool choice
            return any(
                value == c and isinstance(value, bool) == isinstance(c, bool) for c in self.choices
            )
        if self.kind in (None, ANY):
            return True
        if not _CHECKS[self.kind](value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value < self.high or (self.high_closed and value == self.high)


# What a key means for a run; `why` says the reason.
RESULT = dict(changes_result=True, names_run=True, splits_rows=True, resume_may_differ=False)
SETTING = dict(changes_result=False, names_run=False, splits_rows=False, resume_may_differ=True)
TARGET = "the group's YAML file sets it"
PRECISIONS = ("32-true", "32", 32, "16-mixed", "16", 16, "bf16-mixed", "bf16")
PRECISIONS += ("16-true", "bf16-true", "64-true", "64", 64)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
CKPT = "outputs/runs/<run>/checkpoints/last.ckpt"


KEYS: tuple[Key, ...] = (
    # --- the top level of the apps ------------------------------------------------------------
    Key("experiment", None, "batchnorm", "a row of the study (conf/experiment/)"),
    Key("seed", "int", "0", "seeds are pooled into one row", splits_rows=False,
        low=0, high=SEED_LIMIT, apps=("train", "evaluate")),
    Key("resume", "bool", "true", "how to start, not what to compute", **SETTING,
        apps=("train",)),
    Key("ckpt_path", "str", CKPT, "how to start, not what to compute", **SETTING,
        nullable=True, apps=("train",)),
    Key("ckpt_path", "str", CKPT, "the checkpoint to use", **SETTING,
        apps=("evaluate", "predict")),
    Key("overwrite_finished", "bool", "true", "whether a finished run may be discarded",
        **SETTING, apps=("train",)),
    Key("checkpoint_every_n_epochs", "int", "1", "how often to save", **SETTING, low=1,
        apps=("train",)),
    Key("progress_bar_refresh", "int", "25", "display", **SETTING, low=0, apps=("train",)),
    Key("images", "str_or_list", "photos/ or '[a.jpg,b.png]'", "predict: the files to label",
        **SETTING, apps=("predict",)),
    Key("top_k", "int", "3", "predict: how many classes to list", **SETTING, low=1,
        high=NUM_CLASSES + 1, apps=("predict",)),
    Key("batch_size", "int", "250", "predict: speed only", **SETTING, low=1,
        apps=("predict",)),
    Key("hparams_search", None, "optuna", "the search's settings (hydra.sweeper)", **SETTING),
    Key("search_pruner", None, "halving", "the search's pruner (hydra.sweeper.pruner)",
        **SETTING),
    Key("logger", None, "csv", "where metrics go; the run directory's files are the record",
        **SETTING),
    Key("logger.", None, "", "where metrics go; the run directory's files are the record",
        **SETTING),
    # --- model: the network (training/model.py) ------------------------------------------------
    Key("model._target_", "str", TARGET, "the network built"),
    # a preset name (config_checks resolves it) or a list of widths
    Key("model.filters", ANY, "[24,48,96] (or a preset: small, large)", "the network"),
    Key("model.kernel_sizes", "int_list", "[5,3,3]", "the network"),
    Key("model.activation", "str", "leaky_relu", "the network", choices=("relu", "leaky_relu")),
    Key("model.leaky_slope", "float", "0.01", "the network", low=0),
    Key("model.activation_after_last_conv", "bool", "false", "the network"),
    Key("model.hidden", "int_list", "[512] or [512,128] or []", "the network"),
    Key("model.dropout", "float", "0.3", "the network", low=0, high=1),
    Key("model.batch_norm", "bool", "true", "the network"),
    Key("model.pool_before_relu", "bool", "true", "the network's arithmetic order"),
    # --- data: the images and their order (training/data.py) -----------------------------------
    Key("data._target_", "str", TARGET, "the data module built"),
    Key("data.source", "str", "folder", "which images", choices=("cifar10", "folder", "synthetic")),
    Key("data.root", "str", "data", "a path: the data it holds must stay the same",
        changes_result=False, names_run=False, splits_rows=False),
    Key("data.download", "bool", "true", "fetching, not training", **SETTING),
    Key("data.batch_size", "int", "64", "the SGD batch", low=1),
    Key("data.eval_batch_size", "int", "250", "evaluation speed only", **SETTING, low=1),
    Key("data.shuffle", "bool", "true", "the order of training images"),
    Key("data.seed", "int", "0", "follows `seed`", splits_rows=False, low=0, high=SEED_LIMIT),
    Key("data.synthetic_train_size", "int", "4000", "the synthetic data", low=1),
    Key("data.synthetic_test_size", "int", "1000", "the synthetic data", low=1),
    Key("data.val_size", "int", "5000", "the images held out for validation", low=0),
    Key("data.split_seed", "int", "0", "which images are held out", low=0, high=SEED_LIMIT),
    Key("data.train_subset", "int", "20000", "which training images are used", low=1,
        nullable=True, optional=True, absent=None),
    Key("data.drop_last", "bool", "false", "whether the last short batch trains",
        optional=True, absent=False),
    Key("data.augment.flip", "bool", "true", "training images mirrored at random",
        optional=True, absent=False),
    Key("data.augment.crop_padding", "int", "4", "training images shifted at random", low=0,
        high=16, high_closed=True, optional=True, absent=0),
    # --- optimizer: any keyword of its class; these are typed (torch.optim) --------------------
    Key("optimizer.", None, "", "the optimiser"),
    Key("optimizer._target_", "str", TARGET, "the optimiser"),
    Key("optimizer._partial_", "bool", "true", "how Hydra builds it", choices=(True,)),
    Key("optimizer.lr", "float", "0.001", "the optimiser", low=0, low_open=True),
    Key("optimizer.momentum", "float", "0.9", "the optimiser", low=0, high=1, optional=True),
    Key("optimizer.dampening", "float", "0.0", "the optimiser", low=0, high=1, optional=True),
    Key("optimizer.weight_decay", "float", "0.0005", "the optimiser", low=0, optional=True),
    Key("optimizer.nesterov", "bool", "true", "the optimiser", optional=True, absent=False),
    Key("optimizer.betas", ANY, "[0.9,0.999]", "the optimiser (AdamW; config_checks)",
        optional=True),
    Key("optimizer.eps", "float", "1e-8", "the optimiser (AdamW)", low=0, low_open=True,
        optional=True),
    Key("optimizer", None, "adamw", "the optimiser chosen (conf/optimizer/: sgd, adamw)"),
    # --- scheduler: the learning rate per step (training/schedules.py) -------------------------
    Key("scheduler", None, "onecycle", "the schedule chosen (conf/scheduler/)"),
    Key("scheduler.", None, "", "the learning-rate schedule"),
    Key("scheduler.name", "str", "cosine", "the learning-rate schedule",
        choices=("none", "cosine", "onecycle", "step"), absent="none",
        applies_to=("none", "cosine", "onecycle", "step")),
    Key("scheduler.warmup_epochs", "float", "1", "the learning-rate schedule", low=0,
        applies_to=("cosine", "step")),
    Key("scheduler.min_lr", "float", "0.00001", "the learning-rate schedule", low=0,
        applies_to=("cosine",)),
    Key("scheduler.max_lr", "float", "0.05", "the learning-rate schedule", low=0,
        low_open=True, applies_to=("onecycle",)),
    Key("scheduler.pct_start", "float", "0.3", "the learning-rate schedule", low=0, high=1,
        low_open=True, applies_to=("onecycle",)),
    Key("scheduler.div_factor", "float", "25", "the learning-rate schedule", low=1,
        applies_to=("onecycle",)),
    Key("scheduler.final_div_factor", "float", "10000", "the learning-rate schedule", low=0,
        low_open=True, applies_to=("onecycle",)),
    Key("scheduler.cycle_momentum", "bool", "false", "the learning-rate schedule",
        applies_to=("onecycle",)),
    Key("scheduler.step_epochs", "int", "30", "the learning-rate schedule", low=1,
        applies_to=("step",)),
    Key("scheduler.gamma", "float", "0.1", "the learning-rate schedule", low=0, high=1,
        low_open=True, high_closed=True, applies_to=("step",)),
    # --- loss: the training loss (training/module.py) ------------------------------------------
    Key("loss.", None, "", "the training loss"),
    Key("loss.label_smoothing", "float", "0.1", "the training loss", low=0, high=1,
        absent=0.0),
    # --- trainer: any keyword of lightning.Trainer; these are typed ----------------------------
    Key("trainer._target_", "str", TARGET, "the Trainer built"),
    Key("trainer.max_epochs", "int", "300", "a finished run may be continued for more epochs",
        resume_may_differ=True, low=1),
    Key("trainer.accelerator", "str", "cpu", "the device (the report notes mixed devices)",
        **SETTING, choices=("auto", "cpu", "gpu", "cuda", "mps")),
    Key("trainer.devices", ANY, "1", "the device (one per run: config_checks)", **SETTING),
    Key("trainer.precision", ANY, "bf16-mixed", "the arithmetic", choices=PRECISIONS),
    Key("trainer.check_val_every_n_epoch", "int", "1", "how often the curve is sampled",
        **SETTING, low=1),
    Key("trainer.num_sanity_val_steps", "int", "0", "a check before training", **SETTING,
        low=-1),
    Key("trainer.gradient_clip_val", "float", "1.0", "the SGD step", low=0, nullable=True),
    Key("trainer.accumulate_grad_batches", "int", "4", "the SGD step", low=1),
    Key("trainer.enable_model_summary", "bool", "false", "display", **SETTING),
    Key("trainer.log_every_n_steps", "int", "50", "how often train/lr is logged", **SETTING,
        low=1, optional=True),
    Key("trainer.benchmark", "bool", "true", "speed (exactness: docs/gpu.md)", **SETTING,
        nullable=True),
    Key("trainer.deterministic", ANY, "true", "speed (exactness: docs/gpu.md)", **SETTING,
        choices=(True, False, "warn"), nullable=True),
    # --- compute: threads, memory layout, compilation (training/runtime.py) --------------------
    Key("compute.", None, "", "threads, memory layout and compilation: speed", **SETTING),
    Key("compute.threads", "int", "2", "speed", **SETTING, low=1, nullable=True),
    Key("compute.channels_last", "bool", "true", "speed", **SETTING),
    Key("compute.compile", "bool", "false", "speed", **SETTING),
    Key("compute.tune_malloc", "bool", "true", "speed", **SETTING),
    Key("compute.allow_tf32", "bool", "false", "the arithmetic on a GPU", optional=True),
    Key("compute.compile_mode", "str", "max-autotune", "speed", **SETTING,
        choices=COMPILE_MODES, nullable=True, optional=True),
    Key("compute.exact", "bool", "false", "speed (exactness: docs/gpu.md)", **SETTING,
        optional=True),
    # --- hydra: where and how jobs run; the launcher's and sweeper's counts are typed ----------
    Key("hydra.", None, "", "where and how Hydra runs jobs", **SETTING),
    Key("hydra/", None, "", "the launcher and sweeper (hydra/launcher=joblib, slurm)",
        **SETTING),
    Key("hydra.launcher.n_jobs", "int", "2 (or -1: every CPU)", "jobs at once", **SETTING,
        nullable=True, optional=True),
    Key("hydra.launcher.array_parallelism", "int", "10", "SLURM jobs at once", **SETTING,
        low=1, optional=True),
    Key("hydra.launcher.timeout_min", "int", "240", "SLURM time limit", **SETTING, low=1,
        optional=True),
    Key("hydra.launcher.cpus_per_task", "int", "4", "SLURM resources", **SETTING, low=1,
        nullable=True, optional=True),
    Key("hydra.launcher.gpus_per_node", "int", "1", "SLURM resources", **SETTING, low=0,
        nullable=True, optional=True),
    Key("hydra.launcher.mem_gb", "int", "16", "SLURM resources", **SETTING, low=1,
        nullable=True, optional=True),
    Key("hydra.launcher.max_num_timeout", "int", "20", "SLURM requeues", **SETTING, low=0,
        optional=True),
    Key("hydra.sweeper.n_trials", "int", "20", "the search's budget", **SETTING, low=1,
        optional=True),
    Key("hydra.sweeper.n_jobs", "int", "2", "trials at once", **SETTING, low=1, optional=True),
    Key("hydra.sweeper.max_failure_rate", "float", "0.25", "when the search gives up",
        **SETTING, low=0, high=1, high_closed=True, optional=True),
    Key("hydra.sweeper.pruner", ANY, "{_target_: optuna.pruners.MedianPruner} (or null)",
        "which trials stop early", **SETTING, nullable=True, optional=True),
    Key("hydra.sweeper.storage", "str",
        "sqlite:///DIR/optuna.db, postgresql://USER@HOST/DB or a journal file path",
        "where the study is kept", **SETTING, nullable=True, optional=True),
)  # fmt: skip
_UNKNOWN = Key("", None, "", "not in the table: taken to change the result")
# Characters that must not reach a directory name (a `/` would nest directories).
_UNSAFE = str.maketrans({"/": "_", "\\": "_", "\0": "_"})
# A file name has at most 255 bytes; the run name follows a time stamp (or a job number).
NAME_BYTES = 200


def lookup(key: str) -> Key:
    """The table's entry for `key`: an exact entry, else the longest prefix, else _UNKNOWN."""
    key = key.lstrip("+~")
    exact = [k for k in KEYS if k.key == key]
    if exact:
        return exact[0]
    prefixes = [k for k in KEYS if k.is_prefix and key.startswith(k.key)]
    return max(prefixes, key=lambda k: len(k.key)) if prefixes else _UNKNOWN


def typed_keys(prefix: str, app: str | None = None) -> dict[str, Key]:
    """The typed keys under `prefix` ("data.", "hydra.sweeper.", or "" for an app's top level
    keys), named without it: {"batch_size": Key(...), "augment.flip": Key(...)}."""
    return {
        k.key[len(prefix) :]: k
        for k in KEYS
        if k.kind is not None
        and not k.is_prefix
        and k.key.startswith(prefix)
        and (prefix or ("." not in k.key and (app is None or app in k.apps)))
    }


def run_name(overrides: Iterable[str]) -> str:
    """`_k=v,k=v` from the overrides that name a run (sorted, as Hydra's override_dirname),
    with path separators in values replaced; "" when none do. A name over NAME_BYTES bytes is
    cut and ends in `~` and a hash of the whole name, so that it stays unique."""
    items = []
    for item in overrides:
        key, _, value = str(item).partition("=")
        if lookup(key).names_run:
            items.append(f"{key}={value.translate(_UNSAFE)}")
    name = f"_{','.join(sorted(items))}" if items else ""
    encoded = name.encode()
    if len(encoded) <= NAME_BYTES:
        return name
    # Too long for a directory name: a readable start, then a hash of the whole keeps it unique.
    digest = hashlib.sha1(encoded).hexdigest()[:16]
    return encoded[: NAME_BYTES - 17].decode(errors="ignore") + f"~{digest}"


def splits_rows(key: str) -> bool:
    """Whether runs that differ in `key` are different rows of the report."""
    return lookup(key).splits_rows


_MISSING = object()


def _value(config: Mapping[str, object], key: str, other: Mapping[str, object]) -> object:
    """`config[key]`; where a config written before the key existed lacks it while `other`
    has it, the value the table says such a config held."""
    if key in config:
        return config[key]
    absent = lookup(key).absent
    return absent if key in other and absent is not NOT_GIVEN else _MISSING


def resume_mismatches(saved: Mapping[str, object], now: Mapping[str, object]) -> list[str]:
    """The keys of two flattened configs that differ and must match on resume, as text. A key
    one of them lacks counts as its `absent` value (a run written before the key existed)."""
    mismatches = []
    for key in sorted(saved.keys() | now.keys()):
        before, after = _value(saved, key, now), _value(now, key, saved)
        if not lookup(key).resume_may_differ and before != after:
            shown = ["(absent)" if v is _MISSING else v for v in (before, after)]
            mismatches.append(f"{key}: {shown[0]} (checkpoint) vs {shown[1]} (now)")
    return mismatches


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
        "| key | accepts | changes the result | names the run | splits report rows "
        "| may differ on resume | why |",
        "|---|---|---|---|---|---|---|",
    ]
    for k in (*KEYS, _UNKNOWN):
        name = f"`{k.key}*`" if k.is_prefix else f"`{k.key}`" if k.key else "any other"
        if k.apps != APPS:
            name += f" ({', '.join(k.apps)})"
        accepts = "–" if k.kind is None else k.expectation()
        if k.absent is not NOT_GIVEN:
            accepts += f"; older runs: {k.absent}"
        flags = (k.changes_result, k.names_run, k.splits_rows, k.resume_may_differ)
        lines.append(f"| {name} | {accepts} | {' | '.join(map(mark, flags))} | {k.why} |")
    return "\n".join(lines) + "\n"
