"""Seconds per training epoch with and without data augmentation (data.augment), on the CPU.

    python benchmarks/augment.py                     # `make bench-augment`: synthetic images
    python benchmarks/augment.py --data PATH         # an image folder of CIFAR-10 or a .tar.gz
    python benchmarks/augment.py --quick             # tiny data, a few steps: seconds (tests)

Each round trains the study's default network (experiment=default) for --epochs epochs in
two fresh processes: `off` (no augmentation, the study) and `on` (`data.augment.flip=true
data.augment.crop_padding=4`), off first in odd rounds and on first in even ones, so that a
drift of the machine's load falls on both. Each epoch is timed through the project's own
Trainer from its start to its end (the batches' making, the augmentation and the SGD steps;
no validation, checkpoint or logger); a process's figure is the median of its epochs after
the first (warm-up). Per mode: the median and min-max over the rounds; `on / off` is paired
per round. Target (issue 22): the median ratio at most 1.10. On a shared machine the epochs
of two processes differ by more than that, so each process also times making its epoch's
batches alone (no SGD step; the median of 15 passes), which are almost all the augmentation
adds: their difference over the `off` epoch is a second, steadier estimate of the ratio.

Data: --data PATH (default: the environment variable CIFAR_CNN_DATA), an image folder
PATH/{train,test}/<class>/*.jpg|png or a .tar.gz of one (decoded once before any timing;
--train-images N trains on N of its images), else synthetic CIFAR-sized images (10,000 by
default). --threads N sets compute.threads. The JSON goes to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine, recorded_command, spread, write_result
from startup import DATA_ENV, _image_folder, is_archive, unpack

MODES = {"off": [], "on": ["data.augment.flip=true", "data.augment.crop_padding=4"]}
TARGET = 1.10
SYNTHETIC_IMAGES = 10000
BATCH_REPEATS = 15
RESULT = "AUGMENT_BENCH_RESULT "  # the line a child process reports on


def child(mode: str, overrides: list[str], epochs: int) -> int:
    """Train `epochs` epochs with `mode`'s augmentation; print each epoch's seconds."""
    import lightning as L
    import torch
    from hydra.utils import instantiate

    from cifar_cnn.app import compose_config
    from cifar_cnn.training import runtime
    from cifar_cnn.training.config_checks import validate_config
    from cifar_cnn.training.module import CIFARClassifier
    from cifar_cnn.training.trainer import build_trainer

    cfg = compose_config(
        [
            "experiment=default",
            f"trainer.max_epochs={epochs}",
            f"trainer.check_val_every_n_epoch={epochs + 1}",  # no validation
            "trainer.accelerator=cpu",
            "progress_bar_refresh=0",
            *overrides,
            *MODES[mode],
        ]
    )
    validate_config(cfg)
    threads = runtime.configure(cfg.compute)
    L.seed_everything(cfg.seed, verbose=False)
    seconds: list[float] = []

    class EpochClock(L.Callback):
        def on_train_epoch_start(self, trainer, module) -> None:
            self.started = time.perf_counter()

        def on_train_epoch_end(self, trainer, module) -> None:
            seconds.append(time.perf_counter() - self.started)

    module = CIFARClassifier(
        instantiate(cfg.model),
        instantiate(cfg.optimizer),
        channels_last=cfg.compute.channels_last,
        compile=runtime.compile_setting(cfg.compute),
    )
    datamodule = instantiate(cfg.data)
    with tempfile.TemporaryDirectory(prefix="cifar_cnn_bench_augment_") as run_dir:
        trainer = build_trainer(cfg.trainer, Path(run_dir), callbacks=[EpochClock()])
        trainer.fit(module, datamodule=datamodule)
    steps = len(datamodule.train_dataloader())
    report = {"mode": mode, "epoch_seconds": seconds, "steps": steps, "threads": threads}
    report["batches_seconds"] = batches_seconds(datamodule)
    report["torch_threads"] = torch.get_num_threads()
    print(RESULT + json.dumps(report), flush=True)
    return 0


def batches_seconds(datamodule, repeats: int = BATCH_REPEATS) -> float:
    """Median seconds to make one epoch's training batches alone (no SGD step)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _batch in datamodule.train_dataloader():
            pass
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run_child(mode: str, overrides: list[str], epochs: int) -> dict:
    """One fresh process of `mode`; its report."""
    cmd = [sys.executable, __file__, "--child", mode, "--epochs", str(epochs)]
    cmd += [f"--set={o}" for o in overrides]
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}  # this checkout's cifar_cnn
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    lines = [line for line in out.stdout.splitlines() if line.startswith(RESULT)]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT) :])


