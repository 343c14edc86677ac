"""Using a trained checkpoint: test it on a data set (`evaluate`) or label image files
(`predict`). No Hydra state: the apps `cifar_cnn.evaluate` and `cifar_cnn.predict` pass their
composed config and run directory, and so do the tests.

The network is rebuilt from the checkpoint alone (its hyperparameters hold the run's resolved
config). Evaluation runs the module's own test loop on the data module, so a finished run's
`last.ckpt` tested on the same data gives exactly the recall in its `metrics.json`.
"""

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor

from cifar_cnn.core.cifar10 import CLASSES, IMAGE_SIZE
from cifar_cnn.core.errors import ConfigError, DataError
from cifar_cnn.core.record import DataSummary, EvalRecord, write_record
from cifar_cnn.core.runfiles import EVAL_FILE, PREDICTIONS_FILE
from cifar_cnn.training import runtime
from cifar_cnn.training.checkpoint import EXAMPLE, load_classifier
from cifar_cnn.training.config_checks import validate_config
from cifar_cnn.training.data import TensorBatches
from cifar_cnn.training.images import read_rgb
from cifar_cnn.training.module import CIFARClassifier
from cifar_cnn.training.provenance import environment
from cifar_cnn.training.trainer import build_trainer

log = logging.getLogger("cifar_cnn")


def required(cfg: DictConfig, key: str, example: str) -> object:
    """`cfg[key]`, or a ConfigError naming the key when it is missing (`???`), null or empty."""
    if OmegaConf.is_missing(cfg, key) or cfg.get(key) in (None, "", []):
        raise ConfigError(f"{key} is required: pass it on the command line, e.g. {example}")
    return cfg[key]


# --- evaluate -----------------------------------------------------------------------------
def evaluate(cfg: DictConfig, run_dir: Path) -> EvalRecord:
    """Test the checkpoint `cfg.ckpt_path` on the test set of `cfg.data`; write and return
    its record (eval.json: the test results, the checkpoint and its epoch count, the data, the
    environment and the checkpoint's run config)."""
    ckpt_path = required(cfg, "ckpt_path", EXAMPLE)
    validate_config(cfg, "evaluate")
    threads = runtime.configure(cfg.compute)
    module = load_classifier(ckpt_path)
    datamodule = instantiate(cfg.data)
    trainer = build_trainer(cfg.trainer, run_dir)
    trainer.test(module, datamodule=datamodule, verbose=False)
    source = cfg.data.source
    device = trainer.strategy.root_device
    record = EvalRecord(
        ckpt_path=str(Path(ckpt_path).expanduser().resolve()),
        epochs=module.history.epochs,
        test=module.test_results,
        data=DataSummary(
            source=source,
            test_size=len(datamodule.arrays["test_y"]),
            root=None if source == "synthetic" else str(Path(cfg.data.root).resolve()),
        ),
        environment=environment(
            device, str(cfg.trainer.precision), threads, tf32=bool(cfg.compute.allow_tf32)
        ),
        config=module.hparams.get("run_config"),
    )
    write_record(run_dir / EVAL_FILE, record)
    per_class = "\n".join(
        f"  {name:<11}{recall:.4f}" for name, recall in record.test.recall_per_class.items()
    )
    log.info(
        "%s (%d epochs) on %d %s test images: recall %.4f, accuracy %.4f; wrote %s\n"
        "  class      recall\n%s",
        record.ckpt_path,
        record.epochs,
        record.data.test_size,
        source,
        record.test.recall,
        record.test.accuracy,
        run_dir / EVAL_FILE,
        per_class,
    )
    return record


# --- predict ------------------------------------------------------------------------------
def find_images(images: str | Path | Sequence[str | Path]) -> list[Path]:
    """The files `images` names: files, folders (searched recursively, hidden files left out)
    or a list of both, in that order. A missing path or an empty folder is a DataError."""
    entries = [images] if isinstance(images, str | Path) else list(images)
    files: list[Path] = []
    for entry in entries:
        path = Path(str(entry)).expanduser()
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and not any(n.startswith(".") for n in p.relative_to(path).parts)
            )
            if not found:
                raise DataError(f"images={entry}: the folder {path.absolute()} holds no files")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"images={entry}: no such file or folder ({path.absolute()})")
    return files


def read_image(path: Path) -> tuple[Tensor, bool]:
    """One image file as uint8 (32, 32, 3) RGB, and whether it had to be converted or resized.

    Any size and mode of the formats Pillow reads (PNG, JPEG, WebP, GIF, BMP, TIFF; grey,
    palette, alpha, CMYK, 16-bit), EXIF orientation applied: converted to RGB, then resized
    to 32x32 with antialiasing. DataError if it is not such an image.
    """
    return read_rgb(path, IMAGE_SIZE)


