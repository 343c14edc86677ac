"""A search trial's per-epoch report to its Optuna trial, and its stop when the pruner says so.

`ReportToTrial` is a Lightning callback: after every evaluation during training it reports
the recall the run selects by (validation recall with `data.val_size`, else test recall) to
the trial, with the epoch as the step, and asks the pruner whether to stop. When told to, it
stops training at the end of the epoch; the run is then tested and recorded as usual, with
`pruned` set in its record (cifar_cnn.training.run). The trial is any object with Optuna's
`report(value, step)` and `should_prune()` (the Hydra app builds it from the study's storage
and the trial's number), so this module imports neither Optuna nor Hydra.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

log = logging.getLogger("cifar_cnn")


class ReportToTrial(Callback):
    """Report each epoch's recall to `trial` and stop training when it should be pruned."""

    def __init__(self, trial: Any):
        self.trial = trial
        self.pruned_at: int | None = None  # the epoch after which the pruner stopped the run

    @property
    def pruned(self) -> bool:
        """Whether the pruner stopped this run."""
        return self.pruned_at is not None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        history, split = pl_module.history, pl_module.eval_split
        recalls, epochs = (
            getattr(history, f"{split}_recall"),
            getattr(history, f"{split}_recall_epochs"),
        )
        if not recalls:
            return
        epoch, value = epochs[-1], recalls[-1]
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            trainer.should_stop = True
            log.info(
                "pruned after epoch %d: %s recall %.4f is unpromising beside the study's other "
                "trials at this epoch; stopping (the run is tested and recorded as pruned)",
                epoch, split, value,
            )  # fmt: skip
