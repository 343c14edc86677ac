"""Time to the whole study: the 10-experiment grid run one job after another, as N parallel
jobs, and as N parallel jobs with bf16 mixed precision.

    python benchmarks/grid.py                  # `make bench-grid`: under 10 min on 2 CPU cores
    python benchmarks/grid.py --data PATH      # on an image folder of CIFAR-10 or a .tar.gz
    python benchmarks/grid.py --quick          # a smoke run: 2 experiments, tiny data

Each mode trains the published grid through the real CLI, in a fresh sweep directory:

  seq       python -m cifar_cnn.train -m 'experiment=glob(*)'   (today's `make study`, fp32)
  par       ... hydra/launcher=joblib hydra.launcher.n_jobs=N     (`make study JOBS=N`)
  par_bf16  ... the same with trainer.precision=bf16-mixed

N (--jobs) defaults to the CPUs this process may use (at most 10, the grid's size); each
parallel job then gets CPUs / N threads, and on a GPU the N jobs share the card.

How the 300-epoch study is estimated: every mode runs the grid twice, with 1 epoch and with
--epochs epochs, alternating the modes within each of --rounds rounds. Its wall time is
fitted as wall(E) = a + b x E: b is one epoch of the whole grid on the training images used
(training, the test-set evaluation every epoch, checkpoints), a the start-up (imports, data,
networks, Trainers, joblib's workers) plus the final test. The images keep CIFAR-10's ratio
of 5 training images per test image, so one epoch of the full data (50,000 + 10,000 images)
takes b x 50,000 / training images, and the study per seed is a + 300 x that. The same fit
of the sequential mode's job times gives each experiment's 300-epoch run.

Data: --data PATH (default: the environment variable CIFAR_CNN_DATA), an image-folder copy
of CIFAR-10, PATH/{train,test}/<class>/*.jpg|png, or a .tar.gz of one (unpacked once into
the temporary directory); the first --train-images / 10 images of each class (and a fifth as
many test images) are linked into a subset that is decoded once, before any timing. Without
--data, the synthetic source (the work per step does not depend on the pixels).

Results: a table on stdout and JSON in benchmarks/results/<date>_<device>_grid.json
(`_quick` for --quick, `_partial` for some experiments or modes only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine, recorded_command, spread, write_result
from startup import DATA_ENV, _image_folder, is_archive, unpack

from cifar_cnn.core.cifar10 import CLASSES, TRAIN_SIZE
from cifar_cnn.core.published import EPOCHS, STUDY_ORDER
from cifar_cnn.core.runfiles import METRICS_FILE, read_json

MODES = {
    "seq": "sequential, fp32 (today)",
    "par": "N parallel jobs, fp32",
    "par_bf16": "N parallel jobs, bf16-mixed",
}
TEST_PER_TRAIN = 5  # CIFAR-10: 50,000 training and 10,000 test images
# Targets of the issue: the study's estimated time, sequential / mode.
CPU_TARGETS = {"par": 1.2, "par_bf16": 2.0}  # par_bf16 only on a CPU with native bf16
GPU_GRID_TARGET_S = 15 * 60


def mode_overrides(mode: str, jobs: int) -> list[str]:
    """The CLI arguments that make a mode."""
    parallel = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
    return {
        "seq": [],
        "par": parallel,
        "par_bf16": [*parallel, "trainer.precision=bf16-mixed"],
    }[mode]


def subset_folder(data: Path, train_images: int, work: Path) -> Path:
    """An image folder holding the first train_images / 10 training images of each class of
    `data` (a folder or .tar.gz of one) and a fifth as many test images, as symbolic links."""
    data = data.expanduser().resolve()
    if not data.exists():
        raise ValueError(f"--data {data}: no such file or directory")
    source = _image_folder(unpack(data) if is_archive(data) else data)
    if source is None:
        raise ValueError(f"--data {data}: no {{train,test}}/<class>/ image folder in it")
    per_class = {"train": train_images // 10, "test": train_images // 10 // TEST_PER_TRAIN}
    target = work / f"subset_{train_images}"
    for split, count in per_class.items():
        for name in CLASSES:
            files = sorted((source / split / name).iterdir())[:count]
            if len(files) < count:
                raise ValueError(
                    f"--data {data}: {split}/{name} has {len(files)} images; --train-images "
                    f"{train_images} needs {count} per class"
                )
            (target / split / name).mkdir(parents=True)
            for f in files:
                (target / split / name / f.name).symlink_to(f)
    return target


def data_overrides(args: argparse.Namespace, work: Path) -> tuple[list[str], str]:
    """The data overrides of every run, and what they are; images are decoded here, once."""
    if args.data is None:
        test = args.train_images // TEST_PER_TRAIN
        return [
            "data.source=synthetic",
            f"data.synthetic_train_size={args.train_images}",
            f"data.synthetic_test_size={test}",
        ], f"synthetic, {args.train_images} train / {test} test images"
    from cifar_cnn.training.data import load_arrays

    root = subset_folder(args.data, args.train_images, work)
    arrays = load_arrays("folder", root)  # decoded and cached before any timing
    train, test = len(arrays["train_y"]), len(arrays["test_y"])
    return [
        "data.source=folder",
        f"data.root={root}",
    ], f"image folder {args.data.name}: first {train} train / {test} test images"


def run_grid(
    args: argparse.Namespace, mode: str, epochs: int, data: list[str], sweep_dir: Path
) -> dict:
    """Train the grid once in `mode` through the CLI; its wall time and its jobs' metrics."""
    cmd = [
        sys.executable, "-m", "cifar_cnn.train", "-m",
        "experiment=" + (
            "glob(*)" if args.experiments == list(STUDY_ORDER) else ",".join(args.experiments)
        ),
        f"trainer.max_epochs={epochs}", "progress_bar_refresh=0",
        f"hydra.sweep.dir={sweep_dir}", *data, *mode_overrides(mode, args.jobs),
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"{mode} with {epochs} epoch(s) failed ({proc.returncode}):\n{tail}")
    jobs = {}
    for path in sorted(sweep_dir.glob(f"*/{METRICS_FILE}")):
        m = read_json(path) or {}
        jobs[m.get("experiment")] = {
            key: m.get(key)
            for key in ("epochs", "train_seconds", "wall_seconds_this_process", "threads",
                        "precision", "device", "test_recall")
        }  # fmt: skip
    if len(jobs) != len(args.experiments):
        raise RuntimeError(f"{mode}: {len(jobs)} of {len(args.experiments)} jobs finished")
    return {"mode": mode, "epochs": epochs, "wall_s": wall, "command": cmd, "jobs": jobs}


