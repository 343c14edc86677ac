"""Issue 23's input cases: the image cache notices changed pixels, long run names are
shortened, logger keys, output folders and storages are checked, memory refusals name the
key to change, and evaluation needs no training images."""

import errno
import os

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf
from PIL import Image

from cifar_cnn import report
from cifar_cnn.analysis import tables
from cifar_cnn.app import compose_config
from cifar_cnn.core.errors import ConfigError, DataError
from cifar_cnn.core.keys import NAME_BYTES, run_name
from cifar_cnn.training.config_checks import validate_config
from cifar_cnn.training.data import CIFAR10DataModule, load_arrays
from cifar_cnn.training.loggers import check_loggers
from cifar_cnn.training.run import train
from cifar_cnn.use.inference import evaluate
from helpers import FAST, config, make_folder, run_cli


def test_the_image_cache_notices_new_pixels_with_the_same_size_and_time(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=2)
    image = root / "test" / "cat" / "0000.bmp"  # BMP: the same size whatever the pixels
    (root / "test" / "cat" / "0000.png").unlink()
    Image.new("RGB", (32, 32), (10, 20, 30)).save(image)
    first = load_arrays("folder", root)
    stat = image.stat()
    Image.new("RGB", (32, 32), (200, 100, 0)).save(image)
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as cp -p or rsync -a keep it
    assert (image.stat().st_size, image.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    second = load_arrays("folder", root)
    index = [i for i, x in enumerate(first["test_x"]) if x[0, 0].tolist() == [10, 20, 30]]
    assert len(index) == 1
    assert second["test_x"][index[0], 0, 0].tolist() == [200, 100, 0]


def _run_dir(overrides, config_name="config"):
    cfg = compose_config(overrides, hydra_config=True, config_name=config_name)
    HydraConfig.instance().set_config(cfg)
    return str(cfg.hydra.run.dir)


def test_a_run_name_too_long_for_a_directory_is_shortened_and_stays_unique():
    long_a, long_b = (f"optimizer.lr=0.001{'0' * n}" for n in (300, 301))
    names = {run_name([long_a]), run_name([long_b]), run_name([long_a, "seed=1"])}
    assert len(names) == 3 and all(len(n.encode()) <= NAME_BYTES for n in names)
    assert run_name(["optimizer.lr=0.5"]) == "_optimizer.lr=0.5"  # short names unchanged
    assert run_name([f"model.filters=[{'é' * 200}]"]).encode().decode()  # cut between chars
    directory = _run_dir([long_a])
    assert len(os.path.basename(directory).encode()) <= 255
    assert os.path.basename(directory).split("_", 2)[2].startswith("optimizer.lr=0.0010")


def test_evaluations_started_in_the_same_second_get_their_own_folders():
    for app in ("evaluate", "predict"):
        overrides = ["ckpt_path=x.ckpt"] + (["images=a.png"] if app == "predict" else [])
        assert f"_{os.getpid()}" in _run_dir(overrides, app)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["+logger.tensorboard.nmae=x"], r"logger.tensorboard.nmae: no such key for Tensor"),
        (["logger=csv", "+logger.csv.flush_logs_every_n_steps=abc"], r"must be int"),
        (["logger=csv", "logger.csv._target_=nowhere.Logger"], r"cannot be imported"),
    ],
)
def test_unknown_or_mistyped_logger_keys_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_loggers(OmegaConf.to_container(config([*FAST, *overrides]).logger))


def test_logger_keys_their_logger_takes_pass():
    overrides = ["logger=many", "+logger.tensorboard.flush_secs=5"]
    assert len(check_loggers(OmegaConf.to_container(config([*FAST, *overrides]).logger))) == 2


