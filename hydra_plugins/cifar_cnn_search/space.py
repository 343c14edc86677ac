"""The search space of `hparams_search=optuna`: Hydra sweep overrides as Optuna distributions.

Each searched key is written in Hydra's override syntax, in the sweeper's `params` or on the
command line (where a key replaces the same key of `params`):

- `choice(a, b, ...)`: one of the values (lists such as `[5,3,3]` are one value each);
- `range(start, stop[, step])`: the integers (or floats) of Hydra's `range`, stop excluded;
  `tag(log, range(...))` samples integers on a log scale (step 1);
- `interval(low, high)`: a float between low and high; `tag(log, interval(...))` on a log scale.

Any other override is fixed: every trial runs with it. Optuna is imported inside the functions
(Hydra imports every plugin module on start, with or without the `search` extra).
"""

from __future__ import annotations

from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)

from cifar_cnn.core.errors import ConfigError


def _distribution(override: Override) -> Any:
    """The Optuna distribution of one sweep override."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    key, sweep = override.get_key_element(), override.value()
    tags = set(getattr(sweep, "tags", ()) or ())
    if tags - {"log"}:
        raise ConfigError(f"{key}: unknown tag(s) {sorted(tags - {'log'})}; only `log` is known")
    log = "log" in tags
    if isinstance(sweep, ChoiceSweep) or (isinstance(sweep, RangeSweep) and sweep.shuffle):
        if log:
            raise ConfigError(f"{key}: tag(log, ...) needs a range or an interval, not a choice")
        return CategoricalDistribution(list(override.sweep_iterator(Transformer.encode)))
    if isinstance(sweep, RangeSweep):
        values = list(override.sweep_iterator())
        if not values:
            raise ConfigError(f"{key}={override.get_value_string()} is an empty range")
        if all(isinstance(v, int) for v in values):
            step = 1 if log else int(sweep.step)
            if log and sweep.step != 1:
                raise ConfigError(f"{key}: tag(log, range(...)) samples with step 1; drop the step")
            return IntDistribution(values[0], values[-1], step=step, log=log)
        return FloatDistribution(values[0], values[-1], step=None if log else sweep.step, log=log)
    if isinstance(sweep, IntervalSweep):
        return FloatDistribution(sweep.start, sweep.end, log=log)
    raise ConfigError(
        f"{key}={override.get_value_string()}: a search dimension is choice(...), range(...) or "
        "interval(...), optionally in tag(log, ...)"
    )


def parse_space(params: dict[str, Any], arguments: list[str]) -> tuple[dict[str, Any], list[str]]:
    """(searched key -> Optuna distribution, fixed overrides) from the sweeper's `params` and
    the command-line overrides `arguments`; a command-line key replaces the key in `params`."""
    given = {key: f"{key}={value}" for key, value in params.items()}
    parser = OverridesParser.create()
    for override in parser.parse_overrides(arguments):
        key = override.get_key_element()
        given[key] = override.input_line or f"{key}={override.get_value_string()}"
    space, fixed = {}, []
    for text in given.values():
        override = parser.parse_override(text)
        if override.is_sweep_override():
            space[override.get_key_element()] = _distribution(override)
        else:
            fixed.append(text)
    return space, fixed


def suggest(trial: Any, key: str, distribution: Any) -> Any:
    """Ask `trial` (an Optuna trial) for the value of `key` from `distribution`."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(key, distribution.choices)
    kind = trial.suggest_float if isinstance(distribution, FloatDistribution) else trial.suggest_int
    low, high, step, log = distribution.low, distribution.high, distribution.step, distribution.log
    return kind(key, low, high, step=step, log=log)


def as_override(key: str, value: Any) -> str:
    """`key=value` as Hydra parses it back (booleans lower case; lists already as text)."""
    return f"{key}={str(value).lower() if isinstance(value, bool) else value}"
