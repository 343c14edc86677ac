"""Every key's type and range is checked before any data is read, for train, evaluate and
predict; unknown keys, the launcher's and sweeper's counts and networks too large for the
machine are refused with a message naming the key."""

import pytest
from omegaconf import OmegaConf

from cifar_cnn.app import compose_config
from cifar_cnn.core.errors import ConfigError
from cifar_cnn.training import config_checks
from cifar_cnn.training.config_checks import memory_need, validate_config, validate_launch
from helpers import FAST, REPO, config

GIB = 2**30


@pytest.fixture(scope="module")
def train_cfg():
    return config(FAST)


@pytest.fixture(scope="module")
def evaluate_cfg():
    return compose_config(["ckpt_path=model.ckpt"], config_name="evaluate")


@pytest.fixture(scope="module")
def predict_cfg():
    return compose_config(["ckpt_path=model.ckpt", "images=[a.png,b/]"], config_name="predict")


def changed(cfg, key, value):
    """A copy of `cfg` with `key` set as a command-line override would (adding new keys)."""
    cfg = cfg.copy()
    OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def test_the_shipped_configs_pass(train_cfg, evaluate_cfg, predict_cfg):
    validate_config(train_cfg)
    validate_config(config(["hparams_search=optuna", "experiment=high_lr"]))
    validate_config(evaluate_cfg, "evaluate")
    validate_config(predict_cfg, "predict")


@pytest.mark.parametrize(
    "experiment", sorted(p.stem for p in (REPO / "conf/experiment").glob("*.yaml"))
)
def test_every_published_experiment_passes(experiment):
    validate_config(config([f"experiment={experiment}"]))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        # strings that Python would read as true
        ("model.batch_norm", "no", r"model.batch_norm='no' must be true or false"),
        ("model.pool_before_relu", "off", r"model.pool_before_relu='off' must be true or false"),
        ("data.shuffle", "yes", r"data.shuffle='yes' must be true or false"),
        ("data.download", 1, r"data.download=1 must be true or false"),
        ("compute.channels_last", "maybe", r"compute.channels_last='maybe' must be true or"),
        ("compute.compile", "0", r"compute.compile='0' must be true or false"),
        ("resume", "no", r"resume='no' must be true or false"),
        ("trainer.benchmark", "nope", r"trainer.benchmark='nope' must be true or false"),
        ("trainer.deterministic", "maybe", r"trainer.deterministic='maybe' is unknown"),
        # whole numbers and their ranges
        ("trainer.accumulate_grad_batches", 0, r"accumulate_grad_batches=0 must be a positive"),
        ("trainer.check_val_every_n_epoch", 0, r"check_val_every_n_epoch=0 must be a positive"),
        ("trainer.max_epochs", 2.5, r"trainer.max_epochs=2.5 must be a positive whole number"),
        ("trainer.max_epochs", True, r"trainer.max_epochs=True must be a positive whole number"),
        ("trainer.num_sanity_val_steps", -2, r"num_sanity_val_steps=-2 must be a whole number"),
        ("data.split_seed", "abc", r"data.split_seed='abc' must be a whole number >= 0"),
        ("data.split_seed", -1, r"data.split_seed=-1 must be a whole number >= 0"),
        ("data.val_size", -5, r"data.val_size=-5 must be a whole number >= 0"),
        ("data.eval_batch_size", 0, r"data.eval_batch_size=0 must be a positive whole number"),
        ("data.synthetic_train_size", -10, r"synthetic_train_size=-10 must be a positive"),
        ("data.train_subset", 0, r"data.train_subset=0 must be a positive whole number"),
        ("seed", 2**32, r"seed=4294967296 must be a whole number >= 0 and < 4294967296"),
        ("compute.threads", 0, r"compute.threads=0 must be a positive whole number \(or null\)"),
        ("checkpoint_every_n_epochs", 0, r"checkpoint_every_n_epochs=0 must be a positive"),
        ("progress_bar_refresh", -1, r"progress_bar_refresh=-1 must be a whole number >= 0"),
        # numbers, choices and lists
        ("trainer.gradient_clip_val", -1.0, r"gradient_clip_val=-1.0 must be a number >= 0"),
        ("trainer.precision", "33", r"trainer.precision='33' is unknown; use one of 32-true"),
        ("trainer.accelerator", "tpu-ish", r"trainer.accelerator='tpu-ish' is unknown"),
        ("compute.compile_mode", "fast", r"compute.compile_mode='fast' is unknown"),
        ("optimizer.momentum", 1.5, r"optimizer.momentum=1.5 must be a number >= 0 and < 1"),
        ("optimizer.lr", "fast", r"optimizer.lr='fast' must be a number > 0"),
        ("optimizer.nesterov", "yes", r"optimizer.nesterov='yes' must be true or false"),
        ("model.leaky_slope", -0.1, r"model.leaky_slope=-0.1 must be a number >= 0"),
        ("model.hidden", [512, -1], r"model.hidden=\[512, -1\] contains -1"),
        ("model.filters", [24, 48, 96.5], r"model.filters=\[24, 48, 96.5\] contains 96.5"),
        ("model.kernel_sizes", [], r"model.kernel_sizes=\[\] must list one kernel size"),
        ("data.root", "", r"data.root='' must be text"),
    ],
)
def test_a_value_of_the_wrong_type_or_range_is_refused_naming_the_key(
    train_cfg, key, value, message
):
    with pytest.raises(ConfigError, match=message) as error:
        validate_config(changed(train_cfg, key, value), check_memory=False)
    assert "e.g." in str(error.value) or "must list" in str(error.value)  # an example


