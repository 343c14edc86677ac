"""One place that checks a configuration before any data is read or a model is built.

`validate_config` checks every key's type and range against the schema (schema.py), the
combinations no single key shows (filters and kernel sizes, one device per run) and whether
the network fits in the memory of the machine; `validate_launch` checks the launcher's and the
sweeper's counts, which only the Hydra entry point can read.
"""

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import torch
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from cifar_cnn.core.cifar10 import IMAGE_SIZE
from cifar_cnn.core.errors import ConfigError
from cifar_cnn.training.model import CNN, FILTER_PRESETS, feature_map_sizes, resolve_filters
from cifar_cnn.training.schema import (
    COMPUTE,
    GROUPS,
    LAUNCHER,
    MISSING,
    MODEL,
    SCHEDULERS,
    SWEEPER,
    TOP,
    check_group,
    check_top,
    check_value,
)

log = logging.getLogger(__name__)

APPS = ("train", "evaluate", "predict")
FLOAT_BYTES = 4
# CIFAR-10's training and test images, held on the device as uint8 (the folder source's
# size is not known before its files are read; it is estimated as CIFAR-10's).
CIFAR10_IMAGES = 60_000
# The optimiser's state per parameter: SGD with momentum keeps one buffer, Adam two.
OPTIMIZER_BUFFERS = 2
# Measured on CPU (peak RSS of two SGD steps and one evaluation batch, filters from [24,48,96]
# to [2000,48,96]): torch itself takes about 250 MiB, and the kernels' working buffers take up
# to 1.7x the layers' outputs; twice the outputs bounds every measured case from above.
RUNTIME_BYTES = 256 * 2**20
WORKSPACE_FACTOR = 2


def _plain(cfg: DictConfig, key: str) -> dict:
    node = cfg.get(key)
    if node is None:
        raise ConfigError(f"the config has no `{key}` group; compose it with conf/ (`{key}: ...`)")
    return OmegaConf.to_container(node, resolve=True)


def _top_value(cfg: DictConfig, key: str) -> object:
    if OmegaConf.is_missing(cfg, key):
        return MISSING
    value = cfg[key]
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def validate_config(cfg: DictConfig, app: str = "train", check_memory: bool = True) -> None:
    """Raise ConfigError naming the key, its value and what would be accepted.

    `app` is the entry point whose config `cfg` is: 'train', 'evaluate' or 'predict'. With
    `check_memory`, a training config whose network would not fit in the memory of the device
    it trains on is refused (`memory_need`).
    """
    if app not in APPS:
        raise ValueError(f"app={app!r}: use one of {APPS}")
    check_top(app, {key: _top_value(cfg, key) for key in TOP[app] if key in cfg})
    groups = {name: _plain(cfg, name) for name in GROUPS[app]}
    for name, values in groups.items():
        open_to = values.get("_target_") if name in ("optimizer", "trainer") else None
        check_group(name, values, GROUPS[app][name], open_to)
    check_group("compute", _plain(cfg, "compute"), COMPUTE)
    _check_devices(groups["trainer"].get("devices", 1))
    if app == "train":
        _check_model(groups["model"])
        _check_optimizer(groups["optimizer"])
        _check_optimizer_builds(groups["optimizer"])
        _check_scheduler(_plain(cfg, "scheduler"), groups["optimizer"], groups["trainer"])
        if check_memory:
            _check_memory(groups)


def _check_model(model: dict) -> None:
    filters = model["filters"]
    if isinstance(filters, str):
        resolve_filters(filters)
    else:
        check_value("model.filters", replace(MODEL["kernel_sizes"], example="[24,48,96]"), filters)
    kernels = model["kernel_sizes"]
    if not kernels:
        raise ConfigError("model.kernel_sizes=[] must list one kernel size per convolution")
    if len(resolve_filters(filters)) != len(kernels):
        raise ConfigError(
            f"model.filters ({filters}) and model.kernel_sizes ({kernels}) must have the same "
            f"length: one kernel size per convolution (presets: {dict(FILTER_PRESETS)})"
        )
    feature_map_sizes(kernels)


