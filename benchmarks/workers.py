"""bench.py's three measurements, each run in a fresh process (see bench.py's docstring).

    python benchmarks/workers.py MODE MODEL --steps N --warmup N --test-size N --result PATH
        [--set KEY=VALUE ...]

is what `measure()` launches: MODE is a (the study's pipeline), b (cifar_cnn's training path)
or c (a plain loop over the same tensors); MODEL is a published experiment (common.MODELS).
The worker trains on (warmup + steps) x 64 synthetic images, times `steps` steps after
`warmup`, and writes its measurement as JSON to PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from common import (
    BATCH,
    MODELS,
    ROOT,
    Window,
    clock_callback,
    data_overrides,
    plain_loop,
    timed_steps,
    training_device,
)

if TYPE_CHECKING:
    import torch


def worker_study(args: argparse.Namespace, device: torch.device) -> dict:
    """(a) The study's pipeline: per-sample transforms through a DataLoader."""
    import torch
    from hydra.utils import instantiate
    from PIL import Image
    from torchvision import transforms

    from cifar_cnn.app import compose_config
    from cifar_cnn.training.data import synthetic_arrays

    # the study's layer order (ReLU before max-pool)
    cfg = compose_config([f"experiment={args.model}", "model.pool_before_relu=false"])
    torch.manual_seed(cfg.seed)
    arrays = synthetic_arrays(args.train_size, 10)
    images, labels = arrays["train_x"].numpy(), arrays["train_y"].tolist()  # uint8 HWC
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (1.0, 1.0, 1.0))]
    )

    class Images(torch.utils.data.Dataset):  # what torchvision.datasets.CIFAR10 does per item
        def __len__(self) -> int:
            return len(labels)

        def __getitem__(self, i: int):
            return transform(Image.fromarray(images[i])), labels[i]

    loader = torch.utils.data.DataLoader(Images(), batch_size=BATCH, shuffle=False, num_workers=0)
    net = instantiate(cfg.model).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
    window = Window(args.warmup, args.steps, device)
    # loss.item() every step, as PyTorch's CIFAR-10 tutorial does for its running loss
    timed_steps(net, optimizer, loader, window, device, lambda loss: loss.item())
    return {**window.report(), "threads": torch.get_num_threads()}


def worker_cifar_cnn(args: argparse.Namespace, device: torch.device) -> dict:
    """(b) `cifar_cnn.training.run.train` on the composed config, plus a timing callback."""
    from cifar_cnn.app import compose_config
    from cifar_cnn.training.run import train

    window = Window(args.warmup, args.steps, device)
    eval_seconds: dict[str, float] = {}
    cfg = compose_config(
        [
            f"experiment={args.model}",
            *data_overrides(args.train_size, args.test_size),
            "trainer.max_epochs=1",
            *args.set,
        ]
    )
    with tempfile.TemporaryDirectory(prefix="cifar_cnn_bench_") as run_dir:
        record = train(cfg, Path(run_dir), callbacks=[clock_callback(window, device, eval_seconds)])
    return {
        **window.report(),
        "threads": record.environment.threads,
        "test_seconds": eval_seconds.get("test"),
        "test_images": record.data.test_size,
    }


def worker_plain(args: argparse.Namespace, device: torch.device) -> dict:
    """(c) A plain loop over cifar_cnn's device-resident batches, with its runtime settings."""
    import torch
    from hydra.utils import instantiate

    from cifar_cnn.app import compose_config
    from cifar_cnn.training import runtime

    cfg = compose_config(
        [f"experiment={args.model}", *data_overrides(args.train_size, args.test_size), *args.set]
    )
    threads = runtime.configure(cfg.compute)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(cfg.trainer.benchmark)
    torch.manual_seed(cfg.seed)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    datamodule.arrays = {k: v.to(device) for k, v in datamodule.arrays.items()}
    window = Window(args.warmup, args.steps, device)
    plain_loop(cfg, instantiate(cfg.model).to(device), datamodule, window, device)
    return {**window.report(), "threads": threads}


WORKERS: dict[str, Callable[[argparse.Namespace, torch.device], dict]] = {
    "a": worker_study,
    "b": worker_cifar_cnn,
    "c": worker_plain,
}


def run_worker(args: argparse.Namespace) -> None:
    """Run the worker `args.mode` and write its measurement, with throughput and peak memory."""
    import torch

    device = training_device()
    started = time.perf_counter()
    result = WORKERS[args.mode](args, device)
    result.update(
        mode=args.mode,
        model=args.model,
        device=device.type,
        steps=args.steps,
        images_per_s=args.steps * BATCH / result["seconds"],
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        worker_seconds=time.perf_counter() - started,
    )
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    Path(args.result).write_text(json.dumps(result))


def measure(
    mode: str, model: str, steps: int, warmup: int, test_size: int, overrides: Sequence[str]
) -> dict:
    """Run one worker in a fresh process and return its measurement."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_path = Path(f.name)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        mode,
        model,
        f"--steps={steps}",
        f"--warmup={warmup}",
        f"--test-size={test_size}",
        f"--result={result_path}",
        *(f"--set={override}" for override in overrides),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-3000:]
            raise RuntimeError(f"worker {mode}/{model} failed ({proc.returncode}):\n{tail}")
        return json.loads(result_path.read_text())
    finally:
        result_path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=list(WORKERS))
    parser.add_argument("model", choices=MODELS)
    parser.add_argument("--steps", type=int, required=True, help="timed steps")
    parser.add_argument("--warmup", type=int, required=True, help="untimed steps before them")
    parser.add_argument("--test-size", type=int, required=True, help="synthetic test images")
    parser.add_argument("--result", required=True, help="where to write the JSON measurement")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    args.train_size = (args.warmup + args.steps) * BATCH
    run_worker(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
