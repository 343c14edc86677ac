"""Training with a validation split (`data.val_size`): per-epoch curves on the held-out
images, the test set evaluated once at the end, `val_recall` in metrics.json."""

import lightning as L
from lightning.pytorch.callbacks import Callback

from cifar_cnn.core.record import DataSummary
from cifar_cnn.training.run import train
from helpers import FAST, config


class CountEvaluations(Callback):
    """Images seen by each validation and each test pass, in the order they ran."""

    def __init__(self) -> None:
        self.val: list[int] = []
        self.test: list[int] = []

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.val.append(0)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val[-1] += len(batch[1])

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.test.append(0)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.test[-1] += len(batch[1])


def test_the_curves_use_the_validation_split_and_the_test_set_is_evaluated_once(tmp_path):
    counter = CountEvaluations()
    cfg = config([*FAST, "data.val_size=100", "trainer.max_epochs=2"])
    metrics = train(cfg, tmp_path, callbacks=[counter])

    assert counter.val == [100, 100]  # the held-out images, after each epoch
    assert counter.test == [200]  # the whole test set, once
    assert metrics.history.val_recall_epochs == [1, 2]
    assert metrics.val_recall == metrics.history.val_recall[-1]
    assert 0 <= metrics.val_recall <= 1 and 0 <= metrics.test.recall <= 1
    assert metrics.history.test_recall == [] and metrics.history.test_recall_epochs == []
    assert metrics.data == DataSummary(
        source="synthetic", train_size=412, test_size=200, val_size=100
    )


def test_the_last_epoch_is_validated_even_between_evaluation_epochs(tmp_path):
    counter = CountEvaluations()
    cfg = config(
        [*FAST, "data.val_size=100", "trainer.max_epochs=3", "trainer.check_val_every_n_epoch=2"]
    )
    metrics = train(cfg, tmp_path, callbacks=[counter])
    assert metrics.history.val_recall_epochs == [2, 3]  # epoch 3 by one more pass after training
    assert counter.val == [100, 100] and counter.test == [200]


def test_without_a_split_the_test_set_gives_the_curves_as_in_the_study(tmp_path):
    counter = CountEvaluations()
    metrics = train(config(FAST), tmp_path, callbacks=[counter])
    assert counter.val == [200, 200] and counter.test == [200]
    assert metrics.history.test_recall_epochs == [1, 2] and metrics.history.val_recall_epochs == []
    assert metrics.val_recall is None and metrics.data.val_size is None
