"""Cold start of an engine in fresh interpreters: imports → bundle verification (hashes) → sessions → first request.

Each measurement is a new `python -c` process, so nothing this benchmark process has imported, loaded or warmed counts;
the script prints its phase timings and its own peak RSS as one JSON line, and the medians over runs are reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from pdd.runtime.sampler import SamplerSettings

COLD_START_CODE = """
import time
_t0 = time.perf_counter()
import json, resource, sys
import numpy as np
from pdd.runtime.backends import create_backend
from pdd.runtime.bundle import load_bundle
from pdd.runtime.sampler import Sampler, SamplerSettings, initial_noise
{import_ort}
_t1 = time.perf_counter()
bundle = load_bundle({engine!r}, check_graphs=False)
_t2 = time.perf_counter()
backend = create_backend({backend!r}, bundle, device={device!r})
sampler = Sampler(bundle, backend, SamplerSettings(**{settings!r}), 1)
_t3 = time.perf_counter()
wave = sampler(initial_noise(0, 1, bundle.packed_shape))
_t4 = time.perf_counter()
# VmHWM is this process's own high-water mark; ru_maxrss can carry the *parent's* peak across fork + exec on Linux.
peak = None
try:
    with open("/proc/self/status") as status:
        peak = next((int(line.split()[1]) / 1024.0 for line in status if line.startswith("VmHWM:")), None)
except OSError:
    pass
if peak is None:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = peak / 1024.0 if sys.platform != "darwin" else peak / 1048576.0
print(json.dumps({{
    "imports_s": _t1 - _t0, "verify_s": _t2 - _t1, "sessions_s": _t3 - _t2, "first_request_s": _t4 - _t3,
    "total_s": _t4 - _t0, "peak_rss_mb": peak,
    "torch_imported": float("torch" in sys.modules),
}}))
"""


def cold_start_code(engine: Path, backend: str, device: str, settings: SamplerSettings) -> str:
    """The fresh-process script: imports → bundle verification (hashes) → sessions → first request (batch 1)."""
    import_ort = "import onnxruntime" if backend in ("auto", "ort") else ""
    return COLD_START_CODE.format(
        engine=str(engine), backend=backend, device=device, settings=asdict(settings), import_ort=import_ort
    )


def measure_cold_start(engine: Path, backend: str, device: str, settings: SamplerSettings, runs: int) -> dict[str, Any]:
    """Median phase times of `runs` fresh interpreters; `interpreter_s` is process wall minus the measured phases."""
    result = cold_start(cold_start_code(engine, backend, device, settings), runs=runs)
    result["interpreter_s"] = max(result["process_wall_s"] - result["total_s"], 0.0)
    result["torch_imported"] = bool(result["torch_imported"])
    result["runs"] = runs
    return result


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
