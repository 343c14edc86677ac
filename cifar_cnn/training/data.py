"""CIFAR-10 as uint8 tensors on the training device, normalised to [-0.5, 0.5] per batch.

Images are decoded once (and cached next to the data), kept as one uint8 NHWC tensor on the
device, and batches are sliced from it: no per-sample Python work and no DataLoader workers,
which on a 2-core CPU only compete with the compute threads.
"""

import logging
import pickle
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import lightning as L
import torch
from torch import Tensor

from cifar_cnn.core.cifar10 import CLASSES
from cifar_cnn.core.errors import ConfigError, DataError
from cifar_cnn.training.augment import Augment, EpochDraws
from cifar_cnn.training.cache import CACHE_NAME, Arrays, cached, exclusive, fingerprint
from cifar_cnn.training.images import decode_folder, folder_files
from cifar_cnn.training.splits import stratified_split, stratified_subset

log = logging.getLogger(__name__)

SOURCES = ("cifar10", "folder", "synthetic")
BATCHES_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
# The fixed class-mixed order in which folder and synthetic training images are stored:
# without shuffling, class-sorted images leave the network at chance (docs/STUDY.md).
STORAGE_ORDER_SEED = 0


def normalise(images: Tensor) -> Tensor:
    """uint8 (N, H, W, C) images to float (N, C, H, W) in [-0.5, 0.5], as the study does.

    The result is a channels_last view of NHWC storage, which is the faster layout on CPU.
    """
    return images.permute(0, 3, 1, 2).float().div_(255).sub_(0.5)


def epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool) -> Tensor | None:
    """The training order of one epoch: None (stored order) or a permutation from (seed, epoch).

    Deriving it from (seed, epoch) alone makes it reproducible and lets a resumed run continue
    with exactly the order an uninterrupted run would have used.
    """
    if not shuffle:
        return None
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_samples, generator=generator)


class TensorBatches:
    """An iterable of normalised (images, labels) batches sliced from device-resident tensors;
    with `drop_last`, without the final batch when it is short. `order` gives each pass's
    order (None: as stored), `draws` each pass's augmentation (None: none; augment.py)."""

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        order: Callable[[], Tensor | None] = lambda: None,
        drop_last: bool = False,
        draws: Callable[[], EpochDraws | None] = lambda: None,
    ):
        self.images, self.labels, self.batch_size, self.order = images, labels, batch_size, order
        self.drop_last, self.draws = drop_last, draws

    def __len__(self) -> int:
        full, short = divmod(len(self.labels), self.batch_size)
        return full + (short > 0 and not self.drop_last)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order, draws = self.order(), self.draws()
        images, labels = self.images, self.labels
        if order is not None:
            order = order.to(images.device)
            images, labels = images[order], labels[order]
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            stop = start + self.batch_size
            batch = normalise(images[start:stop])
            yield batch if draws is None else draws.apply(batch, start), labels[start:stop]


def synthetic_arrays(train_size: int, test_size: int, noise: float = 48.0) -> Arrays:
    """A deterministic, learnable CIFAR-shaped set: a smooth pattern per class plus noise."""
    generator = torch.Generator().manual_seed(STORAGE_ORDER_SEED)
    coarse = torch.randint(0, 2, (len(CLASSES), 3, 4, 4), generator=generator).float() * 255
    patterns = torch.nn.functional.interpolate(coarse, size=32, mode="bilinear")

    def make(size: int) -> tuple[Tensor, Tensor]:
        labels = torch.arange(size) % len(CLASSES)
        labels = labels[torch.randperm(size, generator=generator)]
        images = patterns[labels] + noise * torch.randn(size, 3, 32, 32, generator=generator)
        images = images.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1)
        return images.contiguous(), labels

    train_x, train_y = make(train_size)
    test_x, test_y = make(test_size)
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


_PICKLE_ERRORS = (
    OSError,
    EOFError,
    pickle.UnpicklingError,
    KeyError,
    TypeError,
    ValueError,
    RuntimeError,
)


def _read_pickle_batches(directory: Path, names: tuple[str, ...]) -> tuple[Tensor, Tensor]:
    images, labels = [], []
    for name in names:
        path = directory / name
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="latin1")
            data = torch.as_tensor(batch["data"], dtype=torch.uint8).reshape(-1, 3, 32, 32)
            label = torch.as_tensor(batch["labels"], dtype=torch.long)
            if len(label) != len(data) or not bool(((label >= 0) & (label < len(CLASSES))).all()):
                raise ValueError(f"{len(label)} labels for {len(data)} images, or one outside 0-9")
            images.append(data.permute(0, 2, 3, 1))
            labels.append(label)
        except _PICKLE_ERRORS as e:
            raise DataError(
                f"CIFAR-10 batch file {path} is unreadable or truncated ({type(e).__name__}: {e}); "
                f"delete {directory} and put a fresh copy of cifar-10-python.tar.gz in "
                f"{directory.parent} (or set data.download=true)"
            ) from e
    return torch.cat(images).contiguous(), torch.cat(labels)


