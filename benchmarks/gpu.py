"""The whole study's time on this GPU, measured in its first minutes (`make bench-gpu`).

    python benchmarks/gpu.py                # on a GPU: under 9 minutes with start-up
    python benchmarks/gpu.py --data PATH    # a folder copy of CIFAR-10 (or a .tar.gz of one)
    python benchmarks/gpu.py --quick        # the same code path on a CPU, tiny: < 3 minutes

Each cell trains, through the real CLI (`python -m cifar_cnn.train -m ...`), N jobs at once
on the device (hydra/launcher=joblib, n_jobs=N; N=1: one job after another), each for
--epochs epochs, on synthetic data at CIFAR-10's full size (50,000 + 10,000 images) or on
--data. The cells, most informative first, until --budget seconds are spent:

  fp32 N=1 (the study as it ran); fp32 and bf16-mixed at N=16; the speed levers at N=16
  (data.drop_last, evaluation batches of 1,000, a checkpoint every 10 epochs); fp32 and bf16
  at N=8; at N=16 the levers with compute.compile_mode=reduce-overhead (CUDA graphs) and fp32
  with compute.exact; fp32 and bf16 at N=12 and 4; bf16 at N=1; fp32 at N=8 without MPS.

Cells with N >= 2 run under CUDA MPS when its daemon can be started (the JSON and the table
say whether it was). A cell's N jobs run the published configurations in turn (N < 10: the
first N of them; the others are estimated from N=1 by the slowdown the measured ones had).

Each job's steady seconds per epoch and fixed cost come from its own records (estimate.py:
the times its epochs ended, in its TensorBoard events, and its metrics.json). The study,
10 configurations x 3 seeds x 300 epochs on 50,000 + 10,000 images, is then scheduled
longest first on N slots, and printed beside the target (under 15 minutes on one H100-class
GPU) and the study's own time (over 12 hours). Results: a table on stdout and JSON in
benchmarks/results/<date>_<device>_gpu.json (`_quick` with --quick).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine, recorded_command, write_result
from estimate import JobTiming, fill_from_reference, read_jobs, study_seconds
from startup import DATA_ENV, _image_folder, is_archive, unpack

from cifar_cnn.core.cifar10 import TRAIN_SIZE
from cifar_cnn.core.published import EPOCHS, STUDY_ORDER

SEEDS = 3
TARGET_S = 15 * 60  # the target on one H100-class GPU
STUDY_OWN_H = 12.5  # the study: 10 runs of about 1 h 15 min each on a hosted GPU
TEST_PER_TRAIN = 5  # CIFAR-10's ratio of training to test images
LEVERS = ["data.drop_last=true", "data.eval_batch_size=1000", "checkpoint_every_n_epochs=10"]
GRAPHS = ["compute.compile=true", "compute.compile_mode=reduce-overhead"]
EXACT = ["compute.exact=true"]  # bit-exact kernels: does it run, and what does it cost?
PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}


def plan(jobs: list[int], on_gpu: bool) -> list[dict]:
    """The cells, most informative first: name, precision, N, extra overrides, MPS wanted."""
    many = sorted((n for n in jobs if n > 1), reverse=True)
    mid = sorted(jobs)[len(jobs) // 2]
    order = list(dict.fromkeys([many[0], mid, *many])) if many else []  # --jobs 1: N=1 only
    top = many[0] if many else 1
    cells = [("fp32", 1, [])]
    for i, n in enumerate(order):
        pair = [("fp32", n, []), ("bf16", n, [])]
        if i == 0 and on_gpu:
            pair.append(("bf16", n, LEVERS))
        elif i == 0:  # bf16 is emulated on most CPUs: the levers in fp32, before it
            pair.insert(1, ("fp32", n, LEVERS))
        cells += pair
        if on_gpu and i == min(1, len(order) - 1):
            cells += [("bf16", top, LEVERS + GRAPHS), ("fp32", top, EXACT)]
    cells += [("bf16", 1, [])]
    planned = [{"precision": p, "jobs": n, "levers": lv, "mps": n > 1} for p, n, lv in cells]
    if on_gpu and mid > 1:
        planned.append({"precision": "fp32", "jobs": mid, "levers": [], "mps": False})
    for cell in planned:
        tags = [cell["precision"], f"N={cell['jobs']}"]
        tags += ["levers"] if LEVERS[0] in cell["levers"] else []
        tags += ["graphs"] if GRAPHS[-1] in cell["levers"] else []
        tags += ["exact"] if cell["levers"] == EXACT else []
        tags += [] if cell["mps"] or cell["jobs"] == 1 else ["no MPS"]
        cell["name"] = " ".join(tags)
    return planned


def start_mps(work: Path) -> tuple[dict[str, str] | None, str]:
    """Start a CUDA MPS control daemon for this benchmark: (its environment, what happened)."""
    control = shutil.which("nvidia-cuda-mps-control")
    if control is None:
        return None, "not started: nvidia-cuda-mps-control is not installed"
    env = {
        "CUDA_MPS_PIPE_DIRECTORY": str(work / "mps_pipe"),
        "CUDA_MPS_LOG_DIRECTORY": str(work / "mps_log"),
    }
    for directory in env.values():
        Path(directory).mkdir(parents=True)
    proc = subprocess.run([control, "-d"], env={**os.environ, **env}, capture_output=True)
    if proc.returncode != 0:
        return None, f"not started: {control} -d exited {proc.returncode}"
    return env, "started"


def stop_mps(env: dict[str, str]) -> None:
    """Stop the MPS daemon started by `start_mps`."""
    subprocess.run(
        ["nvidia-cuda-mps-control"], input=b"quit\n", env={**os.environ, **env}, check=False
    )


def run_cell(cell: dict, args: argparse.Namespace, data: list[str], work: Path, env: dict,
             timeout: float) -> dict:  # fmt: skip
    """Train one cell through the CLI; its wall time and each job's timing."""
    n = cell["jobs"]
    sweep_dir = work / cell["name"].replace(" ", "_").replace("=", "")
    names = args.experiments
    experiments = names if n == 1 else [names[i % len(names)] for i in range(n)]
    cmd = [
        sys.executable, "-m", "cifar_cnn.train", "-m", "experiment=" + ",".join(experiments),
        f"trainer.max_epochs={args.epochs}", f"trainer.precision={PRECISIONS[cell['precision']]}",
        "progress_bar_refresh=0", "logger=tensorboard", f"hydra.sweep.dir={sweep_dir}", *data,
        *(["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n}"] if n > 1 else []),
        *cell["levers"],
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True, text=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout)
        status = "ok" if proc.returncode == 0 else f"failed ({proc.returncode})"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        status = "timed out"
    result = {**cell, "command": cmd, "wall_s": time.perf_counter() - started, "status": status}
    try:
        result["jobs_measured"] = read_jobs(sweep_dir)
    except Exception as e:  # a record unreadable: keep the other cells' minutes of work
        result["jobs_measured"], result["read_error"] = [], f"{type(e).__name__}: {e}"
    if status != "ok":
        result["output_tail"] = out[-2000:]
    shutil.rmtree(sweep_dir, ignore_errors=True)
    return result


