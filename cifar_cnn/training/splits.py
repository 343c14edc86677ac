"""Class-stratified selections of the training images: the validation split (data.val_size)
and the training subset (data.train_subset), both chosen by data.split_seed alone."""

import torch
from torch import Tensor

from cifar_cnn.core.cifar10 import CLASSES
from cifar_cnn.core.errors import ConfigError


def stratified_split(labels: Tensor, val_size: int, seed: int) -> tuple[Tensor, Tensor]:
    """Indices (training, validation) that hold out `val_size` images in class proportions.

    Each class gives its share of `val_size` (largest remainders round the shares to whole
    images), chosen by a permutation from `seed` alone, so the split is the same for every
    training seed. Both index lists keep the stored order.
    """
    n = len(labels)
    if not 0 < val_size < n:
        raise ConfigError(
            f"data.val_size={val_size} must be 0 (no validation split) or less than the "
            f"{n} training images"
        )
    counts = torch.bincount(labels.cpu(), minlength=len(CLASSES))
    exact = counts.double() * val_size / n
    quotas = exact.floor().long()
    short = val_size - int(quotas.sum())
    quotas[torch.argsort(exact - quotas, descending=True, stable=True)[:short]] += 1
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    in_val = torch.zeros(n, dtype=torch.bool)
    for label, quota in enumerate(quotas.tolist()):
        in_val[order[labels.cpu()[order] == label][:quota]] = True
    return (~in_val).nonzero().squeeze(1), in_val.nonzero().squeeze(1)


def stratified_subset(labels: Tensor, size: int, seed: int) -> Tensor:
    """Indices of `size` of the images, in class proportions and in the stored order, chosen
    by a permutation from `seed` alone (the complement of a stratified split)."""
    n = len(labels)
    if not 0 < size <= n:
        raise ConfigError(
            f"data.train_subset={size} must be at most the {n} training images (after any "
            "data.val_size held out), or null for all of them"
        )
    return torch.arange(n) if size == n else stratified_split(labels, n - size, seed)[0]
