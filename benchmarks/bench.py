"""Training throughput: the study's pipeline vs cifar_cnn's training path vs a plain loop.

    python benchmarks/bench.py            # the full run (`make bench`): about 7 min on 2 cores
    python benchmarks/bench.py --quick    # a smoke run: about 40 s

For the default network (`experiment=default`) and the study's best (`experiment=batchnorm`)
it measures images/s of training steps (forward, backward, SGD step) with batch 64 in three
ways, each in a fresh process, alternating a b c a b c ... over several rounds:

  a  study     the study's pipeline as a plain loop: uint8 HWC images, per sample
               PIL -> ToTensor -> Normalize(0.5, 1) (what torchvision's CIFAR10 dataset does),
               a torch DataLoader (num_workers=0, batch 64, no shuffling), SGD lr 0.001
               momentum 0.9, `loss.item()` per step as in PyTorch's CIFAR-10 tutorial,
               the layers in the study's order (ReLU before max-pool), contiguous memory
               format, glibc malloc defaults, torch's default threads.
  b  cifar_cnn the project's path as a user runs it: the real Hydra config (compose), and
               `cifar_cnn.train.train(cfg)` itself (runtime settings, CIFAR10DataModule,
               CIFARClassifier, the Trainer from `build_trainer`), with one extra callback
               that reads the clock.
  c  plain     a plain PyTorch loop over the same device-resident batches (TensorBatches of
               the same data module), the same network, optimiser and runtime settings: the
               floor for (b), i.e. what the Lightning machinery costs.

Every measurement times `--steps` training steps after `--warmup` steps on the synthetic
data source with (warmup + steps) x 64 training images, so no data set is needed; the images
are CIFAR-shaped uint8 and the compute per step does not depend on their content. s/epoch is
50,000 / (images/s): training steps only (evaluation of the test set is not included).
Each window also records how many cores other processes used meanwhile (from /proc/stat); a
window disturbed by another job (> 0.25 cores) is measured once more and the less disturbed
attempt kept. Peak memory is the worker's ru_maxrss (CPU; it includes about 0.5 GB for
importing torch and the transient of generating the synthetic images) or
torch.cuda.max_memory_allocated (GPU); "RSS training" is the resident set at the window's end.

Start-up time is measured on the real CLI: `python -m cifar_cnn.train experiment=default
trainer.max_epochs=1 progress_bar_refresh=1` is launched and its progress bar read as it
prints; the time to the first "1/N" is launch to first training step done (the process is then
killed). It uses the cached CIFAR-10 (data/cifar-10-batches-py/cifar_cnn_uint8.pt) when there
is one, else the synthetic source (4,000 images, the config's default size).

Results: a table on stdout and JSON in benchmarks/results/<date>_<device>.json
(`..._quick.json` for --quick, `..._partial.json` for a run with --set or only some models or
modes, so that a side measurement does not replace the full one). On CUDA it also estimates
a 300-epoch run and the 10-experiment grid from the measured epoch times.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
RESULTS = ROOT / "benchmarks" / "results"
EPOCH_IMAGES = 50_000
TEST_IMAGES = 10_000
BATCH = 64
EPOCHS = 300
MODELS = {"default": "experiment=default", "batchnorm": "experiment=batchnorm"}
MODES = {
    "a": "study pipeline",
    "b": "cifar_cnn (Trainer)",
    "c": "plain loop, same tensors",
}
# CPU targets of the issue: images/s of (b) over (a), and (b) within 5 % of (c).
TARGETS_B_OVER_A = {"default": (2.0, 2.5), "batchnorm": (1.4, None)}
B_OVER_C_MIN = 0.95
# Which measured network stands in for each experiment of the grid (for the CUDA estimate):
# small-filter runs take the default network's time, large-filter runs the batchnorm one's.
GRID = {
    "default": "default",
    "extra_fc": "default",
    "filters": "batchnorm",
    "kernels": "batchnorm",
    "leaky_relu": "batchnorm",
    "dropout": "batchnorm",
    "batchnorm": "batchnorm",
    "big_batch": "batchnorm",
    "high_lr": "batchnorm",
    "shuffle": "batchnorm",
}
BUSY_LOAD = 0.8
# A window in which other processes used more than this many cores on average is "disturbed":
# it is measured again (up to --retries times) and the least disturbed attempt is kept.
DISTURBED_CORES = 0.25
CACHED_CIFAR = ROOT / "data" / "cifar-10-batches-py" / "cifar_cnn_uint8.pt"
SHARED_JPEG = ROOT.parent / "shared" / "data" / "cifar10-jpeg-20k.tar.gz"


# --- worker side ----------------------------------------------------------------------------
def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compose_config(model: str, overrides: list[str], hydra_config: bool = False):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF), job_name="bench"):
        return compose(
            "config", overrides=[MODELS[model], *overrides], return_hydra_config=hydra_config
        )


def data_overrides(train_size: int, test_size: int) -> list[str]:
    return [
        "data.source=synthetic",
        f"data.synthetic_train_size={train_size}",
        f"data.synthetic_test_size={test_size}",
    ]


def _machine_busy_seconds() -> float | None:
    """CPU-seconds the whole machine has been busy (all processes), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _rss_mib() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class Window:
    """Times steps [warmup, warmup + steps) of a loop: the clock starts before step `warmup`
    runs (its batch already fetched) and stops after step `warmup + steps - 1` has finished.

    It also records this process's CPU time and the CPU time the rest of the machine used
    meanwhile (`others_cores`): the latter says whether another job disturbed the window.
    """

    def __init__(self, warmup: int, steps: int, device):
        self.warmup, self.last, self.device = warmup, warmup + steps - 1, device
        self.t0 = self.t1 = None

    def before(self, step: int) -> None:
        if step == self.warmup:
            _sync(self.device)
            self.busy0, self.cpu0 = _machine_busy_seconds(), time.process_time()
            self.t0 = time.perf_counter()

    def after(self, step: int) -> None:
        if step == self.last:
            _sync(self.device)
            self.t1 = time.perf_counter()
            self.busy1, self.cpu1 = _machine_busy_seconds(), time.process_time()
            self.rss = _rss_mib()

    def seconds(self) -> float:
        if self.t0 is None or self.t1 is None:
            raise RuntimeError("the timed window was not reached; is the training set too small?")
        return self.t1 - self.t0

    def report(self) -> dict:
        wall, cpu = self.seconds(), self.cpu1 - self.cpu0
        out = {"seconds": wall, "cpu_cores": cpu / wall, "rss_in_training_mib": self.rss}
        if self.busy0 is not None and self.busy1 is not None:
            out["others_cores"] = max(0.0, (self.busy1 - self.busy0 - cpu) / wall)
        return out


