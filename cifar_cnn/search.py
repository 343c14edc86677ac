"""The search app: `python -m cifar_cnn.search best-overrides SEARCH_DIR`, the best trial's
searched settings as overrides (cifar_cnn.analysis.trials reads the search)."""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cifar_cnn.analysis.trials import best_overrides
from cifar_cnn.core.errors import UserError


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m cifar_cnn.search best-overrides SEARCH_DIR`."""
    parser = argparse.ArgumentParser(
        prog="python -m cifar_cnn.search",
        description="A hyperparameter search sweep (hparams_search=optuna).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    best = commands.add_parser(
        "best-overrides", help="print the best trial's searched settings as key=value overrides"
    )
    best.add_argument("sweep_dir", type=Path, metavar="SEARCH_DIR")
    args = parser.parse_args(argv)
    try:
        print(" ".join(best_overrides(args.sweep_dir)))
    except UserError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
