"""Using what was trained: a checkpoint alone rebuilds its network, `evaluate` reproduces the
run's test numbers, `predict` labels image files; loggers are a config group; TensorBoard's
HParams dashboard gets every run."""

import csv
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from cifar_cnn.analysis.runs import read_run
from cifar_cnn.app import compose_config
from cifar_cnn.core.cifar10 import CLASSES
from cifar_cnn.core.errors import ConfigError, DataError
from cifar_cnn.core.record import DataSummary, EvalRecord, RunRecord, read_record
from cifar_cnn.training.checkpoint import checkpoint_to_resume, load_classifier
from cifar_cnn.training.data import normalise
from cifar_cnn.training.loggers import build_loggers
from cifar_cnn.training.module import CIFARClassifier
from cifar_cnn.training.run import train
from cifar_cnn.use.inference import evaluate, find_images, predict, read_image
from helpers import FAST, config, run_cli

# Batch norm and dropout make evaluation mode matter; two epochs leave the recall short of 1,
# so matching it exactly means something.
TRAINED = [*FAST, "model.batch_norm=true", "model.dropout=0.3", "optimizer.lr=0.01"]
DATA = [o for o in FAST if o.startswith("data.")]  # the test set the run was tested on


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, RunRecord]:
    """A finished two-epoch run: its directory and its record."""
    run_dir = tmp_path_factory.mktemp("run")
    return run_dir, train(config(TRAINED), run_dir)


def checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.ckpt"


def evaluate_config(overrides: list[str]):
    return compose_config([*overrides, "trainer.accelerator=cpu"], config_name="evaluate")


def predict_config(overrides: list[str]):
    return compose_config([*overrides, "trainer.accelerator=cpu"], config_name="predict")


def write_photos(folder: Path) -> Path:
    """PNG and JPEG images of other sizes, grey, RGBA (in a subfolder), a 32x32 RGB PNG, text."""
    rng = np.random.default_rng(0)
    (folder / "sub").mkdir(parents=True)
    pixels = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
    Image.fromarray(pixels[:32, :32, :3]).save(folder / "a_rgb32.png")
    Image.fromarray(pixels[:40, :56, :3]).save(folder / "b_wide.jpg")
    Image.fromarray(pixels[:20, :20, 0], "L").save(folder / "c_grey.png")
    Image.fromarray(pixels, "RGBA").save(folder / "sub" / "d_rgba.png")
    (folder / "notes.txt").write_text("not an image\n")
    return folder


def test_evaluate_gives_the_runs_test_numbers_exactly(trained, tmp_path):
    run_dir, metrics = trained
    assert 0.2 < metrics.test.recall < 0.99
    results = evaluate(evaluate_config([f"ckpt_path={checkpoint(run_dir)}", *DATA]), tmp_path)
    assert read_record(tmp_path / "eval.json", EvalRecord) == results
    assert results.test == metrics.test
    assert results.ckpt_path == str(checkpoint(run_dir).resolve())
    assert results.epochs == metrics.epochs == 2
    assert results.data == DataSummary(source="synthetic", test_size=200)
    assert results.config == metrics.config


def test_a_checkpoint_alone_rebuilds_the_trained_network(trained):
    run_dir, _ = trained
    saved = torch.load(checkpoint(run_dir), weights_only=False)
    module = CIFARClassifier.load_from_checkpoint(checkpoint(run_dir)).eval()
    assert load_classifier(checkpoint(run_dir)).history == trained[1].history
    # Only resuming restores the training RNG state; loading leaves the process's alone.
    assert not torch.equal(torch.get_rng_state(), saved["cifar_cnn"]["torch_rng"])
    state = saved["state_dict"]
    net = instantiate(config(TRAINED).model).eval()
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k[:4] == "net."})
    generator = torch.Generator().manual_seed(5)
    images = normalise(
        torch.randint(0, 256, (16, 32, 32, 3), dtype=torch.uint8, generator=generator)
    )
    with torch.no_grad():
        logits = module(images)
        assert torch.equal(logits, net(images))
        assert torch.allclose(module.predict_step((images, None), 0), logits.softmax(dim=1))


