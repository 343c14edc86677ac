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

How the 300-epoch study is estimated: every mode runs the grid for --epochs epochs in each
of --rounds rounds (modes alternating). Each job's steady seconds per epoch (training, the
test-set evaluation, the checkpoint) and its fixed cost (start-up, warm-up, final test) come
from its own records (estimate.py: the times its epochs ended), so start-up jitter does not
enter the per-epoch figure. The images keep CIFAR-10's ratio of 5 training images per test
image, so a full epoch (50,000 + 10,000 images) is the measured one x 50,000 / training
images; the study per seed is the 10 jobs of fixed cost + 300 full epochs, longest first on
1 slot (seq) or N (par, par_bf16). The sequential mode's jobs give each experiment's
300-epoch run.

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
from estimate import JobTiming, read_jobs, study_seconds
from startup import DATA_ENV, _image_folder, is_archive, unpack

from cifar_cnn.core.cifar10 import CLASSES, TRAIN_SIZE
from cifar_cnn.core.published import EPOCHS, STUDY_ORDER

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
        f"trainer.max_epochs={epochs}", "progress_bar_refresh=0", "logger=tensorboard",
        f"hydra.sweep.dir={sweep_dir}", *data, *mode_overrides(mode, args.jobs),
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"{mode} with {epochs} epoch(s) failed ({proc.returncode}):\n{tail}")
    jobs = {job["experiment"]: job for job in read_jobs(sweep_dir)}
    if len(jobs) != len(args.experiments):
        raise RuntimeError(f"{mode}: {len(jobs)} of {len(args.experiments)} jobs finished")
    return {"mode": mode, "epochs": epochs, "wall_s": wall, "command": cmd, "jobs": jobs}


def timings(run: dict) -> dict[str, JobTiming]:
    """Each job's timing in one run of the grid."""
    return {name: JobTiming(j["epoch_s"], j["fixed_s"]) for name, j in run["jobs"].items()}


def summarise(runs: list[dict], args: argparse.Namespace) -> dict:
    """Per mode: the jobs' full-size epoch and fixed cost, and the 300-epoch study per seed."""
    scale = TRAIN_SIZE / args.train_images  # subset epoch -> full CIFAR-10 epoch
    summary: dict = {"modes": {}, "scale_to_full_epoch": scale}
    for mode in args.modes:
        of_mode = [x for x in runs if x["mode"] == mode]
        slots = 1 if mode == "seq" else args.jobs
        per_round = [
            {
                "study_s": study_seconds(timings(x), 1, EPOCHS, slots, scale),
                "study_3_seeds_s": study_seconds(timings(x), 3, EPOCHS, slots, scale),
            }
            for x in of_mode
        ]
        jobs = [j for x in of_mode for j in x["jobs"].values()]
        summary["modes"][mode] = {
            "wall_s": spread([x["wall_s"] for x in of_mode]),
            "fixed_s": spread([j["fixed_s"] for j in jobs]),
            "job_epoch_full_s": spread([j["epoch_s"] * scale for j in jobs]),
            "study_300_epochs_h": spread([p["study_s"] / 3600 for p in per_round]),
            "study_3_seeds_h": spread([p["study_3_seeds_s"] / 3600 for p in per_round]),
            "per_round": per_round,
        }
    if "seq" in summary["modes"]:
        base = summary["modes"]["seq"]["per_round"]
        for s in summary["modes"].values():
            paired = [
                b["study_s"] / m["study_s"] for b, m in zip(base, s["per_round"], strict=True)
            ]
            s["speedup_vs_seq"] = spread(paired)
        seq = [x for x in runs if x["mode"] == "seq"]
        summary["experiments_300_epochs_h"] = {
            name: spread([timings(x)[name].seconds(EPOCHS, scale) / 3600 for x in seq])
            for name in args.experiments
        }
    return summary


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
        best = min(modes, key=lambda m: modes[m]["study_3_seeds_h"]["median"])
        hours = modes[best]["study_3_seeds_h"]["median"]
        checks.append({
            "target": f"one GPU: the study (3 seeds) at {EPOCHS} epochs < "
            f"{GPU_GRID_TARGET_S // 60} min (best mode: {best}; make bench-gpu measures more)",
            "value": hours * 60,
            "met": hours * 3600 < GPU_GRID_TARGET_S,
        })  # fmt: skip
    return checks


def print_table(result: dict) -> None:
    """Wall times, the jobs' timings, the estimates and the targets on stdout."""
    s, epochs = result["summary"], result["settings"]["epochs"]
    print(f"\n{'mode':<10} {'N':>3} {f'wall {epochs} epochs':>14} {'fixed / job':>12} "
          f"{'full epoch / job':>17} {'300-epoch study':>16} {'vs seq':>13}")  # fmt: skip
    for mode, m in s["modes"].items():
        speed = m.get("speedup_vs_seq")
        print(
            f"{mode:<10} {1 if mode == 'seq' else result['settings']['jobs']:>3} "
            f"{m['wall_s']['median']:>12.1f} s {m['fixed_s']['median']:>10.1f} s "
            f"{m['job_epoch_full_s']['median']:>15.0f} s "
            f"{m['study_300_epochs_h']['median']:>14.1f} h "
            + (f"{speed['median']:>5.2f}x ({speed['min']:.2f}-{speed['max']:.2f})" if speed else "")
        )
    print(
        f"\n(median of {result['settings']['rounds']} round(s) and the jobs; per job, seconds per "
        f"epoch from its epoch times, x {s['scale_to_full_epoch']:.1f} for 50,000 training and "
        f"10,000 test images, and its fixed cost; study = the jobs' fixed cost + {EPOCHS} full "
        f"epochs, longest first on N slots, one seed)"
    )
    if result["settings"]["quick"]:
        print("--quick: a smoke run of the machinery; its estimates mean nothing")
    if s.get("experiments_300_epochs_h"):
        print(f"\n{EPOCHS}-epoch run of each experiment alone (sequential mode's jobs):")
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
        help="epochs of every grid run, at least 2 (default 3; --quick 2)",
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
        parser.error("--epochs must be at least 2 (the steady state needs two epoch ends)")
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
            f"N={args.jobs}; {args.epochs} epochs; {args.rounds} round(s); {data_text}; "
            f"native CPU bf16: {native_cpu_bf16()}; load {load_before[0]:.2f}",
            flush=True,
        )
        runs = []
        for round_ in range(1, args.rounds + 1):
            for mode in args.modes:
                sweep_dir = work / f"r{round_}_{mode}"
                run = run_grid(args, mode, args.epochs, data, sweep_dir)
                run["round"] = round_
                runs.append(run)
                shutil.rmtree(sweep_dir, ignore_errors=True)
                print(
                    f"  round {round_} {mode:<9} {args.epochs} epochs: {run['wall_s']:6.1f} s "
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