def predict_probabilities(
    module: CIFARClassifier, images: Tensor, trainer: L.Trainer, batch_size: int
) -> Tensor:
    """Class probabilities (N, 10) of uint8 (N, 32, 32, 3) images: normalised and batched as in
    training, run through the module's `predict_step` on the Trainer's device."""
    batches = TensorBatches(images, torch.arange(len(images)), batch_size)
    outputs = trainer.predict(module, dataloaders=batches)
    return torch.cat([p.float().cpu() for p in outputs])


def prediction_columns(top_k: int) -> list[str]:
    """predictions.csv's columns."""
    ranked = [c for i in range(1, top_k + 1) for c in (f"top{i}", f"top{i}_probability")]
    return ["path", "prediction", "probability", *ranked, "error"]


def _row(path: Path, probabilities: Tensor, top_k: int) -> dict:
    values, indices = probabilities.topk(top_k)
    row = {"path": str(path), "prediction": CLASSES[indices[0]], "probability": values[0]}
    for i, (value, index) in enumerate(zip(values, indices, strict=True), start=1):
        row |= {f"top{i}": CLASSES[index], f"top{i}_probability": value}
    return {k: round(v.item(), 6) if isinstance(v, Tensor) else v for k, v in row.items()}


def format_predictions(rows: list[dict], top_k: int) -> str:
    """The rows as a plain-text table: path, prediction, probability, the top k (or the error)."""
    width = max(len("image"), *(len(r["path"]) for r in rows))
    lines = [f"{'image':<{width}}  {'prediction':<10}  {'prob.':>6}  top {top_k}"]
    for r in rows:
        if r.get("error"):
            lines.append(f"{r['path']:<{width}}  {'-':<10}  {'-':>6}  error: {r['error']}")
            continue
        ranked = ", ".join(
            f"{r[f'top{i}']} {r[f'top{i}_probability']:.3f}" for i in range(1, top_k + 1)
        )
        lines.append(
            f"{r['path']:<{width}}  {r['prediction']:<10}  {r['probability']:>6.3f}  {ranked}"
        )
    return "\n".join(lines)


def predict(cfg: DictConfig, run_dir: Path) -> list[dict]:
    """Label the image files `cfg.images` with the checkpoint `cfg.ckpt_path`.

    Writes predictions.csv (path, prediction, probability, top-k classes and probabilities,
    error) into `run_dir`, logs the same as a table, and returns the rows. A file that is not
    an image gets a row with its error; the others are predicted.
    """
    ckpt_path = required(cfg, "ckpt_path", EXAMPLE)
    images_arg = required(cfg, "images", "images=photo.jpg, images=photos/ or 'images=[a.png,b/]'")
    validate_config(cfg, "predict")
    top_k, batch_size = cfg.top_k, cfg.batch_size
    if isinstance(images_arg, ListConfig):
        images_arg = list(images_arg)
    files = find_images(images_arg)
    runtime.configure(cfg.compute)
    module = load_classifier(ckpt_path)

    images, errors, converted = [], {}, 0
    for path in files:
        try:
            image, changed = read_image(path)
        except DataError as e:
            errors[path] = str(e)
            continue
        images.append(image)
        converted += changed
    if converted:
        size = f"{IMAGE_SIZE}x{IMAGE_SIZE}"
        log.warning(
            "%d of %d images were not %s RGB: they were converted to RGB and resized to %s, "
            "the network's input size (non-square images are stretched)",
            *(converted, len(images), size, size),
        )
    probabilities = iter(())
    if images:
        trainer = build_trainer(cfg.trainer, run_dir)
        stacked = torch.stack(images)
        probabilities = iter(predict_probabilities(module, stacked, trainer, batch_size))
    rows = [
        {"path": str(path), "error": errors[path]}
        if path in errors
        else _row(path, next(probabilities), top_k)
        for path in files
    ]

    out = run_dir / PREDICTIONS_FILE
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=prediction_columns(top_k), restval="")
        writer.writeheader()
        writer.writerows(rows)
    log.info(
        "%d of %d files predicted, %d unreadable; wrote %s\n%s",
        len(images),
        len(files),
        len(errors),
        out,
        format_predictions(rows, top_k),
    )
    if not images:
        log.warning("none of the %d files is a readable image", len(files))
    return rows
