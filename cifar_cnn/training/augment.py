"""Random horizontal flips and padded crops of training batches, on the device, reproducibly.

Off by default (the study trained without augmentation). `data.augment.flip=true` mirrors
each training image left-right with probability 1/2; `data.augment.crop_padding=N` pads each
image by N pixels on every side and takes a random 32x32 window of it, i.e. shifts it by up to
N pixels in each direction. The padding is 0 after normalisation (x / 255 - 0.5), i.e.
mid-grey, so the values stay in [-0.5, 0.5].

The draws of a whole epoch (a flip bit and a window offset per image position) come from a
generator seeded from (seed, epoch) alone, on the batches' device: a run killed and resumed
gets exactly the draws an uninterrupted one got, whatever the global RNG or the number of
batches made before in the process. Validation and test batches are never augmented.

Per batch, the flip and the crop are one gather from the padded batch (a flipped image reads
its window's columns in reverse): no per-image Python work.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# A stream of random numbers apart from the shuffling order's (data.epoch_order), which is
# seeded with seed * 1_000_003 + epoch < 2**53.
_STREAM = 1 << 62
SIZE = 32  # CIFAR-10's images, and the window taken from a padded one


@dataclass(frozen=True)
class Augment:
    """What to do to each training image: `flip` it at random, crop it at random from the
    image padded by `crop_padding` pixels (0: no crop)."""

    flip: bool = False
    crop_padding: int = 0

    @classmethod
    def from_config(cls, values: Mapping[str, object] | None) -> Augment:
        """The augmentation `data.augment` describes (a mapping of flip and crop_padding, or
        None: none); ConfigError naming the key for a wrong type, range or unknown key."""
        from cifar_cnn.training.schema import check_augment

        values = dict(values or {})
        check_augment(values)
        return cls(**values)

    @property
    def active(self) -> bool:
        """Whether it changes any image."""
        return self.flip or self.crop_padding > 0

    def draws(self, num_samples: int, seed: int, epoch: int, device: torch.device) -> EpochDraws:
        """The random choices for the `num_samples` image positions of epoch `epoch`."""
        generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch + _STREAM)
        flip = torch.zeros(num_samples, dtype=torch.bool, device=device)
        if self.flip:
            flip = torch.rand(num_samples, generator=generator, device=device) < 0.5
        offsets = torch.zeros(num_samples, 2, dtype=torch.long, device=device)
        if self.crop_padding:
            high = 2 * self.crop_padding + 1
            offsets = torch.randint(0, high, (num_samples, 2), generator=generator, device=device)
        return EpochDraws(flip, offsets, self.crop_padding)


@dataclass(frozen=True)
class EpochDraws:
    """One epoch's choices per image position: `flip` (bool, N) and the window's top-left
    corner in the padded image, `offsets` (N, 2: row, column)."""

    flip: Tensor
    offsets: Tensor
    padding: int

    def apply(self, batch: Tensor, start: int) -> Tensor:
        """`batch` (normalised, N C H W) holding the epoch's images `start`, `start + 1`, ...,
        flipped and cropped as drawn for those positions."""
        return augment_batch(
            batch,
            self.flip[start : start + len(batch)],
            self.offsets[start : start + len(batch)],
            self.padding,
        )


def augment_batch(batch: Tensor, flip: Tensor, offsets: Tensor, padding: int) -> Tensor:
    """Each image of `batch` (normalised, N C 32 32) padded by `padding` zeros on each side,
    cut to the 32x32 window at `offsets` (N, 2) and mirrored where `flip` (N) is true.

    Works on the NHWC storage the batch is a view of (data.normalise) and returns the same
    layout (a channels_last NCHW view).
    """
    images = batch.permute(0, 2, 3, 1)  # N H W C: contiguous for a normalised batch
    if padding:
        images = F.pad(images, (0, 0, padding, padding, padding, padding))
    n, height, width, channels = images.shape
    steps = torch.arange(SIZE, device=batch.device)
    rows = offsets[:, 0, None] + steps  # N, 32
    # a flipped image reads its window's columns from right to left
    cols = offsets[:, 1, None] + torch.where(flip[:, None], SIZE - 1 - steps, steps)
    first_row = torch.arange(n, device=batch.device)[:, None, None] * height
    pixels = ((first_row + rows[:, :, None]) * width + cols[:, None, :]).reshape(-1)
    # one index_select of whole pixels: 2-3x faster on CPU than indexing with three tensors
    out = images.reshape(-1, channels).index_select(0, pixels)
    return out.view(n, SIZE, SIZE, channels).permute(0, 3, 1, 2)