def test_predict_labels_every_image_and_gives_unreadable_files_an_error(trained, tmp_path, caplog):
    run_dir, _ = trained
    photos = write_photos(tmp_path / "photos")
    overrides = [f"ckpt_path={checkpoint(run_dir)}", f"images={photos}", "top_k=10"]
    with caplog.at_level(logging.WARNING, logger="cifar_cnn"):
        rows = predict(predict_config([*overrides, "batch_size=2"]), tmp_path)
    with open(tmp_path / "predictions.csv", newline="") as f:
        written = list(csv.DictReader(f))
    names = ["a_rgb32.png", "b_wide.jpg", "c_grey.png", "notes.txt", "d_rgba.png"]
    assert [Path(r["path"]).name for r in written] == [Path(r["path"]).name for r in rows] == names
    assert list(written[0])[:5] == ["path", "prediction", "probability", "top1", "top1_probability"]

    text = written.pop(3)
    assert text["error"].startswith("not a readable image") and text["prediction"] == ""
    module = load_classifier(checkpoint(run_dir)).eval()
    images = torch.stack([read_image(Path(r["path"]))[0] for r in written])
    with torch.no_grad():
        expected = module(normalise(images)).argmax(dim=1)
    for row, label in zip(written, expected, strict=True):
        assert row["error"] == ""
        assert row["prediction"] == row["top1"] == CLASSES[label]
        assert float(row["probability"]) == float(row["top1_probability"])
        probabilities = [float(row[f"top{i}_probability"]) for i in range(1, 11)]
        assert sum(probabilities) == pytest.approx(1, abs=1e-4)
        assert probabilities == sorted(probabilities, reverse=True)
        assert sorted(row[f"top{i}"] for i in range(1, 11)) == sorted(CLASSES)

    warnings = [r.getMessage() for r in caplog.records if "resized to 32x32" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("3 of 4 images")


def test_images_are_converted_to_32x32_rgb_and_a_32x32_rgb_png_is_kept_as_it_is(tmp_path):
    photos = write_photos(tmp_path / "photos")
    image, changed = read_image(photos / "a_rgb32.png")
    assert not changed
    assert torch.equal(image, torch.from_numpy(np.array(Image.open(photos / "a_rgb32.png"))))
    for name in ("b_wide.jpg", "c_grey.png", "sub/d_rgba.png"):
        image, changed = read_image(photos / name)
        assert changed and image.shape == (32, 32, 3) and image.dtype == torch.uint8
    with pytest.raises(DataError, match="not a readable image"):
        read_image(photos / "notes.txt")


def test_images_may_be_files_folders_or_a_list_and_missing_or_empty_ones_are_named(tmp_path):
    photos = write_photos(tmp_path / "photos")
    (photos / ".hidden.png").write_bytes(b"")
    assert find_images(photos / "b_wide.jpg") == [photos / "b_wide.jpg"]
    listed = find_images([str(photos / "notes.txt"), str(photos / "sub")])
    assert listed == [photos / "notes.txt", photos / "sub" / "d_rgba.png"]
    assert len(find_images(str(photos))) == 5
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"images=.*empty: the folder .* holds no files"):
        find_images(str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"images=.*nowhere.jpg: no such file or folder"):
        find_images([str(photos), str(tmp_path / "nowhere.jpg")])


def test_a_missing_or_unreadable_checkpoint_is_refused_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="ckpt_path is required"):
        evaluate(evaluate_config(DATA), tmp_path)
    with pytest.raises(ConfigError, match="images is required"):
        predict(predict_config([f"ckpt_path={tmp_path}"]), tmp_path)
    missing = tmp_path / "gone.ckpt"
    with pytest.raises(ConfigError, match=rf"ckpt_path={missing}: no such checkpoint file"):
        evaluate(evaluate_config([f"ckpt_path={missing}", *DATA]), tmp_path)
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match=rf"ckpt_path={junk}: not a readable cifar_cnn"):
        predict(predict_config([f"ckpt_path={junk}", f"images={junk}"]), tmp_path)
    with pytest.raises(ConfigError, match="is a folder; pass a checkpoint file"):
        load_classifier(tmp_path)
    with pytest.raises(ConfigError, match="top_k=0 must be"):
        predict(predict_config([f"ckpt_path={junk}", f"images={junk}", "top_k=0"]), tmp_path)


def test_logger_csv_writes_its_metrics_and_report_and_resume_do_not_need_tensorboard(tmp_path):
    cfg = config([*FAST, "trainer.max_epochs=1", "logger=csv"])
    metrics = train(cfg, tmp_path)
    with open(tmp_path / "csv" / "metrics.csv", newline="") as f:
        logged = list(csv.DictReader(f))
    assert [float(r["train/loss"]) for r in logged if r.get("train/loss")] == pytest.approx(
        metrics.history.train_loss
    )
    assert not (tmp_path / "tensorboard").exists()
    run = read_run(tmp_path, tmp_path.name)
    assert run.status == "finished" and run.record.test.recall == metrics.test.recall
    # A run may continue under another logger: logger.* does not change the result.
    more = config([*FAST, "trainer.max_epochs=2", "logger=many"])
    run_config = OmegaConf.to_container(more, resolve=True)
    run_config["data"]["root"] = metrics.config["data"]["root"]
    assert checkpoint_to_resume(tmp_path, run_config, True, None) == str(checkpoint(tmp_path))


