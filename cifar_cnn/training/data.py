"""CIFAR-10 as uint8 tensors on the training device, normalised to [-0.5, 0.5] per batch.

Images are decoded once (and cached next to the data), kept as one uint8 NHWC tensor on the
device, and batches are sliced from it: no per-sample Python work and no DataLoader workers,
which on a 2-core CPU only compete with the compute threads.
"""

import contextlib
import hashlib
import logging
import os
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning as L
import torch
from torch import Tensor

from cifar_cnn.core.cifar10 import CLASSES
from cifar_cnn.core.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SOURCES = ("cifar10", "folder", "synthetic")
BATCHES_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
CACHE_NAME = "cifar_cnn_uint8.pt"
CACHE_VERSION = 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# The fixed class-mixed order in which folder and synthetic training images are stored:
# without shuffling, class-sorted images leave the network at chance (docs/STUDY.md).
STORAGE_ORDER_SEED = 0

Arrays = dict[str, Tensor]  # train_x, train_y, test_x, test_y (val_x, val_y); uint8 NHWC images


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
    with `drop_last`, without the final batch when it is short."""

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        order: Callable[[], Tensor | None] = lambda: None,
        drop_last: bool = False,
    ):
        self.images, self.labels, self.batch_size, self.order = images, labels, batch_size, order
        self.drop_last = drop_last

    def __len__(self) -> int:
        full, short = divmod(len(self.labels), self.batch_size)
        return full + (short > 0 and not self.drop_last)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = self.order()
        images, labels = self.images, self.labels
        if order is not None:
            order = order.to(images.device)
            images, labels = images[order], labels[order]
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            stop = start + self.batch_size
            yield normalise(images[start:stop]), labels[start:stop]


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


def _read_pickle_batches(directory: Path, names: tuple[str, ...]) -> tuple[Tensor, Tensor]:
    images, labels = [], []
    for name in names:
        path = directory / name
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="latin1")
            data = torch.as_tensor(batch["data"], dtype=torch.uint8).reshape(-1, 3, 32, 32)
            images.append(data.permute(0, 2, 3, 1))
            labels.append(torch.as_tensor(batch["labels"], dtype=torch.long))
        except (OSError, EOFError, pickle.UnpicklingError, KeyError, ValueError, RuntimeError) as e:
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
            with _exclusive(root / f".{BATCHES_DIR}.lock"):  # one download for parallel jobs
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


def _folder_files(root: Path, split: str) -> list[tuple[Path, int]]:
    split_dir = root / split
    missing = [c for c in CLASSES if not (split_dir / c).is_dir()]
    if missing:
        raise DataError(
            f"image folder {split_dir} lacks the class folders {', '.join(missing)}; the folder "
            f"source expects DATA_ROOT/{{train,test}}/<class>/*.png|jpg with the classes "
            f"{', '.join(CLASSES)}"
        )
    return [
        (path, label)
        for label, name in enumerate(CLASSES)
        for path in sorted((split_dir / name).iterdir())
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]


def _decode_folder(files: list[tuple[Path, int]]) -> tuple[Tensor, Tensor]:
    from torchvision.io import decode_image, read_file

    images = torch.empty(len(files), 32, 32, 3, dtype=torch.uint8)
    for i, (path, _) in enumerate(files):
        try:
            image = decode_image(read_file(str(path)))
        except RuntimeError as e:
            raise DataError(f"{path} is not a readable PNG or JPEG image ({e})") from e
        if image.shape != (3, 32, 32):
            raise DataError(
                f"{path} is {tuple(image.shape)} (channels, height, width); every image must "
                "be 32x32 RGB (3, 32, 32)"
            )
        images[i] = image.permute(1, 2, 0)
    labels = torch.tensor([label for _, label in files], dtype=torch.long)
    return images, labels


def _fingerprint(paths: list[Path]) -> str:
    digest = hashlib.sha1(str(CACHE_VERSION).encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


@contextlib.contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (created if missing): parallel sweep jobs that
    start together wait here while the first one decodes or downloads, then reuse its work.

    Without POSIX locks (Windows, or a file system that refuses them) it does not wait; the
    atomic writes still keep every file whole, and each job may then decode on its own.
    """
    try:
        import fcntl

        lock_file.parent.mkdir(parents=True, exist_ok=True)
        f = open(lock_file, "a")  # noqa: SIM115 (closed below, after the lock is released)
    except (ImportError, OSError):
        yield
        return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError as e:
            log.info("could not lock %s (%s); jobs may decode the data separately", lock_file, e)
        yield  # closing the file releases the lock


def _load_cache(cache: Path, fingerprint: str) -> Arrays | None:
    """The arrays stored in `cache` when it exists and matches `fingerprint`."""
    if not cache.is_file():
        return None
    try:
        stored = torch.load(cache, weights_only=True)
        if stored.get("fingerprint") == fingerprint:
            return stored["arrays"]
        log.info("data cache %s is out of date; rebuilding it", cache)
    except Exception as e:
        log.warning("data cache %s is corrupt (%s); rebuilding it", cache, e)
    return None


