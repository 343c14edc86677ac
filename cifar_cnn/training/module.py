"""The LightningModule: cross-entropy training of the CNN, recall metrics on the device."""

import math
import time
import warnings
from collections.abc import Callable, Iterable

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn

from cifar_cnn.core.cifar10 import CLASSES
from cifar_cnn.core.errors import TrainingDiverged
from cifar_cnn.core.record import History, TestResults
from cifar_cnn.training.metrics import ConfusionMatrix, accuracy, macro_recall, recall_per_class
from cifar_cnn.training.schedules import build_scheduler

# Warnings Lightning gives every run of this module that say nothing to its users:
# its own use of a deprecated torch pytree API (Lightning 2.6 on recent torch),
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
# the per-step logging interval (this module logs once per epoch),
warnings.filterwarnings("ignore", message=r".*smaller than the logging interval")
# and the deliberate `transfer_batch_to_device` override below.
warnings.filterwarnings("ignore", message=r".*overridden `transfer_batch_to_device`")


class CIFARClassifier(L.LightningModule):
    """Trains `net` with cross-entropy; evaluates macro top-1 recall on the test set.

    The per-epoch evaluation runs on the validation data: the test set, as in the study, or
    with `data.val_size > 0` in `run_config` the held-out validation split, logged as
    `val/recall` and recorded in `history.val_recall` (`eval_split` says which).

    `optimizer` builds the optimiser from the parameters (a Hydra `_partial_`); `scheduler`, a
    conf/scheduler config (None: constant rate), its learning-rate schedule, stepped every
    optimiser step and sized from the Trainer's steps; `label_smoothing` goes to the training
    loss only (evaluation is plain recall). The learning rate is logged as `train/lr` every
    `trainer.log_every_n_steps` steps, from the host's copy (no device sync). `run_config`,
    the resolved run configuration, is saved as hyperparameters (TensorBoard, checkpoints).
    Without `net` and `optimizer` both are built from `run_config["model"]` and
    `run_config["optimizer"]`, so `CIFARClassifier.load_from_checkpoint(path)` needs nothing
    else. `predict_step` gives class probabilities.
    Per step it only does arithmetic on the device: the loss sum and the confusion matrices
    are read once per epoch, so no step waits for the host. Lightning's automatic
    optimisation runs the SGD step, so gradient clipping, gradient accumulation and
    schedulers work as Trainer options. The per-epoch `history` (a `History`) and the test
    set's `test_results` (a `TestResults`) are the run record's; cifar_cnn.training.checkpoint
    carries the history and the RNG state in checkpoints.
    """

    def __init__(
        self,
        net: nn.Module | None = None,
        optimizer: Callable[[Iterable[Tensor]], torch.optim.Optimizer] | None = None,
        run_config: dict | None = None,
        channels_last: bool = True,
        compile: bool | str = False,
        scheduler: dict | None = None,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer"])
        if net is None or optimizer is None:  # e.g. load_from_checkpoint(path) alone
            if not run_config or "model" not in run_config or "optimizer" not in run_config:
                raise ValueError(
                    "CIFARClassifier needs `net` and `optimizer`, or a `run_config` with the "
                    "`model` and `optimizer` configs to build them from"
                )
            net = instantiate(run_config["model"]) if net is None else net
            optimizer = instantiate(run_config["optimizer"]) if optimizer is None else optimizer
        self.net, self.optimizer_factory = net, optimizer
        self.scheduler_config, self.label_smoothing = scheduler, label_smoothing
        self._lr_logged_step = -1
        self.channels_last, self.compile_net, self.compiled = channels_last, compile, False
        self.eval_confmat = ConfusionMatrix(len(CLASSES))
        # Not a buffer: `-true` precisions convert buffers, and bf16 saturates a sum of ~800
        # losses. Made on the device each epoch, always fp32.
        self.loss_sum: Tensor | None = None
        self.batches_this_epoch = 0
        self.history = History()
        held_out = ((run_config or {}).get("data") or {}).get("val_size")
        self.eval_split = "val" if held_out else "test"
        self.test_results: TestResults | None = None
        self._epoch_started: float | None = None

    def setup(self, stage: str) -> None:
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.compile_net and not self.compiled:  # setup runs for fit and again for test
            self.net.compile(mode=None if self.compile_net is True else self.compile_net)
            self.compiled = True

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        """Batches sliced from device-resident tensors stay as they are (Lightning would walk
        and copy-check them every step); anything else is moved as usual."""
        if all(isinstance(t, Tensor) and t.device == device for t in batch):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def configure_optimizers(self) -> torch.optim.Optimizer | dict:
        optimizer = self.optimizer_factory(self.parameters())
        if (self.scheduler_config or {}).get("name", "none") == "none":
            return optimizer  # the study's constant rate; no Trainer needed
        scheduler = build_scheduler(
            optimizer,
            self.scheduler_config,
            self.trainer.estimated_stepping_batches,
            self.trainer.max_epochs,
        )
        # Lightning saves and restores the scheduler's state with the checkpoint.
        step = {"scheduler": scheduler, "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": step}

    # --- training -------------------------------------------------------------------------
    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_train_epoch_start(self) -> None:
        self.loss_sum = torch.zeros((), dtype=torch.float32, device=self.device)
        self.batches_this_epoch = 0
        self._sync()
        self._epoch_started = time.perf_counter()

    def on_train_batch_start(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Log the learning rate this optimiser step uses (a host float: no device sync)."""
        step = self.trainer.global_step
        if step == self._lr_logged_step or step % self.trainer.log_every_n_steps:
            return
        self._lr_logged_step = step
        lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])
        for logger in self.loggers:
            logger.log_metrics({"train/lr": lr}, step=step)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        loss = F.cross_entropy(self(images), labels, label_smoothing=self.label_smoothing)
        self.loss_sum.add_(loss.detach().float())
        self.batches_this_epoch += 1
        return loss

    def _stop_train_clock(self) -> None:
        """Add the time since the epoch started; evaluation is not training time."""
        if self._epoch_started is not None:
            self._sync()
            self.history.train_seconds += time.perf_counter() - self._epoch_started
            self._epoch_started = None

    def on_train_epoch_end(self) -> None:
        self._stop_train_clock()
        mean_loss = self.loss_sum.item() / max(1, self.batches_this_epoch)
        if not math.isfinite(mean_loss):
            raise TrainingDiverged(self.current_epoch + 1, mean_loss)
        self.history.train_loss.append(mean_loss)
        self.log("train/loss", mean_loss, prog_bar=True)
        self.log("train/seconds", self.history.train_seconds)

    # --- evaluation (validation: the test set as in the study, or the data.val_size split) -
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, labels = batch
        self.eval_confmat.update(self(images), labels)

    test_step = validation_step

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Class probabilities (N, 10) of a batch of (images, anything) such as TensorBatches."""
        return F.softmax(self(batch[0]), dim=1)

    def on_validation_epoch_start(self) -> None:
        self._stop_train_clock()
        self.eval_confmat.reset()

    on_test_epoch_start = on_validation_epoch_start

    def _epoch_recall(self) -> tuple[Tensor, float, float]:
        matrix = self.eval_confmat.compute().cpu()
        return matrix, macro_recall(matrix).item(), accuracy(matrix).item()

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        _, recall, acc = self._epoch_recall()
        # During fit, the epoch just trained; in trainer.validate after fit, the epochs done.
        epoch = self.current_epoch + (self.trainer.state.fn != TrainerFn.VALIDATING)
        split = self.eval_split
        getattr(self.history, f"{split}_recall").append(recall)
        getattr(self.history, f"{split}_recall_epochs").append(epoch)
        self.log(f"{split}/recall", recall, prog_bar=True)
        self.log(f"{split}/accuracy", acc)

    def on_test_epoch_end(self) -> None:
        matrix, recall, acc = self._epoch_recall()
        per_class = recall_per_class(matrix).tolist()
        self.test_results = TestResults(
            recall=recall,
            accuracy=acc,
            recall_per_class=dict(zip(CLASSES, per_class, strict=True)),
            confusion_matrix=matrix.tolist(),
        )
        self.log("test/final_recall", recall)
        for name, value in zip(CLASSES, per_class, strict=True):
            self.log(f"test_per_class/{name}", value)
        # Every TensorBoard logger, wherever it stands among several (`logger=[csv,tensorboard]`).
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                from cifar_cnn.core.confusion_figure import (
                    confusion_matrix_figure,  # matplotlib if needed
                )

                figure = confusion_matrix_figure(matrix.tolist(), CLASSES)
                logger.experiment.add_figure("test/confusion_matrix", figure, self.global_step)
