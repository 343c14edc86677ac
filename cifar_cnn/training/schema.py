"""The typed schema of the configs: every key's type, range and an example, checked strictly.

Hydra composes YAML and command-line values without types: `model.batch_norm=no` arrives as
the string 'no', which Python reads as true. Each group below lists its keys as `Key`s, and
`check_group` refuses a value of the wrong type or range, and a key the group does not have,
with a message naming the key, the value, what is accepted and an example. The YAML files
stay plain (their `_target_` instantiation is untouched); the schema only reads them.
"""

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cifar_cnn.core.cifar10 import NUM_CLASSES
from cifar_cnn.core.errors import ConfigError

MISSING = "???"  # OmegaConf's mark for a value that must be given
ANY = object()  # a value of any type (checked by its consumer)
SEED_LIMIT = 2**32
HYDRA_KEYS = ("_target_", "_partial_")  # how Hydra builds a group, not arguments


def is_int(value: object) -> bool:
    """Whether `value` is a whole number (a bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """Whether `value` is an int or a float (a bool is not one)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class Key:
    """One config key: its type ('bool', 'int', 'float', 'str', 'int_list', 'str_or_list' or
    ANY), an inclusive `low` and an exclusive `high` (`low_open`: `low` itself is refused;
    `high_closed`: `high` itself is accepted),
    the accepted `choices`, whether null is accepted, whether it may be absent, an example."""

    kind: object
    example: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_closed: bool = False
    choices: tuple = ()
    nullable: bool = False
    optional: bool = False

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
        elif self.kind == "str_or_list":
            text = "a path or a list of paths"
        else:
            text = "text"
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
        if self.kind is ANY:
            return True
        checks: dict[object, Callable[[object], bool]] = {
            "bool": lambda v: isinstance(v, bool),
            "int": is_int,
            "float": is_number,
            "str": lambda v: isinstance(v, str) and v != "",
            "int_list": lambda v: isinstance(v, list) and all(is_int(i) and i > 0 for i in v),
            "str_or_list": lambda v: isinstance(v, str | list) and bool(v),
        }
        if not checks[self.kind](value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value < self.high or (self.high_closed and value == self.high)


def _int(example: str, low: int | None = 1, high: int | None = None, **kw) -> Key:
    return Key("int", example, low=low, high=high, **kw)


def _flag(example: str = "true", **kw) -> Key:
    return Key("bool", example, **kw)


TARGET = Key("str", "the group's YAML file sets it")
MODEL = {
    "_target_": TARGET,
    # A preset name (config_checks resolves it) or a list of widths.
    "filters": Key(ANY, "[24,48,96] (or a preset: small, large)"),
    "kernel_sizes": Key("int_list", "[5,3,3]"),
    "activation": Key("str", "leaky_relu", choices=("relu", "leaky_relu")),
    "leaky_slope": Key("float", "0.01", low=0),
    "activation_after_last_conv": _flag("false"),
    "hidden": Key("int_list", "[512] or [512,128] or []"),
    "dropout": Key("float", "0.3", low=0, high=1),
    "batch_norm": _flag(),
    "pool_before_relu": _flag(),
}
DATA = {
    "_target_": TARGET,
    "source": Key("str", "folder", choices=("cifar10", "folder", "synthetic")),
    "root": Key("str", "data"),
    "download": _flag(),
    "batch_size": _int("64"),
    "eval_batch_size": _int("250"),
    "shuffle": _flag(),
    "seed": _int("0", low=0, high=SEED_LIMIT),
    "synthetic_train_size": _int("4000"),
    "synthetic_test_size": _int("1000"),
    "val_size": _int("5000", low=0),
    "split_seed": _int("0", low=0, high=SEED_LIMIT),
    "train_subset": _int("20000", nullable=True, optional=True),
    "drop_last": _flag("false", optional=True),
}
# Keys of torch.optim.SGD (the study's optimiser) with a range; any other keyword of the
# configured optimiser class is accepted as it is, and a key it lacks is refused.
OPTIMIZER = {
    "_target_": TARGET,
    "_partial_": Key("bool", "true", choices=(True,)),
    "lr": Key("float", "0.001", low=0, low_open=True),
    "momentum": Key("float", "0.9", low=0, high=1, optional=True),
    "dampening": Key("float", "0.0", low=0, high=1, optional=True),
    "weight_decay": Key("float", "0.0005", low=0, optional=True),
    "nesterov": _flag(optional=True),
}
PRECISIONS = ("32-true", "32", 32, "16-mixed", "16", 16, "bf16-mixed", "bf16")
PRECISIONS += ("16-true", "bf16-true", "64-true", "64", 64)
# The Trainer options the project documents (conf/trainer/default.yaml); other keywords of
# lightning.Trainer pass to it unchecked, and a key it lacks is refused.
TRAINER = {
    "_target_": TARGET,
    "max_epochs": _int("300"),
    "accelerator": Key("str", "cpu", choices=("auto", "cpu", "gpu", "cuda", "mps")),
    "devices": Key(ANY, "1"),  # one device: config_checks
    "precision": Key(ANY, "bf16-mixed", choices=PRECISIONS),
    "check_val_every_n_epoch": _int("1"),
    "num_sanity_val_steps": _int("0", low=-1),
    "gradient_clip_val": Key("float", "1.0", low=0, nullable=True),
    "accumulate_grad_batches": _int("4"),
    "enable_model_summary": _flag("false"),
    "benchmark": _flag(nullable=True),
    "deterministic": Key(ANY, "true", choices=(True, False, "warn"), nullable=True),
}
COMPUTE = {
    "threads": _int("2", nullable=True),
    "channels_last": _flag(),
    "compile": _flag("false"),
    "tune_malloc": _flag(),
    "allow_tf32": _flag("false", optional=True),
    "compile_mode": Key(
        "str",
        "max-autotune",
        choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
        nullable=True,
        optional=True,
    ),
    "exact": _flag("false", optional=True),
}
_SEED = _int("0", low=0, high=SEED_LIMIT)
_CKPT = Key("str", "outputs/runs/<run>/checkpoints/last.ckpt")
# Top-level keys per app; keys other than these (added by other parts) are not checked here.
TOP = {
    "train": {
        "seed": _SEED,
        "resume": _flag(),
        "ckpt_path": Key("str", _CKPT.example, nullable=True),
        "checkpoint_every_n_epochs": _int("1"),
        "progress_bar_refresh": _int("25", low=0),
    },
    "evaluate": {"seed": _SEED, "ckpt_path": _CKPT},
    "predict": {
        "ckpt_path": _CKPT,
        "images": Key("str_or_list", "photos/ or '[a.jpg,b.png]'"),
        "top_k": _int("3", high=NUM_CLASSES + 1),
        "batch_size": _int("250"),
    },
}
GROUPS = {
    "train": {"model": MODEL, "data": DATA, "optimizer": OPTIMIZER, "trainer": TRAINER},
    "evaluate": {"data": DATA, "trainer": TRAINER},
    "predict": {"trainer": TRAINER},
}
# The launcher's and the sweeper's counts (hydra.launcher.*, hydra.sweeper.*), where present.
LAUNCHER = {
    "n_jobs": Key("int", "2 (or -1: every CPU)", nullable=True, optional=True),
    "array_parallelism": _int("10", optional=True),
    "timeout_min": _int("240", optional=True),
    "cpus_per_task": _int("4", nullable=True, optional=True),
    "gpus_per_node": _int("1", low=0, nullable=True, optional=True),
    "mem_gb": _int("16", nullable=True, optional=True),
    "max_num_timeout": _int("20", low=0, optional=True),
}
SWEEPER = {
    "n_trials": _int("20", optional=True),
    "n_jobs": _int("2", optional=True),
    "max_failure_rate": Key("float", "0.25", low=0, high=1, high_closed=True, optional=True),
    # --- search: pruning and the study's storage (issue 24) ---
    "pruner": Key(
        ANY,
        "{_target_: optuna.pruners.MedianPruner} (or null: no pruning)",
        nullable=True,
        optional=True,
    ),  # fmt: skip
    "storage": Key(
        "str",
        "sqlite:///DIR/optuna.db, postgresql://USER@HOST/DB or a journal file path",
        nullable=True,
        optional=True,
    ),  # fmt: skip
    # --- end of search block ---
}


def _signature_keys(target: object) -> list[str]:
    """The keyword arguments of the class or function `target` names ([] if not importable)."""
    module_name, _, name = str(target).rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), name)
        parameters = inspect.signature(obj).parameters.values()
    except (ImportError, AttributeError, ValueError, TypeError):
        return []
    keywords = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in parameters if p.kind in keywords and p.name != "params"]


