import pytest
import torch
from hydra.utils import instantiate

from cifar_cnn.core.published import STUDY_ORDER
from cifar_cnn.core.record import DataSummary, RunRecord, read_record
from cifar_cnn.training.model import count_parameters
from cifar_cnn.training.run import train
from helpers import FAST, config, make_folder, run_cli


@pytest.mark.parametrize("name", STUDY_ORDER)
def test_every_experiment_composes_and_builds_its_model(name):
    cfg = config([f"experiment={name}"])
    model = instantiate(cfg.model)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    instantiate(cfg.optimizer)(model.parameters())


def test_experiments_are_diffs_against_their_parent_rows():
    best = config(["experiment=batchnorm"])
    assert best.model.filters == "large" and best.model.activation == "leaky_relu"
    assert best.model.dropout == 0.3 and best.model.batch_norm
    assert list(best.model.kernel_sizes) == [5, 3, 3] and best.data.batch_size == 64
    assert config(["experiment=big_batch"]).data.batch_size == 256
    assert config(["experiment=high_lr"]).optimizer.lr == 0.1
    assert config(["experiment=shuffle"]).data.shuffle is True
    default = config(["experiment=default"])
    assert count_parameters(instantiate(default.model)) == 256_058
    assert default.optimizer.momentum == 0.9 and default.data.shuffle is False


@pytest.mark.slow
def test_training_loss_falls_and_recall_rises(tmp_path):
    run_dir = tmp_path / "run"
    run_cli([*FAST, "trainer.max_epochs=4", f"hydra.run.dir={run_dir}"])
    metrics = read_record(run_dir / "metrics.json", RunRecord)
    losses = metrics.history.train_loss
    assert len(losses) == metrics.epochs == 4
    assert losses[-1] < 0.5 * losses[0]
    assert metrics.test.recall > 0.5
    assert metrics.history.test_recall_epochs == [1, 2, 3, 4]
    assert len(metrics.test.recall_per_class) == 10
    assert metrics.params == 256_058 and metrics.seed == 0
    assert metrics.history.train_seconds > 0
    # Lightning counts every SGD step, which periodic checkpoints rely on.
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 4 * (512 // 64)
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events, "TensorBoard events were not written into the run directory"


@pytest.mark.slow
def test_two_job_multirun_writes_two_metrics_files(tmp_path):
    sweep = tmp_path / "sweep"
    run_cli(
        [
            "-m",
            "model.filters=small,large",
            *FAST,
            "trainer.max_epochs=1",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    written = sorted(sweep.glob("*/metrics.json"))
    assert [p.parent.name for p in written] == [
        # progress_bar_refresh and trainer.accelerator do not change the result (core/keys.py),
        # so they are not in the name
        "0_data.source=synthetic,data.synthetic_test_size=200,data.synthetic_train_size=512,"
        "model.filters=small,optimizer.lr=0.1,trainer.gradient_clip_val=1.0,trainer.max_epochs=1",
        "1_data.source=synthetic,data.synthetic_test_size=200,data.synthetic_train_size=512,"
        "model.filters=large,optimizer.lr=0.1,trainer.gradient_clip_val=1.0,trainer.max_epochs=1",
    ]
    params = [read_record(p, RunRecord).params for p in written]
    assert params[0] == 256_058 and params[1] > params[0]


@pytest.mark.slow
def test_data_root_is_taken_from_the_launch_directory(tmp_path):
    make_folder(tmp_path / "imgs", per_class=2)
    run_cli(
        [
            *FAST,
            "data.source=folder",
            "data.root=imgs",
            "data.batch_size=10",  # 20 training images
            "trainer.max_epochs=1",
            "hydra.run.dir=out",
        ],
        cwd=tmp_path,
    )
    metrics = read_record(tmp_path / "out" / "metrics.json", RunRecord)
    assert metrics.data == DataSummary(source="folder", train_size=20, test_size=20)


def test_gradient_clipping_and_accumulation_are_trainer_options(tmp_path):
    cfg = config([*FAST, "trainer.accumulate_grad_batches=2", "trainer.max_epochs=3"])
    metrics = train(cfg, tmp_path)
    losses = metrics.history.train_loss
    assert metrics.config["trainer"]["gradient_clip_val"] == 1.0
    assert len(losses) == 3 and losses[-1] < losses[0]
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 3 * (512 // 64) // 2  # one SGD step per two batches