def fit(low: float, high: float, e_low: int, e_high: int) -> tuple[float, float]:
    """(a, b) of the line a + b x epochs through two measurements."""
    b = (high - low) / (e_high - e_low)
    return low - b * e_low, b


def summarise(runs: list[dict], args: argparse.Namespace) -> dict:
    """Per mode: wall times, the fitted start-up and grid epoch, and the 300-epoch study."""
    scale = TRAIN_SIZE / args.train_images  # subset epoch -> full CIFAR-10 epoch
    e_low, e_high = 1, args.epochs
    summary: dict = {"modes": {}, "scale_to_full_epoch": scale}
    for mode in args.modes:
        of_mode = [x for x in runs if x["mode"] == mode]
        per_round = []
        for r in range(1, args.rounds + 1):
            wall = {x["epochs"]: x["wall_s"] for x in of_mode if x["round"] == r}
            a, b = fit(wall[e_low], wall[e_high], e_low, e_high)
            per_round.append({"a": a, "b": b, "study_s": a + EPOCHS * b * scale})
        summary["modes"][mode] = {
            "wall_s": {  # keyed by the epochs as a string, as JSON stores it
                str(e): spread([x["wall_s"] for x in of_mode if x["epochs"] == e])
                for e in (e_low, e_high)
            },
            "startup_s": spread([p["a"] for p in per_round]),
            "grid_epoch_subset_s": spread([p["b"] for p in per_round]),
            "grid_epoch_full_s": spread([p["b"] * scale for p in per_round]),
            "study_300_epochs_h": spread([p["study_s"] / 3600 for p in per_round]),
            "per_round": per_round,
        }
    if "seq" in summary["modes"]:
        base = summary["modes"]["seq"]["per_round"]
        for s in summary["modes"].values():
            paired = [
                b["study_s"] / m["study_s"] for b, m in zip(base, s["per_round"], strict=True)
            ]
            s["speedup_vs_seq"] = spread(paired)
        summary["experiments_300_epochs_h"] = experiment_estimates(runs, args, scale)
    return summary


