"""Process-wide settings for fast training: threads, allocator, matmul precision, and
whether bf16 runs natively on this CPU."""

import ctypes
import ctypes.util
import logging
import os
import sys

import torch
from omegaconf import DictConfig

log = logging.getLogger(__name__)

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


def configure(compute: DictConfig, jobs: int = 1) -> int:
    """Apply the `compute` config for this process; returns the thread count used.

    Without `compute.threads`, the usable CPUs are divided among `jobs` concurrent runs.
    """
    threads = compute.threads or max(1, usable_cpus() // jobs)
    torch.set_num_threads(threads)
    torch.set_float32_matmul_precision(compute.matmul_precision)
    if compute.tune_malloc and not tune_malloc():
        log.info("could not tune malloc on this platform; training may be slower")
    return threads
