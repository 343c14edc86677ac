"""One training run, from a composed config to its record (`metrics.json`), with no Hydra state.

`train` checks the config, takes the run directory's lock, loads the data onto the device,
builds the network, fits with periodic evaluation (on the test set, as the study did, or with
`data.val_size` on the held-out validation split, also after the last epoch), tests once, and
writes a `RunRecord` to `metrics.json`. A run directory that holds a finished run of the same
settings is skipped (or continued, for a larger `trainer.max_epochs`; a pruned search trial is
never continued); one of other settings is refused; one with a checkpoint resumes. A signal
stops the run after the current step with `Interrupted`. The Hydra app (`cifar_cnn.train`), the
benchmarks and the tests all call it.
"""

import contextlib
import logging
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import lightning as L
import torch
from filelock import FileLock, Timeout
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from cifar_cnn.core.errors import ConfigError, Interrupted, ResultsNotSaved, RunRefused
from cifar_cnn.core.record import (
    AtBestVal,
    DataSummary,
    Failure,
    NewerRecord,
    RecordError,
    RunRecord,
    TestResults,
    best_validation,
    read_record,
    write_record,
)
from cifar_cnn.core.runfiles import (
    BEST_CHECKPOINT,
    FAILED_FILE,
    LAST_CHECKPOINT,
    LOCK_FILE,
    METRICS_FILE,
)
from cifar_cnn.training import runtime
from cifar_cnn.training.checkpoint import (
    BestCheckpoint,
    checkpoint_to_resume,
    config_mismatches,
    history_of,
    read_checkpoint,
)
from cifar_cnn.training.config_checks import validate_config
from cifar_cnn.training.data import resolve_root
from cifar_cnn.training.loggers import HParamsSummary, build_loggers, check_loggers
from cifar_cnn.training.model import count_parameters, layer_summary
from cifar_cnn.training.module import CIFARClassifier
from cifar_cnn.training.progress import EpochProgress, bar_refresh
from cifar_cnn.training.provenance import environment
from cifar_cnn.training.pruning import ReportToTrial
from cifar_cnn.training.trainer import build_trainer

log = logging.getLogger("cifar_cnn")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock: one process trains in a run directory at a time."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(run_dir / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RunRefused(
            f"{run_dir} is in use by another process training the same run; wait for it to "
            "finish (rerunning then skips or resumes it), or pass another hydra.run.dir"
        ) from None
    try:
        yield
    finally:
        lock.release()


def finished_run(
    run_dir: Path, run_config: dict, start_over: str | None = None, overwrite: bool = False
) -> RunRecord | None:
    """The finished run in `run_dir` that this configuration would repeat, if any.

    A finished run is never replaced unless `overwrite` (overwrite_finished=true) says so:
    one of other settings is refused, and so is one that `start_over` (the flag that would
    start it over: resume=false, ckpt_path=...) would replace. A record of a newer format is
    refused and left as it is; one that cannot be read counts as unfinished, so the run is
    done (or resumed) again. With `overwrite`, the finished record is deleted and None returned.
    """
    path = run_dir / METRICS_FILE
    if not path.exists():
        return None
    try:
        record = read_record(path, RunRecord)
    except NewerRecord as e:
        raise RunRefused(
            f"{e}. It is left as it is: rerun it with that version, or pass another "
            "hydra.run.dir (or hydra.sweep.dir)"
        ) from None
    except RecordError as e:
        log.warning("%s; training this run again (resuming from its checkpoint if any)", e)
        return None
    if overwrite:
        log.warning("overwrite_finished=true: discarding the finished run in %s", run_dir)
        path.unlink()
        return None
    keep = (
        "Pass another hydra.run.dir (or hydra.sweep.dir) to keep it, or overwrite_finished=true "
        "to discard it"
    )
    mismatches = config_mismatches(record.config, run_config)
    if mismatches:
        raise RunRefused(
            f"{run_dir} holds a finished run of other settings: " + "; ".join(mismatches)
            + f". {keep}, or rerun with its settings"
        )  # fmt: skip
    if start_over:
        raise RunRefused(
            f"{run_dir} holds a finished run, which {start_over} would train again and "
            f"replace. {keep}, or leave out {start_over} to reuse it (a larger "
            "trainer.max_epochs continues it)"
        )
    return record