def experiment_estimates(runs: list[dict], args: argparse.Namespace, scale: float) -> dict:
    """Each experiment's 300-epoch run alone, from the sequential mode's job times (medians)."""
    out = {}
    for name in args.experiments:
        per_round = []
        for r in range(1, args.rounds + 1):
            times = {
                x["epochs"]: x["jobs"][name]["wall_seconds_this_process"]
                for x in runs
                if x["mode"] == "seq" and x["round"] == r
            }
            a, b = fit(times[1], times[args.epochs], 1, args.epochs)
            per_round.append((a + EPOCHS * b * scale) / 3600)
        out[name] = spread(per_round)
    return out


def check_targets(summary: dict, device: str, native_bf16: bool) -> list[dict]:
    """The issue's targets that apply here, with the measured value and whether it is met."""
    checks = []
    modes = summary["modes"]
    if device == "cpu":
        for mode, need in CPU_TARGETS.items():
            if mode in modes and "speedup_vs_seq" in modes[mode]:
                value = modes[mode]["speedup_vs_seq"]["median"]
                applies = mode != "par_bf16" or native_bf16
                checks.append({
                    "target": f"{mode}: study time seq / {mode} >= {need}"
                    + ("" if applies else " (not applicable: this CPU has no native bf16)"),
                    "value": value,
                    "met": value >= need if applies else None,
                })  # fmt: skip
    else:
        best = min(modes, key=lambda m: modes[m]["study_300_epochs_h"]["median"])
        hours = modes[best]["study_300_epochs_h"]["median"]
        checks.append({
            "target": f"one GPU: the grid at {EPOCHS} epochs < {GPU_GRID_TARGET_S // 60} min "
            f"(best mode: {best})",
            "value": hours * 60,
            "met": hours * 3600 < GPU_GRID_TARGET_S,
        })  # fmt: skip
    return checks