@pytest.mark.parametrize(
    ("key", "accepted"),
    [
        ("optimizer.momentun", "momentum"),  # the misspelling the issue names
        ("optimizer.betas", "weight_decay"),  # an Adam key given to SGD
        ("model.dropuot", "dropout"),
        ("data.batchsize", "batch_size"),
        ("compute.thread", "threads"),
        ("trainer.max_epoch", "max_epochs"),
    ],
)
def test_an_unknown_key_is_refused_naming_it_and_the_accepted_ones(train_cfg, key, accepted):
    with pytest.raises(ConfigError, match=rf"{key}: no such key .*accepted keys are .*{accepted}"):
        validate_config(changed(train_cfg, key, 0.9), check_memory=False)


def test_the_keys_of_another_optimizer_are_its_own(train_cfg):
    adam = changed(train_cfg, "optimizer._target_", "torch.optim.Adam")
    with pytest.raises(
        ConfigError, match=r"optimizer.momentum, optimizer.nesterov: no such key .* amsgrad, betas"
    ):
        validate_config(adam, check_memory=False)
    adam = config(
        [*FAST, "optimizer._target_=torch.optim.Adam", "~optimizer.momentum", "~optimizer.nesterov"]
    )
    validate_config(changed(adam, "optimizer.betas", [0.9, 0.99]), check_memory=False)


def test_keywords_of_the_trainer_and_the_optimizer_pass_through(train_cfg):
    cfg = changed(train_cfg, "trainer.limit_train_batches", 2)
    cfg = changed(cfg, "optimizer.maximize", False)
    validate_config(cfg, check_memory=False)
    validate_config(changed(train_cfg, "optimizer.lr", 1), check_memory=False)  # an int is fine


def test_the_command_line_value_no_is_refused_as_hydra_passes_it():
    cfg = config([*FAST, "model.batch_norm=no", "+optimizer.momentun=0.9"])
    assert cfg.model.batch_norm == "no"  # what Hydra hands over: a string, true to Python
    with pytest.raises(ConfigError, match=r"model.batch_norm='no' must be true or false"):
        validate_config(cfg)


