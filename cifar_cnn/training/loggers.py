"""Where a run's metrics go: the `logger` config group as Lightning loggers, and the summary
each run leaves for TensorBoard's HParams dashboard.

`conf/logger/*.yaml` holds one entry per logger (name -> a `_target_` Lightning logger);
`logger=many` or `'logger=[tensorboard,csv]'` picks several. wandb and mlflow are optional
extras, checked before anything is built. Nothing here reads the loggers back: the report
and resuming work from the run directory's own files, whichever loggers ran.
"""

import importlib.util
import inspect
import typing
from collections.abc import Mapping
from pathlib import Path

import lightning as L
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger, TensorBoardLogger

from cifar_cnn.core.errors import ConfigError
from cifar_cnn.training.schema import hint_mismatch

# Loggers whose package is an optional extra: class name -> (package to import, extra).
OPTIONAL_PACKAGES = {"WandbLogger": ("wandb", "wandb"), "MLFlowLogger": ("mlflow", "mlflow")}
HIDDEN_KEYS = ("_target_", "_partial_")  # Hydra's, not hyperparameters
# Where a logger passes its other keywords (**kwargs): their keywords are accepted too. A
# logger not listed here that takes **kwargs (WandbLogger: wandb.init's many) accepts any key.
KWARGS_GO_TO = {"TensorBoardLogger": "torch.utils.tensorboard.SummaryWriter"}


def check_loggers(config: Mapping | None) -> dict[str, Mapping]:
    """The entries of the `logger` config that build a logger, after checking each: a
    `_target_`, its optional package installed, and only keys its class takes (ConfigError
    naming the key otherwise). Called before a run starts, and by `build_loggers`."""
    entries = {}
    for name, entry in (config or {}).items():
        if entry is None:
            continue
        if not isinstance(entry, Mapping) or "_target_" not in entry:
            raise ConfigError(
                f"logger.{name} must be a Lightning logger config with a _target_, e.g. "
                "_target_: lightning.pytorch.loggers.CSVLogger (or pick one of conf/logger/: "
                "logger=tensorboard, csv, wandb, mlflow or many)"
            )
        package, extra = OPTIONAL_PACKAGES.get(str(entry["_target_"]).rsplit(".", 1)[-1], ("", ""))
        if package and importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"logger={name} needs the {package} package: pip install 'cifar_cnn[{extra}]' "
                "(or choose another logger, e.g. logger=tensorboard or logger=csv)"
            )
        _check_keys(name, entry)
        entries[name] = entry
    return entries


def build_loggers(config: Mapping | None, run_dir: Path) -> list[Logger]:
    """One Lightning logger per entry of the `logger` config (name -> `_target_` config).

    Each entry's `save_dir` is taken relative to `run_dir`; a null entry is left out. A logger
    whose optional package is missing is refused with the command that installs it.
    """
    return [
        instantiate(entry, save_dir=str(Path(run_dir, str(entry.get("save_dir") or "."))))
        for entry in check_loggers(config).values()
    ]


def _check_keys(name: str, entry: Mapping) -> None:
    """ConfigError naming a key of `logger.<name>` that its logger class does not take (a
    misspelling would otherwise reach the logger's constructor), or a value of the wrong type."""
    target = str(entry["_target_"])
    try:
        cls = get_class(target)
    except Exception as e:
        raise ConfigError(
            f"logger.{name}._target_={target} cannot be imported ({e}); use a Lightning "
            "logger, e.g. lightning.pytorch.loggers.CSVLogger"
        ) from None
    parameters = inspect.signature(cls).parameters
    accepted = {k for k, p in parameters.items() if p.kind is not p.VAR_KEYWORD}
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        if cls.__name__ not in KWARGS_GO_TO:
            return
        sink = inspect.signature(get_class(KWARGS_GO_TO[cls.__name__])).parameters
        accepted |= set(sink) - {"log_dir"}  # the logger sets log_dir itself
    extra = sorted(set(entry) - accepted - set(HIDDEN_KEYS))
    if extra:
        raise ConfigError(
            f"{', '.join(f'logger.{name}.{k}' for k in extra)}: no such key for "
            f"{cls.__name__} (a misspelling?); the accepted keys are {', '.join(sorted(accepted))}"
        )
    hints = typing.get_type_hints(cls.__init__)
    for key in sorted(set(entry) & set(hints)):
        expected = hint_mismatch(entry[key], hints[key])
        if expected:
            raise ConfigError(f"logger.{name}.{key}={entry[key]!r} must be {expected}")


def _columns(config: dict, keys: tuple[str, ...] | None = None) -> dict:
    """`config`'s entries (or those of `keys`) without Hydra's; true/false as text (TensorBoard
    would show 1/0)."""
    values = {k: config.get(k) for k in keys or config if k not in HIDDEN_KEYS}
    return {k: str(v).lower() if isinstance(v, bool) else v for k, v in values.items()}


def comparison_hparams(run_config: dict, experiment: str | None = None) -> dict:
    """The hyperparameters that define a run, as the HParams dashboard's columns.

    The model, optimiser, schedule and loss configs, the data source, batch size and shuffling,
    the seed, the epoch count and the `experiment=` choice (TensorBoard flattens the nesting
    to model/filters, optimizer/lr, ...; lists become text).
    """
    model, optimizer = run_config.get("model") or {}, run_config.get("optimizer") or {}
    data, trainer = run_config.get("data") or {}, run_config.get("trainer") or {}
    return {
        "experiment": experiment or "none",
        "model": _columns(model),
        "optimizer": {
            "name": str(optimizer.get("_target_", "")).rsplit(".", 1)[-1],
            **_columns(optimizer),
        },
        "data": _columns(data, ("source", "batch_size", "shuffle")),
        "scheduler": _columns(run_config.get("scheduler") or {"name": "none"}),
        "loss": _columns(run_config.get("loss") or {"label_smoothing": 0.0}),
        "seed": run_config.get("seed"),
        "trainer": {"max_epochs": trainer.get("max_epochs")},
    }


class HParamsSummary(Callback):
    """After testing, logs the run's defining hyperparameters with its final test recall and
    accuracy (hp/test_recall, hp/test_accuracy; with data.val_size also the final validation
    recall, hp/val_recall) to every TensorBoard logger, so TensorBoard's
    HParams dashboard lists and sorts the runs of a sweep. Other loggers already have the
    whole config and test/final_recall."""

    def __init__(self, experiment: str | None = None):
        self.experiment = experiment

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        run_config = pl_module.hparams.get("run_config")
        results = getattr(pl_module, "test_results", None)
        if not run_config or results is None:
            return
        params = comparison_hparams(run_config, self.experiment)
        metrics = {"hp/test_recall": results.recall, "hp/test_accuracy": results.accuracy}
        if pl_module.history.val_recall:
            metrics["hp/val_recall"] = pl_module.history.val_recall[-1]
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(params, metrics, step=trainer.global_step)