def cell_timings(cell: dict) -> dict[str, JobTiming]:
    """The median timing of each configuration the cell measured."""
    by_name: dict[str, list[dict]] = {}
    for job in cell["jobs_measured"]:
        by_name.setdefault(job["experiment"], []).append(job)
    return {
        name: JobTiming(
            epoch_s=statistics.median(j["epoch_s"] for j in jobs),
            fixed_s=statistics.median(j["fixed_s"] for j in jobs),
        )
        for name, jobs in by_name.items()
    }


def estimate_cell(cell: dict, reference: dict[str, JobTiming] | None, names: list[str],
                  scale: float) -> None:  # fmt: skip
    """Add the cell's per-configuration full-size epochs and its study estimate to `cell`.

    Configurations the cell did not run take the N=1 `reference` times the median slowdown
    of those it did; without a reference the estimate covers the measured ones only."""
    measured = cell_timings(cell)
    if not measured:
        cell["study_min"] = None
        return
    timings = fill_from_reference(measured, reference or {}, names)
    estimated = [n for n in timings if n not in measured]
    cell["full_epoch_s"] = {n: t.epoch_s * scale for n, t in timings.items()}
    cell["estimated_from_n1"] = estimated
    cell["covers"] = sorted(timings)
    slots = cell["jobs"]
    cell["study_min"] = study_seconds(timings, SEEDS, EPOCHS, slots, scale) / 60
    cell["complete"] = set(timings) == set(names)


