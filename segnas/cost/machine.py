"""Facts about the machine that latency depends on: a fingerprint for cache keys, the measured fp32
matmul peak used to express achieved GFLOP/s as a fraction of what the CPU can do, and the memory
available to a job."""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from segnas.cost.backends import pinned_threads
from segnas.errors import SegnasWarning
from segnas.utils import atomic_write_text, cache_dir

__all__ = ["cache_dir", "cpu_model", "cpu_has_native_bf16", "machine_fingerprint", "machine_record", "measure_matmul_peak",
           "matmul_peak_gflops", "available_memory_bytes", "other_processes_cores", "busiest", "is_busy", "BUSY_CORES"]

#: Cores other processes may keep busy before latency measurements count as taken on a busy machine.
BUSY_CORES = 0.25


def busiest(*samples: float | None) -> float | None:
    """The most cores other processes kept busy in ``samples`` (``other_processes_cores`` figures
    taken around one measurement); None when none could be read."""
    return max((s for s in samples if s is not None), default=None)


def is_busy(other_cores: float | None) -> bool:
    """Whether other processes kept more than ``BUSY_CORES`` cores busy (None, unknown: not busy)."""
    return other_cores is not None and other_cores > BUSY_CORES


def _busy_ticks() -> int:
    """Clock ticks every core spent busy since boot (/proc/stat: all but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(values) - values[3] - values[4]


def other_processes_cores(seconds: float = 0.5) -> float | None:
    """How many cores processes other than this one kept busy over the next ``seconds`` (this
    process idles meanwhile); None where /proc/stat cannot be read, or when ``SEGNAS_IGNORE_LOAD``
    is set (measurements on a shared machine are to be trusted as they come). Latency measured while
    this is well above 0 is slower than the machine alone would run it."""
    if os.environ.get("SEGNAS_IGNORE_LOAD"):
        return None
    try:
        hz = os.sysconf("SC_CLK_TCK")
        own0, busy0, t0 = time.process_time(), _busy_ticks(), time.perf_counter()
        time.sleep(seconds)
        own1, busy1, t1 = time.process_time(), _busy_ticks(), time.perf_counter()
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, ((busy1 - busy0) / hz - (own1 - own0)) / (t1 - t0))


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where it cannot be read)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() not in fields:
                fields[name.strip()] = value.strip()
    except OSError:
        pass
    return fields


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name; on ARM, whose kernels give none, its implementer and part numbers."""
    info = _cpuinfo()
    if info.get("model name"):
        return info["model name"]
    if info.get("CPU part"):
        return f"{platform.machine()} implementer {info.get('CPU implementer', '?')} part {info['CPU part']}"
    return platform.processor() or platform.machine()


#: CPU features that decide which kernels a runtime picks (x86 flags, ARM features).
KERNEL_FEATURES = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
                   "amx_bf16", "amx_int8", "asimd", "asimddp", "sve", "sve2", "bf16", "i8mm")


@lru_cache(maxsize=1)
def cpu_features() -> tuple[str, ...]:
    """Which of ``KERNEL_FEATURES`` this CPU has: two machines of one generic model name ("Intel(R)
    Xeon(R) Processor" on cloud VMs) differ there when their kernels do."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return tuple(f for f in KERNEL_FEATURES if f in flags)


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX). Without it PyTorch emulates
    bf16, and autocast makes CPU training slower than fp32 (1.3x for Fast-SCNN on an AVX-512 Xeon
    without BF16, more for small networks; benchmarks/train_step_precision.py)."""
    try:
        if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
            return True
    except AttributeError:  # private helpers: fall back to the kernel's CPU flags
        pass
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def machine_fingerprint(device: str = "cpu") -> str:
    """Short hash of what makes timings comparable: CPU model and kernel features, core count,
    device, library versions."""
    parts = [cpu_model(), ",".join(cpu_features()), str(os.cpu_count()), device, torch.__version__]
    for mod in ("onnxruntime", "openvino"):
        try:
            parts.append(f"{mod}={__import__(mod).__version__}")
        except ImportError:
            parts.append(f"{mod}=none")
    if device != "cpu" and torch.cuda.is_available():
        parts.append(torch.cuda.get_device_name())
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def machine_record(device: str = "cpu") -> dict[str, Any]:
    """What a latency figure holds for: the CPU model, its cores and the fingerprint that keys
    latency tables (``machine_fingerprint``). Two figures compare only on one fingerprint."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "fingerprint": machine_fingerprint(device)}


def measure_matmul_peak(threads: int, n: int = 2048, seconds: float = 2.0) -> float:
    """fp32 GFLOP/s of a square n×n matmul on ``threads`` threads (best of repeated runs)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = 0.0
    with pinned_threads(threads), torch.inference_mode():
        for _ in range(2):
            torch.mm(a, b)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def matmul_peak_gflops(threads: int, refresh: bool = False) -> float:
    """The fp32 matmul peak for ``threads`` threads, measured once per machine and cached
    (``machine.json`` in the cache folder; a file of another shape is rebuilt with a warning).
    A peak measured while other processes keep the cores busy serves the caller only, uncached."""
    path = cache_dir() / "machine.json"
    key = f"{machine_fingerprint()}-{threads}t"
    data = _read_machine_file(path)
    if refresh or key not in data["matmul_peak_gflops"]:
        busy = is_busy(other_processes_cores())
        peak = measure_matmul_peak(threads)
        if busy or is_busy(other_processes_cores()):
            return peak
        data["matmul_peak_gflops"][key] = peak
        atomic_write_text(path, json.dumps(data, indent=2))
    return data["matmul_peak_gflops"][key]


def _read_machine_file(path: Path) -> dict:
    """``machine.json`` as ``{"matmul_peak_gflops": {key: positive number}}``; a missing file gives an
    empty one, an unreadable or misshapen one a warning and an empty one (rebuilt by the caller)."""
    empty: dict = {"matmul_peak_gflops": {}}
    if not path.is_file():
        return empty
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        peaks = data.setdefault("matmul_peak_gflops", {})
        if not isinstance(peaks, dict):
            raise ValueError(f"'matmul_peak_gflops' must map keys to GFLOP/s, got {type(peaks).__name__}")
        for k, v in peaks.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"matmul_peak_gflops[{k!r}] must be a positive number, got {v!r}")
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        warnings.warn(f"{path}: machine file unusable ({exc}); rebuilding it", SegnasWarning, stacklevel=3)
        return empty
    return data


def available_memory_bytes() -> int | None:
    """Memory a new allocation can get without swapping: ``MemAvailable`` of /proc/meminfo (Linux),
    else free pages × page size (``os.sysconf``); None where neither is known."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None