def _check_optimizer(optimizer: dict) -> None:
    """What torch would refuse only once training starts, named by its keys: Nesterov
    momentum without momentum (or with dampening)."""
    if optimizer.get("nesterov") is True and (
        optimizer.get("momentum", 0) <= 0 or optimizer.get("dampening", 0) != 0
    ):
        raise ConfigError(
            f"optimizer.nesterov=true needs optimizer.momentum > 0 and optimizer.dampening=0 "
            f"(got momentum={optimizer.get('momentum', 0)}, dampening="
            f"{optimizer.get('dampening', 0)}); e.g. optimizer.momentum=0.9, or "
            "optimizer.nesterov=false"
        )


def _check_optimizer_builds(optimizer: dict) -> None:
    """Build the optimiser on one parameter, so that its own checks (a keyword of the wrong
    type or range, e.g. Adam's `betas`) are named before the run, not raised inside torch."""
    target = optimizer["_target_"]
    try:
        factory = get_method(target)
    except Exception as e:
        raise ConfigError(
            f"optimizer._target_={target} cannot be imported ({e}); use a torch.optim class, "
            "e.g. optimizer._target_=torch.optim.SGD"
        ) from None
    kwargs = {k: v for k, v in optimizer.items() if k not in ("_target_", "_partial_")}
    error = _optimizer_error(factory, kwargs)
    if error is None:
        return
    # The key whose removal lets the optimiser build is the one to name.
    blamed = [k for k in kwargs if _optimizer_error(factory, dict(kwargs, **{k: _DEFAULT})) is None]
    if blamed:
        key = blamed[0]
        default = inspect.signature(factory).parameters[key].default
        hint = "" if default is inspect.Parameter.empty else f" (its default is {default!r})"
        raise ConfigError(f"optimizer.{key}={kwargs[key]!r} is refused by {target}: {error}{hint}")
    shown = " ".join(f"optimizer.{k}={v!r}" for k, v in kwargs.items())
    raise ConfigError(f"{target} refuses the optimizer keys {shown}: {error}")


_DEFAULT = object()  # a keyword left at the optimiser's default


