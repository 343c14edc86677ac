"""Start-up time of the real CLI: launch to the first training step done.

`python -m cifar_cnn.train experiment=default trainer.max_epochs=1 progress_bar_refresh=1` is
launched and its progress bar read as it prints; the time to the first "1/N" is launch to
first training step done (the process is then killed), the time to "0/N" launch to epoch start.

The data it trains on (`startup_data`), in this order:

  --data PATH, or the environment variable CIFAR_CNN_DATA (bench.py reads both)
      an image-folder copy of CIFAR-10, PATH/{train,test}/<class>/*.jpg|png (the project's
      `data.source=folder`), or a .tar.gz of such a folder, unpacked once into the temporary
      directory; its images are decoded once, before the measurement, into the project's
      uint8 cache beside them;
  the official CIFAR-10 under data/, when its decoded cache
      (data/cifar-10-batches-py/cifar_cnn_uint8.pt) exists;
  else the synthetic source (4,000 images, the config's default size).

So the measured time is the CLI's own start-up (imports, config, cached data, model,
Trainer), not the first decoding of a data set.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from common import ROOT

DATA_ENV = "CIFAR_CNN_DATA"
CACHED_CIFAR = ROOT / "data" / "cifar-10-batches-py" / "cifar_cnn_uint8.pt"
UNPACKED = Path(tempfile.gettempdir()) / "cifar_cnn_bench"
FIRST_STEP = re.compile(r"Epoch 0:.*?\|\s*1/\d+")
EPOCH_START = re.compile(r"Epoch 0:.*?\|\s*0/\d+")


def is_archive(path: Path) -> bool:
    """Whether `path` names a gzipped tar file."""
    return path.name.endswith((".tar.gz", ".tgz"))


def _image_folder(directory: Path) -> Path | None:
    """`directory` or one of its subdirectories, whichever holds train/ and test/."""
    for candidate in [directory, *sorted(p for p in directory.iterdir() if p.is_dir())]:
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    return None


def unpack(archive: Path) -> Path:
    """Where `archive` is unpacked, under the temporary directory: once per archive file."""
    target = UNPACKED / re.sub(r"\.(tar\.gz|tgz)$", "", archive.name)
    stat = archive.stat()
    stamp = f"{archive} {stat.st_size} {stat.st_mtime_ns}\n"
    done = target / ".unpacked"
    if not done.is_file() or done.read_text() != stamp:
        shutil.rmtree(target, ignore_errors=True)  # another archive's, or interrupted
        target.mkdir(parents=True)
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
        done.write_text(stamp)
    return target


def startup_data(data: Path | None) -> tuple[list[str], str]:
    """CLI data overrides for the start-up run, and a description of the data.

    `data` (from --data or CIFAR_CNN_DATA) is an image folder or a .tar.gz of one; a path
    that is neither raises ValueError. Its images are decoded (and cached) here, so that
    the measurement does not include the first decoding.
    """
    if data is None:
        if CACHED_CIFAR.is_file():
            return ["data.source=cifar10", f"data.root={CACHED_CIFAR.parents[1]}"], (
                "CIFAR-10 (official pickles, cached uint8 tensor)"
            )
        return ["data.source=synthetic"], "synthetic (no cached CIFAR-10 here)"

    data = data.expanduser().resolve()
    if not data.exists():
        raise ValueError(f"--data {data}: no such file or directory")
    if data.is_file() and is_archive(data):
        unpacked = unpack(data)
    elif data.is_dir():
        unpacked = data
    else:
        raise ValueError(f"--data {data}: neither a directory nor a .tar.gz file")
    root = _image_folder(unpacked)
    if root is None:
        raise ValueError(f"--data {data}: no {{train,test}}/<class>/ image folder in it")
    from cifar_cnn.training.data import load_arrays

    started = time.perf_counter()
    arrays = load_arrays("folder", root)  # decodes and caches on the first run only
    took = time.perf_counter() - started
    n = len(arrays["train_y"])
    print(f"  start-up data: {n} training images from {data.name}, cache ready in {took:.1f} s")
    return ["data.source=folder", f"data.root={root}"], (
        f"image-folder copy of CIFAR-10, {data.name} ({n} training images, cached uint8 tensor)"
    )


def measure_startup(data: list[str], source: str, timeout: float = 180.0) -> dict:
    """Launch the real CLI and read its progress bar until the first training step is done."""
    run_dir = Path(tempfile.mkdtemp(prefix="cifar_cnn_bench_startup_"))
    cmd = [
        sys.executable,
        "-m",
        "cifar_cnn.train",
        "experiment=default",
        "trainer.max_epochs=1",
        "progress_bar_refresh=1",
        f"hydra.run.dir={run_dir}",
        *data,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    text, epoch_start, first_step = "", None, None
    try:
        while first_step is None and time.perf_counter() - started < timeout:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            now = time.perf_counter() - started
            if not chunk:
                break
            text += chunk.decode(errors="replace")
            if epoch_start is None and EPOCH_START.search(text):
                epoch_start = now
            if FIRST_STEP.search(text):
                first_step = now
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(run_dir, ignore_errors=True)
    if first_step is None:
        raise RuntimeError(f"no first training step seen from {' '.join(cmd)}:\n{text[-3000:]}")
    return {
        "to_epoch_start_s": epoch_start,
        "to_first_step_s": first_step,
        "data": source,
        "command": " ".join(["python", *cmd[1:6], *data]),
    }