def timed_steps(net, optimizer, batches, window: Window, device, record_loss) -> None:
    """SGD steps over `batches` until the window closes; `record_loss(loss)` after each step."""
    import torch.nn.functional as F

    net.train()
    for step, (x, y) in enumerate(batches):
        x, y = x.to(device), y.to(device)  # a no-op for batches already on the device
        window.before(step)
        optimizer.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        record_loss(loss.detach())
        window.after(step)
        if step == window.last:
            break


def plain_loop(cfg, net, datamodule, window: Window, device) -> None:
    """(c)'s loop: `net` with the config's memory format, compile setting and optimiser, trained
    over the set-up `datamodule`'s training batches until `window` closes."""
    import torch
    from hydra.utils import instantiate

    if cfg.compute.channels_last:
        net.to(memory_format=torch.channels_last)
    if cfg.compute.compile:
        net.compile()
    optimizer = instantiate(cfg.optimizer)(net.parameters())
    loss_sum = torch.zeros((), device=device)
    timed_steps(net, optimizer, datamodule.train_dataloader(), window, device, loss_sum.add_)
    loss_sum.item()


def clock_callback(window: Window, device, eval_seconds: dict[str, float] | None = None):
    """A Lightning callback that opens and closes `window` around the training steps and,
    given `eval_seconds`, stores the test-set evaluation's duration there under "test"."""
    import lightning as L

    class Clock(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            window.before(batch_idx)

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            window.after(batch_idx)

        def on_test_epoch_start(self, trainer, module) -> None:
            _sync(device)
            self.test_started = time.perf_counter()

        def on_test_epoch_end(self, trainer, module) -> None:
            _sync(device)
            if eval_seconds is not None:
                eval_seconds["test"] = time.perf_counter() - self.test_started

    return Clock()


def worker_study(args, device) -> dict:
    """(a) The study's pipeline: per-sample transforms through a DataLoader."""
    import torch
    from hydra.utils import instantiate
    from PIL import Image
    from torchvision import transforms

    from cifar_cnn.data import synthetic_arrays

    cfg = compose_config(args.model, ["model.pool_before_relu=false"])  # the study's layer order
    torch.manual_seed(cfg.seed)
    arrays = synthetic_arrays(args.train_size, 10)
    images, labels = arrays["train_x"].numpy(), arrays["train_y"].tolist()  # uint8 HWC
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (1.0, 1.0, 1.0))]
    )

    class Images(torch.utils.data.Dataset):  # what torchvision.datasets.CIFAR10 does per item
        def __len__(self) -> int:
            return len(labels)

        def __getitem__(self, i: int):
            return transform(Image.fromarray(images[i])), labels[i]

    loader = torch.utils.data.DataLoader(Images(), batch_size=BATCH, shuffle=False, num_workers=0)
    net = instantiate(cfg.model).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
    window = Window(args.warmup, args.steps, device)
    # loss.item() every step, as PyTorch's CIFAR-10 tutorial does for its running loss
    timed_steps(net, optimizer, loader, window, device, lambda loss: loss.item())
    return {**window.report(), "threads": torch.get_num_threads()}


