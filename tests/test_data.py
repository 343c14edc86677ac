import pickle

import pytest
import torch

from cifar_cnn.core.errors import ConfigError, DataError
from cifar_cnn.training.data import (
    BATCHES_DIR,
    CACHE_NAME,
    CIFAR10DataModule,
    load_arrays,
    normalise,
    synthetic_arrays,
)
from helpers import make_folder, make_pickles


def test_normalise_is_x_over_255_minus_half_in_nchw():
    images = (
        torch.tensor([0, 1, 128, 255], dtype=torch.uint8).reshape(1, 1, 4, 1).repeat(1, 32, 8, 3)
    )
    out = normalise(images.clone())
    assert out.dtype == torch.float32 and out.shape == (1, 3, 32, 32)
    assert out.min().item() == -0.5 and out.max().item() == 0.5
    assert torch.equal(out, images.permute(0, 3, 1, 2).float() / 255 - 0.5)


def test_datamodule_batches_are_normalised_and_cover_the_set():
    dm = CIFAR10DataModule(
        "synthetic", batch_size=64, synthetic_train_size=300, synthetic_test_size=100
    )
    dm.setup()
    batches = list(dm.train_dataloader())
    assert len(batches) == len(dm.train_dataloader()) == 5  # 4 full batches and one of 44
    images = torch.cat([b[0] for b in batches])
    assert images.shape == (300, 3, 32, 32) and images.dtype == torch.float32
    assert -0.5 <= images.min() and images.max() <= 0.5
    assert sum(len(b[1]) for b in dm.val_dataloader()) == 100


def test_synthetic_data_is_deterministic_and_class_mixed():
    a, b = synthetic_arrays(200, 50), synthetic_arrays(200, 50)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["train_x"].dtype == torch.uint8 and a["train_x"].shape == (200, 32, 32, 3)
    assert len(set(a["train_y"][:20].tolist())) >= 5  # not sorted by class


def test_folder_source_reads_images_in_a_fixed_mixed_order(tmp_path):
    root = make_folder(tmp_path / "imgs")
    arrays = load_arrays("folder", root)
    assert arrays["train_x"].shape == (30, 32, 32, 3) and arrays["test_x"].shape == (30, 32, 32, 3)
    # each image's marker pixel equals its label, so images and labels stayed together
    assert torch.equal(arrays["train_x"][:, 0, 0, 0].long(), arrays["train_y"])
    assert torch.equal(arrays["test_y"], torch.arange(10).repeat_interleave(3))
    assert not torch.equal(arrays["train_y"], arrays["train_y"].sort().values)
    assert (root / CACHE_NAME).is_file()
    again = load_arrays("folder", root)  # from the cache
    assert all(torch.equal(arrays[k], again[k]) for k in arrays)


def test_cifar10_source_reads_the_python_batches(tmp_path):
    root = make_pickles(tmp_path)
    arrays = load_arrays("cifar10", root, download=False)
    assert arrays["train_x"].shape == (100, 32, 32, 3) and arrays["test_y"].shape == (20,)
    with open(root / BATCHES_DIR / "data_batch_1", "rb") as f:
        first = pickle.load(f)["data"][0]
    # CIFAR rows are channel planes (R then G then B); arrays are stored HWC
    assert torch.equal(arrays["train_x"][0].permute(2, 0, 1).reshape(-1), torch.as_tensor(first))


