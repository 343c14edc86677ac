"""What the tests share: the real config composed for fast CPU runs, the CLI, and small data."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig
from PIL import Image

from cifar_cnn.app import compose_config
from cifar_cnn.core.cifar10 import CLASSES
from cifar_cnn.core.record import DataSummary, Environment, History, RunRecord, TestResults
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


# Environment variables that change how the apps behave or print (HYDRA_FULL_ERROR=1 prints
# tracebacks, as many Hydra users keep it exported); the CLI subprocesses of the tests run
# without them, so that the suite checks the apps as shipped, whatever the shell holds.
_APP_ENV_PREFIXES = ("HYDRA_", "OC_CAUSE", "CIFAR_CNN_")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the variables that change the apps, plus `extra`."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(_APP_ENV_PREFIXES)}
    return {**kept, **extra}


# `make` as the tests run it: the install stamps are taken as up to date, so that a target never
# reinstalls the environment the suite runs in.
MAKE = ["make", "--no-print-directory", "-o", ".venv/bin/.installed", "-o",
        ".venv/bin/.installed-search"]  # fmt: skip


def run_cli(
    args: list[str],
    cwd: Path = REPO,
    check: bool = True,
    module: str = "cifar_cnn.train",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run `python -m MODULE ARGS` (with the variables `env` added to a clean environment);
    its stdout and stderr together are in `.stdout`."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        env=clean_env(**(env or {})),
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
                Image.fromarray(image.permute(1, 2, 0).numpy()).save(
                    root / split / name / f"{i:04d}.png"
                )
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


def fake_record(
    recall: float = 0.5,
    epochs: int = 1,
    precision: str = "32-true",
    source: str = "synthetic",
    seed: int = 0,
    val_recall: float | None = None,
    **fields: object,
) -> RunRecord:
    """A finished run's record with made-up numbers, for tests of the report and the search."""
    history = History(
        train_loss=[2.0] * epochs,
        test_recall=[] if val_recall is not None else [recall] * epochs,
        test_recall_epochs=[] if val_recall is not None else list(range(1, epochs + 1)),
        val_recall=[] if val_recall is None else [val_recall] * epochs,
        val_recall_epochs=[] if val_recall is None else list(range(1, epochs + 1)),
        train_seconds=1.5 * epochs,
    )
    per_class = {name: recall for name in CLASSES}
    values = dict(
        experiment="default",
        overrides=[],
        seed=seed,
        params=256_058,
        history=history,
        test=TestResults(recall, recall, per_class, [[10] * 10 for _ in CLASSES]),
        data=DataSummary(source=source, train_size=256, test_size=200),
        environment=Environment("cpu", precision, False, 1, {"torch": "test"}),
        wall_seconds_this_process=2.0,
        config={},
    )
    return RunRecord(**{**values, **fields})
