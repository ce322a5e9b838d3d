"""`pdd-bench`'s library: what to measure (`BenchOptions`) and the whole run (`run_benchmark`) → one report.

The pieces have their own homes: `bench_timing` (stats, interleaving, one request split into stages), `bench_coldstart`
(fresh-process cold start), `bench_ab` (the `--ab` side-by-side comparisons), `machine` (what the machine is), and
`bench_report` (the report's schema, targets and renderings). Torch-free; the PyTorch-eager side by side is
benchmarks/compare.py.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from pdd.runtime import __version__
from pdd.runtime.backends import BACKENDS, DEVICES, create_backend, physical_cores
from pdd.runtime.bench_ab import side_by_side
from pdd.runtime.bench_coldstart import measure_cold_start
from pdd.runtime.bench_report import REPORT_FORMAT, check_targets
from pdd.runtime.bench_timing import RequestBench, TimedBackend, cuda_events_for, summarise_requests
from pdd.runtime.bundle import Bundle
from pdd.runtime.engine import Engine, load_engine_bundle
from pdd.runtime.errors import ConfigError
from pdd.runtime.machine import gpu_memory_mb, load_average, machine_info, machine_warnings, peak_rss_mb
from pdd.runtime.sampler import MODES, VOCODERS, SamplerSettings
from pdd.runtime.spectral import fft_workers


@dataclass
class BenchOptions:
    """Everything `pdd-bench` takes (see cli_bench for the user-facing help)."""

    engine: Path | None = None
    backend: str = "auto"
    device: str = "auto"
    mode: str = "sampler"
    batches: tuple[int, ...] = (1,)
    steps: int | None = None
    vocoder: str = "auto"
    gl_iters: int | None = None
    warmup: int = 10
    runs: int = 100
    seed: int = 0
    io: bool = True
    cold_runs: int = 3  # fresh processes for the cold start; 0 skips it
    ab: bool = False  # side-by-side comparisons (modes, vocoders, GL vs FFT floor)
    ab_runs: int = 20

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown --backend {self.backend!r}; choose one of: {', '.join(BACKENDS)}")
        if self.device not in DEVICES:
            raise ConfigError(f"unknown --device {self.device!r}; choose one of: {', '.join(DEVICES)}")
        if self.mode not in MODES:
            raise ConfigError(f"unknown --mode {self.mode!r}; choose one of: {', '.join(MODES)}")
        if self.vocoder not in VOCODERS:
            raise ConfigError(f"unknown --vocoder {self.vocoder!r}; choose one of: {', '.join(VOCODERS)}")
        if not self.batches or any(b < 1 for b in self.batches):
            raise ConfigError(f"--batch sizes must be >= 1, got {','.join(str(b) for b in self.batches) or 'none'}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"--steps must be >= 1, got {self.steps}")
        if self.gl_iters is not None and self.gl_iters < 0:
            raise ConfigError(f"--gl-iters must be >= 0, got {self.gl_iters}")
        if self.warmup < 0:
            raise ConfigError(f"--warmup must be >= 0, got {self.warmup}")
        if self.runs < 1:
            raise ConfigError(f"--runs must be >= 1, got {self.runs}")
        if self.cold_runs < 0:
            raise ConfigError(f"--cold-runs must be >= 0, got {self.cold_runs}")
        if self.ab_runs < 1:
            raise ConfigError(f"--ab-runs must be >= 1, got {self.ab_runs}")
        if self.seed < 0:
            raise ConfigError(f"--seed must be >= 0, got {self.seed}")

    def settings(self, mode: str | None = None, vocoder: str | None = None) -> SamplerSettings:
        return SamplerSettings(mode=mode or self.mode, steps=self.steps, vocoder=vocoder or self.vocoder, gl_iters=self.gl_iters)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["engine"] = str(self.engine) if self.engine is not None else None
        data["batches"] = list(self.batches)
        return data


def parse_batches(text: str) -> tuple[int, ...]:
    """"1,4,8" → (1, 4, 8); ConfigError on anything else."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--batch takes comma-separated positive integers like 1,4,8, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"--batch takes comma-separated positive integers like 1,4,8, got {text!r}")
    return tuple(dict.fromkeys(values))