def test_missing_root_without_download_says_where_to_put_the_data(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as error:
        load_arrays("cifar10", missing, download=False)
    message = str(error.value)
    assert str(missing / BATCHES_DIR) in message
    assert "cifar-10-python.tar.gz" in message and "data.download=true" in message
    assert "data.source=folder" in message


def test_a_validation_split_is_stratified_disjoint_and_the_same_for_every_seed():
    arrays = synthetic_arrays(1000, 100)
    held_out = {}
    for seed in (0, 1):
        module = CIFAR10DataModule(
            "synthetic", val_size=200, seed=seed, synthetic_train_size=1000, synthetic_test_size=100
        )
        module.setup()
        held_out[seed] = module.arrays["val_x"]
        assert len(module.arrays["train_y"]) == 800
        assert torch.bincount(module.arrays["val_y"]).tolist() == [20] * 10
        train_rows = {tuple(x.flatten().tolist()) for x in module.arrays["train_x"]}
        val_rows = {tuple(x.flatten().tolist()) for x in module.arrays["val_x"]}
        assert not train_rows & val_rows
        assert train_rows | val_rows == {tuple(x.flatten().tolist()) for x in arrays["train_x"]}
        assert torch.equal(next(iter(module.test_dataloader()))[1], arrays["test_y"])
    assert torch.equal(held_out[0], held_out[1])


def test_an_impossible_validation_size_is_refused():
    module = CIFAR10DataModule("synthetic", val_size=1000, synthetic_train_size=1000)
    with pytest.raises(ConfigError, match=r"data.val_size=1000 must be 0 .* less than the 1000"):
        module.setup()


# --- subsets, sizes and the last batch ------------------------------------------------------
def test_a_train_subset_is_stratified_deterministic_and_leaves_the_validation_split_alone():
    def module(**kw):
        dm = CIFAR10DataModule(
            "synthetic", synthetic_train_size=1000, synthetic_test_size=100, val_size=100, **kw
        )
        dm.setup()
        return dm.arrays

    full, subset, again = module(), module(train_subset=300), module(train_subset=300)
    assert torch.bincount(subset["train_y"]).tolist() == [30] * 10
    assert all(torch.equal(subset[k], again[k]) for k in subset)  # from split_seed alone
    assert torch.equal(subset["val_x"], full["val_x"])  # the same held-out images
    full_rows = {tuple(x.flatten().tolist()) for x in full["train_x"]}
    assert {tuple(x.flatten().tolist()) for x in subset["train_x"]} <= full_rows
    other = module(train_subset=300, split_seed=1)["train_x"]
    assert not torch.equal(other, subset["train_x"])


def test_a_train_subset_larger_than_the_training_set_is_refused():
    module = CIFAR10DataModule(
        "synthetic", synthetic_train_size=500, val_size=100, train_subset=450
    )
    with pytest.raises(ConfigError, match=r"data.train_subset=450 must be at most the 400"):
        module.setup()


def test_a_split_that_leaves_less_than_one_batch_is_refused_naming_the_keys():
    module = CIFAR10DataModule("synthetic", synthetic_train_size=1000, val_size=950, batch_size=64)
    with pytest.raises(
        ConfigError,
        match=r"data.batch_size=64 is more than the 50 training images left "
        r"\(data.val_size=950, data.train_subset=null\)",
    ):
        module.setup()


def test_a_last_batch_of_one_image_is_left_out_with_a_note(caplog):
    module = CIFAR10DataModule("synthetic", synthetic_train_size=129, batch_size=64)
    with caplog.at_level("WARNING"):
        module.setup()
    assert "data.batch_size=64 leaves a last training batch of one image" in caplog.text
    assert [len(y) for _, y in module.train_dataloader()] == [64, 64]
    assert len(module.train_dataloader()) == 2
    assert sum(len(y) for _, y in module.val_dataloader()) == 1000  # evaluation keeps all


def test_batch_norm_trains_on_every_batch_the_module_yields():
    from cifar_cnn.training.model import CNN

    module = CIFAR10DataModule("synthetic", synthetic_train_size=65, batch_size=64)
    module.setup()
    net = CNN(batch_norm=True).train()
    for images, _ in module.train_dataloader():  # one image would raise in BatchNorm1d
        net(images)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ({"data": torch.zeros(20, 3072, dtype=torch.uint8).numpy(), "labels": [10] * 20}, "0-9"),
        ({"data": torch.zeros(20, 3072, dtype=torch.uint8).numpy(), "labels": [0] * 19}, "19 lab"),
        ({"data": torch.zeros(20, 3000, dtype=torch.uint8).numpy(), "labels": [0] * 20}, "shape"),
        (["not", "a", "batch"], "TypeError"),
    ],
)
def test_a_batch_file_with_wrong_content_is_named(tmp_path, content, reason):
    root = make_pickles(tmp_path)
    with open(root / BATCHES_DIR / "data_batch_2", "wb") as f:
        pickle.dump(content, f)
    with pytest.raises(DataError, match=rf"data_batch_2 is unreadable or truncated .*{reason}"):
        load_arrays("cifar10", root, download=False)
