"""What pruning saves a search: the same trials with and without `hydra.sweeper.pruner`.

    python benchmarks/pruning.py --data PATH   # `make bench-pruning`: about 15 min on 2 cores
    python benchmarks/pruning.py --quick       # a smoke run: synthetic data, 2 tiny trials

Each search is the real CLI (`python -m cifar_cnn.train -m hparams_search=optuna`), one trial
at a time (the basic launcher), in a fresh sweep directory. For each sampler seed (--seeds)
every mode runs once, modes alternating, each in its own process:

  none     hydra.sweeper.pruner=null: every trial trains all --epochs
  median   MedianPruner, after 2 finished trials and the first epoch (n_startup_trials=2,
           n_warmup_steps=1)
  halving  SuccessiveHalvingPruner (min_resource=1, reduction_factor=3)

With one sampler seed, every mode draws the same settings trial by trial (the sampler is
seeded with seed + trial number, and --trials stays below TPE's 10 random start-up trials),
so the modes differ only in when trials stop. Measured per search: trial-epochs trained (the
epochs in the trials' records), wall time of the command, trials pruned, and the best
validation recall among the trials that were not pruned (what the search would choose).

Data: --data PATH (default: the environment variable CIFAR_CNN_DATA), an image-folder copy of
CIFAR-10 or a .tar.gz of one; the first --train-images / 10 training images of each class
(and a fifth as many test images) are linked into a subset decoded once before any timing,
and --val-size of the training images are held out for validation. Without --data, the
synthetic source. Results: a table on stdout and JSON in benchmarks/results/<date>_cpu_pruning.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine, spread, write_result
from grid import TEST_PER_TRAIN, subset_folder
from startup import DATA_ENV

from cifar_cnn.analysis.trials import read_search

PRUNERS = {
    "none": ["search_pruner=none"],
    "median": [
        "search_pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=2",
        "hydra.sweeper.pruner.n_warmup_steps=1",
    ],
    "halving": ["search_pruner=halving"],
}


def search(args: argparse.Namespace, mode: str, seed: int, data: list[str], work: Path) -> dict:
    """Run one search and measure it."""
    sweep = work / f"{mode}_seed{seed}"
    command = [
        sys.executable, "-m", "cifar_cnn.train", "-m", "hparams_search=optuna", *data,
        f"trainer.max_epochs={args.epochs}", f"data.val_size={args.val_size}",
        "hydra/launcher=basic", "hydra.sweeper.n_jobs=1", f"hydra.sweeper.n_trials={args.trials}",
        f"hydra.sweeper.sampler.seed={seed}", f"hydra.sweep.dir={sweep}", *PRUNERS[mode],
        *args.overrides,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDRA_")}
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{mode} seed {seed} failed:\n{result.stdout[-3000:]}")
    trials = read_search(sweep).trials
    records = [t.run.record for t in trials if t.run.record is not None]
    chosen = [r.val_recall for r in records if not r.pruned and r.val_recall is not None]
    return {
        "mode": mode,
        "seed": seed,
        "wall_seconds": wall,
        "trials": len(trials),
        "trial_epochs": sum(r.epochs for r in records),
        "pruned": sum(r.pruned for r in records),
        "best_val_recall": max(chosen) if chosen else None,
        "epochs_per_trial": [r.epochs for r in records],
    }


def summarise(runs: list[dict], modes: list[str]) -> dict:
    """Per mode: medians and ranges over seeds, and the ratio to `none` seed by seed."""
    summary = {}
    for mode in modes:
        mine = [r for r in runs if r["mode"] == mode]
        base = {r["seed"]: r for r in runs if r["mode"] == "none"}
        entry = {
            "trial_epochs": spread([r["trial_epochs"] for r in mine]),
            "wall_seconds": spread([r["wall_seconds"] for r in mine]),
            "best_val_recall": spread([r["best_val_recall"] for r in mine]),
            "pruned": spread([r["pruned"] for r in mine]),
        }
        if base:
            entry["epochs_vs_none"] = spread(
                [r["trial_epochs"] / base[r["seed"]]["trial_epochs"] for r in mine]
            )
            entry["best_minus_none"] = spread(
                [r["best_val_recall"] - base[r["seed"]]["best_val_recall"] for r in mine]
            )
        summary[mode] = entry
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module's docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: synthetic, 2 tiny trials")
    parser.add_argument(
        "--data", type=Path, default=os.environ.get(DATA_ENV) or None, metavar="PATH",
        help=f"image folder or .tar.gz (default: ${DATA_ENV})",
    )  # fmt: skip
    parser.add_argument("--trials", type=int, default=8, help="trials per search (default 8)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per trial (default 4)")
    parser.add_argument(
        "--train-images", type=int, default=4000,
        help="training images before the validation split (default 4000)",
    )  # fmt: skip
    parser.add_argument("--val-size", type=int, default=800, help="held out (default 800)")
    parser.add_argument("--seeds", default="0,1", help="sampler seeds (default 0,1)")
    parser.add_argument("--modes", nargs="+", choices=list(PRUNERS), default=list(PRUNERS))
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="overrides for every search, e.g. model.filters=small")  # fmt: skip
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default: results/)")
    args = parser.parse_args(argv)
    if args.quick:
        args.data, args.trials, args.epochs, args.train_images = None, 2, 2, 300
        args.val_size, args.seeds, args.modes = 100, "0", ["none", "median"]
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the searches, print the table, write the JSON; the exit status."""
    args = parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.data is None:
            test = args.train_images // TEST_PER_TRAIN
            data = ["data.source=synthetic", f"data.synthetic_train_size={args.train_images}",
                    f"data.synthetic_test_size={test}"]  # fmt: skip
            described = f"synthetic, {args.train_images} train / {test} test images"
        else:
            from cifar_cnn.training.data import load_arrays

            root = subset_folder(args.data, args.train_images, work)
            arrays = load_arrays("folder", root)  # decoded and cached before any timing
            data = ["data.source=folder", f"data.root={root}"]
            described = (f"image folder {args.data.name}: first {len(arrays['train_y'])} train "
                         f"/ {len(arrays['test_y'])} test images")  # fmt: skip
        runs = []
        for seed in seeds:
            order = args.modes if seed % 2 == 0 else args.modes[::-1]  # alternate the order
            for mode in order:
                runs.append(search(args, mode, seed, data, work))
                print(json.dumps(runs[-1]), flush=True)
    summary = summarise(runs, args.modes)
    print(f"\n{args.trials} trials x {args.epochs} epochs, {described}, {args.val_size} held "
          f"out; sampler seeds {args.seeds}; {' '.join(args.overrides)}")  # fmt: skip
    print(f"{'mode':8} {'trial-epochs':>14} {'vs none':>9} {'wall s':>8} {'pruned':>7} "
          f"{'best val':>9} {'Δ best':>8}")  # fmt: skip
    for mode, s in summary.items():
        ratio = s.get("epochs_vs_none", {}).get("median", float("nan"))
        delta = s.get("best_minus_none", {}).get("median", float("nan"))
        print(f"{mode:8} {s['trial_epochs']['median']:>14.1f} {ratio:>9.2f} "
              f"{s['wall_seconds']['median']:>8.0f} {s['pruned']['median']:>7.1f} "
              f"{s['best_val_recall']['median']:>9.4f} {delta:>+8.4f}")  # fmt: skip
    given = sys.argv[1:] if argv is None else argv
    if args.data is not None:  # the data's folder is the user's: only its name is recorded
        given = [a.replace(str(args.data), f"/path/to/{args.data.name}") for a in given]
    command = "python benchmarks/pruning.py " + " ".join(given)
    result = {"benchmark": "pruning", "device": "cpu", "machine": machine(), "data": described,
              "trials": args.trials, "epochs": args.epochs, "val_size": args.val_size,
              "seeds": seeds, "overrides": args.overrides, "command": command,
              "runs": runs, "summary": summary}  # fmt: skip
    path = write_result(result, args.output, args.quick, partial=False, kind="pruning")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
