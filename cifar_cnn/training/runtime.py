"""Process-wide settings for training: threads, allocator, TF32, bit-exact GPU kernels, which
GPU a sweep job trains on, and whether bf16 runs natively on this CPU."""

import ctypes
import ctypes.util
import logging
import os
import sys

import torch
from omegaconf import DictConfig

from cifar_cnn.core.errors import ConfigError

log = logging.getLogger(__name__)

# torch.compile's modes, for `compute.compile_mode`.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# cuBLAS's reproducible workspace setting (cuBLAS docs, "Results reproducibility").
CUBLAS_WORKSPACE = ":4096:8"

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def tune_malloc() -> bool:
    """Stop glibc from handing freed memory back to the OS after every step.

    Measured on the 2-core CPU: with glibc's defaults every step cost 1,100-3,500 page
    faults (6-16% of CPU time in the kernel); these settings removed them.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        settings = (
            (_M_MMAP_THRESHOLD, 32 * 2**20),  # glibc's maximum
            (_M_TRIM_THRESHOLD, 2**31 - 1),
            (_M_TOP_PAD, 512 * 2**20),
        )
        return all(libc.mallopt(param, value) == 1 for param, value in settings)
    except (OSError, AttributeError):
        return False


def usable_cpus() -> int:
    """The CPUs this process may run on (respects taskset, cgroups' cpusets and SLURM)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere torch
    emulates it in float32 arithmetic, which is slower than float32 itself."""
    try:
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    except AttributeError:  # torch without these private helpers: read the CPU flags
        try:
            with open("/proc/cpuinfo") as f:
                flags = set(f.read().split())
        except OSError:
            return False
        return bool(flags & {"avx512_bf16", "amx_bf16"})


def check_precision(precision: object, accelerator: str) -> None:
    """Warn, naming the setting, when a bf16 precision will be emulated on this CPU."""
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if "bf16" in str(precision) and on_cpu and not native_cpu_bf16():
        log.warning(
            "trainer.precision=%s: this CPU has no native bf16 (neither AMX nor AVX512-BF16), "
            "so bf16 is emulated and trains slower than fp32; use trainer.precision=32-true "
            "here, and bf16-mixed on a GPU or a CPU that has them",
            precision,
        )


def set_tf32(allow: bool) -> None:
    """Allow TF32 (10-bit mantissa) for float32 matmuls and cuDNN convolutions, or forbid it for
    both. cuDNN allows it by default, so without this a `32-true` run convolves in TF32 on
    Ampere and later GPUs. No effect on CPU."""
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow
    torch.set_float32_matmul_precision("high" if allow else "highest")


def set_exact(exact: bool) -> None:
    """Bit-exact GPU kernels (deterministic algorithms, cuDNN's timed choice off, cuBLAS's
    fixed workspace), or the fastest ones. An op that has no deterministic GPU kernel warns,
    naming itself, instead of stopping the run. The Trainer keeps these settings
    (`trainer.benchmark` and `trainer.deterministic` are null)."""
    if exact:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(exact, warn_only=exact)
    torch.backends.cudnn.deterministic = exact
    torch.backends.cudnn.benchmark = not exact


def compile_setting(compute: DictConfig) -> bool | str:
    """What `CIFARClassifier(compile=...)` takes from `compute.compile` and
    `compute.compile_mode`: False, True (torch.compile's default mode) or a mode's name."""
    mode = compute.get("compile_mode")
    if mode is None:
        return bool(compute.compile)
    if mode not in COMPILE_MODES:
        raise ConfigError(
            f"compute.compile_mode={mode!r} must be null or a torch.compile mode: "
            + ", ".join(COMPILE_MODES)
        )
    if not compute.compile:
        raise ConfigError(
            f"compute.compile_mode={mode} compiles nothing while compute.compile=false; "
            "set compute.compile=true too, or compute.compile_mode=null"
        )
    return str(mode)


def device_for_job(job_number: int, visible_gpus: int) -> int:
    """The GPU index sweep job `job_number` trains on: jobs go round the visible GPUs, so
    parallel jobs (hydra.launcher.n_jobs) spread over them instead of all using GPU 0."""
    if visible_gpus < 1:
        raise ValueError(f"visible_gpus={visible_gpus}: no GPU to place job {job_number} on")
    return job_number % visible_gpus


def trainer_devices(
    devices: object, accelerator: str, job_number: int | None, visible_gpus: int
) -> object:
    """`trainer.devices` for a sweep job: `[device_for_job(...)]` when the run would take the
    first of several visible GPUs (`devices: 1`, accelerator auto/gpu/cuda), else `devices`."""
    spreads = devices in (1, "1") and accelerator in ("auto", "gpu", "cuda")
    if not spreads or job_number is None or visible_gpus < 2:
        return devices
    return [device_for_job(job_number, visible_gpus)]


def configure(compute: DictConfig, jobs: int = 1) -> int:
    """Apply the `compute` config for this process; returns the thread count used.

    Without `compute.threads`, the usable CPUs are divided among `jobs` concurrent runs.
    """
    compile_setting(compute)  # refuse an unknown mode before any data is read
    threads = compute.threads or max(1, usable_cpus() // jobs)
    torch.set_num_threads(threads)
    set_tf32(bool(compute.allow_tf32))
    set_exact(bool(compute.exact))
    if compute.tune_malloc and not tune_malloc():
        log.info("could not tune malloc on this platform; training may be slower")
    return threads
