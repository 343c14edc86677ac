"""What a run's record says about where it ran: device, precision, threads, package versions
and the project's git commit."""

import subprocess
from importlib import metadata
from pathlib import Path

import torch

from cifar_cnn.core.record import Environment

PACKAGES = ("torch", "torchvision", "lightning", "torchmetrics", "hydra-core", "omegaconf")
_REPO = Path(__file__).resolve().parents[2]


def package_versions(device: torch.device) -> dict[str, str]:
    """Installed versions of Python's key packages, and CUDA's and cuDNN's on a GPU."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    if device.type == "cuda":
        versions["cuda"] = str(torch.version.cuda)
        versions["cudnn"] = str(torch.backends.cudnn.version())
        versions["gpu"] = torch.cuda.get_device_name(device)
    return versions


def git_commit(repo: Path = _REPO) -> str | None:
    """The checkout's commit (with "-dirty" when tracked files changed); None outside a git
    checkout, as in an installed wheel."""
    if not (repo / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        changed = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if changed else head


def environment(device: torch.device, precision: str, threads: int, tf32: bool) -> Environment:
    """The record's account of where and how a run computed."""
    return Environment(
        device=str(device),
        precision=precision,
        tf32=tf32,
        threads=threads,
        versions=package_versions(device),
        commit=git_commit(),
    )
