"""One training run, from a composed config to `metrics.json`, with no Hydra state.

`train` validates the config, loads the data onto the device, builds the network, fits with
periodic evaluation (on the test set, as the study did, or with `data.val_size` on the held-out
validation split, also after the last epoch), tests once, and writes `metrics.json` into the
run directory. A run directory that already holds `metrics.json` is skipped; one that holds a
checkpoint resumes.
The Hydra app (`cifar_cnn.train`), the benchmarks and the tests all call it.
"""

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from cifar_cnn.core.errors import ConfigError
from cifar_cnn.core.runfiles import (
    FAILED_FILE,
    LAST_CHECKPOINT,
    METRICS_FILE,
    read_json,
    write_json,
)
from cifar_cnn.training import runtime
from cifar_cnn.training.config_checks import validate_config
from cifar_cnn.training.loggers import HParamsSummary, build_loggers
from cifar_cnn.training.model import count_parameters, layer_summary
from cifar_cnn.training.module import CIFARClassifier

log = logging.getLogger("cifar_cnn")


# Keys (and key prefixes) that may differ between a checkpoint and the run resuming from it:
# they do not change what is computed. Every other key must match.
RESUME_MAY_DIFFER = (
    "trainer.max_epochs",  # a finished run may be continued for more epochs
    "trainer.check_val_every_n_epoch",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.benchmark",
    "trainer.num_sanity_val_steps",
    "trainer.enable_model_summary",
    "compute.",
    "data.download",
    "data.eval_batch_size",
    "resume",
    "ckpt_path",
    "checkpoint_every_n_epochs",
    "progress_bar_refresh",
    "logger.",  # where metrics go (the report and resuming read the run directory's files)
)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves to a temporary file and renames it: a crash mid-write keeps the old checkpoint."""

    def save_checkpoint(self, checkpoint: dict, path: str | Path, storage_options=None) -> None:
        tmp = Path(f"{path}.tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        tmp.replace(path)


def _flatten(config: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _may_differ(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUME_MAY_DIFFER)


def checkpoint_mismatches(saved_config: dict, run_config: dict) -> list[str]:
    """The keys that change the result and differ between a checkpoint's config and this run's."""
    saved, now = _flatten(saved_config), _flatten(run_config)
    return [
        f"{key}: {saved.get(key)} (checkpoint) vs {now.get(key)} (now)"
        for key in sorted(saved.keys() | now.keys())
        if not _may_differ(key) and saved.get(key) != now.get(key)
    ]


def checkpoint_to_resume(
    run_dir: Path, run_config: dict, resume: bool, ckpt_path: str | None
) -> str | None:
    """The checkpoint this run continues from, after checking it fits the configuration."""
    if ckpt_path:
        path = Path(ckpt_path).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"ckpt_path={ckpt_path!r}: no such checkpoint file ({path.absolute()})"
            )
    else:
        path = run_dir / LAST_CHECKPOINT
        if not path.is_file():
            return None
        if not resume:
            log.info("resume=false: starting over; %s will be replaced", path)
            return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ConfigError(
            f"checkpoint {path} is unreadable ({type(e).__name__}); delete it, or pass "
            "resume=false to start this run over"
        ) from e
    saved_config = saved.get("hyper_parameters", {}).get("run_config") or {}
    mismatches = checkpoint_mismatches(saved_config, run_config)
    if mismatches:
        raise ConfigError(
            f"checkpoint {path} does not match this configuration: "
            + "; ".join(mismatches)
            + ". Resume with the settings it was trained with, or pass resume=false (or a new "
            "hydra.run.dir) to start over"
        )
    log.info("resuming from %s (epoch %d done); resume=false starts over", path, saved["epoch"] + 1)
    return str(path)


def build_trainer(cfg: DictConfig, run_dir: Path, callbacks: Sequence[Callback] = ()) -> L.Trainer:
    """The configured Trainer, with everything it writes inside the run directory."""
    all_callbacks = [
        # save_top_k=1 without a monitor keeps one file, rewritten every N epochs (save_last
        # alone only copies a checkpoint that top-k saved).
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="last",
            save_top_k=1,
            enable_version_counter=False,
            every_n_epochs=cfg.checkpoint_every_n_epochs,
            save_on_train_epoch_end=True,
        ),
        *callbacks,
    ]
    if cfg.progress_bar_refresh > 0:
        all_callbacks.append(TQDMProgressBar(refresh_rate=cfg.progress_bar_refresh))
    return instantiate(
        cfg.trainer,
        default_root_dir=run_dir,
        logger=build_loggers(cfg.get("logger"), run_dir),
        callbacks=all_callbacks,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=cfg.progress_bar_refresh > 0,
    )


def train(
    cfg: DictConfig,
    run_dir: Path,
    *,
    experiment: str | None = None,
    overrides: Sequence[str] = (),
    concurrent_jobs: int = 1,
    callbacks: Sequence[Callback] = (),
) -> dict:
    """Run one configuration to the end in `run_dir` and return what it wrote to metrics.json.

    `experiment` and `overrides` are recorded in metrics.json for the report; `concurrent_jobs`
    is how many runs share this machine (for the thread count); `callbacks` are added to the
    Trainer's own.
    """
    finished = run_dir / METRICS_FILE
    if finished.is_file() and cfg.resume and not cfg.ckpt_path:
        log.info("%s exists: this run already finished; skipping it", finished)
        return read_json(finished) or {}

    validate_config(cfg)
    runtime.check_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    started = time.perf_counter()
    threads = runtime.configure(cfg.compute, concurrent_jobs)
    L.seed_everything(cfg.seed, verbose=False)
    cfg = cfg.copy()
    cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())
    run_config = OmegaConf.to_container(cfg, resolve=True)
    ckpt_path = checkpoint_to_resume(run_dir, run_config, cfg.resume, cfg.ckpt_path)
    datamodule = instantiate(cfg.data)
    net = instantiate(cfg.model)
    log.info("network (%s threads):\n%s", threads, layer_summary(net))
    module = CIFARClassifier(
        net,
        instantiate(cfg.optimizer),
        run_config,
        channels_last=cfg.compute.channels_last,
        compile=cfg.compute.compile,
    )
    trainer = build_trainer(cfg, run_dir, [*callbacks, HParamsSummary(experiment)])
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    epochs = len(module.train_loss_per_epoch)
    if module.eval_split == "val" and module.val_recall_epochs[-1:] != [epochs]:
        trainer.validate(module, datamodule=datamodule, verbose=False)  # val_recall: at the end
    trainer.test(module, datamodule=datamodule, verbose=False)

    metrics = {
        "experiment": experiment,
        "overrides": list(overrides),
        **module.test_results,
        "train_loss_per_epoch": module.train_loss_per_epoch,
        "test_recall_per_epoch": module.test_recall_per_epoch,
        "test_recall_epochs": module.test_recall_epochs,
        # With data.val_size: the validation recall after the last epoch (what a search
        # optimises) and its curve; the test set is then evaluated once, above.
        "val_recall": module.val_recall_per_epoch[-1] if module.val_recall_per_epoch else None,
        "val_recall_per_epoch": module.val_recall_per_epoch,
        "val_recall_epochs": module.val_recall_epochs,
        "params": count_parameters(net),
        "epochs": epochs,
        "train_seconds": module.train_seconds,
        "seed": cfg.seed,
        "data": {
            "source": cfg.data.source,
            **{
                f"{split}_size": len(datamodule.arrays[f"{split}_y"])
                for split in ("train", "test", "val")  # val: only with data.val_size
                if f"{split}_y" in datamodule.arrays
            },
        },
        "device": str(trainer.strategy.root_device),  # the module is back on the CPU by now
        "precision": str(cfg.trainer.precision),  # 32-true (the study's fp32), bf16-mixed, ...
        "threads": threads,
        "wall_seconds_this_process": time.perf_counter() - started,
        "config": run_config,
    }
    write_json(finished, metrics)
    (run_dir / FAILED_FILE).unlink(missing_ok=True)  # from an earlier attempt of this run
    held_out = metrics["val_recall"]
    log.info(
        "%stest recall %.4f after %d epochs; wrote %s",
        "" if held_out is None else f"validation recall {held_out:.4f}, ",
        metrics["test_recall"],
        metrics["epochs"],
        finished,
    )
    return metrics


def record_failure(
    run_dir: Path,
    error: BaseException,
    epoch: int | None,
    experiment: str | None = None,
    overrides: Sequence[str] = (),
) -> None:
    """Write failed.json so that sweeps and reports see the failure, not a missing run."""
    write_json(
        run_dir / FAILED_FILE,
        {
            "error": f"{type(error).__name__}: {error}",
            "epoch": epoch,
            "overrides": list(overrides),
            "experiment": experiment,
        },
    )