def data_overrides(args: argparse.Namespace) -> tuple[list[str], str]:
    """The data overrides of every process, and what they are; images are decoded here."""
    if args.data is None:
        train = args.train_images or SYNTHETIC_IMAGES
        return [
            "data.source=synthetic",
            f"data.synthetic_train_size={train}",
            f"data.synthetic_test_size={max(train // 5, 1)}",
        ], f"synthetic, {train} training images"
    data = args.data.expanduser().resolve()
    if not data.exists():
        raise SystemExit(f"--data {data}: no such file or directory")
    root = _image_folder(unpack(data) if is_archive(data) else data)
    if root is None:
        raise SystemExit(f"--data {data}: no {{train,test}}/<class>/ image folder in it")
    from cifar_cnn.training.data import load_arrays

    n = len(load_arrays("folder", root)["train_y"])  # decoded and cached before any timing
    overrides = ["data.source=folder", f"data.root={root}"]
    if args.train_images:
        overrides.append(f"data.train_subset={args.train_images}")
        n = min(n, args.train_images)
    return overrides, f"image folder {data.name}: {n} training images"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    env_data = os.environ.get(DATA_ENV)
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(env_data) if env_data else None,
        help=f"an image folder {{train,test}}/<class>/*.jpg|png or a .tar.gz of one "
        f"(default: ${DATA_ENV}; none: synthetic images)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="pairs of processes (default 5)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per process (default 3)")
    parser.add_argument(
        "--train-images",
        type=int,
        help=f"training images (data.train_subset of --data; default: all of them, or "
        f"{SYNTHETIC_IMAGES} synthetic ones)",
    )
    parser.add_argument("--threads", type=int, help="compute.threads (default: the config's)")
    parser.add_argument("--quick", action="store_true", help="1 round, 2 epochs of 256 images")
    parser.add_argument("--output", type=Path, help="the JSON file (default: results/)")
    parser.add_argument("--child", choices=sorted(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.epochs, args.train_images, args.data = 1, 2, 256, None
    if args.rounds < 1 or args.epochs < 2:
        parser.error("--rounds must be >= 1 and --epochs >= 2 (the first epoch is warm-up)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args.child, args.set, args.epochs)
    started = time.perf_counter()
    overrides, data = data_overrides(args)
    if args.threads:
        overrides.append(f"compute.threads={args.threads}")
    info = machine()
    print(f"CPU: {info['cpu']} ({info['cores']} cores); data: {data}")
    per_round: list[dict[str, float]] = []
    runs = []
    for r in range(args.rounds):
        order = ("off", "on") if r % 2 == 0 else ("on", "off")
        seconds = {}
        for mode in order:
            run = run_child(mode, overrides, args.epochs)
            seconds[mode] = statistics.median(run["epoch_seconds"][1:])
            runs.append({"round": r + 1, **run})
        per_round.append(seconds)
        print(
            f"round {r + 1}/{args.rounds}: off {seconds['off']:.2f} s/epoch, "
            f"on {seconds['on']:.2f} s/epoch, on/off {seconds['on'] / seconds['off']:.3f}",
            flush=True,
        )
    summary = {mode: spread([s[mode] for s in per_round]) for mode in MODES}
    ratio = spread([s["on"] / s["off"] for s in per_round])
    batches = {m: spread([r["batches_seconds"] for r in runs if r["mode"] == m]) for m in MODES}
    added = batches["on"]["median"] - batches["off"]["median"]
    estimate = 1 + added / summary["off"]["median"]
    met = ratio["median"] <= TARGET
    result = {
        "benchmark": "augment",
        "device": "cpu",
        "machine": info,
        "command": recorded_command(
            "benchmarks/augment.py", sys.argv[1:] if argv is None else argv
        ),
        "data": data,
        "rounds": args.rounds,
        "epochs_per_process": args.epochs,
        "steps_per_epoch": runs[0]["steps"],
        "threads": runs[0]["threads"],
        "augment_on": MODES["on"],
        "seconds_per_epoch": summary,
        "ratio_on_off": ratio,
        "batches_alone_seconds_per_epoch": batches,
        "ratio_from_batches_alone": estimate,
        "target": f"median on/off <= {TARGET}",
        "met": met,
        "runs": runs,
        "bench_seconds": time.perf_counter() - started,
    }
    path = write_result(result, args.output, args.quick, partial=False, kind="augment")
    print(
        f"\n{args.rounds} round(s) of {args.epochs} epochs x {result['steps_per_epoch']} steps "
        f"(batch 64, {result['threads']} threads, first epoch of each process left out), "
        f"{info['cpu']}"
    )
    for mode in MODES:
        s = summary[mode]
        print(
            f"{mode:<4} {s['median']:.2f} s/epoch (min-max {s['min']:.2f}-{s['max']:.2f})"
            f"  {' '.join(MODES[mode]) or 'no augmentation'}"
        )
    print(
        f"on/off {ratio['median']:.3f} (min-max {ratio['min']:.3f}-{ratio['max']:.3f}); "
        f"target <= {TARGET}: {'met' if met else 'MISSED'}"
    )
    print(
        f"making the batches alone: off {batches['off']['median']:.3f} s/epoch, on "
        f"{batches['on']['median']:.3f} s/epoch; the augmentation adds {added:.3f} s/epoch, "
        f"i.e. on/off {estimate:.3f} of the off epoch's median"
    )
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
