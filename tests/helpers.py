"""What the tests share: the real config composed for fast CPU runs, the CLI, and small data."""

import pickle
import subprocess
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig
from torchvision.io import write_png

from cifar_cnn.app import compose_config
from cifar_cnn.core.cifar10 import CLASSES
from cifar_cnn.training.data import BATCHES_DIR, TEST_BATCHES, TRAIN_BATCHES

REPO = Path(__file__).resolve().parents[1]
# Overrides that make a run take a second or two on CPU. With the gradient norm clipped, the
# loss falls steadily at this learning rate and stays finite at 8x it (measured with 1 and
# 2 threads), so the tests behave alike on every CPU and thread count.
FAST = [
    "data.source=synthetic",
    "data.synthetic_train_size=512",
    "data.synthetic_test_size=200",
    "trainer.max_epochs=2",
    "trainer.accelerator=cpu",
    "optimizer.lr=0.1",
    "trainer.gradient_clip_val=1.0",
    "progress_bar_refresh=0",
]


def config(overrides: list[str] = ()) -> DictConfig:
    """The project's config as `python -m cifar_cnn.train OVERRIDES` would compose it."""
    return compose_config(overrides)


def run_cli(
    args: list[str], cwd: Path = REPO, check: bool = True, module: str = "cifar_cnn.train"
) -> subprocess.CompletedProcess:
    """Run `python -m MODULE ARGS`; its stdout and stderr together are in `.stdout`."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}")
    return result


def make_folder(root: Path, per_class: int = 3) -> Path:
    """A tiny image-folder copy of CIFAR-10: root/{train,test}/<class>/NNNN.png."""
    generator = torch.Generator().manual_seed(1)
    for split in ("train", "test"):
        for label, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=generator)
                image[0, 0, 0] = label  # lets the test find each image's class again
                write_png(image, str(root / split / name / f"{i:04d}.png"))
    return root


def make_pickles(root: Path, per_batch: int = 20) -> Path:
    """CIFAR-10's python format (data: N x 3072 uint8, labels) with `per_batch` images each."""
    directory = root / BATCHES_DIR
    directory.mkdir(parents=True)
    generator = torch.Generator().manual_seed(2)
    for name in TRAIN_BATCHES + TEST_BATCHES:
        data = torch.randint(0, 256, (per_batch, 3072), dtype=torch.uint8, generator=generator)
        labels = [i % 10 for i in range(per_batch)]
        with open(directory / name, "wb") as f:
            pickle.dump({"data": data.numpy(), "labels": labels}, f)
    return root
