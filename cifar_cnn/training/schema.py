"""The schema checks of the configs: every key's type and range, and no unknown keys.

Hydra composes YAML and command-line values without types: `model.batch_norm=no` arrives as
the string 'no', which Python reads as true. The one table of keys (cifar_cnn/core/keys.py)
gives each key's type, range and an example; `check_group` refuses a value of the wrong type or
range, and a key the group does not have, with a message naming the key, the value, what is
accepted and an example. The YAML files stay plain (their `_target_` instantiation is
untouched); the schema only reads them.
"""

import importlib
import inspect
import math
import types
import typing
from collections.abc import Mapping

from cifar_cnn.core.errors import ConfigError
from cifar_cnn.core.keys import APPS, Key, flatten, is_int, is_number, lookup, typed_keys

MISSING = "???"  # OmegaConf's mark for a value that must be given
HYDRA_KEYS = ("_target_", "_partial_")  # how Hydra builds a group, not arguments

# The groups each app composes (compute: every app), their typed keys, and the top level's.
APP_GROUPS = {
    "train": ("model", "data", "optimizer", "trainer", "loss"),
    "evaluate": ("data", "trainer"),
    "predict": ("trainer",),
}
GROUPS = {app: {g: typed_keys(f"{g}.") for g in groups} for app, groups in APP_GROUPS.items()}
TOP = {app: typed_keys("", app) for app in APPS}
MODEL, COMPUTE = typed_keys("model."), typed_keys("compute.")
LAUNCHER, SWEEPER = typed_keys("hydra.launcher."), typed_keys("hydra.sweeper.")
# conf/scheduler/<name>.yaml: each schedule's keys, those whose `applies_to` names it.
SCHEDULERS = {
    name: {k: key for k, key in typed_keys("scheduler.").items() if name in key.applies_to}
    for name in lookup("scheduler.name").choices
}


def _target(target: object) -> object | None:
    """The class or function `target` names (None if not importable)."""
    module_name, _, name = str(target).rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        return None


def _signature_keys(target: object) -> list[str]:
    """The keyword arguments of the class or function `target` names ([] if not importable)."""
    try:
        parameters = inspect.signature(_target(target)).parameters.values()
    except (ValueError, TypeError):
        return []
    keywords = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in parameters if p.kind in keywords and p.name != "params"]


_PLAIN = {int: is_int, float: is_number, bool: lambda v: isinstance(v, bool),
          str: lambda v: isinstance(v, str), type(None): lambda v: v is None,
          list: lambda v: isinstance(v, list), dict: lambda v: isinstance(v, dict)}  # fmt: skip


def _hint_members(hint: object) -> list[object]:
    """The alternatives of a type hint: a Union's members (nested Literals and Unions flat)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(hint) for m in _hint_members(a)]
    return [hint]


def hint_mismatch(value: object, hint: object) -> str | None:
    """What `hint` (a keyword's annotation) accepts, in words, when `value` does not suit it;
    None when it does, or when the hint names types that a config cannot be checked against
    (classes, callables, timedelta)."""
    members = _hint_members(hint)
    words = []
    for member in members:
        origin = typing.get_origin(member) or member
        if origin is typing.Literal:
            choices = typing.get_args(member)
            if any(value == c and type(value) is type(c) for c in choices):
                return None
            words += [repr(c) for c in choices]
        elif origin in _PLAIN:
            if _PLAIN[origin](value):
                return None
            words.append("null" if origin is type(None) else origin.__name__)
        else:
            return None  # not checkable from a config
    return " or ".join(dict.fromkeys(words))


def _check_hints(name: str, values: Mapping[str, object], target: object, keys: set) -> None:
    """Check the keys `keys` of the group `name`, passed as they are to `target`'s constructor,
    against its type hints: a value of the wrong type is named here, not deep in a run."""
    obj = _target(target)
    try:
        hints = typing.get_type_hints(obj.__init__ if inspect.isclass(obj) else obj)
    except Exception:  # no hints to check (or ones that cannot be evaluated)
        return
    for key in sorted(keys & set(hints)):
        expected = hint_mismatch(values[key], hints[key])
        if expected:
            raise ConfigError(
                f"{name}.{key}={values[key]!r} is not accepted by {target}, which takes "
                f"{expected} for {key}"
            )


def not_finite(value: object) -> bool:
    """Whether `value` is, or holds in a list or mapping, NaN or an infinity."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list | tuple):
        return any(map(not_finite, value))
    if isinstance(value, Mapping):
        return any(map(not_finite, value.values()))
    return False


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
    if not_finite(value):
        raise ConfigError(
            f"{key}={value} is not a finite number (NaN and infinity are refused, and so is a "
            f"number too large for a float); use {spec.expectation()}, e.g. {key}={spec.example}"
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
    values = flatten(values)  # nested keys, e.g. augment.flip
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
    for key in extra:  # a value where a mapping of keys belongs, e.g. data.augment=true
        inner = sorted(k.removeprefix(f"{key}.") for k in schema if k.startswith(f"{key}."))
        if inner:
            raise ConfigError(
                f"{name}.{key}={values[key]!r} must be a mapping of {' and '.join(inner)}, "
                f"e.g. {name}.{key}.{inner[0]}={schema[f'{key}.{inner[0]}'].example}"
            )
    if extra:
        shown = sorted(known - set(HYDRA_KEYS))
        raise ConfigError(
            f"{', '.join(f'{name}.{k}' for k in extra)}: no such key in {name} "
            f"(a misspelling?); the accepted keys are {', '.join(shown)}"
        )
    passed = set(values) - set(schema) - set(HYDRA_KEYS)  # to open_to, unchecked so far
    for key in sorted(passed):
        if not_finite(values[key]):
            raise ConfigError(
                f"{name}.{key}={values[key]} holds a value that is not a finite number (NaN or "
                "infinity); pass finite numbers"
            )
    if passed and open_to is not None:
        _check_hints(name, values, open_to, passed)


def check_top(app: str, values: Mapping[str, object]) -> None:
    """Check the top-level keys of the app `app` ('train', 'evaluate' or 'predict')."""
    for key, spec in TOP[app].items():
        value = values.get(key)
        if value == MISSING or (value is None and not spec.nullable):
            raise ConfigError(
                f"{key} is required: pass it on the command line, e.g. {key}={spec.example}"
            )
        check_value(key, spec, value)


def check_augment(values: object, name: str = "data.augment") -> None:
    """Check the augmentation mapping `values` (flip, crop_padding; None: none), naming
    `name.KEY` (the data module checks it when built without the app's checks)."""
    if values is None:
        return
    if not isinstance(values, Mapping):
        raise ConfigError(
            f"{name}={values!r} must be a mapping of flip and crop_padding, "
            f"e.g. {name}.flip=true {name}.crop_padding=4"
        )
    check_group(name, values, typed_keys(f"{name}."))