def check_value(key: str, spec: Key, value: object) -> None:
    """Raise ConfigError unless `value` suits `spec`, naming `key`."""
    if spec.accepts(value):
        return
    shown = "null" if value is None else repr(value)
    if spec.kind == "int_list" and isinstance(value, list) and value:
        bad = next(i for i in value if not (is_int(i) and i > 0))
        raise ConfigError(
            f"{key}={value} contains {bad!r}; every entry must be a positive whole number, "
            f"e.g. {key}={spec.example}"
        )
    if spec.choices:
        raise ConfigError(
            f"{key}={shown} is unknown; use {spec.expectation()}, e.g. {key}={spec.example}"
        )
    raise ConfigError(f"{key}={shown} must be {spec.expectation()}, e.g. {key}={spec.example}")


def check_group(
    name: str, values: Mapping[str, object], schema: Mapping[str, Key], open_to: object = None
) -> None:
    """Check every key of the group `name` against `schema`; a key the schema lacks is refused
    unless it is a keyword of the class `open_to` names (Lightning's Trainer, the optimiser):
    then the keys accepted are that class's keywords, and the schema types those it lists."""
    for key, spec in schema.items():
        if key in values:
            if values[key] == MISSING:
                raise ConfigError(
                    f"{name}.{key} is required: pass it on the command line, "
                    f"e.g. {name}.{key}={spec.example}"
                )
            check_value(f"{name}.{key}", spec, values[key])
        elif not spec.optional:
            raise ConfigError(f"{name}.{key} is missing; e.g. {name}.{key}={spec.example}")
    accepted = _signature_keys(open_to) if open_to is not None else []
    known = {*HYDRA_KEYS, *accepted} if accepted else set(schema)
    extra = sorted(set(values) - known)
    if extra:
        shown = sorted(known - set(HYDRA_KEYS))
        raise ConfigError(
            f"{', '.join(f'{name}.{k}' for k in extra)}: no such key in {name} "
            f"(a misspelling?); the accepted keys are {', '.join(shown)}"
        )


def check_top(app: str, values: Mapping[str, object]) -> None:
    """Check the top-level keys of the app `app` ('train', 'evaluate' or 'predict')."""
    for key, spec in TOP[app].items():
        value = values.get(key)
        if value == MISSING or (value is None and not spec.nullable):
            raise ConfigError(
                f"{key} is required: pass it on the command line, e.g. {key}={spec.example}"
            )
        check_value(key, spec, value)