def print_table(result: dict) -> None:
    """Wall times, the fit, the estimates and the targets on stdout."""
    s, e_high = result["summary"], result["settings"]["epochs"]
    print(f"\n{'mode':<10} {'N':>3} {'wall 1 epoch':>13} {f'wall {e_high} epochs':>14} "
          f"{'start-up a':>11} {'grid epoch b':>13} {'full epoch':>11} "
          f"{'300-epoch study':>16} {'vs seq':>13}")  # fmt: skip
    for mode, m in s["modes"].items():
        w1, wh = m["wall_s"]["1"]["median"], m["wall_s"][str(e_high)]["median"]
        speed = m.get("speedup_vs_seq")
        print(
            f"{mode:<10} {1 if mode == 'seq' else result['settings']['jobs']:>3} "
            f"{w1:>11.1f} s {wh:>12.1f} s {m['startup_s']['median']:>9.1f} s "
            f"{m['grid_epoch_subset_s']['median']:>11.2f} s "
            f"{m['grid_epoch_full_s']['median']:>9.0f} s "
            f"{m['study_300_epochs_h']['median']:>14.1f} h "
            + (f"{speed['median']:>5.2f}x ({speed['min']:.2f}-{speed['max']:.2f})" if speed else "")
        )
    print(
        f"\n(median of {result['settings']['rounds']} round(s); a and b fitted as wall = a + b x "
        f"epochs; full epoch = b x {s['scale_to_full_epoch']:.1f}, i.e. 50,000 training and "
        f"10,000 test images; study = a + {EPOCHS} x full epoch, one seed)"
    )
    if result["settings"]["quick"]:
        print("--quick: a smoke run of the machinery; its fits and estimates mean nothing")
    elif any(m["grid_epoch_subset_s"]["median"] <= 0 for m in s["modes"].values()):
        print("warning: a grid epoch was lost in the noise; raise --train-images or --epochs")
    if s.get("experiments_300_epochs_h"):
        print(f"\n{EPOCHS}-epoch run of each experiment alone (sequential mode's job times):")
        for name, h in s["experiments_300_epochs_h"].items():
            print(f"  {name:<11} {h['median']:6.2f} h ({h['min']:.2f}-{h['max']:.2f})")
    print()
    for c in result["targets"]:
        verdict = "n/a" if c["met"] is None else "met" if c["met"] else "MISSED"
        print(f"target {c['target']}: {c['value']:.2f} -> {verdict}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from cifar_cnn.training.runtime import usable_cpus

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 experiments, tiny")
    parser.add_argument(
        "--data", type=Path, default=os.environ.get(DATA_ENV) or None, metavar="PATH",
        help=f"an image folder {{train,test}}/<class>/*.jpg|png or a .tar.gz of one "
        f"(default: ${DATA_ENV}, else synthetic data)",
    )  # fmt: skip
    parser.add_argument(
        "--train-images",
        type=int,
        default=None,
        help="training images per run (default 2000; test images: a fifth)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="the longer of the two grid runs per mode (default 3; the other: 1)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(usable_cpus(), len(STUDY_ORDER)),
        help="parallel jobs (default: the usable CPUs, at most 10)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 2)")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument(
        "--experiments",
        nargs="+",
        choices=STUDY_ORDER,
        default=None,
        help="default: all 10 published experiments",
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default: results/)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    args.train_images = args.train_images or (250 if args.quick else 2000)
    args.epochs = args.epochs or (2 if args.quick else 3)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.experiments = args.experiments or (
        ["default", "filters"] if args.quick else list(STUDY_ORDER)
    )
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the fit needs two epoch counts)")
    if args.train_images < 10 * TEST_PER_TRAIN:
        parser.error(f"--train-images must be at least {10 * TEST_PER_TRAIN}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from cifar_cnn.training.runtime import native_cpu_bf16

    device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="cifar_cnn_grid_"))
    try:
        try:
            data, data_text = data_overrides(args, work)
        except ValueError as e:
            sys.exit(f"grid.py: error: {e}")
        print(
            f"device {device}{'' if device == 'cuda' else ' (no GPU available)'}; "
            f"{len(args.experiments)} experiments; modes {' '.join(args.modes)} with "
            f"N={args.jobs}; 1 and {args.epochs} epochs; {args.rounds} round(s); {data_text}; "
            f"native CPU bf16: {native_cpu_bf16()}; load {load_before[0]:.2f}",
            flush=True,
        )
        runs = []
        for round_ in range(1, args.rounds + 1):
            for epochs in (1, args.epochs):
                for mode in args.modes:
                    sweep_dir = work / f"r{round_}_{mode}_{epochs}"
                    run = run_grid(args, mode, epochs, data, sweep_dir)
                    run["round"] = round_
                    runs.append(run)
                    shutil.rmtree(sweep_dir, ignore_errors=True)
                    print(
                        f"  round {round_} {mode:<9} {epochs} epoch(s): {run['wall_s']:6.1f} s "
                        f"({time.perf_counter() - started:.0f} s so far)",
                        flush=True,
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    summary = summarise(runs, args)
    result = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": recorded_command(
            "benchmarks/grid.py", argv if argv is not None else sys.argv[1:]
        ),
        "device": device,
        "machine": {**machine(), "native_cpu_bf16": native_cpu_bf16()},
        "settings": {
            "jobs": args.jobs,
            "epochs": args.epochs,
            "rounds": args.rounds,
            "train_images": args.train_images,
            "quick": args.quick,
            "data": data_text,
            "experiments": args.experiments,
            "modes": {m: mode_overrides(m, args.jobs) for m in args.modes},
        },
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "summary": summary,
        "targets": check_targets(summary, device, native_cpu_bf16()),
        "runs": runs,
    }
    result["bench_seconds"] = time.perf_counter() - started
    print_table(result)
    partial = args.modes != list(MODES) or args.experiments != list(STUDY_ORDER)
    out = write_result(result, args.output, args.quick, partial, kind="grid")
    print(
        f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out} "
        f"({result['bench_seconds']:.0f} s)"
    )
    missed = any(c["met"] is False for c in result["targets"])
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
