"""One place that checks a run's configuration before any data is read or a model is built."""

from omegaconf import DictConfig, ListConfig

from cifar_cnn.core.errors import ConfigError
from cifar_cnn.training.data import SOURCES
from cifar_cnn.training.model import ACTIVATIONS, FILTER_PRESETS, feature_map_sizes, resolve_filters


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(key: str, value: object) -> int:
    if not _is_int(value) or value <= 0:
        raise ConfigError(f"{key}={value!r} must be a positive whole number")
    return value


def _positive_int_list(key: str, value: object, example: str) -> list[int]:
    if not isinstance(value, list | tuple | ListConfig) or not value:
        raise ConfigError(f"{key}={value!r} must be a non-empty list such as {example}")
    for item in value:
        if not _is_int(item) or item <= 0:
            raise ConfigError(
                f"{key}={list(value)} contains {item!r}; every entry must be a positive whole "
                f"number, e.g. {example}"
            )
    return list(value)


def _number(
    key: str, value: object, low: float, high: float | None = None, low_inclusive: bool = True
) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok:
        ok = (value >= low if low_inclusive else value > low) and (high is None or value < high)
    if not ok:
        bound = f"{'>=' if low_inclusive else '>'} {low}" + (f" and < {high}" if high else "")
        raise ConfigError(f"{key}={value!r} must be a number {bound}")


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError naming the key, its value and what would be accepted."""
    model, data, optimizer = cfg.model, cfg.data, cfg.optimizer
    filters = model.filters
    if isinstance(filters, str):
        resolve_filters(filters)
    else:
        filters = _positive_int_list("model.filters", filters, "[24, 48, 96]")
    kernels = _positive_int_list("model.kernel_sizes", model.kernel_sizes, "[5, 3, 3]")
    if len(resolve_filters(filters)) != len(kernels):
        raise ConfigError(
            f"model.filters ({filters}) and model.kernel_sizes ({kernels}) must have the same "
            f"length: one kernel size per convolution (presets: {dict(FILTER_PRESETS)})"
        )
    feature_map_sizes(kernels)
    if model.activation not in ACTIVATIONS:
        raise ConfigError(
            f"model.activation={model.activation!r} is unknown; use one of {', '.join(ACTIVATIONS)}"
        )
    _number("model.leaky_slope", model.leaky_slope, 0)
    if model.hidden:
        _positive_int_list("model.hidden", model.hidden, "[512] or [512, 128]")
    _number("model.dropout", model.dropout, 0, 1)

    if data.source not in SOURCES:
        raise ConfigError(
            f"data.source={data.source!r} is unknown; use one of {', '.join(SOURCES)}"
        )
    for key in ("batch_size", "eval_batch_size", "synthetic_train_size", "synthetic_test_size"):
        _positive_int(f"data.{key}", data[key])
    if data.val_size != 0:
        _positive_int("data.val_size", data.val_size)

    _number("optimizer.lr", optimizer.lr, 0, low_inclusive=False)
    _number("optimizer.momentum", optimizer.get("momentum", 0), 0, 1)
    _number("optimizer.weight_decay", optimizer.get("weight_decay", 0), 0)

    if not _is_int(cfg.seed) or not 0 <= cfg.seed < 2**32:
        raise ConfigError(f"seed={cfg.seed!r} must be a whole number from 0 to 2**32 - 1")
    devices = cfg.trainer.get("devices", 1)
    if devices not in (1, "1") and not (isinstance(devices, ListConfig) and len(devices) == 1):
        raise ConfigError(
            f"trainer.devices={cfg.trainer.devices!r}: a run trains on one device (this network "
            "gains nothing from data parallelism). To use several CPUs or GPUs, run sweep jobs "
            "in parallel: python -m cifar_cnn.train -m hydra/launcher=joblib "
            "hydra.launcher.n_jobs=N ..."
        )
    _positive_int("trainer.max_epochs", cfg.trainer.max_epochs)
    _positive_int("trainer.check_val_every_n_epoch", cfg.trainer.check_val_every_n_epoch)
    _positive_int("checkpoint_every_n_epochs", cfg.checkpoint_every_n_epochs)
    if cfg.compute.threads is not None:
        _positive_int("compute.threads", cfg.compute.threads)
