"""Training-image augmentation (data.augment): flips mirror, crops shift with mid-grey borders,
the draws follow (seed, epoch) alone, only training batches change, bad values are refused,
and a resumed run with augmentation matches an uninterrupted one."""

import pytest
import torch
import torch.nn.functional as F

from cifar_cnn.core.errors import ConfigError
from cifar_cnn.training.augment import Augment, augment_batch
from cifar_cnn.training.config_checks import validate_config
from cifar_cnn.training.data import CIFAR10DataModule, normalise
from cifar_cnn.training.run import train
from helpers import FAST, config

ON = {"flip": True, "crop_padding": 4}


def images(n: int = 16) -> torch.Tensor:
    """`n` random uint8 NHWC images, normalised as training batches are."""
    generator = torch.Generator().manual_seed(3)
    return normalise(torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=generator))


def datamodule(augment=None, seed: int = 0, epoch: int = 0, **kw) -> CIFAR10DataModule:
    dm = CIFAR10DataModule(
        "synthetic",
        batch_size=50,
        synthetic_train_size=230,
        synthetic_test_size=120,
        seed=seed,
        augment=augment,
        **kw,
    )
    dm.setup()
    dm.current_epoch = lambda: epoch  # as the Trainer would report it
    return dm


def train_images(dm: CIFAR10DataModule) -> torch.Tensor:
    return torch.cat([x for x, _ in dm.train_dataloader()])


def test_a_flip_mirrors_the_chosen_images_and_leaves_the_others():
    batch = images()
    flip = torch.arange(16) % 3 == 0
    out = augment_batch(batch, flip, torch.zeros(16, 2, dtype=torch.long), 0)
    assert torch.equal(out[flip], batch[flip].flip(3))  # left-right: the width axis
    assert torch.equal(out[~flip], batch[~flip])
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_a_crop_is_the_shifted_window_of_the_image_padded_with_mid_grey():
    batch, padding = images(), 4
    offsets = torch.tensor([[0, 0], [8, 8], [4, 4], [1, 7]]).repeat(4, 1)
    flip = torch.zeros(16, dtype=torch.bool)
    flip[8:] = True
    out = augment_batch(batch, flip, offsets, padding)
    padded = F.pad(batch, (padding,) * 4)  # zero after normalisation: mid-grey
    for i, (dy, dx) in enumerate(offsets.tolist()):
        window = padded[i, :, dy : dy + 32, dx : dx + 32]
        assert torch.equal(out[i], window.flip(2) if flip[i] else window)
    assert torch.equal(out[0, :, :4], torch.zeros(3, 4, 32))  # top border at offset (0, 0)
    assert torch.equal(out[0, :, 4:, 4:], batch[0, :, :28, :28])
    assert torch.equal(out[2], batch[2])  # the centred window is the image


def test_the_draws_flip_about_half_and_cover_every_shift():
    draws = Augment(**ON).draws(4000, seed=0, epoch=0, device=torch.device("cpu"))
    assert 0.45 < draws.flip.float().mean().item() < 0.55
    assert draws.offsets.min().item() == 0 and draws.offsets.max().item() == 8
    assert len(draws.offsets.unique(dim=0)) == 81


def test_the_same_seed_and_epoch_give_the_same_batches_and_another_epoch_differs():
    first = train_images(datamodule(ON, seed=5, epoch=2))
    torch.manual_seed(123)  # the global RNG plays no part
    dm = datamodule(ON, seed=5, epoch=2)
    next(iter(dm.train_dataloader()))  # nor do the batches made before
    assert torch.equal(train_images(dm), first)
    assert not torch.equal(train_images(datamodule(ON, seed=5, epoch=3)), first)
    assert not torch.equal(train_images(datamodule(ON, seed=6, epoch=2)), first)


def test_training_batches_change_in_range_and_evaluation_batches_never():
    plain, augmented = datamodule(), datamodule(ON)
    assert not torch.equal(train_images(augmented), train_images(plain))
    x = train_images(augmented)
    assert x.shape == (230, 3, 32, 32) and -0.5 <= x.min() and x.max() <= 0.5
    assert torch.equal(
        torch.cat([x for x, _ in augmented.val_dataloader()]), normalise(plain.arrays["test_x"])
    )
    assert torch.equal(
        torch.cat([x for x, _ in augmented.test_dataloader()]), normalise(plain.arrays["test_x"])
    )
    held_out = datamodule(ON, val_size=30)
    assert torch.equal(
        torch.cat([x for x, _ in held_out.val_dataloader()]), normalise(held_out.arrays["val_x"])
    )


def test_each_image_is_only_flipped_or_shifted_and_keeps_its_label():
    plain, flipped = datamodule(), datamodule({"flip": True}, epoch=1)
    pairs = zip(plain.train_dataloader(), flipped.train_dataloader(), strict=True)
    for (x, y), (fx, fy) in pairs:
        assert torch.equal(y, fy)
        same = (fx == x).flatten(1).all(1)
        mirrored = (fx == x.flip(3)).flatten(1).all(1)
        assert bool((same | mirrored).all())
    assert Augment.from_config(None) == Augment() and not Augment().active


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.augment.crop_padding=-1", r"data.augment.crop_padding=-1 must be a whole number"),
        ("data.augment.crop_padding=17", r"data.augment.crop_padding=17 .* <= 16"),
        ("data.augment.crop_padding=2.5", r"data.augment.crop_padding=2.5 must be a whole"),
        ("data.augment.flip=maybe", r"data.augment.flip='maybe' must be true or false"),
        ("+data.augment.flp=true", r"data.augment.flp: no such key in data"),
        ("data.augment=true", r"data.augment=True must be a mapping of crop_padding and flip"),
    ],
)
def test_a_bad_augment_value_is_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(config([*FAST, override]))


def test_the_data_module_refuses_a_bad_augment_value_too():
    with pytest.raises(ConfigError, match=r"data.augment.flip='yes' must be true or false"):
        CIFAR10DataModule("synthetic", augment={"flip": "yes"})


AUGMENTED = [*FAST, "data.augment.flip=true", "data.augment.crop_padding=4"]


def test_a_resumed_run_with_augmentation_matches_an_uninterrupted_one(tmp_path):
    straight = train(config(AUGMENTED), tmp_path / "straight")
    train(config([*AUGMENTED, "trainer.max_epochs=1"]), tmp_path / "resumed")
    resumed = train(config(AUGMENTED), tmp_path / "resumed")
    assert resumed.epochs == straight.epochs == 2
    assert resumed.history.train_loss == straight.history.train_loss
    assert resumed.history.test_recall == straight.history.test_recall
    assert resumed.test == straight.test
    plain = train(config(FAST), tmp_path / "plain")
    assert plain.history.train_loss != straight.history.train_loss  # augmentation did act
