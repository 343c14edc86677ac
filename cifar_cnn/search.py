"""The search app: a whole hyperparameter search (`make search`), and the best trial's settings.

    python -m cifar_cnn.search run [SEARCH_DIR] [--trials N] [--epochs N] [--val-size N]
        [--seeds 0,1,2] [--jobs N] [-- OVERRIDES ...]
    python -m cifar_cnn.search best-overrides SEARCH_DIR
    python -m cifar_cnn.search dashboard SEARCH_DIR [--port 8080] [--host 127.0.0.1]

`run` does three steps, each a `python -m cifar_cnn.train -m ...` command of its own:

1. the search, `hparams_search=optuna` with `hydra.sweep.dir=SEARCH_DIR` (options left out keep
   conf/hparams_search/optuna.yaml's values);
2. the best trial's settings (`SEARCH_DIR/retrain/found`) and the study's best configuration
   (`SEARCH_DIR/retrain/study`) retrained over the seeds, at the trials' budget and on the same
   validation split (read back from the search's multirun.yaml);
3. the report, `python -m cifar_cnn.report SEARCH_DIR`.

Rerunning the same command continues: the search resumes its study up to n_trials, and the
retraining skips the runs that finished. OVERRIDES (after `--`) go to every training command,
except searched keys, which the retraining takes from the best trial. `dashboard` serves
optuna-dashboard on the search's study, wherever its storage is (the sweep directory's
optuna.db, a database, a journal file), live while the search runs. Free of torch and Hydra;
cifar_cnn.analysis.trials reads the search.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import yaml

from cifar_cnn.analysis.runs import DEFAULT_SWEEPS_ROOT
from cifar_cnn.analysis.trials import (
    FOUND,
    RETRAIN_DIR,
    STUDY,
    STUDY_BEST,
    best_overrides,
    read_search,
    search_config,
    study_location,
)
from cifar_cnn.core.errors import UserError
from cifar_cnn.core.runfiles import SWEEP_CONFIG
from cifar_cnn.report import write_sweep_report

DEFAULT_SEEDS = "0,1,2"


def train(args: Sequence[str]) -> int:
    """Run `python -m cifar_cnn.train ARGS` (printed first); its exit status."""
    command = [sys.executable, "-m", "cifar_cnn.train", *args]
    print("+ python -m cifar_cnn.train " + shlex.join(args), flush=True)
    return subprocess.run(command).returncode


def search_command(
    search_dir: Path, trials: int | None, epochs: int | None, val_size: int | None,
    jobs: int | None, overrides: Sequence[str],
) -> list[str]:  # fmt: skip
    """The arguments of the search's training command."""
    options = {
        "hydra.sweeper.n_trials": trials,
        "hydra.sweeper.n_jobs": jobs,
        "trainer.max_epochs": epochs,
        "data.val_size": val_size,
    }
    return [
        "-m",
        "hparams_search=optuna",
        f"hydra.sweep.dir={search_dir}",
        *overrides,  # before the options, which win over the same keys here
        *(f"{key}={value}" for key, value in options.items() if value is not None),
    ]