def _cifar10_directory(root: Path, download: bool) -> Path:
    directory = root / BATCHES_DIR
    expected = TRAIN_BATCHES + TEST_BATCHES
    missing = [n for n in expected if not (directory / n).is_file()]
    if missing and download:
        from torchvision.datasets import CIFAR10

        try:
            with exclusive(root / f".{BATCHES_DIR}.lock"):  # one download for parallel jobs
                if any(not (directory / n).is_file() for n in expected):
                    CIFAR10(str(root), train=True, download=True)
        except Exception as e:
            raise DataError(
                f"downloading CIFAR-10 into {root} failed ({type(e).__name__}: {e}). Put "
                f"cifar-10-python.tar.gz in {root} (it is extracted there), or its extracted "
                f"{BATCHES_DIR}/ folder; or use an image-folder copy with "
                "data.source=folder data.root=DIR (DIR/train/<class>/*.png, DIR/test/<class>/*)"
            ) from e
        missing = [n for n in expected if not (directory / n).is_file()]
    if missing:
        raise DataError(
            f"CIFAR-10 not found: {directory} lacks {', '.join(missing)}. Set data.download=true "
            f"to download it, put cifar-10-python.tar.gz or its extracted {BATCHES_DIR}/ in "
            f"{root}, or use an image-folder copy with data.source=folder data.root=DIR"
        )
    return directory


def resolve_root(root: str | Path) -> Path:
    """`root` (data.root) as an absolute path with links resolved; DataError when it cannot be
    resolved (a symlink loop)."""
    try:
        return Path(root).expanduser().resolve()
    except (OSError, RuntimeError) as e:  # Python 3.11 reports a symlink loop as RuntimeError
        raise DataError(
            f"data.root={root} cannot be resolved ({e}); point data.root at a real folder "
            "(a link that leads back to itself is a loop)"
        ) from e


def load_arrays(
    source: str,
    root: str | Path,
    download: bool = False,
    synthetic_train_size: int = 4000,
    synthetic_test_size: int = 1000,
    need_train: bool = True,
) -> Arrays:
    """Decoded CIFAR-10 from `source` as uint8 NHWC images and int64 labels. Without
    `need_train` (evaluating), a folder's train/<class>/ folders may be empty."""
    if source == "synthetic":
        return synthetic_arrays(synthetic_train_size, synthetic_test_size)
    root = resolve_root(root)  # one cache key however the folder is named
    if source == "cifar10":
        directory = _cifar10_directory(root, download)
        paths = [directory / n for n in TRAIN_BATCHES + TEST_BATCHES]

        def build() -> Arrays:
            train_x, train_y = _read_pickle_batches(directory, TRAIN_BATCHES)
            test_x, test_y = _read_pickle_batches(directory, TEST_BATCHES)
            return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}

        return cached(directory / CACHE_NAME, fingerprint(paths), build)
    if source == "folder":
        if not root.is_dir():
            raise DataError(
                f"data.root={root} is not a folder; the folder source expects "
                "DATA_ROOT/{train,test}/<class>/*.png|jpg"
            )
        # A folder of test images alone is enough to evaluate; training refuses it (setup).
        has_train = (root / "train").exists()
        train_files = folder_files(root, "train", required=need_train) if has_train else []
        test_files = folder_files(root, "test")

        def build() -> Arrays:
            log.info(
                "decoding %d images from %s (once; cached)",
                len(train_files) + len(test_files),
                root,
            )
            train_x, train_y = decode_folder(train_files)
            mixed = torch.randperm(
                len(train_y), generator=torch.Generator().manual_seed(STORAGE_ORDER_SEED)
            )
            test_x, test_y = decode_folder(test_files)
            return {
                "train_x": train_x[mixed].contiguous(),
                "train_y": train_y[mixed],
                "test_x": test_x,
                "test_y": test_y,
            }

        paths = [p for p, _ in train_files + test_files]
        return cached(root / CACHE_NAME, fingerprint(paths), build)
    raise DataError(f"data.source={source!r} is unknown; use one of {', '.join(SOURCES)}")


