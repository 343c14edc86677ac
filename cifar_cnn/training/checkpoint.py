"""Checkpoints, in one place: written atomically, read with one error message, checked
against the run's configuration, and restored for resuming (Trainer) or for use (evaluate,
predict).

A checkpoint is Lightning's (weights, optimiser, loop state, the module's hyperparameters,
which hold the resolved run config) plus this project's `cifar_cnn` entry: the run's
`History` and the RNG states of the CPU and of the run's own GPU, so a resumed run continues
exactly where it stopped, also on a machine with another number of GPUs.
"""

import dataclasses
import logging
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cifar_cnn.core.errors import ConfigError
from cifar_cnn.core.keys import flatten, resume_mismatches
from cifar_cnn.core.record import History, best_validation, from_dict
from cifar_cnn.core.runfiles import LAST_CHECKPOINT
from cifar_cnn.training.module import CIFARClassifier

log = logging.getLogger("cifar_cnn")

STATE_KEY = "cifar_cnn"
EXAMPLE = f"ckpt_path=outputs/runs/<run>/{LAST_CHECKPOINT}"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves to a temporary file and renames it: a crash, a signal or a full disk mid-write
    keeps the previous checkpoint, and no temporary file is left behind."""

    def save_checkpoint(self, checkpoint: dict, path: str | Path, storage_options=None) -> None:
        tmp = Path(f"{path}.tmp")
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            tmp.replace(path)
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            if isinstance(e, OSError):
                raise ConfigError(
                    f"cannot write the checkpoint {path} ({e.strerror or e}); free space or "
                    "fix the permissions of that directory, then rerun to resume from the "
                    "previous checkpoint"
                ) from e
            raise


class RunState(Callback):
    """Puts the module's `History` and the RNG states into every checkpoint, and restores them
    when the Trainer resumes from one. With `final`, the path of the run's checkpoint, it also
    saves there after the last epoch when the periodic checkpoints missed it
    (`checkpoint_every_n_epochs` not dividing `trainer.max_epochs`): a finished training
    always leaves a checkpoint that a rerun tests, should its record not be written. A final
    save that fails is logged, and the run goes on to test and write its record."""

    def __init__(self, final: Path | None = None):
        self.final = final
        self.saved_epochs: int | None = None

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: CIFARClassifier, checkpoint: dict
    ) -> None:
        device = pl_module.device
        self.saved_epochs = pl_module.history.epochs
        checkpoint[STATE_KEY] = {
            "history": dataclasses.asdict(pl_module.history),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        }

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: CIFARClassifier, checkpoint: dict
    ) -> None:
        state = checkpoint.get(STATE_KEY) or {}
        pl_module.history = history_of(checkpoint)
        self.saved_epochs = pl_module.history.epochs
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])
        device = pl_module.device
        if state.get("cuda_rng") is not None and device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)

    def on_train_end(self, trainer: L.Trainer, pl_module: CIFARClassifier) -> None:
        if self.final is None or self.saved_epochs == pl_module.history.epochs:
            return
        try:
            trainer.save_checkpoint(self.final)
        except ConfigError as e:
            log.warning("%s; the run goes on to test the trained network", e)


class BestCheckpoint(Checkpoint):
    """With a validation split: saves `path` (checkpoints/best.ckpt) after every epoch whose
    validation recall is the best so far (the first of equals), through the Trainer's atomic
    checkpoint IO. The best so far is read from the module's history, which checkpoints carry,
    so it survives a kill and a resume. Listed before the last-checkpoint callback, it writes
    first: a resumed run never lacks the best checkpoint its history names."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: CIFARClassifier) -> None:
        self.save_if_best(trainer, pl_module)

    def save_if_best(self, trainer: L.Trainer, pl_module: CIFARClassifier) -> None:
        """Save when the history's last validation is the best so far and of the last epoch."""
        history = pl_module.history
        best = best_validation(history)
        if best is not None and best[0] == history.epochs == history.val_recall_epochs[-1]:
            trainer.save_checkpoint(self.path)


