"""Measurement plumbing for `pdd-bench`: percentiles, the machine's description, peak memory, cold start in a fresh process.

Everything here measures; nothing here asserts speed (performance claims live in benchmark output, never in tests).
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Stats:
    """Summary of repeated timings, in milliseconds."""

    n: int
    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    max: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> "Stats":
        if len(seconds) == 0:
            raise ValueError("no timings to summarise")
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        p50, p90, p99 = (float(np.percentile(ms, q)) for q in PERCENTILES)
        return cls(len(ms), p50, p90, p99, float(ms.mean()), float(ms.min()), float(ms.max()))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def time_calls(fn: Callable[[], Any], runs: int, warmup: int) -> list[float]:
    """Wall seconds of `runs` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / (1024.0 * 1024.0)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _run(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_model() -> str:
    info = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Model", "Hardware"):
        match = re.search(rf"^{key}\s*:\s*(.+)$", info, re.MULTILINE)
        if match:
            return match.group(1).strip()
    return platform.processor() or platform.machine()


def jetson_info() -> dict[str, Any] | None:
    """nvpmodel mode and whether clocks look locked (read only; never changes them). None off-Jetson."""
    model = _read("/proc/device-tree/model")
    if not model or "jetson" not in model.lower():
        return None
    mode = _run(["nvpmodel", "-q"])
    clocks = _run(["jetson_clocks", "--show"])
    locked = None
    if clocks:
        # jetson_clocks --show prints per-CPU MinFreq/MaxFreq/CurrentFreq; locked clocks have min == max.
        pairs = re.findall(r"MinFreq=(\d+) MaxFreq=(\d+)", clocks)
        locked = bool(pairs) and all(lo == hi for lo, hi in pairs)
    return {"model": model.rstrip("\x00"), "nvpmodel": mode, "clocks_locked": locked}


def gpu_info() -> list[dict[str, str]]:
    out = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    if not out:
        return []
    gpus = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return gpus


def package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """What a reader needs to compare numbers across machines."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores_available": cores,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": package_version("onnxruntime") or package_version("onnxruntime-gpu"),
        "tensorrt": package_version("tensorrt"),
        "gpus": gpu_info(),
        "threads_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "PDD_FFT_WORKERS", "PDD_ORT_THREADS") if k in os.environ},
    }
    jetson = jetson_info()
    if jetson is not None:
        info["jetson"] = jetson
    return info


def cold_start(code: str, runs: int = 3, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `code` in fresh interpreters; it must print one JSON object of phase timings (seconds) as its last line.

    Returns the per-phase medians plus the whole process wall time and its peak RSS.
    """
    samples: list[dict[str, float]] = []
    walls: list[float] = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600
        )
        walls.append(time.perf_counter() - start)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"cold-start subprocess failed: {last}")
        samples.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    keys = samples[0].keys()
    result: dict[str, Any] = {k: float(np.median([s[k] for s in samples])) for k in keys}
    result["process_wall_s"] = float(np.median(walls))
    return result