def run_benchmark(options: BenchOptions, *, progress: Callable[[str], None] | None = None,
                  bundle: Bundle | None = None) -> dict[str, Any]:
    """Measure `options` and return the report (schema: `bench_report.REPORT_FORMAT`, see `report_keys`)."""
    options.validate()
    say = progress or (lambda message: None)
    load_start = load_average()
    if bundle is None:
        bundle = load_engine_bundle(options.engine)
    # The engine pdd-run and Python callers use, on a backend that times every call.
    with Engine(bundle, TimedBackend(create_backend(options.backend, bundle, device=options.device))) as engine:
        backend = engine.backend
        backend.events = cuda_events_for(backend.inner)
        results, resolved = measure_batches(bundle, backend, options, say)
        ab = None
        if options.ab:
            say(f"side by side at batch {options.batches[0]}: {options.ab_runs} interleaved rounds per pair")
            ab = side_by_side(bundle, backend, options, options.batches[0])
        describe = backend.describe()
        device = backend.device
        gpu_memory = gpu_memory_mb() if device != "cpu" else None  # while the sessions/engines still hold their memory
    cold = None
    if options.cold_runs:
        say(f"cold start: {options.cold_runs} fresh processes")
        cold = measure_cold_start(bundle.path, options.backend, options.device, options.settings(), options.cold_runs)
    machine = machine_info()
    machine["threads"] = {"ort_intra_op": physical_cores(), "fft_workers": fft_workers()}
    report = {
        "format": REPORT_FORMAT,
        "pdd_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "engine": engine_entry(bundle),
        "options": options.to_dict(),
        "backend": {"name": backend.name, "detail": describe, "device": device},
        "resolved": resolved,
        "machine": machine,
        "load_average": {"start": load_start, "end": load_average()},
        "results": results,
        "cold_start": cold,
        "peak_rss_mb": {"this_process": peak_rss_mb(), "torch_imported": "torch" in sys.modules},
        "gpu_memory_mb": gpu_memory,
        "side_by_side": ab,
    }
    report["targets"] = check_targets(report)
    report["warnings"] = machine_warnings(machine, report["load_average"]["start"])
    return report


def measure_batches(bundle: Bundle, backend: TimedBackend, options: BenchOptions, say: Callable[[str], None],
                    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(one summary per batch size, the settings as the sampler resolved them): warm-up, then the timed requests."""
    results = []
    with tempfile.TemporaryDirectory(prefix="pdd-bench-") as tmp:
        for batch in options.batches:
            request = RequestBench(bundle, backend, options.settings(), batch, seed=options.seed,
                                   io_dir=Path(tmp) if options.io else None)  # bad settings fail here, before any output
            say(f"batch {batch}: {options.warmup} warm-up + {options.runs} requests")
            for _ in range(options.warmup):
                request()
            requests = [request() for _ in range(options.runs)]
            summary = summarise_requests(requests, batch, request.steps, request.sampler.mode, bundle.audio.clip_seconds)
            summary["vocoder"] = request.sampler.vocoder
            summary["gl_iters"] = request.sampler.gl_iters
            results.append(summary)
    sampler = request.sampler
    resolved = {"mode": sampler.mode, "steps": sampler.steps, "vocoder": sampler.vocoder, "gl_iters": sampler.gl_iters}
    return results, resolved


def engine_entry(bundle: Bundle) -> dict[str, Any]:
    """The report's description of the engine measured."""
    return {
        "name": bundle.name, "path": str(bundle.path), "manifest_sha256": bundle.hash, "steps": bundle.steps,
        "precision": bundle.precision, "audio": bundle.audio.name, "clip_seconds": bundle.audio.clip_seconds,
        "model": bundle.manifest.get("model", {}).get("name"),
    }
