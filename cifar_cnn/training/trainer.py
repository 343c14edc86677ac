"""The one Trainer factory, for fitting (with loggers, checkpoints and a progress bar) and for
testing or predicting with a trained model (none of those)."""

from collections.abc import Sequence
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from cifar_cnn.core.runfiles import BEST_CHECKPOINT, LAST_CHECKPOINT
from cifar_cnn.training.checkpoint import AtomicCheckpointIO, BestCheckpoint, RunState


def build_trainer(
    trainer: DictConfig,
    run_dir: Path,
    *,
    loggers: Sequence[Logger] = (),
    callbacks: Sequence[Callback] = (),
    checkpoint_every_n_epochs: int | None = None,
    progress_bar_refresh: int = 0,
    keep_best: bool = False,
) -> L.Trainer:
    """The configured Trainer (`trainer`: conf/trainer), writing only inside `run_dir`.

    With `checkpoint_every_n_epochs` it saves `checkpoints/last.ckpt` (atomically, with the
    run's history and RNG state) every N epochs, for fitting and resuming; without it the
    Trainer writes no checkpoint, as for evaluate and predict. `progress_bar_refresh` > 0 shows
    a progress bar refreshed every so many steps. With `keep_best` (and checkpointing) it also
    keeps `checkpoints/best.ckpt`, the epoch of best validation recall (BestCheckpoint).
    """
    all_callbacks = list(callbacks)
    if checkpoint_every_n_epochs is not None and keep_best:
        # Before ModelCheckpoint (Lightning keeps checkpoint callbacks in order, last): the
        # best checkpoint of an epoch is written before the last one.
        all_callbacks.append(BestCheckpoint(run_dir / BEST_CHECKPOINT))
    if checkpoint_every_n_epochs is not None:
        # save_top_k=1 without a monitor keeps one file, rewritten every N epochs (save_last
        # alone only copies a checkpoint that top-k saved).
        all_callbacks += [
            ModelCheckpoint(
                dirpath=run_dir / "checkpoints",
                filename="last",
                save_top_k=1,
                enable_version_counter=False,
                every_n_epochs=checkpoint_every_n_epochs,
                save_on_train_epoch_end=True,
            ),
            RunState(final=run_dir / LAST_CHECKPOINT),
        ]
    if progress_bar_refresh > 0:
        all_callbacks.append(TQDMProgressBar(refresh_rate=progress_bar_refresh))
    fitting = checkpoint_every_n_epochs is not None
    return instantiate(
        trainer,
        default_root_dir=run_dir,
        logger=list(loggers) or False,
        callbacks=all_callbacks,
        enable_checkpointing=fitting,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=progress_bar_refresh > 0,
        **({} if fitting else {"enable_model_summary": False}),
    )
