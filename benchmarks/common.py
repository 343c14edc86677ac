"""What the benchmarks share: the timed window, the training loops, the record of a run.

`bench.py` (throughput of three pipelines, in worker processes from `workers.py`) and
`overhead.py` (the Trainer path's host time per step, in one process) time the same thing,
training steps [warmup, warmup + steps), with the same tools:

  Window          the clock around the steps, with the CPU time this process and the rest
                  of the machine used meanwhile (from /proc/stat)
  timed_steps     SGD steps over batches until the window closes
  plain_loop      the plain PyTorch loop over a data module's batches (bench.py's c)
  clock_callback  a Lightning callback that drives a Window from the Trainer's hooks

and `machine()`, `spread()` and `write_result()` describe and store what was measured (grid.py,
the wall time of the whole grid, uses these three too).
torch, Lightning and Hydra are imported inside the functions, so that importing this module
(and `bench.py --help`) stays fast.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from cifar_cnn.core.published import BY_NAME

if TYPE_CHECKING:
    import torch
    from lightning import Callback
    from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BATCH = 64
# The measured networks: published experiments (conf/experiment/<name>.yaml), composed as
# `experiment=<name>`: the study's default network and its best.
MODELS: tuple[str, ...] = ("default", "batchnorm")
assert all(model in BY_NAME for model in MODELS), MODELS


def data_overrides(train_size: int, test_size: int) -> list[str]:
    """Config overrides for the synthetic data source with these numbers of images."""
    return [
        "data.source=synthetic",
        f"data.synthetic_train_size={train_size}",
        f"data.synthetic_test_size={test_size}",
    ]


def training_device() -> torch.device:
    """The device the benchmarks train on: the GPU when there is one."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that the clock reads finished steps."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _machine_busy_seconds() -> float | None:
    """CPU-seconds the whole machine has been busy (all processes), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _rss_mib() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class Window:
    """Times steps [warmup, warmup + steps) of a loop: the clock starts before step `warmup`
    runs (its batch already fetched) and stops after step `warmup + steps - 1` has finished.

    It also records this process's CPU time and the CPU time the rest of the machine used
    meanwhile (`others_cores`): the latter says whether another job disturbed the window.
    """

    def __init__(self, warmup: int, steps: int, device: torch.device):
        self.warmup, self.last, self.device = warmup, warmup + steps - 1, device
        self.t0 = self.t1 = None

    def before(self, step: int) -> None:
        if step == self.warmup:
            sync(self.device)
            self.busy0, self.cpu0 = _machine_busy_seconds(), time.process_time()
            self.t0 = time.perf_counter()

    def after(self, step: int) -> None:
        if step == self.last:
            sync(self.device)
            self.t1 = time.perf_counter()
            self.busy1, self.cpu1 = _machine_busy_seconds(), time.process_time()
            self.rss = _rss_mib()

    def seconds(self) -> float:
        if self.t0 is None or self.t1 is None:
            raise RuntimeError("the timed window was not reached; is the training set too small?")
        return self.t1 - self.t0

    def report(self) -> dict:
        wall, cpu = self.seconds(), self.cpu1 - self.cpu0
        out = {"seconds": wall, "cpu_cores": cpu / wall, "rss_in_training_mib": self.rss}
        if self.busy0 is not None and self.busy1 is not None:
            out["others_cores"] = max(0.0, (self.busy1 - self.busy0 - cpu) / wall)
        return out


def timed_steps(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    window: Window,
    device: torch.device,
    record_loss: Callable[[torch.Tensor], object],
) -> None:
    """SGD steps over `batches` until the window closes; `record_loss(loss)` after each step."""
    import torch.nn.functional as F

    net.train()
    for step, (x, y) in enumerate(batches):
        x, y = x.to(device), y.to(device)  # a no-op for batches already on the device
        window.before(step)
        optimizer.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        record_loss(loss.detach())
        window.after(step)
        if step == window.last:
            break


def plain_loop(
    cfg: DictConfig, net: torch.nn.Module, datamodule, window: Window, device: torch.device
) -> None:
    """(c)'s loop: `net` with the config's memory format, compile setting and optimiser, trained
    over the set-up `datamodule`'s training batches until `window` closes."""
    import torch
    from hydra.utils import instantiate

    if cfg.compute.channels_last:
        net.to(memory_format=torch.channels_last)
    if cfg.compute.compile:
        net.compile()
    optimizer = instantiate(cfg.optimizer)(net.parameters())
    loss_sum = torch.zeros((), device=device)
    timed_steps(net, optimizer, datamodule.train_dataloader(), window, device, loss_sum.add_)
    loss_sum.item()


def clock_callback(
    window: Window, device: torch.device, eval_seconds: dict[str, float] | None = None
) -> Callback:
    """A Lightning callback that opens and closes `window` around the training steps and,
    given `eval_seconds`, stores the test-set evaluation's duration there under "test"."""
    import lightning as L

    class Clock(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            window.before(batch_idx)

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            window.after(batch_idx)

        def on_test_epoch_start(self, trainer, module) -> None:
            sync(device)
            self.test_started = time.perf_counter()

        def on_test_epoch_end(self, trainer, module) -> None:
            sync(device)
            if eval_seconds is not None:
                eval_seconds["test"] = time.perf_counter() - self.test_started

    return Clock()


def recorded_command(script: str, argv: list[str]) -> str:
    """The command line for a results file, with paths outside the repository reduced to
    their file names (they name this machine's folders, not something a reader has)."""

    def local(arg: str) -> str:
        key, eq, value = (
            arg.rpartition("=") if arg.startswith("--") and "=" in arg else ("", "", arg)
        )
        path = Path(value)
        if path.is_absolute() and not path.resolve().is_relative_to(ROOT):
            value = path.name
        return f"{key}{eq}{value}"

    return " ".join(["python", script, *(local(a) for a in argv)])


def spread(values: list[float]) -> dict:
    """Median, minimum and maximum of `values`."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def machine() -> dict:
    """The CPU (from lscpu), core count, torch and Python versions, and the GPU if any."""
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                info["cpu"] = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import torch

    info["torch"] = torch.__version__
    info["python"] = platform.python_version()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_result(
    result: dict, output: Path | None, quick: bool, partial: bool, kind: str = ""
) -> Path:
    """Write `result` as JSON to `output`, by default results/<date>_<device>[_<kind>].json.

    `kind` names another benchmark's file (`grid` for grid.py) beside bench.py's. The default
    name ends in `_quick` for a smoke run and `_partial` for a side measurement (some models
    or modes, or config overrides), so that neither replaces the full run's file.
    """
    if output is None:
        tag = result["device"]
        if tag == "cuda":
            tag += "-" + re.sub(r"[^A-Za-z0-9]+", "-", result["machine"]["gpu"]).strip("-")
        tag += f"_{kind}" if kind else ""
        tag += "_quick" if quick else "_partial" if partial else ""
        output = RESULTS / f"{dt.date.today().isoformat()}_{tag}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    return output