def search_budget(search_dir: Path) -> list[str]:
    """The trials' epochs and validation split as overrides, from the search's config."""
    try:
        config = yaml.safe_load((search_dir / SWEEP_CONFIG).read_text()) or {}
        epochs, val_size = config["trainer"]["max_epochs"], config["data"]["val_size"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise UserError(
            f"{search_dir / SWEEP_CONFIG}: cannot read the trials' budget ({e}); is "
            f"{search_dir} a search started by `python -m cifar_cnn.search run`?"
        ) from e
    return [f"trainer.max_epochs={epochs}", f"data.val_size={val_size}"]


def check_budget(
    search_dir: Path, epochs: int | None, val_size: int | None, overrides: Sequence[str]
) -> None:
    """Refuse to go on with a search at another budget than its trials had: trials of
    different epochs or validation splits are not comparable (and the retraining would
    follow the first). A new search directory has nothing to compare with."""
    if not (search_dir / SWEEP_CONFIG).is_file():
        return
    saved = dict(item.split("=", 1) for item in search_budget(search_dir))
    asked = {"trainer.max_epochs": epochs, "data.val_size": val_size}
    flags = {"trainer.max_epochs": "--epochs", "data.val_size": "--val-size"}
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        if key in asked and asked[key] is None:
            asked[key] = value
    for key, value in asked.items():
        if value is not None and str(value) != saved[key]:
            raise UserError(
                f"{search_dir} is a search whose trials trained with {key}={saved[key]}; "
                f"going on with {key}={value} ({flags[key]}) would rank trials of different "
                f"budgets together. Rerun with {flags[key]} {saved[key]} (or without it), or "
                "start a new search in another directory"
            )


def retrain_commands(
    search_dir: Path, seeds: str, jobs: int | None, overrides: Sequence[str]
) -> list[list[str]]:
    """The two retraining commands: the best trial's settings, and the study's best."""
    search = read_search(search_dir)
    if search.found and search.found.finished and search.retrained_trial() is not search.best:
        raise UserError(
            f"{search_dir / RETRAIN_DIR / FOUND} holds runs of other settings than the best "
            f"trial's ({search.best.number if search.best else '–'}): the search went on after "
            "they were trained. Delete that directory and run the command again."
        )
    best = best_overrides(search_dir)
    fixed = [o for o in overrides if o.partition("=")[0].lstrip("+~") not in search.space]
    launch = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"] if jobs else []
    common = [
        "-m",
        *fixed,
        f"seed={seeds}",
        *search_budget(search_dir),  # after the overrides: the trials' budget wins
        "progress_bar_refresh=0",
        *launch,
        "hydra.sweep.subdir=${hydra.job.num}_seed${seed}",
    ]
    return [
        [*common, *best, f"hydra.sweep.dir={search_dir / RETRAIN_DIR / FOUND}"],
        [
            *common,
            f"experiment={STUDY_BEST}",
            f"hydra.sweep.dir={search_dir / RETRAIN_DIR / STUDY}",
        ],
    ]


def run(
    search_dir: Path, trials: int | None, epochs: int | None, val_size: int | None,
    seeds: str, jobs: int | None, overrides: Sequence[str],
) -> int:  # fmt: skip
    """The search, the retraining and the report; the exit status (0 when all succeeded).

    A failed search still gets its report (it lists the failed trials)."""
    print(f"search directory: {search_dir}", flush=True)
    check_budget(search_dir, epochs, val_size, overrides)
    status = train(search_command(search_dir, trials, epochs, val_size, jobs, overrides))
    if status == 0:
        for command in retrain_commands(search_dir, seeds, jobs, overrides):
            status = max(status, train(command))
    if search_dir.is_dir():
        print(f"report: {write_sweep_report([search_dir])}", flush=True)
    return status


def dashboard_command(search_dir: Path, port: int, host: str) -> list[str]:
    """The optuna-dashboard command that serves the search's study."""
    if not search_dir.is_dir():
        raise UserError(f"{search_dir}: no such directory (pass a search's sweep directory)")
    sweeper = search_config(search_dir).get("hydra", {}).get("sweeper") or {}
    storage = study_location(search_dir, sweeper)
    if storage is None:
        raise UserError(
            f"{search_dir}: no study found (no {search_dir}/optuna.db, and no readable "
            f"hydra.sweeper.storage in {search_dir / SWEEP_CONFIG}); is it a search's directory?"
        )
    program = Path(sys.executable).with_name("optuna-dashboard")
    program = str(program) if program.is_file() else shutil.which("optuna-dashboard")
    if program is None:
        raise UserError("optuna-dashboard is not installed: pip install 'cifar_cnn[search]'")
    return [program, storage, "--port", str(port), "--host", host]


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least `minimum`."""

    def integer(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value}: must be {minimum} or more")
        return value

    return integer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cifar_cnn.search",
        description="A hyperparameter search sweep (hparams_search=optuna).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    go = commands.add_parser(
        "run",
        usage="%(prog)s [SEARCH_DIR] [options] [-- OVERRIDES ...]",
        help="search, retrain the best trial and the study's best over seeds, and report",
        epilog="Overrides after -- go to every training command (e.g. -- data.root=PATH).",
    )
    go.add_argument(
        "search_dir", type=Path, nargs="?", metavar="SEARCH_DIR",
        help="the search's sweep directory; an existing one resumes "
        f"(default: {DEFAULT_SWEEPS_ROOT}/<date>_<time>_search)",
    )  # fmt: skip
    go.add_argument(
        "--trials", type=_at_least(1), help="trials the study reaches (hydra.sweeper.n_trials)"
    )
    go.add_argument("--epochs", type=_at_least(1), help="epochs of every run (trainer.max_epochs)")
    go.add_argument(
        "--val-size", type=_at_least(0), help="validation images held out (data.val_size)"
    )
    go.add_argument(
        "--seeds", default=DEFAULT_SEEDS, help="retraining seeds (default: %(default)s)"
    )
    go.add_argument("--jobs", type=_at_least(1), help="trials (and retraining runs) at once")
    best = commands.add_parser(
        "best-overrides", help="print the best trial's searched settings as key=value overrides"
    )
    best.add_argument("sweep_dir", type=Path, metavar="SEARCH_DIR")
    view = commands.add_parser(
        "dashboard", help="serve optuna-dashboard on the search's study (until Ctrl-C)"
    )
    view.add_argument("sweep_dir", type=Path, metavar="SEARCH_DIR")
    view.add_argument("--port", type=_at_least(1), default=8080, help="default: %(default)s")
    view.add_argument(
        "--host", default="127.0.0.1",
        help="default: %(default)s (this machine only; 0.0.0.0: the network)",
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m cifar_cnn.search run|best-overrides ...` (see the module's docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args, overrides = _parser().parse_args(argv[:split]), argv[split + 1 :]
    try:
        if args.command == "best-overrides":
            print(" ".join(best_overrides(args.sweep_dir)))
            return
        if args.command == "dashboard":
            command = dashboard_command(args.sweep_dir, args.port, args.host)
            print(f"+ {shlex.join(command)}\nopen http://{args.host}:{args.port}", flush=True)
            os.execv(command[0], command)  # the dashboard replaces this process
        search_dir = (
            args.search_dir or DEFAULT_SWEEPS_ROOT / f"{datetime.now():%Y-%m-%d_%H-%M-%S}_search"
        )
        run_args = (args.trials, args.epochs, args.val_size, args.seeds, args.jobs, overrides)
        sys.exit(run(search_dir, *run_args))
    except UserError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
