"""The fast data path yields exactly the batches of a straightforward per-sample pipeline."""

from types import SimpleNamespace

import pytest
import torch

from cifar_cnn.training.data import CIFAR10DataModule

TRAIN_SIZE, BATCH_SIZE, SEED = 200, 64, 7  # 200 = 3 x 64 + 8: the last batch is partial


class FakeTrainer:
    """What the data module reads from a Trainer: the epoch and the device."""

    def __init__(self) -> None:
        self.current_epoch = 0
        self.strategy = SimpleNamespace(root_device=torch.device("cpu"))


def reference_batches(images, labels, epoch, shuffle, seed=SEED, batch_size=BATCH_SIZE):
    """The study's pipeline written out: an index list, per-sample normalisation, stacking."""
    n = len(labels)
    if shuffle:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        indices = torch.randperm(n, generator=generator).tolist()
    else:
        indices = list(range(n))
    batches = []
    for start in range(0, n, batch_size):
        chunk = indices[start : start + batch_size]
        x = torch.stack([images[i].permute(2, 0, 1).float() / 255 - 0.5 for i in chunk])
        y = torch.stack([labels[i] for i in chunk])
        batches.append((x, y))
    return batches


def fast_batches(shuffle: bool, epochs: int = 2):
    datamodule = CIFAR10DataModule(
        source="synthetic",
        batch_size=BATCH_SIZE,
        shuffle=shuffle,
        seed=SEED,
        synthetic_train_size=TRAIN_SIZE,
        synthetic_test_size=10,
    )
    datamodule.trainer = FakeTrainer()
    datamodule.setup("fit")
    per_epoch = []
    for epoch in range(epochs):
        datamodule.trainer.current_epoch = epoch
        loader = datamodule.train_dataloader()
        batches = list(loader)
        assert len(batches) == len(loader)
        per_epoch.append(batches)
    return datamodule.arrays, per_epoch


@pytest.mark.parametrize("shuffle", [False, True], ids=["stored-order", "shuffled"])
def test_batches_match_reference(shuffle):
    arrays, per_epoch = fast_batches(shuffle)
    for epoch, batches in enumerate(per_epoch):
        expected = reference_batches(arrays["train_x"], arrays["train_y"], epoch, shuffle)
        assert [len(y) for _, y in batches] == [64, 64, 64, 8]
        assert len(batches) == len(expected)
        for (x, y), (ref_x, ref_y) in zip(batches, expected, strict=True):
            assert x.dtype == torch.float32 and x.shape == ref_x.shape
            assert torch.equal(x, ref_x), f"images differ in epoch {epoch}"
            assert torch.equal(y, ref_y), f"labels (order) differ in epoch {epoch}"
            assert x.min() >= -0.5 and x.max() <= 0.5


def _labels(batches):
    return torch.cat([y for _, y in batches])


def _images(batches):
    return torch.cat([x for x, _ in batches])


def test_shuffled_order_changes_between_epochs():
    arrays, (first, second) = fast_batches(shuffle=True)
    assert not torch.equal(_images(first), _images(second))
    # both epochs are permutations of the whole training set
    for batches in (first, second):
        assert torch.equal(_labels(batches).sort().values, arrays["train_y"].sort().values)


def test_unshuffled_order_is_the_same_every_epoch():
    arrays, (first, second) = fast_batches(shuffle=False)
    assert torch.equal(_images(first), _images(second))
    assert torch.equal(_labels(first), _labels(second))
    assert torch.equal(_labels(first), arrays["train_y"])