def test_several_loggers_each_get_the_run_and_tensorboard_its_confusion_matrix(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(config([*FAST, "trainer.max_epochs=1", "logger=[csv,tensorboard]"]), tmp_path)
    assert (tmp_path / "csv" / "metrics.csv").is_file()
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert "test/confusion_matrix" in events.Tags()["images"]  # TensorBoard is not first
    assert "test/final_recall" in events.Tags()["scalars"]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("tensorboard", ["TensorBoardLogger"]),
        ("many", ["TensorBoardLogger", "CSVLogger"]),
        ("[csv,tensorboard]", ["CSVLogger", "TensorBoardLogger"]),
    ],
)
def test_logger_choices_build_their_loggers_inside_the_run_directory(choice, expected, tmp_path):
    loggers = build_loggers(config([f"logger={choice}"]).logger, tmp_path)
    assert [type(logger).__name__ for logger in loggers] == expected
    for logger in loggers:
        assert Path(logger.log_dir).resolve().parent == tmp_path.resolve()
    assert build_loggers(None, tmp_path) == []


@pytest.mark.parametrize("name", ["wandb", "mlflow"])
def test_an_optional_logger_without_its_package_is_refused_clearly(name, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed
    message = rf"logger={name} needs the {name} package: pip install 'cifar_cnn\[{name}\]'"
    with pytest.raises(ConfigError, match=message):
        train(config([*FAST, f"logger={name}"]), tmp_path)
    assert not (tmp_path / "checkpoints").exists()  # refused before training


def hparams_sessions(logdir: Path) -> dict[str, dict]:
    """What TensorBoard's HParams dashboard lists: run -> its hyperparameters and metrics."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    events = EventMultiplexer()
    events.AddRunsFromDirectory(str(logdir))
    events.Reload()
    sessions = {}
    for run, tags in events.PluginRunToTagToContent("hparams").items():
        if "_hparams_/session_start_info" not in tags:
            continue
        start = HParamsPluginData.FromString(tags["_hparams_/session_start_info"])
        hparams = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
                   for k, v in start.session_start_info.hparams.items()}  # fmt: skip
        metrics = {t: events.Scalars(run, t)[-1].value for t in ("hp/test_recall",)}
        sessions[run] = {**hparams, **metrics}
    return sessions


def test_tensorboard_hparams_list_every_run_of_a_sweep_with_its_test_recall(trained, tmp_path):
    run_dir, metrics = trained
    (session,) = hparams_sessions(run_dir).values()
    assert session["hp/test_recall"] == pytest.approx(metrics.test.recall, abs=1e-6)
    assert session["model/batch_norm"] == "true" and session["model/dropout"] == 0.3
    assert session["model/kernel_sizes"] == "[5, 3, 3]" and session["model/filters"] == "small"
    assert session["optimizer/name"] == "SGD" and session["optimizer/lr"] == 0.01
    assert session["data/batch_size"] == 64 and session["data/shuffle"] == "false"
    assert session["scheduler/name"] == "none" and session["loss/label_smoothing"] == 0.0
    assert session["seed"] == 0 and session["trainer/max_epochs"] == 2
    assert session["experiment"] == "none"

    for seed in (0, 1):  # a two-job sweep
        cfg = config([*FAST, "trainer.max_epochs=1", f"seed={seed}"])
        train(cfg, tmp_path / f"{seed}_seed={seed}", experiment="default")
    sessions = hparams_sessions(tmp_path)
    assert sorted(sessions) == ["0_seed=0/tensorboard", "1_seed=1/tensorboard"]
    assert [s["seed"] for s in sessions.values()] == [0, 1]
    assert {s["experiment"] for s in sessions.values()} == {"default"}


@pytest.mark.slow
def test_evaluate_and_predict_run_from_the_command_line(trained, tmp_path):
    run_dir, metrics = trained
    ckpt = f"ckpt_path={checkpoint(run_dir)}"
    out = run_cli(
        [ckpt, *DATA, "trainer.accelerator=cpu", f"hydra.run.dir={tmp_path / 'eval'}"],
        module="cifar_cnn.evaluate",
    ).stdout
    results = read_record(tmp_path / "eval" / "eval.json", EvalRecord)
    assert results.test.recall == metrics.test.recall
    assert f"recall {metrics.test.recall:.4f}" in out and "airplane" in out

    photos = write_photos(tmp_path / "photos")
    images = f"images=[{photos / 'b_wide.jpg'},{photos / 'notes.txt'}]"
    out = run_cli(
        [ckpt, images, "trainer.accelerator=cpu", f"hydra.run.dir={tmp_path / 'pred'}"],
        module="cifar_cnn.predict",
    ).stdout
    assert "resized to 32x32" in out and "error: not a readable image" in out
    with open(tmp_path / "pred" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["path"]).name for r in rows] == ["b_wide.jpg", "notes.txt"]
    assert rows[0]["prediction"] in out

    refused = run_cli(
        [*DATA, "hydra.run.dir=x"], cwd=tmp_path, check=False, module="cifar_cnn.evaluate"
    )
    assert refused.returncode == 1 and "ckpt_path is required" in refused.stdout
    assert "Traceback" not in refused.stdout
    shown = run_cli(["--help"], module="cifar_cnn.predict").stdout
    assert "ckpt_path: ???" in shown and "top_k: 3" in shown