def worker_plain(args, device) -> dict:
    """(c) A plain loop over cifar_cnn's device-resident batches, with its runtime settings."""
    import torch
    from hydra.utils import instantiate

    from cifar_cnn import runtime

    cfg = compose_config(args.model, [*data_overrides(args.train_size, args.test_size), *args.set])
    threads = runtime.configure(cfg.compute)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(cfg.trainer.benchmark)
    torch.manual_seed(cfg.seed)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    datamodule.arrays = {k: v.to(device) for k, v in datamodule.arrays.items()}
    window = Window(args.warmup, args.steps, device)
    plain_loop(cfg, instantiate(cfg.model).to(device), datamodule, window, device)
    return {**window.report(), "threads": threads}


def worker_cifar_cnn(args, device) -> dict:
    """(b) `cifar_cnn.train.train(cfg)` on the composed config, plus a timing callback."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from cifar_cnn import train as train_app

    window = Window(args.warmup, args.steps, device)
    eval_seconds: dict[str, float] = {}
    build_trainer = train_app.build_trainer

    def build_trainer_with_clock(cfg, run_dir):
        trainer = build_trainer(cfg, run_dir)
        trainer.callbacks.append(clock_callback(window, device, eval_seconds))
        return trainer

    train_app.build_trainer = build_trainer_with_clock
    overrides = [*data_overrides(args.train_size, args.test_size), "trainer.max_epochs=1"]
    overrides += args.set
    cfg = compose_config(args.model, overrides, hydra_config=True)
    with tempfile.TemporaryDirectory(prefix="cifar_cnn_bench_") as run_dir:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = run_dir
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        metrics = train_app.train(cfg)
    return {
        **window.report(),
        "threads": metrics["threads"],
        "test_seconds": eval_seconds.get("test"),
        "test_images": metrics["data"]["test_size"],
    }


WORKERS = {"a": worker_study, "b": worker_cifar_cnn, "c": worker_plain}


def run_worker(args) -> None:
    import torch

    device = _device()
    started = time.perf_counter()
    result = WORKERS[args.worker](args, device)
    result.update(
        mode=args.worker,
        model=args.model,
        device=device.type,
        steps=args.steps,
        images_per_s=args.steps * BATCH / result["seconds"],
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        worker_seconds=time.perf_counter() - started,
    )
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    Path(args.result).write_text(json.dumps(result))


# --- driver side ----------------------------------------------------------------------------
def measure(args, mode: str, model: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_path = Path(f.name)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        mode,
        "--model",
        model,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--result",
        str(result_path),
        *(f"--set={override}" for override in args.set),
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-3000:]
            raise RuntimeError(f"worker {mode}/{model} failed ({proc.returncode}):\n{tail}")
        return json.loads(result_path.read_text())
    finally:
        result_path.unlink(missing_ok=True)


FIRST_STEP = re.compile(r"Epoch 0:.*?\|\s*1/\d+")
EPOCH_START = re.compile(r"Epoch 0:.*?\|\s*0/\d+")


def startup_data() -> tuple[list[str], str]:
    """CLI overrides for the start-up run: real images from their decoded cache if possible.

    The official CIFAR-10 when its cache exists; else the shared JPEG copy (unpacked once into
    the temporary directory, outside the repository, and decoded once into its cache); else
    the synthetic source.
    """
    if CACHED_CIFAR.is_file():
        return ["data.source=cifar10", f"data.root={CACHED_CIFAR.parents[1]}"], (
            "CIFAR-10 (official pickles, cached uint8 tensor)"
        )
    if SHARED_JPEG.is_file():
        root = Path(tempfile.gettempdir()) / "cifar_cnn_bench" / "cifar10-jpeg"
        try:
            if not (root / "test").is_dir():
                import tarfile

                with tarfile.open(SHARED_JPEG) as tar:
                    tar.extractall(root.parent, filter="data")
            from cifar_cnn.data import load_arrays

            started = time.perf_counter()
            arrays = load_arrays("folder", root)  # decodes and caches on the first run only
            took = time.perf_counter() - started
            n = len(arrays["train_y"])
            print(f"  start-up data: {n} JPEG training images, cache ready in {took:.1f} s")
            return ["data.source=folder", f"data.root={root}"], (
                f"shared JPEG copy of CIFAR-10 ({n} training images, cached uint8 tensor)"
            )
        except Exception as e:  # fall back to synthetic data rather than fail the benchmark
            print(f"  could not prepare {SHARED_JPEG} ({type(e).__name__}: {e}); using synthetic")
    return ["data.source=synthetic"], "synthetic (no cached CIFAR-10 here)"


def measure_startup(data: list[str], source: str, timeout: float = 180.0) -> dict:
    """Launch the real CLI and read its progress bar until the first training step is done."""
    run_dir = Path(tempfile.mkdtemp(prefix="cifar_cnn_bench_startup_"))
    cmd = [
        sys.executable,
        "-m",
        "cifar_cnn.train",
        "experiment=default",
        "trainer.max_epochs=1",
        "progress_bar_refresh=1",
        f"hydra.run.dir={run_dir}",
        *data,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    text, epoch_start, first_step = "", None, None
    try:
        while first_step is None and time.perf_counter() - started < timeout:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            now = time.perf_counter() - started
            if not chunk:
                break
            text += chunk.decode(errors="replace")
            if epoch_start is None and EPOCH_START.search(text):
                epoch_start = now
            if FIRST_STEP.search(text):
                first_step = now
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(run_dir, ignore_errors=True)
    if first_step is None:
        raise RuntimeError(f"no first training step seen from {' '.join(cmd)}:\n{text[-3000:]}")
    return {
        "to_epoch_start_s": epoch_start,
        "to_first_step_s": first_step,
        "data": source,
        "command": " ".join(["python", *cmd[1:6], *data]),
    }


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def machine() -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                info["cpu"] = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import torch

    info["torch"] = torch.__version__
    info["python"] = platform.python_version()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def summarise(runs: list[dict], models: list[str], device: str) -> dict:
    summary: dict = {}
    for model in models:
        runs_of = {
            mode: [r for r in runs if r["model"] == model and r["mode"] == mode] for mode in MODES
        }
        per_mode = {}
        for mode, rs in runs_of.items():
            if not rs:
                continue
            ips = [r["images_per_s"] for r in rs]
            mem_key = "peak_cuda_mib" if device == "cuda" else "peak_rss_mib"
            per_mode[mode] = {
                "images_per_s": spread(ips),
                "s_per_epoch": spread([EPOCH_IMAGES / v for v in ips]),
                "peak_memory_mib": max(r[mem_key] for r in rs),
                "memory": mem_key,
                "rss_in_training_mib": max(r.get("rss_in_training_mib") or 0 for r in rs),
                "threads": rs[0]["threads"],
                "disturbed_runs_kept": sum(bool(r.get("disturbed")) for r in rs),
            }
            if mode == "b" and rs[0].get("test_seconds"):
                per_mode[mode]["eval_images_per_s"] = statistics.median(
                    r["test_images"] / r["test_seconds"] for r in rs
                )
        ratios = {}
        for num, den in (("b", "a"), ("b", "c")):
            if num in per_mode and den in per_mode:
                paired = [
                    rb["images_per_s"] / rd["images_per_s"]
                    for rb, rd in zip(runs_of[num], runs_of[den], strict=False)
                ]
                ratios[f"{num}/{den}"] = {
                    "of_medians": per_mode[num]["images_per_s"]["median"]
                    / per_mode[den]["images_per_s"]["median"],
                    "per_round_min": min(paired),
                    "per_round_max": max(paired),
                }
        summary[model] = {"modes": per_mode, "ratios": ratios}
    return summary


def check_targets(summary: dict, device: str) -> list[dict]:
    checks = []
    for model, s in summary.items():
        ratios = s["ratios"]
        if device == "cpu" and "b/a" in ratios and model in TARGETS_B_OVER_A:
            need, aim = TARGETS_B_OVER_A[model]
            value = ratios["b/a"]["of_medians"]
            checks.append(
                {
                    "target": f"{model}: b/a >= {need}" + (f" (aim {aim})" if aim else ""),
                    "value": value,
                    "met": value >= need,
                }
            )
        if "b/c" in ratios:
            value = ratios["b/c"]["of_medians"]
            checks.append(
                {
                    "target": f"{model}: b/c >= {B_OVER_C_MIN}",
                    "value": value,
                    "met": value >= B_OVER_C_MIN,
                }
            )
    return checks


def estimates(summary: dict) -> dict:
    """A 300-epoch run and the 10-experiment grid, from (b)'s epoch and evaluation times."""
    epoch = {}
    for model, s in summary.items():
        b = s["modes"].get("b")
        if not b:
            continue
        train_s = b["s_per_epoch"]["median"]
        eval_s = TEST_IMAGES / b["eval_images_per_s"] if b.get("eval_images_per_s") else 0.0
        epoch[model] = train_s + eval_s
    out = {f"{EPOCHS}_epochs_{m}_h": EPOCHS * s / 3600 for m, s in epoch.items()}
    if all(m in epoch for m in set(GRID.values())):
        out["grid_10_experiments_h"] = sum(EPOCHS * epoch[m] for m in GRID.values()) / 3600
        out["note"] = (
            "train + test-set evaluation every epoch, one seed, run one after another; "
            "small-filter runs at the default network's epoch time, large-filter runs "
            "(incl. batch 256) at the batchnorm network's"
        )
    return out