def print_table(result: dict) -> None:
    """Each cell's full-size seconds per epoch per configuration and its study estimate."""
    names = result["settings"]["experiments"]
    print(f"\n{'cell':<26} {'status':<10} " + " ".join(f"{n[:9]:>9}" for n in names)
          + f" {'study (min)':>12}")  # fmt: skip
    for cell in result["cells"]:
        epochs = cell.get("full_epoch_s", {})
        row = " ".join(
            f"{epochs[n]:>8.2f}{'*' if n in cell.get('estimated_from_n1', []) else ' '}"
            if n in epochs else f"{'-':>9}"
            for n in names
        )  # fmt: skip
        study = cell.get("study_min")
        text = "-" if study is None else f"{study:.1f}" + ("" if cell["complete"] else " (part)")
        print(f"{cell['name']:<26} {cell['status']:<10} {row} {text:>12}")
    print(
        f"\nseconds per epoch at full size (50,000 training + 10,000 test images), from each "
        f"job's epoch times; * estimated from N=1 by the measured slowdown. Study: "
        f"{len(names)} configurations x {SEEDS} seeds x {EPOCHS} epochs, longest first on N "
        f"slots. MPS: {result['mps']}."
    )
    best = result.get("best")
    if best:
        verdict = "met" if best["study_min"] * 60 < TARGET_S else "MISSED"
        print(
            f"\nbest: {best['name']}: the study in {best['study_min']:.1f} min; target "
            f"< {TARGET_S // 60} min on one H100-class GPU -> {verdict}; the study's own "
            f"time: over 12 h ({STUDY_OWN_H:.1f} h for its 10 runs on a hosted GPU)"
        )
    if result["settings"]["quick"]:
        print("--quick: a smoke run of the code path on tiny data; its figures mean nothing")