class CIFAR10DataModule(L.LightningDataModule):
    """CIFAR-10 (or a folder copy, or synthetic data) held on the training device.

    Training batches come in the stored (class-mixed) order every epoch, or, with
    `shuffle=True`, in a fresh permutation per epoch derived from `seed` and the epoch.
    With `val_size=0` (the study's setup) the test set serves both validation and test;
    otherwise `val_size` training images, stratified by class and chosen by `split_seed`,
    are held out for validation and the test set is only used to test. `train_subset` then
    trains on that many of the remaining training images, stratified by class and chosen by
    `split_seed` (the validation images stay the same with or without a subset). `drop_last`
    leaves out the last short training batch of every epoch (one batch shape, for CUDA
    graphs); a last batch of a single image is always left out (batch norm cannot train on
    one image). `augment` (flip, crop_padding; default none) flips and crops training
    images at random, drawn from `seed` and the epoch (augment.py); other batches never.
    """

    def __init__(
        self,
        source: str = "cifar10",
        root: str = "data",
        download: bool = True,
        batch_size: int = 64,
        eval_batch_size: int = 250,
        shuffle: bool = False,
        seed: int = 0,
        synthetic_train_size: int = 4000,
        synthetic_test_size: int = 1000,
        val_size: int = 0,
        split_seed: int = 0,
        drop_last: bool = False,
        train_subset: int | None = None,
        augment: Mapping[str, object] | None = None,
    ):
        super().__init__()
        self.source, self.root, self.download = source, root, download
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.shuffle, self.seed = shuffle, seed
        self.synthetic_sizes = (synthetic_train_size, synthetic_test_size)
        self.val_size, self.split_seed = val_size, split_seed
        self.drop_last, self.train_subset = drop_last, train_subset
        self.augment = Augment.from_config(augment)
        self.arrays: Arrays | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.arrays is not None:
            return
        arrays = load_arrays(
            self.source,
            self.root,
            self.download,
            *self.synthetic_sizes,
            need_train=stage in (None, "fit"),
        )
        if self.val_size:
            keep, held_out = stratified_split(arrays["train_y"], self.val_size, self.split_seed)
            images, labels = arrays.pop("train_x"), arrays.pop("train_y")
            arrays |= {"train_x": images[keep], "train_y": labels[keep]}
            arrays |= {"val_x": images[held_out], "val_y": labels[held_out]}
        if self.train_subset:
            subset = stratified_subset(arrays["train_y"], self.train_subset, self.split_seed)
            arrays["train_x"], arrays["train_y"] = (
                arrays["train_x"][subset],
                arrays["train_y"][subset],
            )
        if stage in (None, "fit"):
            self._check_batches(len(arrays["train_y"]))
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        self.arrays = {k: v.to(device) for k, v in arrays.items()}

    def _check_batches(self, n: int) -> None:
        """Refuse a training set smaller than one batch; note a final batch of one image."""
        if n == 0:
            raise DataError(
                f"data.source={self.source} data.root={self.root} has no training images; the "
                "folder source trains on DATA_ROOT/train/<class>/ (a test/ folder alone is "
                "enough to evaluate)"
            )
        left = f"the {n} training images"
        if self.val_size or self.train_subset:
            subset = "null" if self.train_subset is None else self.train_subset
            left += f" left (data.val_size={self.val_size}, data.train_subset={subset})"
        if n < self.batch_size:
            raise ConfigError(
                f"data.batch_size={self.batch_size} is more than {left}: not one full batch; "
                "use a smaller batch size, or hold out fewer images"
            )
        if n % self.batch_size == 1 and not self.drop_last:
            log.warning(
                "data.batch_size=%d leaves a last training batch of one image (%s = %d x %d + 1); "
                "it is left out every epoch (batch norm cannot train on one image); another "
                "batch size uses it",
                *(self.batch_size, left, n // self.batch_size, self.batch_size),
            )

    def current_epoch(self) -> int:
        """The epoch being trained (0 outside a Trainer)."""
        return self.trainer.current_epoch if self.trainer else 0

    def train_dataloader(self) -> TensorBatches:
        n = len(self.arrays["train_y"])
        return TensorBatches(
            self.arrays["train_x"],
            self.arrays["train_y"],
            self.batch_size,
            order=lambda: epoch_order(n, self.seed, self.current_epoch(), self.shuffle),
            drop_last=self.drop_last or n % self.batch_size == 1,
            draws=lambda: self._draws(n),
        )

    def _draws(self, n: int) -> EpochDraws | None:
        if not self.augment.active:
            return None
        device = self.arrays["train_x"].device
        return self.augment.draws(n, self.seed, self.current_epoch(), device)

    def val_dataloader(self) -> TensorBatches:
        split = "val" if self.val_size else "test"
        return TensorBatches(
            self.arrays[f"{split}_x"], self.arrays[f"{split}_y"], self.eval_batch_size
        )

    def test_dataloader(self) -> TensorBatches:
        return TensorBatches(self.arrays["test_x"], self.arrays["test_y"], self.eval_batch_size)
