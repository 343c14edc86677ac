"""The GPU path, checked on a CPU: TF32 and exact-mode switches, which GPU a sweep job takes,
accumulators that survive `-true` precisions, no host synchronisation in the middle of an
epoch, one device for every tensor a step touches, and the opt-in speed levers (docs/gpu.md)."""

import os
import traceback

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils._python_dispatch import TorchDispatchMode

from cifar_cnn.core.errors import ConfigError
from cifar_cnn.training import runtime
from cifar_cnn.training.data import TensorBatches
from cifar_cnn.training.module import CIFARClassifier
from cifar_cnn.training.run import train
from helpers import FAST, config

# Ops whose result the host must wait for on a GPU: a scalar read (`.item()`, `float(t)`,
# `bool(t)`, `if t:`) and ops whose output size depends on the data.
SYNCING_OPS = {
    "_local_scalar_dense",
    "nonzero",
    "masked_select",
    "_unique2",
    "unique_consecutive",
    "unique_dim",
    "equal",
}
# Tensor methods that copy to the host without a dispatched op on a CPU tensor.
HOST_COPIES = ("tolist", "numpy", "cpu")
EXPERIMENTS = ["default", "batchnorm", "dropout", "shuffle"]


@pytest.fixture(autouse=True)
def _restore_torch_flags():
    """configure() sets process-wide flags; put them back for the other tests."""
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        torch.get_num_threads(),
    )
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
    torch.set_float32_matmul_precision(saved[2])
    torch.use_deterministic_algorithms(saved[3], warn_only=saved[4])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[5:7]
    if saved[7] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[7]
    torch.set_num_threads(saved[8])


# --- switches ---------------------------------------------------------------------------------
@pytest.mark.parametrize("allow", [False, True])
def test_allow_tf32_sets_matmuls_and_convolutions_alike(allow):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not allow
    runtime.configure(
        config([f"compute.allow_tf32={str(allow).lower()}", "compute.threads=1"]).compute
    )
    assert torch.backends.cuda.matmul.allow_tf32 is allow
    assert torch.backends.cudnn.allow_tf32 is allow
    assert torch.get_float32_matmul_precision() == ("high" if allow else "highest")


def test_the_default_config_is_fp32_on_a_gpu():
    compute = config().compute
    assert compute.allow_tf32 is False
    runtime.configure(compute)
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32


@pytest.mark.parametrize("exact", [False, True])
def test_exact_is_one_switch_that_the_trainer_keeps(exact):
    os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    cfg = config([*FAST, f"compute.exact={str(exact).lower()}", "compute.threads=1"])
    runtime.configure(cfg.compute)
    instantiate(cfg.trainer, logger=False, enable_checkpointing=False)  # sets torch flags too
    assert torch.are_deterministic_algorithms_enabled() is exact
    assert torch.is_deterministic_algorithms_warn_only_enabled() is exact
    assert torch.backends.cudnn.deterministic is exact
    assert torch.backends.cudnn.benchmark is not exact
    assert (os.environ.get("CUBLAS_WORKSPACE_CONFIG") == runtime.CUBLAS_WORKSPACE) is exact


def test_compile_settings_are_checked_naming_the_key():
    def setting(**keys):
        return runtime.compile_setting(OmegaConf.create({"compile": False, **keys}))

    assert setting() is False
    assert setting(compile=True) is True
    assert setting(compile=True, compile_mode="reduce-overhead") == "reduce-overhead"
    with pytest.raises(ConfigError, match="compute.compile_mode='fast'"):
        setting(compile=True, compile_mode="fast")
    with pytest.raises(ConfigError, match="compute.compile=true"):
        setting(compile_mode="reduce-overhead")


def test_sweep_jobs_go_round_the_visible_gpus():
    assert [runtime.device_for_job(job, 3) for job in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert runtime.device_for_job(5, 1) == 0
    with pytest.raises(ValueError, match="no GPU"):
        runtime.device_for_job(0, 0)
    assert runtime.trainer_devices(1, "auto", 5, 4) == [1]
    assert runtime.trainer_devices(1, "gpu", 2, 8) == [2]
    # one GPU, no sweep, a CPU run or devices chosen by the user: left as they are
    assert runtime.trainer_devices(1, "auto", 5, 1) == 1
    assert runtime.trainer_devices(1, "auto", None, 4) == 1
    assert runtime.trainer_devices(1, "cpu", 5, 4) == 1
    assert runtime.trainer_devices([3], "gpu", 5, 4) == [3]


# --- accumulators -----------------------------------------------------------------------------
class StepLosses(L.Callback):
    """The loss of every training step, read on the host (the test may wait for it)."""

    def __init__(self):
        self.losses: list[float] = []
        self.recorded: float | None = None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))

    def on_fit_end(self, trainer, module) -> None:
        self.recorded = float(trainer.callback_metrics["train/loss"])


