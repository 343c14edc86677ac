"""The study's metric: macro-averaged top-1 recall, from a confusion matrix kept on the device."""

import torch
from torch import Tensor
from torchmetrics import Metric


class ConfusionMatrix(Metric):
    """A num_classes x num_classes count matrix (rows: true class, columns: prediction).

    torchmetrics' own stat-scores metrics call `torch.bincount`, which syncs with the host on
    CUDA every update; `index_add_` keeps every update on the device (docs/STUDY.md). Update it
    per batch and read it once per epoch: per-batch macro recall would leave out the classes
    a batch lacks.
    """

    full_state_update = False

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.num_classes = num_classes
        self.add_state(
            "matrix", torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Count one batch; `preds` are logits (N, C) or class indices (N,)."""
        if preds.ndim == 2:
            preds = preds.argmax(dim=1)
        cells = target * self.num_classes + preds
        self.matrix.view(-1).index_add_(0, cells, torch.ones_like(cells))

    def compute(self) -> Tensor:
        return self.matrix


def recall_per_class(matrix: Tensor) -> Tensor:
    """Recall of each class: correct predictions over true images (0 for an absent class)."""
    support = matrix.sum(dim=1)
    return matrix.diagonal().double() / support.clamp(min=1)


def macro_recall(matrix: Tensor) -> Tensor:
    """Mean recall over the classes that occur: the study's 'average top-1 recall'."""
    present = matrix.sum(dim=1) > 0
    return recall_per_class(matrix)[present].mean()


def accuracy(matrix: Tensor) -> Tensor:
    """Fraction of all images predicted correctly."""
    return matrix.diagonal().sum().double() / matrix.sum().clamp(min=1)
