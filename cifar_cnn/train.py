"""The training app: `python -m cifar_cnn.train [-m] [experiment=NAME] [key=value ...]`.

The only place that reads Hydra's state; `cifar_cnn.training.run.train` does the run.
"""

import logging
import sys

import hydra
from omegaconf import DictConfig

from cifar_cnn import app
from cifar_cnn.core.errors import Interrupted, RunRefused, TrainingDiverged, UserError
from cifar_cnn.core.study_storage import PrunedTrial
from cifar_cnn.training.pruning import ReportToTrial
from cifar_cnn.training.run import ignore_stop_signals, record_failure, train

log = logging.getLogger("cifar_cnn")


@hydra.main(version_base="1.3", config_path=app.CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | PrunedTrial | None:
    """Hydra entry point; returns the value a sweeper optimises (hparams_search=optuna): the
    validation recall after the last epoch when data.val_size holds out a validation split,
    else the test recall (the study's setup, where the test set is the only held-out data).
    In a search, each epoch's value is reported to the trial; a trial its pruner stopped
    returns PrunedTrial."""
    app.refuse_search_without_multirun()
    run_dir = app.run_directory()
    experiment, overrides = app.experiment_name(), app.task_overrides()
    try:
        app.check_launch()
        trial = app.search_trial()
        record = train(
            cfg,
            run_dir,
            experiment=experiment,
            overrides=overrides,
            concurrent_jobs=app.concurrent_jobs(),
            job_number=app.job_number(),
            on_start=lambda: app.save_run_config(cfg),
            callbacks=[ReportToTrial(trial)] if trial is not None else [],
        )
        value = record.val_recall if cfg.data.val_size else record.test.recall
        return PrunedTrial(value, record.epochs) if record.pruned else value
    except RunRefused as e:  # the run directory is left as it was
        app.exit_on_user_error(e)
        raise
    except Interrupted as e:  # a scheduler (or `&&`) must see that the run did not finish
        ignore_stop_signals()  # a second Ctrl-C while recording this would print a traceback
        record_failure(run_dir, e, e.epoch, experiment, overrides)
        log.error("%s: %s", run_dir, e)
        sys.exit(128 + e.signum)
    except OSError as e:  # a full disk, a file-size limit or permissions in the run directory
        error = UserError(
            f"cannot write {e.filename or run_dir} ({e.strerror or e}); free space (or raise "
            "the file-size limit, ulimit -f, or fix the folder's permissions) and rerun: the "
            "run resumes from its last checkpoint"
        )
        record_failure(run_dir, error, None, experiment, overrides)
        app.exit_on_user_error(error)
        raise error from e
    except Exception as e:
        epoch = e.epoch if isinstance(e, TrainingDiverged) else None
        record_failure(run_dir, e, epoch, experiment, overrides)
        if isinstance(e, UserError):
            app.exit_on_user_error(e)
        raise


if __name__ == "__main__":
    main()