def _cached(cache: Path, fingerprint: str, build: Callable[[], Arrays]) -> Arrays:
    """Load arrays from `cache` when it matches `fingerprint`, else build and (try to) save them.

    A lock beside the cache is held meanwhile: of jobs that start together on an empty cache
    one builds it, and the others wait and load what it built.
    """
    with _exclusive(cache.with_name(f".{cache.name}.lock")):
        arrays = _load_cache(cache, fingerprint)
        return arrays if arrays is not None else _build_and_save(cache, fingerprint, build)


def _build_and_save(cache: Path, fingerprint: str, build: Callable[[], Arrays]) -> Arrays:
    arrays = build()
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    try:
        torch.save({"fingerprint": fingerprint, "arrays": arrays}, tmp)
        os.replace(tmp, cache)  # atomic: concurrent sweep jobs never read a half-written cache
        log.info("cached decoded images in %s", cache)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        log.warning("could not write data cache %s (%s); decoding again next time", cache, e)
    return arrays


def load_arrays(
    source: str,
    root: str | Path,
    download: bool = False,
    synthetic_train_size: int = 4000,
    synthetic_test_size: int = 1000,
) -> Arrays:
    """Decoded CIFAR-10 from `source` as uint8 NHWC images and int64 labels."""
    if source == "synthetic":
        return synthetic_arrays(synthetic_train_size, synthetic_test_size)
    root = Path(root).expanduser().resolve()  # one cache key however the folder is named
    if source == "cifar10":
        directory = _cifar10_directory(root, download)
        paths = [directory / n for n in TRAIN_BATCHES + TEST_BATCHES]

        def build() -> Arrays:
            train_x, train_y = _read_pickle_batches(directory, TRAIN_BATCHES)
            test_x, test_y = _read_pickle_batches(directory, TEST_BATCHES)
            return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}

        return _cached(directory / CACHE_NAME, _fingerprint(paths), build)
    if source == "folder":
        if not root.is_dir():
            raise DataError(
                f"data.root={root} does not exist; the folder source expects "
                "DATA_ROOT/{train,test}/<class>/*.png|jpg"
            )
        train_files, test_files = _folder_files(root, "train"), _folder_files(root, "test")

        def build() -> Arrays:
            log.info(
                "decoding %d images from %s (once; cached)",
                len(train_files) + len(test_files),
                root,
            )
            train_x, train_y = _decode_folder(train_files)
            mixed = torch.randperm(
                len(train_y), generator=torch.Generator().manual_seed(STORAGE_ORDER_SEED)
            )
            test_x, test_y = _decode_folder(test_files)
            return {
                "train_x": train_x[mixed].contiguous(),
                "train_y": train_y[mixed],
                "test_x": test_x,
                "test_y": test_y,
            }

        paths = [p for p, _ in train_files + test_files]
        return _cached(root / CACHE_NAME, _fingerprint(paths), build)
    raise DataError(f"data.source={source!r} is unknown; use one of {', '.join(SOURCES)}")


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


class CIFAR10DataModule(L.LightningDataModule):
    """CIFAR-10 (or a folder copy, or synthetic data) held on the training device.

    Training batches come in the stored (class-mixed) order every epoch, or, with
    `shuffle=True`, in a fresh permutation per epoch derived from `seed` and the epoch.
    With `val_size=0` (the study's setup) the test set serves both validation and test;
    otherwise `val_size` training images, stratified by class and chosen by `split_seed`,
    are held out for validation and the test set is only used to test. `drop_last` leaves out
    the last short training batch of every epoch (one batch shape, for CUDA graphs).
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
    ):
        super().__init__()
        self.source, self.root, self.download = source, root, download
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.shuffle, self.seed = shuffle, seed
        self.synthetic_sizes = (synthetic_train_size, synthetic_test_size)
        self.val_size, self.split_seed = val_size, split_seed
        self.drop_last = drop_last
        self.arrays: Arrays | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.arrays is not None:
            return
        arrays = load_arrays(self.source, self.root, self.download, *self.synthetic_sizes)
        if self.val_size:
            keep, held_out = stratified_split(arrays["train_y"], self.val_size, self.split_seed)
            images, labels = arrays.pop("train_x"), arrays.pop("train_y")
            arrays |= {"train_x": images[keep], "train_y": labels[keep]}
            arrays |= {"val_x": images[held_out], "val_y": labels[held_out]}
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        self.arrays = {k: v.to(device) for k, v in arrays.items()}

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
            drop_last=self.drop_last,
        )

    def val_dataloader(self) -> TensorBatches:
        split = "val" if self.val_size else "test"
        return TensorBatches(
            self.arrays[f"{split}_x"], self.arrays[f"{split}_y"], self.eval_batch_size
        )

    def test_dataloader(self) -> TensorBatches:
        return TensorBatches(self.arrays["test_x"], self.arrays["test_y"], self.eval_batch_size)