def _optimizer_error(factory: Callable, kwargs: dict) -> str | None:
    """The error building `factory` with `kwargs` gives on one parameter, or None."""
    kwargs = {k: v for k, v in kwargs.items() if v is not _DEFAULT}
    try:
        factory([torch.nn.Parameter(torch.zeros(1))], **kwargs)
    except (TypeError, ValueError, RuntimeError, KeyError, IndexError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def _check_scheduler(scheduler: dict, optimizer: dict, trainer: dict) -> None:
    """The keys of the chosen schedule (schema.SCHEDULERS), and how they fit the run."""
    name = scheduler.get("name")
    if name not in SCHEDULERS:
        check_value("scheduler.name", SCHEDULERS["none"]["name"], name)
    check_group("scheduler", scheduler, SCHEDULERS[name])
    epochs = trainer["max_epochs"]
    warmup = scheduler.get("warmup_epochs", 0)
    if warmup >= epochs and warmup > 0:
        raise ConfigError(
            f"scheduler.warmup_epochs={warmup} must be less than trainer.max_epochs={epochs} "
            f"(the warm-up is part of the run), e.g. scheduler.warmup_epochs={epochs / 10:g}"
        )
    if name == "cosine" and scheduler["min_lr"] > optimizer["lr"]:
        raise ConfigError(
            f"scheduler.min_lr={scheduler['min_lr']} must not exceed optimizer.lr="
            f"{optimizer['lr']} (the cosine falls from optimizer.lr to scheduler.min_lr)"
        )


def _check_devices(devices: object) -> None:
    if devices in (1, "1") or (isinstance(devices, list) and len(devices) == 1):
        return
    raise ConfigError(
        f"trainer.devices={devices!r}: a run trains on one device (this network "
        "gains nothing from data parallelism). To use several CPUs or GPUs, run sweep jobs "
        "in parallel: python -m cifar_cnn.train -m hydra/launcher=joblib "
        "hydra.launcher.n_jobs=N ..."
    )


def validate_launch(launcher: Mapping | None, sweeper: Mapping | None) -> None:
    """Check the launcher's and the sweeper's counts (`hydra.launcher`, `hydra.sweeper` of
    the composed config; an entry point passes `HydraConfig.get().launcher` and `.sweeper`).
    Keys that a launcher or sweeper lacks are not required."""
    for name, values, schema in (("launcher", launcher, LAUNCHER), ("sweeper", sweeper, SWEEPER)):
        values = OmegaConf.to_container(values, resolve=True) if values is not None else {}
        for key, spec in schema.items():
            if key in values:
                check_value(f"hydra.{name}.{key}", spec, values[key])
        if name == "launcher" and values.get("n_jobs") == 0:
            raise ConfigError(
                "hydra.launcher.n_jobs=0 runs no job; use a positive number of jobs at once, "
                "or -1 for one per CPU, e.g. hydra.launcher.n_jobs=2"
            )


# --- memory ---------------------------------------------------------------------------------
def memory_need(model: dict, batch_size: int, eval_batch_size: int, images: int) -> int:
    """Bytes a training run needs at its peak, estimated from the network's shapes: torch's
    own memory, the data set on the device, the parameters with their gradients and optimiser
    state, and the larger of a training step (every layer's output kept for the backward pass,
    plus the gradient of the largest) and an evaluation batch (the largest layer's input and
    output), doubled for the kernels' working buffers."""
    kwargs = {k: v for k, v in model.items() if k != "_target_"}
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        net = CNN(**kwargs).eval()
        x = torch.empty(1, 3, IMAGE_SIZE, IMAGE_SIZE)
        sizes = [x.numel()]
        for layer in net.children():
            x = layer(x)
            sizes.append(x.numel())
    parameters = sum(p.numel() for p in net.parameters())
    step = batch_size * (sum(sizes) + max(sizes))
    evaluation = eval_batch_size * max(a + b for a, b in zip(sizes, sizes[1:], strict=False))
    weights = parameters * (2 + OPTIMIZER_BUFFERS)
    outputs = WORKSPACE_FACTOR * max(step, evaluation)
    return RUNTIME_BYTES + images * 3 * IMAGE_SIZE**2 + FLOAT_BYTES * (weights + outputs)


def available_memory(accelerator: str) -> tuple[int | None, str]:
    """Bytes free where a run with `accelerator` computes, and where that is: the CUDA device's
    free memory, else the host's available memory (MemAvailable, capped by a cgroup limit)."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return free, f"GPU {torch.cuda.get_device_name()}"
    try:
        meminfo = Path("/proc/meminfo").read_text()
        free = next(
            int(line.split()[1]) * 1024
            for line in meminfo.splitlines()
            if line.startswith("MemAvailable:")
        )
    except (OSError, StopIteration, ValueError):
        return None, "host"
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            free = min(free, int(Path(limit_file).read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            continue
    return free, "this machine's memory (MemAvailable)"


def _check_memory(groups: dict) -> None:
    data = groups["data"]
    if data["source"] == "synthetic":
        images = data["synthetic_train_size"] + data["synthetic_test_size"]
        data_keys = (
            f"data.synthetic_train_size={data['synthetic_train_size']}, "
            f"data.synthetic_test_size={data['synthetic_test_size']}"
        )
    else:
        images = CIFAR10_IMAGES
        data_keys = f"{images} CIFAR-10 images"
    need = memory_need(groups["model"], data["batch_size"], data["eval_batch_size"], images)
    free, where = available_memory(groups["trainer"]["accelerator"])
    if free is None or need <= free:
        return
    gib = 2**30
    data_bytes = images * 3 * IMAGE_SIZE**2
    if data_bytes > need / 2:  # the images, not the network, are what does not fit
        raise ConfigError(
            f"this run needs about {need / gib:.1f} GiB, {data_bytes / gib:.1f} GiB of it for "
            f"the images held in memory ({data_keys}), but {where} has {free / gib:.1f} GiB "
            "free; use fewer images (each takes 3 KiB)"
        )
    raise ConfigError(
        f"this network needs about {need / gib:.1f} GiB (model.filters={groups['model']['filters']}"
        f", model.hidden={groups['model']['hidden']}, data.batch_size={data['batch_size']}, "
        f"data.eval_batch_size={data['eval_batch_size']}) but {where} has {free / gib:.1f} GiB "
        "free; use fewer filters or smaller batches (the study's network needs well under 1 GiB)"
    )
