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

from cifar_cnn.core.errors import Interrupted, RunRefused
from cifar_cnn.core.record import (
    DataSummary,
    Failure,
    RecordError,
    RunRecord,
    read_record,
    write_record,
)
from cifar_cnn.core.runfiles import FAILED_FILE, LOCK_FILE, METRICS_FILE
from cifar_cnn.training import runtime
from cifar_cnn.training.checkpoint import checkpoint_to_resume, config_mismatches
from cifar_cnn.training.config_checks import validate_config
from cifar_cnn.training.loggers import HParamsSummary, build_loggers
from cifar_cnn.training.model import count_parameters, layer_summary
from cifar_cnn.training.module import CIFARClassifier
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


def finished_run(run_dir: Path, run_config: dict) -> RunRecord | None:
    """The finished run in `run_dir` that this configuration would repeat, if any.

    A finished run of other settings is refused (its record is never rewritten); a record
    that cannot be read counts as unfinished, so the run is done (or resumed) again.
    """
    path = run_dir / METRICS_FILE
    if not path.exists():
        return None
    try:
        record = read_record(path, RunRecord)
    except RecordError as e:
        log.warning("%s; training this run again (resuming from its checkpoint if any)", e)
        return None
    mismatches = config_mismatches(record.config, run_config)
    if mismatches:
        raise RunRefused(
            f"{run_dir} holds a finished run of other settings: " + "; ".join(mismatches)
            + ". Pass another hydra.run.dir (or hydra.sweep.dir), or rerun with its settings"
        )  # fmt: skip
    return record


@contextlib.contextmanager
def signals_stop(module: CIFARClassifier) -> Iterator[None]:
    """Turn SIGTERM and SIGINT into `Interrupted`: training stops where it is and the last
    complete checkpoint stays (a checkpoint being written is discarded). A handler installed
    before (a scheduler's) still runs first."""
    received: list[int] = []
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}

    def stop(signum: int, frame: object) -> None:
        received.append(signum)
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
    picks its GPU where several are visible (runtime.trainer_devices); `callbacks` are added to the
    Trainer's own; `on_start` is called once the run directory is locked and will be trained
    in (the Hydra app saves the run's config files then).
    """
    validate_config(cfg)
    runtime.check_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    cfg = cfg.copy()
    cfg.data.root = str(Path(cfg.data.root).expanduser().resolve())
    run_config = OmegaConf.to_container(cfg, resolve=True)
    with run_lock(run_dir):
        finished = None if cfg.ckpt_path or not cfg.resume else finished_run(run_dir, run_config)
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
        return _fit_and_test(cfg, run_dir, run_config, experiment, overrides, concurrent_jobs,
                             callbacks)  # fmt: skip


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
    )
    trainer = build_trainer(
        cfg.trainer,
        run_dir,
        loggers=build_loggers(cfg.get("logger"), run_dir),
        callbacks=[*callbacks, HParamsSummary(experiment)],
        checkpoint_every_n_epochs=cfg.checkpoint_every_n_epochs,
        progress_bar_refresh=cfg.progress_bar_refresh,
    )
    with signals_stop(module):
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        history = module.history  # restored from the checkpoint when resuming
        if module.eval_split == "val" and history.val_recall_epochs[-1:] != [history.epochs]:
            trainer.validate(module, datamodule=datamodule, verbose=False)  # val_recall at the end
        trainer.test(module, datamodule=datamodule, verbose=False)

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
        pruned=any(isinstance(c, ReportToTrial) and c.pruned for c in callbacks),
    )
    write_record(run_dir / METRICS_FILE, record)
    (run_dir / FAILED_FILE).unlink(missing_ok=True)  # from an earlier attempt of this run
    held_out = record.val_recall
    log.info(
        "%s%stest recall %.4f after %d epochs; wrote %s",
        "pruned: " if record.pruned else "",
        "" if held_out is None else f"validation recall {held_out:.4f}, ",
        record.test.recall,
        record.epochs,
        run_dir / METRICS_FILE,
    )
    return record


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
    write_record(
        run_dir / FAILED_FILE,
        Failure(
            error=f"{type(error).__name__}: {error}",
            epoch=epoch,
            overrides=list(overrides),
            experiment=experiment,
            signal=signal.Signals(error.signum).name if interrupted else None,
        ),
    )