def test_evaluate_checks_its_data_and_its_required_checkpoint(evaluate_cfg):
    bad = changed(evaluate_cfg, "data.eval_batch_size", -250)
    with pytest.raises(ConfigError, match=r"data.eval_batch_size=-250 must be a positive"):
        validate_config(bad, "evaluate")
    missing = compose_config([], config_name="evaluate")
    with pytest.raises(ConfigError, match=r"ckpt_path is required: .*e.g. ckpt_path=outputs"):
        validate_config(missing, "evaluate")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("top_k", 11, r"top_k=11 must be a whole number >= 1 and < 11"),
        ("top_k", "3", r"top_k='3' must be a whole number"),
        ("batch_size", 0, r"batch_size=0 must be a positive whole number"),
        ("images", [], r"images=\[\] must be a path or a list of paths"),
        ("trainer.precision", "fp8", r"trainer.precision='fp8' is unknown"),
    ],
)
def test_predict_checks_its_keys(predict_cfg, key, value, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(changed(predict_cfg, key, value), "predict")


@pytest.mark.parametrize(
    ("launcher", "sweeper", "message"),
    [
        ({"n_jobs": 0}, None, r"hydra.launcher.n_jobs=0 runs no job"),
        ({"n_jobs": "two"}, None, r"hydra.launcher.n_jobs='two' must be a whole number"),
        ({"array_parallelism": 0}, None, r"hydra.launcher.array_parallelism=0 must be a pos"),
        ({"timeout_min": -5}, None, r"hydra.launcher.timeout_min=-5 must be a positive"),
        (None, {"n_trials": 0}, r"hydra.sweeper.n_trials=0 must be a positive whole number"),
        (None, {"n_jobs": 0}, r"hydra.sweeper.n_jobs=0 must be a positive whole number"),
        (None, {"max_failure_rate": 1.5}, r"max_failure_rate=1.5 must be a number >= 0"),
    ],
)
def test_the_launchers_and_sweepers_counts_are_checked(launcher, sweeper, message):
    with pytest.raises(ConfigError, match=message):
        validate_launch(OmegaConf.create(launcher or {}), OmegaConf.create(sweeper or {}))


def test_usual_launcher_and_sweeper_counts_pass():
    validate_launch(OmegaConf.create({"n_jobs": -1}), None)  # joblib's "every CPU"
    validate_launch(None, OmegaConf.create({"max_failure_rate": 1.0}))  # every trial may fail
    hydra = compose_config(["hparams_search=optuna"], hydra_config=True).hydra
    validate_launch(hydra.launcher, hydra.sweeper)


def test_the_memory_estimate_grows_with_the_network_and_the_batch(train_cfg):
    model = OmegaConf.to_container(train_cfg.model)
    study = memory_need(model, batch_size=64, eval_batch_size=250, images=60_000)
    assert 50 * 2**20 < study < GIB  # the study's network: a few hundred MB at most
    assert memory_need(model, 256, 250, 60_000) > study
    huge = memory_need(model | {"filters": [100_000, 48, 96]}, 64, 250, 60_000)
    assert huge > 20 * GIB  # the case that grew to 23 GB and was killed


def test_a_network_too_large_for_the_machine_is_refused_naming_the_keys(train_cfg, monkeypatch):
    monkeypatch.setattr(config_checks, "available_memory", lambda accelerator: (8 * GIB, "host"))
    validate_config(train_cfg)  # the study's network fits in 8 GiB
    wide = changed(train_cfg, "model.hidden", [10**8])  # parameters, not activations
    with pytest.raises(ConfigError, match=r"needs about \d+\.\d GiB .*model.hidden=\[100000000\]"):
        validate_config(wide)
    huge = changed(train_cfg, "model.filters", [100_000, 48, 96])
    with pytest.raises(ConfigError, match=r"needs about \d+\.\d GiB \(model.filters=\[100000"):
        validate_config(huge)
    validate_config(huge, check_memory=False)  # every other check passes


def test_the_available_memory_is_read_from_the_machine():
    free, where = config_checks.available_memory("cpu")
    assert free is None or free > 0
    assert where
