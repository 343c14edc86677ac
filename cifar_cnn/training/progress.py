"""One line per epoch in train.log, and `progress.json` for `cifar-cnn-status`.

With the progress bar off (`progress_bar_refresh=0`, the search; always in parallel jobs and
SLURM jobs, `bar_refresh`)
a long run would log nothing between its layer table and its final line; this callback logs
`epoch k/n: loss L, test recall R, S s` after every epoch (prefixed `[job N]` in parallel
jobs, whose lines share one terminal) and rewrites the run's progress.json either way.
"""

import logging
import os
import socket
import sys
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from cifar_cnn.core.progress import Progress, write_progress
from cifar_cnn.training.module import CIFARClassifier

log = logging.getLogger("cifar_cnn")


def bar_refresh(refresh: int, concurrent_jobs: int) -> int:
    """`progress_bar_refresh` as it applies here: 0 (no bar, a line per epoch instead) for
    parallel jobs, whose bars would share one terminal line, and for a SLURM job writing to
    its log file, where a bar's carriage returns are noise."""
    slurm_file = "SLURM_JOB_ID" in os.environ and not sys.stderr.isatty()
    return 0 if concurrent_jobs > 1 or slurm_file else refresh


class EpochProgress(Callback):
    """After every training epoch: a line in the log (when `log_epochs`) and progress.json.

    Lightning runs a callback's `on_train_epoch_end` before the module's, which appends the
    epoch's loss to its history; so an epoch is reported when the next one starts, or when
    training ends. Its seconds are the wall time since the previous epoch was reported:
    training, evaluation and checkpoint together, the pace a time estimate needs.
    """

    def __init__(self, run_dir: Path, log_epochs: bool = True, prefix: str = ""):
        self.run_dir, self.log_epochs, self.prefix = run_dir, log_epochs, prefix
        self.reported = 0
        self.mark = 0.0
        self.seconds: list[float] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: CIFARClassifier) -> None:
        self.reported = pl_module.history.epochs  # after a resume, the epochs already done
        self.mark = time.perf_counter()
        self.seconds = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: CIFARClassifier) -> None:
        self._report(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: CIFARClassifier) -> None:
        self._report(trainer, pl_module)

    def _report(self, trainer: L.Trainer, pl_module: CIFARClassifier) -> None:
        history = pl_module.history
        if history.epochs <= self.reported:
            return
        now = time.perf_counter()
        seconds, self.mark, self.reported = now - self.mark, now, history.epochs
        self.seconds.append(seconds)
        split = pl_module.eval_split
        recalls = getattr(history, f"{split}_recall")
        recall_epochs = getattr(history, f"{split}_recall_epochs")
        recall = recalls[-1] if recall_epochs and recall_epochs[-1] == history.epochs else None
        if self.log_epochs:
            log.info(
                "%sepoch %d/%d: loss %.4f%s, %.1f s",
                self.prefix,
                history.epochs,
                trainer.max_epochs,
                history.train_loss[-1],
                "" if recall is None else f", {split} recall {recall:.4f}",
                seconds,
            )
        write_progress(
            self.run_dir,
            Progress(
                epoch=history.epochs,
                max_epochs=trainer.max_epochs,
                seconds_per_epoch=sum(self.seconds) / len(self.seconds),
                updated=time.time(),
                loss=history.train_loss[-1],
                recall=recalls[-1] if recalls else None,
                recall_split=split if recalls else None,
                recall_epoch=recall_epochs[-1] if recall_epochs else None,
                host=socket.gethostname(),
                pid=os.getpid(),
            ),
        )
