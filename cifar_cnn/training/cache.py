"""The decoded-image cache beside the data (`cifar_cnn_uint8.pt`): keyed by the source
files' bytes, built once under a lock that parallel jobs share, written atomically, and
rebuilt when it is out of date or damaged."""

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from filelock import FileLock
from torch import Tensor

from cifar_cnn.core.cifar10 import CLASSES
from cifar_cnn.core.errors import DataError

log = logging.getLogger("cifar_cnn.training.data")

CACHE_NAME = "cifar_cnn_uint8.pt"
CACHE_VERSION = 2  # 2: keyed by the files' bytes (1: by their size and modification time)
Arrays = dict[str, Tensor]  # train_x, train_y, test_x, test_y (val_x, val_y); uint8 NHWC images


def fingerprint(paths: list[Path]) -> str:
    """The decoded-image cache's key: a hash of the files' names and bytes, so that a file
    whose pixels changed is noticed even when its size and modification time were kept
    (`cp -p`, `rsync -a`). Reading the bytes costs a fraction of decoding them
    (benchmarks/cache_key.py)."""
    digest = hashlib.sha1(str(CACHE_VERSION).encode())
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DataError(f"{path} cannot be read ({e.strerror or e}); fix its access") from e
        digest.update(f"{path}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


@contextlib.contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (created if missing): parallel sweep jobs that
    start together wait here while the first one decodes or downloads, then reuse its work.

    Where no lock can be taken (a read-only data folder, a file system without locks) it does
    not wait; the atomic writes still keep every file whole, and each job may then decode on
    its own.
    """
    lock = FileLock(lock_file)
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except (OSError, NotImplementedError) as e:
        log.info("could not lock %s (%s); jobs may decode the data separately", lock_file, e)
        yield
        return
    try:
        yield
    finally:
        lock.release()


def _load_cache(cache: Path, fingerprint: str) -> Arrays | None:
    """The arrays stored in `cache` when it exists and matches `fingerprint`."""
    if not cache.is_file():
        return None
    try:
        stored = torch.load(cache, weights_only=True)
        if stored.get("fingerprint") == fingerprint:
            _check_arrays(stored["arrays"])
            return stored["arrays"]
        log.info("data cache %s is out of date; rebuilding it", cache)
    except Exception as e:
        log.warning("data cache %s is corrupt (%s); rebuilding it", cache, e)
    return None


def _check_arrays(arrays: Arrays) -> None:
    """ValueError unless `arrays` are uint8 (N, 32, 32, 3) images with N int64 labels in 0-9
    per split (a cache file replaced by hand is rebuilt, not trained on)."""
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if images.dtype != torch.uint8 or images.shape[1:] != (32, 32, 3):
            raise ValueError(f"{split} images of {images.dtype} {tuple(images.shape)}")
        if labels.dtype != torch.long or labels.shape != (len(images),):
            raise ValueError(f"{len(labels)} {split} labels for {len(images)} images")
        if len(labels) and not bool(((labels >= 0) & (labels < len(CLASSES))).all()):
            raise ValueError(f"a {split} label outside 0-9")


def cached(cache: Path, fingerprint: str, build: Callable[[], Arrays]) -> Arrays:
    """Load arrays from `cache` when it matches `fingerprint`, else build and (try to) save them.

    A lock beside the cache is held meanwhile: of jobs that start together on an empty cache
    one builds it, and the others wait and load what it built.
    """
    with exclusive(cache.with_name(f".{cache.name}.lock")):
        arrays = _load_cache(cache, fingerprint)
        return arrays if arrays is not None else _build_and_save(cache, fingerprint, build)


def _build_and_save(cache: Path, fingerprint: str, build: Callable[[], Arrays]) -> Arrays:
    arrays = build()
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    try:
        torch.save({"fingerprint": fingerprint, "arrays": arrays}, tmp)
        os.replace(tmp, cache)  # atomic: concurrent sweep jobs never read a half-written cache
        log.info("cached decoded images in %s", cache)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as RuntimeError
        reason = (str(e).strip().splitlines() or [type(e).__name__])[-1][:200]
        log.warning(
            "could not write the data cache %s in the folder %s (%s): the run goes on with "
            "the decoded images, and the next run decodes them again; make the folder "
            "writable or free space there (file-size limit: ulimit -f)",
            *(cache.name, cache.parent, reason),
        )
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)  # a partial file from a failed or interrupted write
    return arrays
