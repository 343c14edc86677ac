"""The Hydra app: `python -m cifar_cnn.train [-m] [experiment=NAME] [key=value ...]`.

One run: validate the config, load the data onto the device, build the network, fit with
periodic test-set evaluation, test, and write `metrics.json` into the run directory. A run
directory that already holds `metrics.json` is skipped; one that holds a checkpoint resumes.
"""

import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate, to_absolute_path
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

from cifar_cnn import runtime
from cifar_cnn.errors import ConfigError, TrainingDiverged, UserError
from cifar_cnn.model import count_parameters, layer_summary
from cifar_cnn.module import CIFARClassifier
from cifar_cnn.validate import validate_config

log = logging.getLogger("cifar_cnn")

OmegaConf.register_new_resolver(
    "run_suffix", lambda overrides: f"_{overrides}" if overrides else "", replace=True
)

# Lightning 2.6 on recent torch warns about its own use of a deprecated pytree API every run.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")

METRICS_FILE, FAILED_FILE, LAST_CHECKPOINT = "metrics.json", "failed.json", "checkpoints/last.ckpt"
# Keys of the run config that must agree between a checkpoint and the run resuming from it.
RESUME_MUST_MATCH = ("model", "optimizer", "data.source", "data.batch_size", "data.shuffle")


def write_json(path: Path, data: dict) -> None:
    """Write `data` so that readers see the old file or the new one, never a partial one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves to a temporary file and renames it: a crash mid-write keeps the old checkpoint."""

    def save_checkpoint(self, checkpoint: dict, path: str | Path, storage_options=None) -> None:
        tmp = Path(f"{path}.tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        os.replace(tmp, path)


def _lookup(config: dict, dotted: str) -> object:
    for key in dotted.split("."):
        config = config.get(key) if isinstance(config, dict) else None
    return config


def checkpoint_to_resume(cfg: DictConfig, run_dir: Path, run_config: dict) -> str | None:
    """The checkpoint this run continues from, after checking it fits the configuration."""
    if cfg.ckpt_path:
        path = Path(to_absolute_path(cfg.ckpt_path))
        if not path.is_file():
            raise ConfigError(f"ckpt_path={cfg.ckpt_path!r}: no such checkpoint file ({path})")
    else:
        path = run_dir / LAST_CHECKPOINT
        if not path.is_file():
            return None
        if not cfg.resume:
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
    mismatches = [
        f"{key}: {_lookup(saved_config, key)} (checkpoint) vs {_lookup(run_config, key)} (now)"
        for key in RESUME_MUST_MATCH
        if _lookup(saved_config, key) != _lookup(run_config, key)
    ]
    if mismatches:
        raise ConfigError(
            f"checkpoint {path} does not match this configuration: "
            + "; ".join(mismatches)
            + ". Resume with the settings it was trained with, or pass resume=false (or a new "
            "hydra.run.dir) to start over"
        )
    log.info("resuming from %s (epoch %d done); resume=false starts over", path, saved["epoch"] + 1)
    return str(path)


def build_trainer(cfg: DictConfig, run_dir: Path) -> L.Trainer:
    """The configured Trainer, with everything it writes inside the run directory."""
    callbacks = [
        # save_top_k=1 without a monitor keeps one file, rewritten every N epochs (save_last
        # alone only copies a checkpoint that top-k saved).
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="last",
            save_top_k=1,
            enable_version_counter=False,
            every_n_epochs=cfg.checkpoint_every_n_epochs,
            save_on_train_epoch_end=True,
        )
    ]
    if cfg.progress_bar_refresh > 0:
        callbacks.append(TQDMProgressBar(refresh_rate=cfg.progress_bar_refresh))
    logger = TensorBoardLogger(run_dir, name="tensorboard", version="", default_hp_metric=False)
    return instantiate(
        cfg.trainer,
        default_root_dir=run_dir,
        logger=logger,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=cfg.progress_bar_refresh > 0,
    )


def train(cfg: DictConfig) -> dict:
    """Run one configuration to the end and return what it wrote to metrics.json."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    finished = run_dir / METRICS_FILE
    if finished.is_file() and cfg.resume and not cfg.ckpt_path:
        log.info("%s exists: this run already finished; skipping it", finished)
        return json.loads(finished.read_text())

    validate_config(cfg)
    started = time.perf_counter()
    threads = runtime.configure(cfg.compute, runtime.concurrent_jobs(hydra_cfg.launcher))
    L.seed_everything(cfg.seed, verbose=False)
    run_config = OmegaConf.to_container(cfg, resolve=True)
    ckpt_path = checkpoint_to_resume(cfg, run_dir, run_config)
    datamodule = instantiate(cfg.data, root=to_absolute_path(cfg.data.root))
    net = instantiate(cfg.model)
    log.info("network (%s threads):\n%s", threads, layer_summary(net))
    module = CIFARClassifier(
        net,
        instantiate(cfg.optimizer),
        run_config,
        channels_last=cfg.compute.channels_last,
        compile=cfg.compute.compile,
    )
    trainer = build_trainer(cfg, run_dir)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    trainer.test(module, datamodule=datamodule, verbose=False)

    metrics = {
        "experiment": hydra_cfg.runtime.choices.get("experiment"),
        "overrides": list(hydra_cfg.overrides.task),
        **module.test_results,
        "train_loss_per_epoch": module.train_loss_per_epoch,
        "test_recall_per_epoch": module.test_recall_per_epoch,
        "test_recall_epochs": module.test_recall_epochs,
        "params": count_parameters(net),
        "epochs": len(module.train_loss_per_epoch),
        "train_seconds": module.train_seconds,
        "seed": cfg.seed,
        "data": {
            "source": cfg.data.source,
            "train_size": len(datamodule.arrays["train_y"]),
            "test_size": len(datamodule.arrays["test_y"]),
        },
        "device": str(module.device),
        "threads": threads,
        "wall_seconds_this_process": time.perf_counter() - started,
        "config": run_config,
    }
    write_json(finished, metrics)
    (run_dir / FAILED_FILE).unlink(missing_ok=True)  # from an earlier attempt of this run
    log.info(
        "test recall %.4f after %d epochs; wrote %s",
        metrics["test_recall"],
        metrics["epochs"],
        finished,
    )
    return metrics


def record_failure(run_dir: Path, error: BaseException, epoch: int | None) -> None:
    """Write failed.json so that sweeps and reports see the failure, not a missing run."""
    write_json(
        run_dir / FAILED_FILE,
        {
            "error": f"{type(error).__name__}: {error}",
            "epoch": epoch,
            "overrides": list(HydraConfig.get().overrides.task),
            "experiment": HydraConfig.get().runtime.choices.get("experiment"),
        },
    )


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the test recall (the value a sweeper would optimise)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        return train(cfg)["test_recall"]
    except Exception as e:
        epoch = e.epoch if isinstance(e, TrainingDiverged) else None
        record_failure(run_dir, e, epoch)
        if not isinstance(e, UserError):
            raise
        log.error("%s", e)
        if HydraConfig.get().mode == RunMode.RUN:
            sys.exit(1)  # the message above says it all; no traceback
        raise  # in a sweep: this job fails, the others run, and the sweep reports it


if __name__ == "__main__":
    main()