@contextlib.contextmanager
def signals_stop(module: CIFARClassifier) -> Iterator[None]:
    """Turn SIGTERM and SIGINT into `Interrupted`: training stops where it is and the last
    complete checkpoint stays (a checkpoint being written is discarded). A handler installed
    before (a scheduler's) still runs first. Signals after the first are ignored while the
    run stops (pressing Ctrl-C twice stops it the same way); `ignore_stop_signals` keeps
    ignoring them while the caller records the interruption and exits."""
    received: list[int] = []
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}

    def stop(signum: int, frame: object) -> None:
        received.append(signum)
        if len(received) > 1:  # already stopping: a second Ctrl-C must not break the teardown
            return
        handler = previous[signum]
        if callable(handler) and handler is not signal.default_int_handler:
            handler(signum, frame)
        raise KeyboardInterrupt  # Lightning tears down and exits; caught below

    for s in STOP_SIGNALS:
        signal.signal(s, stop)
    try:
        yield
    except (KeyboardInterrupt, SystemExit) as e:
        if not received:
            raise
        raise Interrupted(received[0], module.history.epochs + 1) from e
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def ignore_stop_signals() -> None:
    """Ignore SIGTERM and SIGINT from now on: a process that is already stopping records its
    interruption and exits, without a second signal's traceback."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def train(
    cfg: DictConfig,
    run_dir: Path,
    *,
    experiment: str | None = None,
    overrides: Sequence[str] = (),
    concurrent_jobs: int = 1,
    job_number: int | None = None,
    callbacks: Sequence[Callback] = (),
    on_start: Callable[[], None] | None = None,
) -> RunRecord:
    """Run one configuration to the end in `run_dir` and return its record (metrics.json).

    `experiment` and `overrides` go into the record for the report; `concurrent_jobs` is how
    many runs share this machine (for the thread count); `job_number`, a sweep job's number,
    picks its GPU where several are visible (runtime.trainer_devices) and, with several jobs
    at once, prefixes its per-epoch log lines (no progress bar then); `callbacks` are added to the
    Trainer's own; `on_start` is called once the run directory is locked and will be trained
    in (the Hydra app saves the run's config files then).
    """
    validate_config(cfg)
    check_loggers(cfg.get("logger"))
    runtime.check_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    cfg = cfg.copy()
    cfg.data.root = str(resolve_root(cfg.data.root))
    run_config = OmegaConf.to_container(cfg, resolve=True)
    start_over = f"ckpt_path={cfg.ckpt_path}" if cfg.ckpt_path else None
    start_over = start_over or (None if cfg.resume else "resume=false")
    overwrite = bool(cfg.get("overwrite_finished"))
    with run_lock(run_dir):
        had_record = (run_dir / METRICS_FILE).exists()
        finished = finished_run(run_dir, run_config, start_over, overwrite)
        if had_record and not (run_dir / METRICS_FILE).exists():  # discarded (overwrite)
            cfg.resume = False  # nor is its checkpoint resumed
        if finished and finished.pruned:
            log.info("%s: this search trial was pruned after %d epochs; skipping it",
                     run_dir / METRICS_FILE, finished.epochs)  # fmt: skip
            return finished
        if finished and finished.epochs >= cfg.trainer.max_epochs:
            log.info("%s: this run already finished; skipping it", run_dir / METRICS_FILE)
            return finished
        if on_start:
            on_start()
        cfg.trainer.devices = runtime.trainer_devices(
            cfg.trainer.devices, cfg.trainer.accelerator, job_number, torch.cuda.device_count()
        )
        cfg.progress_bar_refresh = bar_refresh(cfg.progress_bar_refresh, concurrent_jobs)
        job = f"[job {job_number}] " if concurrent_jobs > 1 and job_number is not None else ""
        progress = EpochProgress(run_dir, log_epochs=cfg.progress_bar_refresh == 0, prefix=job)
        return _fit_and_test(cfg, run_dir, run_config, experiment, overrides, concurrent_jobs,
                             [*callbacks, progress])  # fmt: skip


def _fit_and_test(
    cfg: DictConfig,
    run_dir: Path,
    run_config: dict,
    experiment: str | None,
    overrides: Sequence[str],
    concurrent_jobs: int,
    callbacks: Sequence[Callback],
) -> RunRecord:
    started = time.perf_counter()
    threads = runtime.configure(cfg.compute, concurrent_jobs)
    L.seed_everything(cfg.seed, verbose=False)
    ckpt_path = checkpoint_to_resume(run_dir, run_config, cfg.resume, cfg.ckpt_path)
    datamodule = instantiate(cfg.data)
    net = instantiate(cfg.model)
    log.info("network (%s threads):\n%s", threads, layer_summary(net))
    module = CIFARClassifier(
        net,
        instantiate(cfg.optimizer),
        run_config,
        channels_last=cfg.compute.channels_last,
        compile=runtime.compile_setting(cfg.compute),
        scheduler=run_config["scheduler"],
        label_smoothing=cfg.loss.label_smoothing,
    )
    validating = module.eval_split == "val"
    trainer = build_trainer(
        cfg.trainer,
        run_dir,
        loggers=build_loggers(cfg.get("logger"), run_dir),
        callbacks=[*callbacks, HParamsSummary(experiment)],
        checkpoint_every_n_epochs=cfg.checkpoint_every_n_epochs,
        progress_bar_refresh=cfg.progress_bar_refresh,
        keep_best=validating,
    )
    with signals_stop(module):
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        history = module.history  # restored from the checkpoint when resuming
        if validating and history.val_recall_epochs[-1:] != [history.epochs]:
            trainer.validate(module, datamodule=datamodule, verbose=False)  # val_recall at the end
            for callback in trainer.callbacks:
                if isinstance(callback, BestCheckpoint):
                    callback.save_if_best(trainer, module)  # when the last epoch is the best
        trainer.test(module, datamodule=datamodule, verbose=False)
        at_best_val = None
        if validating:
            at_best_val = _test_best(cfg, run_dir, module, datamodule, module.test_results)

    sizes = {f"{split}_size": len(datamodule.arrays[f"{split}_y"]) for split in ("train", "test")}
    if "val_y" in datamodule.arrays:  # with data.val_size
        sizes["val_size"] = len(datamodule.arrays["val_y"])
    record = RunRecord(
        experiment=experiment,
        overrides=list(overrides),
        seed=cfg.seed,
        params=count_parameters(net),
        history=history,
        test=module.test_results,
        data=DataSummary(source=cfg.data.source, **sizes),
        environment=environment(
            trainer.strategy.root_device,  # the module is back on the CPU by now
            str(cfg.trainer.precision),
            threads,
            tf32=bool(cfg.compute.allow_tf32),
        ),
        wall_seconds_this_process=time.perf_counter() - started,
        config=run_config,
        at_best_val=at_best_val,
        pruned=any(isinstance(c, ReportToTrial) and c.pruned for c in callbacks),
    )
    _save_record(run_dir, record)
    (run_dir / FAILED_FILE).unlink(missing_ok=True)  # from an earlier attempt of this run
    held_out = record.val_recall
    best = record.at_best_val
    log.info(
        "%s%stest recall %.4f after %d epochs%s; wrote %s",
        "pruned: " if record.pruned else "",
        "" if held_out is None else f"validation recall {held_out:.4f}, ",
        record.test.recall,
        record.epochs,
        ""
        if best is None
        else f" ({best.test.recall:.4f} at epoch {best.epoch}, the best "
        f"validation recall {best.val_recall:.4f})",
        run_dir / METRICS_FILE,
    )
    return record


def _test_best(
    cfg: DictConfig,
    run_dir: Path,
    module: CIFARClassifier,
    datamodule: L.LightningDataModule,
    last: TestResults,
) -> AtBestVal | None:
    """The test results at the epoch of best validation recall: `last`'s when that is the last
    epoch, else those of checkpoints/best.ckpt, tested by a Trainer without loggers or
    callbacks (the run's logs and HParams hold the last epoch's); the module keeps the best
    epoch's weights afterwards. None, with a warning, when best.ckpt does not hold that epoch
    (a run resumed from another directory's `ckpt_path`): never another epoch's numbers."""
    history = module.history
    epoch, val_recall = best_validation(history)
    if epoch == history.epochs:
        return AtBestVal(epoch, val_recall, last)
    path = run_dir / BEST_CHECKPOINT
    try:
        checkpoint = read_checkpoint(path)
        problem = None if history_of(checkpoint).epochs == epoch else "holds another epoch"
    except ConfigError as e:
        problem = str(e)
    if problem:
        log.warning(
            "%s should hold epoch %d, the best validation recall, but %s; metrics.json gets no "
            "at_best_val (resume=false trains the run again with it)", path, epoch, problem
        )  # fmt: skip
        return None
    module.load_state_dict(checkpoint["state_dict"])
    build_trainer(cfg.trainer, run_dir).test(module, datamodule=datamodule, verbose=False)
    return AtBestVal(epoch, val_recall, module.test_results)


def _save_record(run_dir: Path, record: RunRecord) -> None:
    """Write metrics.json; ResultsNotSaved when the disk refuses it, saying what the run
    reached and where the trained network is (the final checkpoint: a rerun tests it and
    writes metrics.json without training again)."""
    path = run_dir / METRICS_FILE
    try:
        write_record(path, record)
    except OSError as e:
        checkpoint = run_dir / LAST_CHECKPOINT
        if checkpoint.is_file():
            where = (
                f"The trained network is in {checkpoint}: free space (or raise the file-size "
                "limit, ulimit -f) and rerun the same command; it tests that checkpoint and "
                f"writes {METRICS_FILE} without training again"
            )
        else:
            where = (
                "Its checkpoint could not be written either, so nothing a rerun could reuse is "
                "on disk: free space (or raise ulimit -f) and rerun to train it again"
            )
        raise ResultsNotSaved(
            f"training finished (test recall {record.test.recall:.4f}, accuracy "
            f"{record.test.accuracy:.4f} after {record.epochs} epochs), but {path} could not "
            f"be written ({e.strerror or e}). {where}"
        ) from e


def record_failure(
    run_dir: Path,
    error: BaseException,
    epoch: int | None,
    experiment: str | None = None,
    overrides: Sequence[str] = (),
) -> None:
    """Write failed.json so that sweeps and reports see the failure (or the interruption),
    not a missing run."""
    interrupted = isinstance(error, Interrupted)
    failure = Failure(
        error=f"{type(error).__name__}: {error}",
        epoch=epoch,
        overrides=list(overrides),
        experiment=experiment,
        signal=signal.Signals(error.signum).name if interrupted else None,
    )
    try:
        write_record(run_dir / FAILED_FILE, failure)
    except OSError as e:  # the disk that failed the run may refuse this too
        log.warning("could not write %s (%s)", run_dir / FAILED_FILE, e.strerror or e)