def print_table(result: dict) -> None:
    device = result["device"]
    mem = "peak GPU MiB" if device == "cuda" else "peak RSS MiB"
    print()
    print(
        f"{'model':<10} {'pipeline':<26} {'images/s (min-max)':<24} "
        f"{'s/epoch (min-max)':<20} {mem:>12} {'RSS training':>12}"
    )
    for model, s in result["summary"].items():
        for mode, m in s["modes"].items():
            ips, spe = m["images_per_s"], m["s_per_epoch"]
            print(
                f"{model:<10} {mode + ' ' + MODES[mode]:<26} "
                f"{ips['median']:>7.0f} ({ips['min']:.0f}-{ips['max']:.0f}){'':<6} "
                f"{spe['median']:>6.1f} ({spe['min']:.1f}-{spe['max']:.1f}){'':<4} "
                f"{m['peak_memory_mib']:>12.0f} {m['rss_in_training_mib']:>12.0f}"
            )
        for name, r in s["ratios"].items():
            print(
                f"{'':<10} ratio {name}: {r['of_medians']:.2f} "
                f"(per round {r['per_round_min']:.2f}-{r['per_round_max']:.2f})"
            )
    if result.get("startup"):
        st = result["startup"]
        print(
            f"\nstart-up (CLI launch -> first training step done), {st['data']}: "
            f"{st['to_first_step_s']['median']:.1f} s "
            f"({st['to_first_step_s']['min']:.1f}-{st['to_first_step_s']['max']:.1f}); "
            f"to epoch start {st['to_epoch_start_s']['median']:.1f} s"
        )
    print()
    for c in result["targets"]:
        print(f"target {c['target']}: {c['value']:.2f} -> {'met' if c['met'] else 'MISSED'}")
    if result.get("estimates"):
        print("\nestimates (cifar_cnn path):")
        for k, v in result["estimates"].items():
            print(f"  {k}: {v if isinstance(v, str) else f'{v:.2f}'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round, short windows")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of a b c (default 5)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 200)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps (default 30)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--no-startup", action="store_true", help="skip the CLI start-up timing")
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default: results/)")
    parser.add_argument(
        "--retries", type=int, default=None, help="re-measure a disturbed run (default 1)"
    )
    parser.add_argument(
        "--retry-budget",
        type=float,
        default=240.0,
        help="seconds after which disturbed runs are no longer re-measured",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for b and c, e.g. model.pool_before_relu=false (repeatable)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    # worker mode (internal)
    parser.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=list(MODELS), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds or (1 if quick else 5)
    args.steps = args.steps or (20 if quick else 200)
    args.warmup = args.warmup or (5 if quick else 30)
    args.train_size = (args.warmup + args.steps) * BATCH
    args.test_size = 500 if quick else 2500
    args.retries = args.retries if args.retries is not None else (0 if quick else 1)

    if args.worker:
        run_worker(args)
        return 0

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    load_before = os.getloadavg()
    print(
        f"device {device}; {args.rounds} round(s) of {' '.join(args.modes)} for "
        f"{', '.join(args.models)}; {args.steps} timed steps after {args.warmup} warm-up, "
        f"synthetic data ({args.train_size} train images); load {load_before[0]:.2f}",
        flush=True,
    )
    if load_before[0] > BUSY_LOAD:
        print(
            f"warning: 1-minute load {load_before[0]:.2f} > {BUSY_LOAD}: other processes share "
            "the cores and the figures will be noisy (ratios less so: the runs alternate)",
            flush=True,
        )
    startup_args = None if args.no_startup else startup_data()
    runs, startups, discarded = [], [], []
    deadline = started + args.retry_budget
    for round_ in range(1, args.rounds + 1):
        for model in args.models:
            for mode in args.modes:
                attempts = []
                while True:
                    r = measure(args, mode, model)
                    r["round"] = round_
                    attempts.append(r)
                    others = r.get("others_cores", 0.0)
                    disturbed = others > DISTURBED_CORES
                    print(
                        f"  round {round_} {model:<9} {mode} {MODES[mode]:<26} "
                        f"{r['images_per_s']:7.0f} images/s "
                        f"{EPOCH_IMAGES / r['images_per_s']:6.1f} s/epoch  "
                        f"others {others:.2f} cores{' (disturbed)' if disturbed else ''}  "
                        f"({r['worker_seconds']:.0f} s in process)",
                        flush=True,
                    )
                    if (
                        not disturbed
                        or len(attempts) > args.retries
                        or time.perf_counter() > deadline
                    ):
                        break
                best = min(attempts, key=lambda a: a.get("others_cores", 0.0))
                best["disturbed"] = best.get("others_cores", 0.0) > DISTURBED_CORES
                best["attempts"] = len(attempts)
                runs.append(best)
                discarded += [a for a in attempts if a is not best]
        if not args.no_startup:
            s = measure_startup(*startup_args)
            startups.append(s)
            print(
                f"  round {round_} start-up to first step {s['to_first_step_s']:.1f} s", flush=True
            )

    summary = summarise(runs, args.models, device)
    result = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": "python benchmarks/bench.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": device,
        "machine": machine(),
        "settings": {
            "rounds": args.rounds,
            "steps": args.steps,
            "warmup": args.warmup,
            "batch_size": BATCH,
            "train_images": args.train_size,
            "data": "synthetic",
            "quick": quick,
            "overrides_b_c": args.set,
        },
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "summary": summary,
        "targets": check_targets(summary, device),
        "runs": runs,
        "discarded_disturbed_runs": discarded,
    }
    if startups:
        result["startup"] = {
            "to_first_step_s": spread([s["to_first_step_s"] for s in startups]),
            "to_epoch_start_s": spread(
                [s["to_epoch_start_s"] for s in startups if s["to_epoch_start_s"] is not None]
                or [float("nan")]
            ),
            "data": startups[0]["data"],
            "command": startups[0]["command"],
        }
    if device == "cuda":
        result["estimates"] = estimates(summary)
    result["bench_seconds"] = time.perf_counter() - started
    print_table(result)

    out = args.output
    if out is None:
        tag = device
        if device == "cuda":
            tag += "-" + re.sub(r"[^A-Za-z0-9]+", "-", result["machine"]["gpu"]).strip("-")
        partial = args.set or args.models != list(MODELS) or args.modes != list(MODES)
        tag += "_quick" if quick else "_partial" if partial else ""
        out = RESULTS / f"{dt.date.today().isoformat()}_{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out} "
        f"({result['bench_seconds']:.0f} s)"
    )
    return 1 if args.strict and not all(c["met"] for c in result["targets"]) else 0


if __name__ == "__main__":
    sys.exit(main())
