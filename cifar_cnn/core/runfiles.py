"""The run-directory contract shared by training and the report: file names and JSON writes.

Free of torch, Lightning and Hydra, so that reading runs never imports them.
"""

import json
import os
from pathlib import Path

METRICS_FILE = "metrics.json"  # written when a run finishes
FAILED_FILE = "failed.json"  # written instead when a run stops on an error
LAST_CHECKPOINT = "checkpoints/last.ckpt"  # rewritten every `checkpoint_every_n_epochs`
BEST_CHECKPOINT = "checkpoints/best.ckpt"  # with data.val_size: the best validation epoch
TENSORBOARD_DIR = "tensorboard"
LOG_FILE = "train.log"
HYDRA_DIR = ".hydra"  # the composed config and overrides of every run (cifar_cnn.app saves them)
EVAL_FILE = "eval.json"  # written by `cifar_cnn.evaluate` into its own run directory
PREDICTIONS_FILE = "predictions.csv"  # written by `cifar_cnn.predict`
LOCK_FILE = ".lock"  # held while a process trains in the run directory
PROGRESS_FILE = "progress.json"  # rewritten after every epoch (core/progress.py)
# A sweep directory's own files: the sweep's config (Hydra's sweepers and the search's write
# it), and for a search (hparams_search=optuna) the Optuna study in SQLite and its best trial.
SWEEP_CONFIG = "multirun.yaml"
STUDY_FILE = "optuna.db"  # as conf/hparams_search/optuna.yaml stores it
SEARCH_RESULTS_FILE = "optimization_results.yaml"  # written by the sweeper when it finishes
SQLITE_PREFIX = "sqlite:///"  # an SQLite storage URL's prefix
# Outside a Hydra sweep, a subdirectory with none of these is not a run.
RUN_MARKERS = (
    METRICS_FILE,
    FAILED_FILE,
    PROGRESS_FILE,
    "checkpoints",
    TENSORBOARD_DIR,
    LOG_FILE,
    HYDRA_DIR,
)


def write_json(path: Path, data: dict) -> None:
    """Write `data` so that readers see the old file or the new one, never a partial one; a
    failed write (a full disk, a signal) leaves no temporary file behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