def data_overrides(args: argparse.Namespace) -> tuple[list[str], str, float]:
    """The data overrides of every job, what they are, and the scale to a full-size epoch."""
    if args.data is None:
        test = args.train_images // TEST_PER_TRAIN
        overrides = ["data.source=synthetic", f"data.synthetic_train_size={args.train_images}",
                     f"data.synthetic_test_size={test}"]  # fmt: skip
        # --quick on a shared CPU: one thread per job, or waiting threads spin for minutes
        overrides += ["compute.threads=1"] if args.quick else []
        return overrides, f"synthetic, {args.train_images} + {test}", TRAIN_SIZE / args.train_images
    from cifar_cnn.training.data import load_arrays

    data = args.data.expanduser().resolve()
    folder = _image_folder(unpack(data) if is_archive(data) else data)
    if folder is None:
        sys.exit(f"gpu.py: error: --data {data}: no {{train,test}}/<class>/ image folder in it")
    arrays = load_arrays("folder", folder)  # decoded and cached before any timing
    train = len(arrays["train_y"])
    text = f"image folder {data.name}: {train} + {len(arrays['test_y'])}"
    return ["data.source=folder", f"data.root={folder}"], text, TRAIN_SIZE / train


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the code path on a CPU, tiny")
    parser.add_argument(
        "--data", type=Path, default=os.environ.get(DATA_ENV) or None, metavar="PATH",
        help=f"a CIFAR-10 image folder or .tar.gz of one (default: ${DATA_ENV}, else synthetic)",
    )  # fmt: skip
    parser.add_argument("--jobs", type=int, nargs="+", default=None,
                        help="concurrent jobs per cell (default 1 4 8 12 16)")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per job, at least 2 (default 3; --quick 2)")  # fmt: skip
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for all cells (default 450; --quick 150)")  # fmt: skip
    parser.add_argument("--no-mps", action="store_true", help="do not start CUDA MPS")
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default: results/)")
    args = parser.parse_args(argv)
    args.jobs = args.jobs or ([1, 2] if args.quick else [1, 4, 8, 12, 16])
    args.budget = args.budget or (150 if args.quick else 450)
    args.epochs = args.epochs or (2 if args.quick else 3)
    args.experiments = ["default", "filters"] if args.quick else list(STUDY_ORDER)
    args.train_images = 320 if args.quick else TRAIN_SIZE
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the steady state needs two epoch ends)")
    if 1 not in args.jobs:
        parser.error("--jobs must include 1 (the reference for the other cells)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    on_gpu = torch.cuda.is_available()
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="cifar_cnn_gpu_"))
    data, data_text, scale = data_overrides(args)
    mps_env, mps = (None, "off (--no-mps)") if args.no_mps else (None, "not on a GPU")
    if on_gpu and not args.no_mps:
        mps_env, mps = start_mps(work)
    print(f"device {'cuda' if on_gpu else 'cpu'}; {data_text} images; {args.epochs} epochs per "
          f"job; N in {args.jobs}; MPS {mps}; budget {args.budget:.0f} s", flush=True)  # fmt: skip
    cells = []
    try:
        for cell in plan(args.jobs, on_gpu):
            left = args.budget - (time.perf_counter() - started)
            if left < 10:
                cells.append({**cell, "status": "skipped", "jobs_measured": []})
                continue
            env = {**os.environ, **(mps_env if mps_env and cell["mps"] else {})}
            result = run_cell(cell, args, data, work, env, timeout=left)
            if mps_env and cell["mps"] and result["status"].startswith("failed"):
                stop_mps(mps_env)  # jobs cannot use it here: go on without it
                mps_env, mps = None, "started, but jobs failed under it: stopped"
                result = run_cell(cell, args, data, work, dict(os.environ), timeout=left)
            cells.append(result)
            print(f"  {cell['name']:<26} {result['status']:<10} {result['wall_s']:6.1f} s "
                  f"({time.perf_counter() - started:.0f} s so far)", flush=True)  # fmt: skip
    finally:
        if mps_env:
            stop_mps(mps_env)
        shutil.rmtree(work, ignore_errors=True)

    references = {c["precision"]: cell_timings(c) for c in cells if c["jobs"] == 1}
    for cell in cells:
        reference = references.get(cell["precision"]) or references.get("fp32")
        estimate_cell(cell, reference, args.experiments, scale)
    done = [c for c in cells if c["status"] == "ok" and c.get("complete")]
    result = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": recorded_command("benchmarks/gpu.py", sys.argv[1:] if argv is None else argv),
        "device": "cuda" if on_gpu else "cpu",
        "machine": machine(),
        "mps": mps,
        "settings": {"quick": args.quick, "data": data_text, "epochs": args.epochs,
                     "jobs": args.jobs, "budget_s": args.budget, "scale_to_full_epoch": scale,
                     "experiments": args.experiments, "seeds": SEEDS, "study_epochs": EPOCHS},
        "target_min": TARGET_S / 60,
        "study_own_h": STUDY_OWN_H,
        "best": min(
            ({"name": c["name"], "study_min": c["study_min"]} for c in done),
            key=lambda c: c["study_min"],
            default=None,
        ),
        "cells": cells,
        "bench_seconds": time.perf_counter() - started,
    }  # fmt: skip
    print_table(result)
    out = write_result(result, args.output, args.quick, partial=False, kind="gpu")
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    print(f"\nwrote {shown} ({result['bench_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
