"""The status app: `python -m cifar_cnn.status [SWEEP_DIR ...]` (`cifar-cnn-status`, `make status`).

Prints one line per job of a sweep, while it runs or after: finished (with its recall),
running (its epoch, seconds per epoch and time left), interrupted, failed (with its error),
or not started (a job the sweep will run that has no directory yet), then the whole sweep's
estimate. It reads only the run directories' files and the sweep's multirun.yaml
(cifar_cnn.analysis.status), so it imports no torch and answers at once; a search sweep lists
its trials (and its retraining sweeps), a SLURM sweep its job directories as any other.
"""

import argparse
import itertools
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import yaml

import cifar_cnn
from cifar_cnn.analysis.runs import DEFAULT_SWEEPS_ROOT, REPORT_DIR, find_run_dirs, newest_sweep
from cifar_cnn.analysis.status import read_jobs, sweep_estimate, sweep_width
from cifar_cnn.analysis.trials import RETRAIN_DIR, is_search
from cifar_cnn.core.errors import UserError
from cifar_cnn.core.keys import is_int, run_name
from cifar_cnn.core.runfiles import SWEEP_CONFIG

# As cifar_cnn.app finds conf/ (that module imports the training code): inside the package in
# a wheel, at the top of a source checkout.
_PACKAGED = Path(cifar_cnn.__file__).resolve().parent / "conf"
CONFIG_DIR = _PACKAGED if _PACKAGED.is_dir() else _PACKAGED.parents[1] / "conf"


def sweep_config(sweep_dir: Path) -> dict:
    """The sweep's multirun.yaml as plain data ({} without one, or when it cannot be read)."""
    try:
        return yaml.safe_load((sweep_dir / SWEEP_CONFIG).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def expected_jobs(sweep_dir: Path, config: dict) -> dict[int, str] | None:
    """Job number -> directory name of every job the sweep runs, as Hydra's basic sweeper
    expands its overrides (a search: its n_trials trials); None where that cannot be told."""
    hydra = config.get("hydra") or {}
    sweeper = hydra.get("sweeper") or {}
    if is_search(sweep_dir):
        trials = sweeper.get("n_trials")
        return {i: str(i) for i in range(trials)} if isinstance(trials, int) else None
    params = sweeper.get("params") or {}
    overrides = [f"{k}={v}" for k, v in params.items()]
    overrides += list((hydra.get("overrides") or {}).get("task") or [])
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from hydra.core.override_parser.types import Glob

        choices = []
        for override in OverridesParser.create().parse_overrides(overrides):
            key = override.get_key_element()
            if not override.is_sweep_override():
                values = [override.input_line.split("=", 1)[1]]
            elif isinstance(override.value(), Glob):
                group = CONFIG_DIR / override.key_or_group
                values = override.value().filter(sorted(p.stem for p in group.glob("*.yaml")))
            else:
                values = list(override.sweep_string_iterator())
            choices.append([f"{key}={value}" for value in values])
    except Exception:  # an override this reader cannot expand: list the jobs that exist
        return None
    return {i: f"{i}{run_name(job)}" for i, job in enumerate(itertools.product(*choices))}


def job_dirs(sweep_dir: Path, search: bool) -> list[Path]:
    """The sweep's job directories (a search's: its trials), none yet at its very start."""
    if not (sweep_dir / SWEEP_CONFIG).is_file():
        return find_run_dirs(sweep_dir)[0]
    skipped = {REPORT_DIR, RETRAIN_DIR} if search else {REPORT_DIR}
    return [
        p
        for p in sweep_dir.iterdir()
        if p.is_dir() and not p.name.startswith((".", "_")) and p.name not in skipped
    ]


def sweep_lines(sweep_dir: Path) -> list[str]:
    """The status of one sweep (and of a search's retraining sweeps), as lines of text."""
    if not sweep_dir.is_dir():
        raise UserError(f"{sweep_dir}: no such directory (pass a sweep directory)")
    config, search = sweep_config(sweep_dir), is_search(sweep_dir)
    expected = expected_jobs(sweep_dir, config)
    jobs = read_jobs(job_dirs(sweep_dir, search), expected)
    counts = Counter(job.state for job in jobs)
    kind = "trials" if search else "jobs"
    lines = [
        f"{sweep_dir}: {len(jobs)} {kind} ("
        + ", ".join(f"{n} {state}" for state, n in counts.items())
        + ")"
    ]
    lines += [f"  {job.line()}" for job in jobs]
    if expected is None and (sweep_dir / SWEEP_CONFIG).is_file():
        lines.append(f"  (jobs not started are not listed: {SWEEP_CONFIG} could not be expanded)")
    epochs = ((config.get("trainer") or {}).get("max_epochs")) if config else None
    estimate = sweep_estimate(jobs, sweep_width(config), epochs if is_int(epochs) else None)
    lines.append(f"whole sweep: {estimate}")
    retrain = sweep_dir / RETRAIN_DIR
    if search and retrain.is_dir():
        for sub in sorted(p for p in retrain.iterdir() if (p / SWEEP_CONFIG).is_file()):
            lines += ["", *sweep_lines(sub)]
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: the status of each sweep given (default: the newest)."""
    parser = argparse.ArgumentParser(
        prog="python -m cifar_cnn.status",
        description="What each job of a sweep is doing, and how long the sweep has left.",
    )
    parser.add_argument(
        "sweep_dirs", nargs="*", type=Path, metavar="SWEEP_DIR",
        help=f"sweep directories (default: the newest under {DEFAULT_SWEEPS_ROOT}/)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        for i, sweep in enumerate(args.sweep_dirs or [newest_sweep()]):
            print(("\n" if i else "") + "\n".join(sweep_lines(sweep)))
    except UserError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
