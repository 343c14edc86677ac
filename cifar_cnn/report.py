"""The report app: `python -m cifar_cnn.report [SWEEP_DIR ...] [--out DIR]` (or `make report`).

Writes SWEEP_DIR/report/: the study report of cifar_cnn.analysis.tables (results.md,
results.csv, figures), or for a search sweep (`hparams_search=optuna`) the search report of
cifar_cnn.analysis.search_tables. Failed and unfinished runs are listed, never dropped.
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cifar_cnn.analysis.runs import DEFAULT_SWEEPS_ROOT, newest_sweep
from cifar_cnn.analysis.search_tables import write_search_report
from cifar_cnn.analysis.tables import write_report
from cifar_cnn.analysis.trials import is_search
from cifar_cnn.core.errors import UserError


def write_sweep_report(sweep_dirs: Sequence[Path], out_dir: Path | None = None) -> Path:
    """The search report of a single search sweep, else the study report of the sweeps;
    returns the report directory."""
    if len(sweep_dirs) == 1 and is_search(sweep_dirs[0]):
        return write_search_report(sweep_dirs[0], out_dir)
    return write_report(sweep_dirs, out_dir)


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: one report per sweep, or one pooled report with --out."""
    parser = argparse.ArgumentParser(
        prog="python -m cifar_cnn.report",
        description="Tables and figures of a sweep, compared with the published study.",
    )
    parser.add_argument(
        "sweep_dirs", nargs="*", type=Path, metavar="SWEEP_DIR",
        help=f"sweep directories (default: the newest under {DEFAULT_SWEEPS_ROOT}/); "
        "each gets its own SWEEP_DIR/report/ unless --out combines them",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="one report of all the sweeps, seeds pooled")
    args = parser.parse_args(argv)
    try:
        sweeps = args.sweep_dirs or [newest_sweep()]
        for group in [sweeps] if args.out else [[s] for s in sweeps]:
            out_dir = write_sweep_report(group, args.out)
            print(f"report: {out_dir / 'results.md'} (table: results.csv; figures: *.png)")
    except UserError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
