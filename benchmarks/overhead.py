"""The host time cifar_cnn's Trainer path adds to each training step, measured to ~0.01 ms.

    python benchmarks/overhead.py             # `make bench-overhead`: about 15 s on 2 cores

bench.py's b/c ratio compares the Trainer path with a plain loop on the study's networks,
where a 10 ms step varies by 10 % and more between windows on a noisy machine, which hides a
change of 0.1 ms. Here the network is Flatten + Linear(3072, 10), so a step is almost all
host time, and both paths run alternately in one process on the CPU, `--rounds` times each:

  trainer  the project's CIFAR10DataModule, CIFARClassifier and the Trainer of
           `cifar_cnn.training.trainer` (progress bar, TensorBoard logger, checkpoints)
  plain    the loop of bench.py's (c) (common.plain_loop) over the same data module's batches

The difference of the medians is what the Lightning machinery (loop, hooks, callbacks,
optimizer wrapper) costs per step. On a real network the same machinery costs more than this,
since the compute between its pieces evicts its code and data from the caches: read the
figure as a floor, and as the number that moves when a change adds host work per step.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
from pathlib import Path

from common import BATCH, Window, clock_callback, data_overrides, plain_loop


def tiny_net():
    """A network with almost no arithmetic: the step time is the loop's own."""
    from torch import nn

    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="runs of each path (default 7)")
    parser.add_argument("--steps", type=int, default=400, help="timed steps (default 400)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed steps (default 50)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for both paths (repeatable)",
    )
    args = parser.parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # one banner per round

    import torch
    from hydra.utils import instantiate

    from cifar_cnn.app import compose_config
    from cifar_cnn.training import runtime
    from cifar_cnn.training.loggers import build_loggers
    from cifar_cnn.training.module import CIFARClassifier
    from cifar_cnn.training.trainer import build_trainer

    overrides = data_overrides((args.warmup + args.steps) * BATCH, 250)
    cfg = compose_config(
        [
            "experiment=default",
            *overrides,
            "trainer.max_epochs=1",
            "trainer.accelerator=cpu",
            *args.set,
        ]
    )
    threads = runtime.configure(cfg.compute)
    device = torch.device("cpu")
    datamodule = instantiate(cfg.data)

    def trainer_path() -> float:
        window = Window(args.warmup, args.steps, device)
        torch.manual_seed(cfg.seed)
        module = CIFARClassifier(
            tiny_net(),
            instantiate(cfg.optimizer),
            channels_last=cfg.compute.channels_last,
            compile=cfg.compute.compile,
        )
        with tempfile.TemporaryDirectory(prefix="cifar_cnn_overhead_") as run_dir:
            trainer = build_trainer(
                cfg.trainer,
                Path(run_dir),
                loggers=build_loggers(cfg.logger, Path(run_dir)),
                callbacks=[clock_callback(window, device)],
                checkpoint_every_n_epochs=cfg.checkpoint_every_n_epochs,
                progress_bar_refresh=cfg.progress_bar_refresh,
            )
            trainer.fit(module, datamodule=datamodule)
        return window.seconds()

    def plain_path() -> float:
        window = Window(args.warmup, args.steps, device)
        torch.manual_seed(cfg.seed)
        datamodule.setup("fit")
        plain_loop(cfg, tiny_net(), datamodule, window, device)
        return window.seconds()

    ms_per_step: dict[str, list[float]] = {"plain": [], "trainer": []}
    for _ in range(args.rounds):
        ms_per_step["plain"].append(plain_path() / args.steps * 1e3)
        ms_per_step["trainer"].append(trainer_path() / args.steps * 1e3)

    print(f"\n{args.rounds} rounds of {args.steps} steps, batch {BATCH}, {threads} threads")
    for path, values in ms_per_step.items():
        print(
            f"{path:<8} {statistics.median(values):.3f} ms/step "
            f"(min-max {min(values):.3f}-{max(values):.3f})"
        )
    overhead = statistics.median(ms_per_step["trainer"]) - statistics.median(ms_per_step["plain"])
    print(f"Trainer path over the plain loop: {overhead:+.3f} ms/step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
