"""The machine a benchmark ran on: CPU, cores, GPUs, library versions, thread settings, Jetson power mode and clocks, load,
memory. Everything here describes; nothing measures speed (that is `bench_timing`) and nothing asserts it.

Numbers from different machines are only comparable with this description beside them, and numbers from one busy machine
only as ratios measured side by side: `machine_warnings` says which case a report is in.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

# The environment variables that change how many threads a run uses, as the code reads them: OpenMP, scipy.fft's workers
# (`spectral.fft_workers`) and onnxruntime's intra-op threads (`backends.physical_cores`). A report records the ones that
# are set, so a name here that the code does not read would record a setting that changed nothing (a test checks).
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "PDD_FFT_WORKERS", "PDD_THREADS")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / (1024.0 * 1024.0)


def read_text(path: str) -> str | None:
    """A small system file's stripped text, or None where it does not exist or cannot be read."""
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def run_quietly(cmd: list[str]) -> str | None:
    """stdout of a short system tool (nvidia-smi, nvpmodel …), or None where it is missing or fails: a description
    leaves out what it cannot read rather than failing the benchmark."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_model() -> str:
    info = read_text("/proc/cpuinfo") or ""
    for key in ("model name", "Model", "Hardware"):
        match = re.search(rf"^{key}\s*:\s*(.+)$", info, re.MULTILINE)
        if match:
            return match.group(1).strip()
    return platform.processor() or platform.machine()


def jetson_info() -> dict[str, Any] | None:
    """nvpmodel mode and whether clocks look locked (read only; never changes them). None off-Jetson."""
    model = read_text("/proc/device-tree/model")
    if not model or "jetson" not in model.lower():
        return None
    mode = run_quietly(["nvpmodel", "-q"])
    clocks = run_quietly(["jetson_clocks", "--show"])
    locked = None
    if clocks:
        # jetson_clocks --show prints per-CPU MinFreq/MaxFreq/CurrentFreq; locked clocks have min == max.
        pairs = re.findall(r"MinFreq=(\d+) MaxFreq=(\d+)", clocks)
        locked = bool(pairs) and all(lo == hi for lo, hi in pairs)
    return {"model": model.rstrip("\x00"), "nvpmodel": mode, "clocks_locked": locked}


def gpu_info() -> list[dict[str, str]]:
    out = run_quietly(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    if not out:
        return []
    gpus = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return gpus


def gpu_memory_mb(pid: int | None = None, query: Callable[[list[str]], str | None] | None = None) -> float | None:
    """GPU memory this process holds now, from `nvidia-smi --query-compute-apps` (None without nvidia-smi or on Jetson,
    whose integrated GPU shares RAM: there the peak RSS already counts it)."""
    out = (query or run_quietly)(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
    if not out:
        return None
    pid = os.getpid() if pid is None else pid
    total, found = 0.0, False
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid):
            try:
                total += float(parts[1])
                found = True
            except ValueError:
                continue
    return total if found else None


def package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask, where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine_info() -> dict[str, Any]:
    """What a reader needs to compare numbers across machines."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores_available": available_cores(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": package_version("onnxruntime") or package_version("onnxruntime-gpu"),
        "tensorrt": package_version("tensorrt"),
        "gpus": gpu_info(),
        "threads_env": {k: os.environ[k] for k in THREAD_ENV_VARS if k in os.environ},
    }
    jetson = jetson_info()
    if jetson is not None:
        info["jetson"] = jetson
    return info


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_warnings(machine: dict[str, Any], load: list[float] | None) -> list[str]:
    """What makes this run's numbers less trustworthy: unlocked Jetson clocks, a machine busier than its cores."""
    warnings = []
    jetson = machine.get("jetson")
    if jetson is not None and jetson.get("clocks_locked") is not True:
        warnings.append("Jetson clocks are not locked (or could not be read): numbers vary with DVFS; lock them yourself "
                        "with `sudo jetson_clocks` for stable figures")
    cores = machine.get("cores_available") or 1
    if load and load[0] > cores:
        warnings.append(f"the machine was busy (1-min load average {load[0]:.1f} on {cores} cores): compare only ratios "
                        "measured side by side in this run")
    return warnings