def test_a_data_root_that_is_a_symlink_loop_is_named(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(DataError, match=r"data.root=.*loop cannot be resolved"):
        train(config([*FAST, "data.source=folder", f"data.root={loop}"]), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_memory_refusal_for_too_many_images_names_the_data_keys():
    message = r"for the images held in memory \(data.synthetic_train_size=99999999999"
    with pytest.raises(ConfigError, match=message):
        validate_config(config([*FAST, "data.synthetic_train_size=99999999999"]))


def test_evaluating_needs_no_training_images_but_training_does(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=1)
    for image in (root / "train").rglob("*.png"):
        image.unlink()
    data = CIFAR10DataModule(source="folder", root=str(root))
    data.setup("test")
    assert len(data.arrays["test_y"]) == 10 and len(data.arrays["train_y"]) == 0
    with pytest.raises(DataError, match=r"the class folders airplane, .* hold no images"):
        CIFAR10DataModule(source="folder", root=str(root)).setup("fit")


def test_a_report_that_cannot_be_written_says_so_and_keeps_the_previous_one(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    train(config(FAST), sweep / "0_seed=0", overrides=["seed=0"])
    report.main([str(sweep)])
    before = (sweep / "report" / "results.md").read_text()

    def full_disk(path, *args):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(tables, "write_csv", full_disk)
    with pytest.raises(SystemExit, match=r"the report could not be written .*No space left"):
        report.main([str(sweep)])
    assert (sweep / "report" / "results.md").read_text() == before


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hydra.run.dir={file}"], "hydra.run.dir={file} cannot be made: {file} is a file"),
        (["-m", "hydra.sweep.dir={file}/sweep"], "{file} is a file, not a folder"),
        (
            ["-m", "hparams_search=optuna", "hydra.sweep.dir={dir}",
             "hydra.sweeper.storage=postgresql+pg8000://nohost/db"],
            "hydra.sweeper.storage=postgresql+pg8000://nohost/db: the database driver is not "
            "installed (no module pg8000)",
        ),
        (
            ["-m", "hparams_search=optuna", "hydra.sweep.dir={dir}",
             "hydra.sweeper.storage=sqlite:///{file}/optuna.db"],
            "hydra.sweeper.storage=sqlite:///{file}/optuna.db: cannot make the folder {file}",
        ),
    ],
)  # fmt: skip
def test_output_folders_and_storages_that_cannot_be_made_are_named(tmp_path, args, message):
    paths = {"file": tmp_path / "a_file", "dir": tmp_path / "sweep"}
    paths["file"].write_text("not a folder")
    result = run_cli([*(a.format(**paths) for a in args), *FAST], check=False)
    assert result.returncode != 0 and message.format(**paths) in result.stdout, result.stdout
    assert "Traceback" not in result.stdout
    assert not paths["dir"].exists() or not any(paths["dir"].glob("*/metrics.json"))


def test_a_cache_file_replaced_by_hand_is_rebuilt_not_trained_on(tmp_path, caplog):
    root = make_folder(tmp_path / "imgs", per_class=1)
    first = load_arrays("folder", root)
    cache = root / "cifar_cnn_uint8.pt"
    stored = torch.load(cache, weights_only=True)
    stored["arrays"] = {"train_x": torch.zeros(1)}  # the right key, the wrong contents
    torch.save(stored, cache)
    again = load_arrays("folder", root)
    assert "is corrupt" in caplog.text and torch.equal(again["train_x"], first["train_x"])


def test_a_folder_inside_a_class_folder_is_named_as_left_out(tmp_path, caplog):
    root = make_folder(tmp_path / "imgs", per_class=1)
    (root / "train" / "cat" / "more").mkdir()
    Image.new("RGB", (32, 32)).save(root / "train" / "cat" / "more" / "x.png")
    assert len(load_arrays("folder", root)["train_y"]) == 10
    assert "left out 1 folders inside class folders (cat/more)" in caplog.text


class _EvaluateMidway(Callback):
    """Evaluates the run's checkpoint while the run is still training (after epoch 2)."""

    def __init__(self, run_dir, out_dir):
        self.run_dir, self.out_dir, self.records = run_dir, out_dir, []

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 2:  # the checkpoint of epoch 2 is in place
            ckpt = f"ckpt_path={self.run_dir / 'checkpoints' / 'last.ckpt'}"
            data = [o for o in FAST if o.startswith("data.")]
            cfg = compose_config([ckpt, *data, "trainer.accelerator=cpu"], config_name="evaluate")
            self.records.append(evaluate(cfg, self.out_dir))


def test_a_checkpoint_evaluated_while_its_run_trains_is_its_last_complete_one(tmp_path):
    midway = _EvaluateMidway(tmp_path / "run", tmp_path / "eval")
    (tmp_path / "eval").mkdir()
    record = train(config([*FAST, "trainer.max_epochs=3"]), tmp_path / "run", callbacks=[midway])
    assert record.epochs == 3 and [r.epochs for r in midway.records] == [2]