class Batches(L.LightningDataModule):
    """782 training batches of one image, as many steps as an epoch of CIFAR-10 has."""

    def train_dataloader(self) -> TensorBatches:
        images = torch.randint(0, 256, (782, 32, 32, 3), dtype=torch.uint8)
        return TensorBatches(images, torch.arange(782) % 10, batch_size=1)


@pytest.mark.parametrize("precision", ["bf16-true", "16-true"])
def test_a_true_half_precision_records_the_mean_of_782_step_losses(precision):
    # A half-precision sum of ~2.3 per step stops growing near 1,000 (bf16's spacing there
    # is 4 or 8), which recorded the epoch's mean loss as about 1.3. A tiny network keeps the
    # 782 steps fast; the module, the Trainer and the precision plugin are the real ones.
    net = torch.nn.Sequential(
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 10)
    )
    cfg = config(FAST)
    module = CIFARClassifier(
        net, instantiate(cfg.optimizer, lr=1e-4), OmegaConf.to_container(cfg, resolve=True)
    )
    steps = StepLosses()
    trainer = L.Trainer(
        accelerator="cpu", precision=precision, max_epochs=1, limit_val_batches=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, callbacks=[steps],
    )  # fmt: skip
    trainer.fit(module, datamodule=Batches())
    assert len(steps.losses) == 782
    mean = sum(steps.losses) / len(steps.losses)
    assert mean > 1.9  # about ln(10) = 2.30: the network barely learns at this rate
    assert steps.recorded == pytest.approx(mean, rel=0.02)


# --- host synchronisations --------------------------------------------------------------------
class HostSyncs(TorchDispatchMode):
    """Records every op (and host copy) that makes the host wait for the device, with where
    in the project or in Lightning it was called from."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def record(self, what: str) -> None:
        frames = [
            f"{f.filename.rsplit('site-packages/', 1)[-1]}:{f.lineno} {f.name}"
            for f in traceback.extract_stack()[:-2]
            if "/torch/" not in f.filename and "pluggy" not in f.filename
        ]
        self.found.append(f"{what} at {' <- '.join(reversed(frames[-4:]))}")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in SYNCING_OPS:
            self.record(str(func))
        return func(*args, **(kwargs or {}))


class SyncWindow(L.Callback):
    """Counts host synchronisations over training steps [first, last] of epoch `epoch`."""

    def __init__(self, epoch: int, first: int, last: int, monkeypatch: pytest.MonkeyPatch):
        self.epoch, self.first, self.last = epoch, first, last
        self.mode = HostSyncs()
        self.steps = 0
        self.active = False
        for name in HOST_COPIES:
            method = getattr(torch.Tensor, name)

            def counted(tensor, *args, _method=method, _name=name, **kwargs):
                if self.active:
                    self.mode.record(f"Tensor.{_name}")
                return _method(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.first:
            self.mode.__enter__()
            self.active = True

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self.active:
            self.steps += 1
        if self.active and batch_idx == self.last:
            self.active = False
            self.mode.__exit__(None, None, None)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_no_step_in_the_middle_of_training_waits_for_the_host(experiment, tmp_path, monkeypatch):
    # 8 steps per epoch; steps 2-6 of the second epoch, through the real Trainer and data path.
    window = SyncWindow(epoch=1, first=2, last=6, monkeypatch=monkeypatch)
    cfg = config([*FAST, f"experiment={experiment}", "data.synthetic_test_size=50"])
    train(cfg, tmp_path, callbacks=[window])
    assert window.steps == 5, "the window of steps was not reached"
    assert window.mode.found == [], "\n".join(window.mode.found)


def test_the_sync_counter_sees_a_scalar_read():
    mode = HostSyncs()
    with mode:
        x = torch.ones(3)
        (x.sum() > 0).item()
        bool(x[0])
        x.nonzero()
    assert [f.split(" ")[0] for f in mode.found] == [
        "aten._local_scalar_dense.default",
        "aten._local_scalar_dense.default",
        "aten.nonzero.default",
    ]


# --- device placement -------------------------------------------------------------------------
class Devices(TorchDispatchMode):
    """The devices of every tensor that every op receives or returns."""

    def __init__(self):
        super().__init__()
        self.seen: dict[str, set[str]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        flat = torch.utils._pytree.tree_leaves((args, kwargs, out))
        for t in flat:
            if isinstance(t, torch.Tensor):
                self.seen.setdefault(t.device.type, set()).add(str(func))
        return out


@pytest.mark.parametrize("experiment", ["default", "batchnorm", "dropout"])
def test_every_tensor_a_step_touches_is_on_the_modules_device(experiment):
    # On the meta device (no data, no arithmetic), a tensor made without device= lands on the
    # CPU, where a GPU run would copy it every step or fail.
    cfg = config([*FAST, f"experiment={experiment}"])
    run_config = OmegaConf.to_container(cfg, resolve=True)
    module = CIFARClassifier(instantiate(cfg.model), instantiate(cfg.optimizer), run_config)
    module.to("meta")
    optimizer = module.configure_optimizers()
    images = torch.empty(8, 3, 32, 32, device="meta").to(memory_format=torch.channels_last)
    labels = torch.empty(8, dtype=torch.long, device="meta")
    devices = Devices()
    with devices:
        module.train()
        module.on_train_epoch_start()
        for step in range(2):
            loss = module.training_step((images, labels), step)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        module.eval()
        module.on_validation_epoch_start()
        with torch.no_grad():
            module.validation_step((images, labels), 0)
    assert set(devices.seen) == {"meta"}, {d: sorted(ops)[:5] for d, ops in devices.seen.items()}


# --- opt-in speed levers ----------------------------------------------------------------------
class Results(L.Callback):
    """Every training step's loss and the final test recall, as the Trainer logged them."""

    def __init__(self):
        self.losses: list[float] = []
        self.test_recall: float | None = None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))

    def on_test_end(self, trainer, module) -> None:
        self.test_recall = float(trainer.callback_metrics["test/final_recall"])