def history_of(checkpoint: dict) -> History:
    """The run's history as of the checkpoint."""
    return from_dict(History, (checkpoint.get(STATE_KEY) or {}).get("history") or {})


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict:
    """The checkpoint in `path`, loaded on the CPU; ConfigError naming `key` when it is a
    folder, missing or not a cifar_cnn checkpoint."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(
            f"{key}={path} is a folder; pass a checkpoint file, e.g. {key}={path / LAST_CHECKPOINT}"
        )
    if not path.is_file():
        raise ConfigError(
            f"{key}={path}: no such checkpoint file ({path.absolute()}); pass one written by "
            f"cifar_cnn.train, e.g. {EXAMPLE}"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        if "model" not in saved_run_config(checkpoint) or "state_dict" not in checkpoint:
            raise KeyError("no cifar_cnn run config or weights")
        history_of(checkpoint)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0].split(". ")[0][:200]
        reason = f"not a readable cifar_cnn checkpoint ({type(e).__name__}: {first})"
        error = ConfigError(f"{key}={path}: {reason}; delete it or pass another, e.g. {EXAMPLE}")
        error.reason = reason  # for callers that advise otherwise (checkpoint_to_resume)
        raise error from e
    return checkpoint


def load_classifier(path: str | Path) -> CIFARClassifier:
    """The trained module in `path` (on the CPU, with its history), from the checkpoint alone."""
    checkpoint = read_checkpoint(path)
    module = CIFARClassifier(**checkpoint["hyper_parameters"])
    module.load_state_dict(checkpoint["state_dict"])
    module.history = history_of(checkpoint)
    return module


def saved_run_config(checkpoint: dict) -> dict:
    """The resolved run config a checkpoint was written with."""
    return checkpoint["hyper_parameters"]["run_config"]


def config_mismatches(saved_config: dict, run_config: dict) -> list[str]:
    """The keys that must match on resume (core/keys.py) and differ between two configs.

    A key added to the configs after `saved_config` was written counts as the value the table
    gives for older runs (`Key.absent`). With a learning-rate schedule, `trainer.max_epochs`
    must match too: the schedule spans the run, so a longer (or shorter) run is another run.
    """
    saved, now = flatten(saved_config), flatten(run_config)
    mismatches = resume_mismatches(saved, now)
    schedule = saved.get("scheduler.name", "none")
    epochs = saved.get("trainer.max_epochs"), now.get("trainer.max_epochs")
    if schedule != "none" and schedule == now.get("scheduler.name") and epochs[0] != epochs[1]:
        mismatches.append(
            f"trainer.max_epochs: {epochs[0]} (checkpoint) vs {epochs[1]} (now), which a run "
            f"with scheduler={schedule} cannot change (its learning-rate schedule spans "
            "trainer.max_epochs, so continuing it would not equal a run trained that long)"
        )
    return mismatches


def checkpoint_to_resume(
    run_dir: Path, run_config: dict, resume: bool, ckpt_path: str | None
) -> str | None:
    """The checkpoint this run continues from, after checking it fits the configuration:
    `ckpt_path` when given, else the run directory's last checkpoint unless `resume` is off."""
    if ckpt_path:
        path = Path(ckpt_path).expanduser()
    else:
        path = run_dir / LAST_CHECKPOINT
        if not path.is_file():
            return None
        if not resume:
            log.info("resume=false: starting over; %s will be replaced", path)
            return None
    try:
        checkpoint = read_checkpoint(path)
    except ConfigError as e:
        if ckpt_path:
            raise
        raise ConfigError(
            f"this run's checkpoint {path} cannot be resumed: {getattr(e, 'reason', e)}; pass "
            "resume=false to start the run over (the checkpoint is replaced)"
        ) from e
    mismatches = config_mismatches(saved_run_config(checkpoint), run_config)
    if mismatches:
        raise ConfigError(
            f"checkpoint {path} does not match this configuration: "
            + "; ".join(mismatches)
            + ". Resume with the settings it was trained with, or pass resume=false (or a new "
            "hydra.run.dir) to start over"
        )
    epochs = history_of(checkpoint).epochs
    max_epochs = run_config["trainer"]["max_epochs"]
    if epochs > max_epochs:
        raise ConfigError(
            f"checkpoint {path} holds {epochs} epochs, more than trainer.max_epochs="
            f"{max_epochs}: its record would contradict its config. Pass "
            f"trainer.max_epochs={epochs} (or more) to continue it, or resume=false (or a new "
            "hydra.run.dir) to start over"
        )
    log.info("resuming from %s (%d epochs done); resume=false starts over", path, epochs)
    return str(path)
