"""The report app: `python -m cifar_cnn.report [SWEEP_DIR ...] [--out DIR]` (or `make report`).

Writes SWEEP_DIR/report/: the study report of cifar_cnn.analysis.tables (results.md,
results.csv, figures), or for a search sweep (`hparams_search=optuna`) the search report of
cifar_cnn.analysis.search_tables. Failed and unfinished runs are listed, never dropped.
"""

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from cifar_cnn.analysis.runs import DEFAULT_SWEEPS_ROOT, REPORT_DIR, newest_sweep
from cifar_cnn.analysis.search_tables import write_search_report
from cifar_cnn.analysis.tables import write_report
from cifar_cnn.analysis.trials import is_search
from cifar_cnn.core.errors import UserError


def write_sweep_report(sweep_dirs: Sequence[Path], out_dir: Path | None = None) -> Path:
    """The search report of a single search sweep, else the study report of the sweeps, in
    `out_dir` (default: the first sweep's report/); returns it.

    The report is written into a temporary folder beside it and swapped in whole: a report
    that fails half-way leaves the previous one as it was.
    """
    out_dir = out_dir or sweep_dirs[0] / REPORT_DIR
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if len(sweep_dirs) == 1 and is_search(sweep_dirs[0]):
            write_search_report(sweep_dirs[0], tmp)
        else:
            write_report(sweep_dirs, tmp)
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
    except BaseException:
        if old.exists() and not out_dir.exists():
            old.rename(out_dir)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out_dir


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
    except OSError as e:  # a full disk, a file-size limit, a read-only folder
        where = f" ({e.filename})" if e.filename else ""
        sys.exit(
            f"error: the report could not be written{where}: {e.strerror or e}. The previous "
            "report/ folder, if any, is kept as it was; free space (or fix the folder's "
            "permissions) and rerun"
        )


if __name__ == "__main__":
    main()
