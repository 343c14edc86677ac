import torch
from torchmetrics.classification import MulticlassRecall

from cifar_cnn.training.metrics import ConfusionMatrix, accuracy, macro_recall, recall_per_class


def test_macro_recall_equals_a_hand_computed_value():
    # 3 classes; class 0: 2 of 3 right, class 1: 1 of 2 right, class 2: 1 of 1 right
    target = torch.tensor([0, 0, 0, 1, 1, 2])
    preds = torch.tensor([0, 0, 1, 1, 2, 2])
    metric = ConfusionMatrix(num_classes=3)
    metric.update(preds[:4], target[:4])  # two batches, as in an epoch
    metric.update(preds[4:], target[4:])
    matrix = metric.compute()
    assert matrix.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert recall_per_class(matrix).tolist() == [2 / 3, 1 / 2, 1.0]
    assert abs(macro_recall(matrix).item() - (2 / 3 + 1 / 2 + 1) / 3) < 1e-12
    assert abs(accuracy(matrix).item() - 4 / 6) < 1e-12


def test_matches_torchmetrics_macro_recall_from_logits():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 10, generator=generator)
    target = torch.randint(0, 10, (500,), generator=generator)
    metric = ConfusionMatrix(10)
    for start in range(0, 500, 64):
        metric.update(logits[start : start + 64], target[start : start + 64])
    reference = MulticlassRecall(num_classes=10, average="macro")(logits, target)
    assert abs(macro_recall(metric.compute()).item() - reference.item()) < 1e-6


def test_absent_classes_are_left_out_of_the_mean():
    matrix = torch.tensor([[3, 1], [0, 0]])
    assert macro_recall(matrix).item() == 0.75