def run_with(run_dir, overrides: list[str]) -> Results:
    results = Results()
    train(config([*FAST, *overrides]), run_dir, callbacks=[results])
    return results


def test_drop_last_leaves_out_only_the_short_batch():
    images = torch.zeros(3 * 64 + 16, 32, 32, 3, dtype=torch.uint8)
    labels = torch.arange(len(images)) % 10
    assert [len(y) for _, y in TensorBatches(images, labels, 64)] == [64, 64, 64, 16]
    dropped = TensorBatches(images, labels, 64, drop_last=True)
    assert len(dropped) == 3 and [len(y) for _, y in dropped] == [64, 64, 64]
    # CIFAR-10: 50,000 = 781 x 64 + 16
    assert len(TensorBatches(images, torch.zeros(50_000), 64, drop_last=True)) == 781


def test_the_gpu_levers_train_the_same_numbers(tmp_path):
    # 512 images are 8 full batches, so drop_last drops nothing here; the evaluation batch
    # size and the checkpoint cadence change nothing in training.
    base = run_with(tmp_path / "base", [])
    levers = run_with(
        tmp_path / "levers",
        ["data.drop_last=true", "data.eval_batch_size=64", "checkpoint_every_n_epochs=2"],
    )
    assert len(base.losses) == 16 and levers.losses == base.losses
    # other evaluation batches may round a logit differently: a few of 200 images at most
    assert levers.test_recall == pytest.approx(base.test_recall, abs=0.02)


def test_compile_mode_reaches_torch_compile_and_trains_the_same(tmp_path, monkeypatch):
    modes = []
    compile_module = torch.nn.Module.compile

    def with_eager_backend(self, *args, mode=None, **kwargs):
        # TorchDynamo without inductor: seconds on a CPU where inductor takes minutes (with
        # inductor, reduce-overhead trained the same losses to the last digit on this CPU).
        modes.append(mode)
        compile_module(self, *args, backend="eager", **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", with_eager_backend)
    base = run_with(tmp_path / "base", ["data.drop_last=true"])
    compiled = run_with(
        tmp_path / "compiled",
        ["data.drop_last=true", "compute.compile=true", "compute.compile_mode=reduce-overhead"],
    )
    assert modes == ["reduce-overhead"]
    assert compiled.losses == pytest.approx(base.losses, rel=1e-4)
