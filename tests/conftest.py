"""Shared fixtures: the real Hydra config composed for fast CPU runs on synthetic data."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
# Overrides that make a run take a second or two on CPU.
FAST = [
    "data.source=synthetic",
    "data.synthetic_train_size=512",
    "data.synthetic_test_size=200",
    "trainer.max_epochs=2",
    "trainer.accelerator=cpu",
    "optimizer.lr=0.05",
    "progress_bar_refresh=0",
]


def compose_config(overrides: list[str] = ()):
    """The project's config as `python -m cifar_cnn.train` would compose it."""
    import cifar_cnn.train  # noqa: F401  (registers the resolvers used by conf/hydra)

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def run_cli(args: list[str], cwd: Path = REPO, check: bool = True) -> subprocess.CompletedProcess:
    """Run `python -m cifar_cnn.train ARGS`; its stdout and stderr together are in `.stdout`."""
    result = subprocess.run(
        [sys.executable, "-m", "cifar_cnn.train", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout}")
    return result


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)
