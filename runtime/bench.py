"""`pdd-bench`'s library (DESIGN §10): latency per stage, end to end, cold start, memory and the machine, as one report.

Torch-free: the PyTorch side of the side-by-side lives in benchmarks/compare.py, which reuses `interleaved` and
`RequestBench` from here so both arms are timed by the same code.

What one *request* is (exactly what `pdd-run` does per batch): draw the batch's noise on the host → `Sampler.__call__`
(fused sampler graph, or the denoiser per step with the DDIM update on the host) → waveform (vocoder graph or numpy
Griffin-Lim) → optionally write each clip as a WAV (the I/O stage, timed separately). Stages are disjoint and sum to the
request's wall time:

    noise        drawing z_1 (numpy Generator)
    denoiser     wall time inside the denoiser/sampler graph calls (per call, and per step: the fused call / N)
    ddim_host    the rest of the sampling stage: the DDIM update and Python between steps (≈0 in sampler mode)
    vocoder      x̂0 → waveform: the vocoder graph call, or unpack + denormalise + mel⁻¹ + numpy Griffin-Lim
    glue         what is left of the request (Sampler bookkeeping, finite checks)
    io           WAV encoding + atomic write per clip (not part of `end_to_end`)

`host_overhead` = noise + ddim_host + glue: everything that is neither a graph call nor the vocoder.
On a backend that exposes a CUDA stream (the native `trt` backend) every graph call is also bracketed by CUDA events, so
device time is reported separately from host wall time.

Side by side (`--ab`), always interleaved A/B so machine noise hits both arms alike: sampler vs loop mode, numpy Griffin-Lim vs
the vocoder graph, Griffin-Lim vs its FFT floor (one rfft + one irfft per iteration, same scipy.fft settings).
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from pdd.runtime import __version__
from pdd.runtime.backends import BACKENDS, DEVICES, Backend, create_backend, physical_cores
from pdd.runtime.benchmark import Stats, cold_start, machine_info, peak_rss_mb
from pdd.runtime.bundle import Bundle, load_bundle
from pdd.runtime.errors import AudioError, ConfigError
from pdd.runtime.fileio import atomic_write_text
from pdd.runtime.sampler import MODES, VOCODERS, NoiseStream, Sampler, SamplerSettings

REPORT_FORMAT = "pdd-bench/1"
STAGES = ("noise", "denoiser", "ddim_host", "vocoder", "glue", "io")
# DESIGN §10 CPU targets (2 cores, batch 1, paper preset, 8 steps, Griffin-Lim 32 it.).
TARGETS = {
    "end_to_end_ms": 150.0,
    "cold_start_s": 0.5,
    "peak_rss_mb": 250.0,
    "gl_over_fft_floor": 4.0,
    "speedup_vs_torch": 3.0,
}
TARGET_CONDITIONS = {"audio": "paper", "batch": 1, "steps": 8, "gl_iters": 32, "device": "cpu"}


# ---------------------------------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------------
# Timing plumbing
# ---------------------------------------------------------------------------------------------------------------------


class CudaEvents:
    """Device time of work enqueued on one CUDA stream, from pairs of CUDA events (cuda-python runtime API).

    Events are created once; `mark()` records one on the stream, `elapsed_ms(a, b)` waits for b and returns the device
    time between the two marks. Reading happens after the request's own synchronisation, so timing adds no sync.
    """

    def __init__(self, cudart: Any, stream: Any, capacity: int = 64) -> None:
        self.rt, self.stream = cudart, stream
        self.events = [self._check(cudart.cudaEventCreate()) for _ in range(capacity)]
        self.used = 0

    def _check(self, result: Any) -> Any:
        err, *values = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA event call failed ({getattr(err, 'name', err)})")
        return values[0] if values else None

    def reset(self) -> None:
        self.used = 0

    def mark(self) -> int | None:
        if self.used >= len(self.events):
            return None  # more calls than events in one request: the extra ones go untimed rather than grow mid-run
        index = self.used
        self._check(self.rt.cudaEventRecord(self.events[index], self.stream))
        self.used += 1
        return index

    def elapsed_ms(self, start: int, end: int) -> float:
        self._check(self.rt.cudaEventSynchronize(self.events[end]))
        return float(self._check(self.rt.cudaEventElapsedTime(self.events[start], self.events[end])))

    def close(self) -> None:
        for event in self.events:
            self.rt.cudaEventDestroy(event)
        self.events = []


def cuda_events_for(backend: Backend) -> CudaEvents | None:
    """CUDA events on the backend's stream when it exposes one (the native `trt` backend); None otherwise.

    onnxruntime's CUDA/TensorRT providers run on a stream of their own that the Python API does not expose, and sync it at
    the end of every run, so for `ort` the host wall time of a call already includes its device time.
    """
    stream = getattr(backend, "stream", None)
    cuda = getattr(backend, "cuda", None)
    if stream is None or cuda is None or getattr(cuda, "rt", None) is None:
        return None
    return CudaEvents(cuda.rt, stream)


@dataclass
class Call:
    graph: str
    wall_s: float
    marks: tuple[int | None, int | None] = (None, None)
    device_ms: float | None = None


class TimedBackend(Backend):
    """A backend wrapper that records the wall time (and CUDA-event device time, when available) of every `run`."""

    def __init__(self, inner: Backend, events: CudaEvents | None = None) -> None:
        super().__init__(inner.bundle)
        self.inner, self.events = inner, events
        self.name = inner.name
        self.calls: list[Call] = []

    @property
    def device(self) -> str:  # type: ignore[override]
        return self.inner.device

    @property
    def uses_tensorrt(self) -> bool:  # type: ignore[override]
        return self.inner.uses_tensorrt

    def prepare(self, graphs: Sequence[str], batch: int) -> None:
        self.inner.prepare(graphs, batch)

    def run(self, graph: str, inputs: Mapping[str, Any], keep: Sequence[str] = ()) -> dict[str, Any]:
        first = self.events.mark() if self.events else None
        start = time.perf_counter()
        out = self.inner.run(graph, inputs, keep)
        wall = time.perf_counter() - start
        last = self.events.mark() if self.events else None
        self.calls.append(Call(graph, wall, (first, last)))
        return out

    def to_host(self, value: Any) -> np.ndarray:
        return self.inner.to_host(value)

    def describe(self) -> str:
        return self.inner.describe()

    def close(self) -> None:
        if self.events is not None:
            self.events.close()
        self.inner.close()

    def take_calls(self) -> list[Call]:
        """The calls since the last take, with device times filled in (after the request has synchronised)."""
        calls, self.calls = self.calls, []
        if self.events is not None:
            for call in calls:
                if call.marks[0] is not None and call.marks[1] is not None:
                    call.device_ms = self.events.elapsed_ms(*call.marks)  # type: ignore[arg-type]
            self.events.reset()
        return calls


def interleaved(arms: Mapping[str, Callable[[], Any]], runs: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall seconds of each arm, run in turn (A, B, A, B, …) so load changes hit every arm alike; the order alternates
    each round so no arm always runs right after the same neighbour."""
    names = list(arms)
    for _ in range(warmup):
        for name in names:
            arms[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(runs):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            start = time.perf_counter()
            arms[name]()
            times[name].append(time.perf_counter() - start)
    return times


def ratio_stats(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, float]:
    """Per-pair ratios of two interleaved series: median with p10/p90 spread (and the ratio of medians)."""
    a, b = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("ratio_stats needs two non-empty series of the same length")
    ratios = a / b
    return {
        "median": float(np.median(ratios)),
        "p10": float(np.percentile(ratios, 10)),
        "p90": float(np.percentile(ratios, 90)),
        "of_medians": float(np.median(a) / np.median(b)),
        "n": int(a.size),
    }


def ab_result(times: Mapping[str, Sequence[float]], numerator: str, denominator: str) -> dict[str, Any]:
    """Stats of both arms and the ratio numerator/denominator (>1: the denominator arm is faster)."""
    return {
        "arms": {name: Stats.of(values).to_dict() for name, values in times.items()},
        "ratio": {"of": f"{numerator}/{denominator}", **ratio_stats(times[numerator], times[denominator])},
    }


# ---------------------------------------------------------------------------------------------------------------------
# One request, stage by stage
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class RequestTimes:
    """Seconds per stage of one request (see the module docstring), plus per-call details."""

    stages: dict[str, float]
    end_to_end: float
    model_calls: list[float]  # wall seconds of each denoiser/sampler graph call
    device_ms: dict[str, float] = field(default_factory=dict)  # per graph, summed over the request's calls


MODEL_GRAPHS = ("denoiser", "sampler")


class RequestBench:
    """Runs requests of one batch size through `Sampler` on a timed backend and splits each into stages."""

    def __init__(self, bundle: Bundle, backend: TimedBackend, settings: SamplerSettings, batch: int, *, seed: int = 0,
                 io_dir: Path | None = None) -> None:
        self.bundle, self.backend, self.batch = bundle, backend, batch
        self.sampler = Sampler(bundle, backend, settings, batch)
        self.noise = NoiseStream(seed, bundle.packed_shape)
        self.io_dir = io_dir
        backend.take_calls()

    @property
    def steps(self) -> int:
        return self.sampler.steps

    def __call__(self) -> RequestTimes:
        timings = self.sampler.timings
        sample_before, decode_before = timings.sample_ms, timings.decode_ms
        start = time.perf_counter()
        z1 = self.noise.take(self.batch)
        noise_done = time.perf_counter()
        wave = self.sampler(z1)
        end = time.perf_counter()
        sample_s = (timings.sample_ms - sample_before) / 1e3
        decode_s = (timings.decode_ms - decode_before) / 1e3
        calls = self.backend.take_calls()
        model = [c.wall_s for c in calls if c.graph in MODEL_GRAPHS]
        io_s = self._write(wave) if self.io_dir is not None else 0.0
        e2e = end - start
        stages = {
            "noise": noise_done - start,
            "denoiser": sum(model),
            "ddim_host": max(sample_s - sum(model), 0.0),
            "vocoder": decode_s,
            "glue": max(e2e - (noise_done - start) - sample_s - decode_s, 0.0),
            "io": io_s,
        }
        device: dict[str, float] = {}
        for call in calls:
            if call.device_ms is not None:
                device[call.graph] = device.get(call.graph, 0.0) + call.device_ms
        return RequestTimes(stages, e2e, model, device)

    def _write(self, wave: np.ndarray) -> float:
        from pdd.runtime.audio import write_audio

        start = time.perf_counter()
        for index, clip in enumerate(wave):
            write_audio(self.io_dir / f"bench-{index}.wav", clip, self.bundle.audio.sample_rate, overwrite=True)  # type: ignore[operator]
        return time.perf_counter() - start


def summarise_requests(requests: Sequence[RequestTimes], batch: int, steps: int, mode: str, clip_seconds: float) -> dict[str, Any]:
    """Per-stage and end-to-end stats for one batch size, with real-time factor and throughput."""
    e2e = Stats.of([r.end_to_end for r in requests])
    stages = {name: Stats.of([r.stages[name] for r in requests]).to_dict() for name in STAGES}
    host = [r.stages["noise"] + r.stages["ddim_host"] + r.stages["glue"] for r in requests]
    stages["host_overhead"] = Stats.of(host).to_dict()
    calls = [c for r in requests for c in r.model_calls]
    if mode == "loop":
        per_step = Stats.of(calls).to_dict()
        per_step_note = "each denoiser call"
    else:
        per_step = Stats.of([c / steps for c in calls]).to_dict()
        per_step_note = f"the fused sampler call / {steps} (derived)"
    with_io = Stats.of([r.end_to_end + r.stages["io"] for r in requests])
    audio_s = batch * clip_seconds
    device: dict[str, Any] = {}
    graphs = sorted({g for r in requests for g in r.device_ms})
    for graph in graphs:
        device[graph] = Stats.of([r.device_ms[graph] / 1e3 for r in requests if graph in r.device_ms]).to_dict()
    return {
        "batch": batch,
        "steps": steps,
        "mode": mode,
        "audio_seconds_per_request": audio_s,
        "end_to_end": e2e.to_dict(),
        "end_to_end_with_io": with_io.to_dict(),
        "stages": stages,
        "denoiser_step": {**per_step, "what": per_step_note},
        "rtf": audio_s / (e2e.p50 / 1e3),  # seconds of audio per second of compute, at the median
        "clips_per_s": batch / (e2e.p50 / 1e3),
        "device_ms": device,  # CUDA-event device time per graph (empty where the backend exposes no stream)
    }


# ---------------------------------------------------------------------------------------------------------------------
# Cold start
# ---------------------------------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------------------------------
# Side by side (torch-free arms)
# ---------------------------------------------------------------------------------------------------------------------


def fft_floor_fn(bundle: Bundle, batch: int, iters: int) -> Callable[[], None]:
    """One rfft + one irfft over every frame per iteration, plus the final irfft: Griffin-Lim's floor, same scipy.fft
    settings as `pdd.runtime.spectral` (float32, workers = fft_workers())."""
    import scipy.fft

    from pdd.runtime.spectral import fft_workers

    audio = bundle.audio
    rng = np.random.default_rng(0)
    frames = rng.standard_normal((batch, audio.frames, audio.n_fft), dtype=np.float32)
    spectrum = scipy.fft.rfft(frames, axis=-1).astype(np.complex64)
    workers = fft_workers()

    def floor() -> None:
        for _ in range(iters):
            scipy.fft.rfft(frames, axis=-1, workers=workers)
            scipy.fft.irfft(spectrum, n=audio.n_fft, axis=-1, workers=workers)
        scipy.fft.irfft(spectrum, n=audio.n_fft, axis=-1, workers=workers)

    return floor


def fft_flops(bundle: Bundle, batch: int, iters: int) -> float:
    """Griffin-Lim's FFT work: (2·iters + 1) real FFTs of n_fft per frame at ≈ 2.5·n·log2(n) flops each."""
    audio = bundle.audio
    return (2 * iters + 1) * batch * audio.frames * 2.5 * audio.n_fft * math.log2(audio.n_fft)


def side_by_side(bundle: Bundle, backend: TimedBackend, options: BenchOptions, batch: int) -> dict[str, Any]:
    """Interleaved A/B at one batch size: sampler vs loop, numpy GL vs the vocoder graph, GL vs its FFT floor."""
    from pdd.runtime.griffinlim import griffin_lim
    from pdd.runtime.mel import denormalize, mel_to_magnitude
    from pdd.runtime.pack import unpack

    runs, out = options.ab_runs, {}
    skipped: dict[str, str] = {}

    # sampler vs loop, same steps, same (numpy or graph) vocoder: only the sampling stage differs.
    if bundle.has_graph("sampler") and bundle.has_graph("denoiser") and (options.steps in (None, bundle.steps)):
        arms = {}
        for mode in MODES:
            request = RequestBench(bundle, backend, options.settings(mode=mode), batch, seed=options.seed)
            arms[mode] = lambda r=request: (r.sampler.sample_x0(r.noise.take(batch)), r.backend.take_calls())
        out["sampler_vs_loop"] = ab_result(interleaved(arms, runs), "loop", "sampler")
        out["sampler_vs_loop"]["what"] = f"noise → x̂0 only, {bundle.steps} steps, batch {batch}"
    else:
        skipped["sampler_vs_loop"] = "needs both the sampler and denoiser graphs at the bundle's own step count"

    audio = bundle.audio
    x0 = np.random.default_rng(options.seed).uniform(-1, 0.5, (batch, *bundle.packed_shape)).astype(np.float32)
    magnitude = mel_to_magnitude(denormalize(unpack(x0, bundle.chunks), audio), audio)
    if bundle.has_graph("vocoder"):
        vocoder = bundle.graph("vocoder").extra
        iters, momentum = int(vocoder["gl_iters"]), float(vocoder["gl_momentum"])
        backend.prepare(["vocoder"], batch)
        phase0 = np.zeros((batch, audio.n_freqs, audio.frames), dtype=np.float32)

        def numpy_gl() -> None:
            mag = mel_to_magnitude(denormalize(unpack(x0, bundle.chunks), audio), audio)
            griffin_lim(mag, audio, n_iter=iters, momentum=momentum)

        def graph_gl() -> None:
            backend.run("vocoder", {"x0": x0, "phase0": phase0})
            backend.take_calls()

        out["numpy_vs_graph_vocoder"] = ab_result(interleaved({"numpy": numpy_gl, "graph": graph_gl}, runs), "graph", "numpy")
        out["numpy_vs_graph_vocoder"]["what"] = f"x̂0 → waveform, Griffin-Lim {iters} it., batch {batch}, {backend.describe()}"
    else:
        skipped["numpy_vs_graph_vocoder"] = "the bundle has no vocoder graph"
        iters = options.gl_iters if options.gl_iters is not None else 32
        momentum = 0.99

    gl_iters = options.gl_iters if options.gl_iters is not None else iters
    floor = fft_floor_fn(bundle, batch, gl_iters)
    times = interleaved({"griffin_lim": lambda: griffin_lim(magnitude, audio, n_iter=gl_iters, momentum=momentum),
                         "fft_floor": floor}, runs)
    result = ab_result(times, "griffin_lim", "fft_floor")
    flops = fft_flops(bundle, batch, gl_iters)
    result.update({
        "what": f"numpy Griffin-Lim {gl_iters} it. vs (2·{gl_iters}+1) real FFTs of {audio.n_fft} × {audio.frames} frames, "
                f"batch {batch}",
        "fft_gflop": flops / 1e9,
        "fft_floor_gflops_per_s": flops / 1e9 / (result["arms"]["fft_floor"]["p50"] / 1e3),
    })
    out["griffin_lim_vs_fft_floor"] = result
    if backend.device == "cpu" and physical_cores() > 1:
        out["threads"] = threads_ab(bundle, backend, options, batch)
    else:
        skipped["threads"] = "only on a CPU backend with more than one core"
    if skipped:
        out["skipped"] = skipped
    return out


def threads_ab(bundle: Bundle, backend: TimedBackend, options: BenchOptions, batch: int) -> dict[str, Any]:
    """Whole requests with the default threads (onnxruntime intra-op = physical cores, scipy.fft workers = cores) vs one
    thread for both (PDD_THREADS=1, PDD_FFT_WORKERS=1): on a shared machine, thread pools can lose more to waiting
    for a descheduled worker than they gain."""
    default = RequestBench(bundle, backend, options.settings(), batch, seed=options.seed)
    single_backend = TimedBackend(create_backend(options.backend, bundle, device=options.device, threads=1))
    single = RequestBench(bundle, single_backend, options.settings(), batch, seed=options.seed)

    def one_thread() -> None:
        before = os.environ.get("PDD_FFT_WORKERS")
        os.environ["PDD_FFT_WORKERS"] = "1"
        try:
            single()
        finally:
            if before is None:
                os.environ.pop("PDD_FFT_WORKERS", None)
            else:
                os.environ["PDD_FFT_WORKERS"] = before

    try:
        result = ab_result(interleaved({"default": default, "1_thread": one_thread}, options.ab_runs), "1_thread", "default")
    finally:
        single_backend.close()
    result["what"] = (f"whole requests, batch {batch}: default threads (ort {physical_cores()}, fft "
                      f"{_fft_workers()}) vs 1 thread for both")
    return result


def _fft_workers() -> int:
    from pdd.runtime.spectral import fft_workers

    return fft_workers()


# ---------------------------------------------------------------------------------------------------------------------
# The whole benchmark
# ---------------------------------------------------------------------------------------------------------------------


def gpu_memory_mb(pid: int | None = None, query: Callable[[list[str]], str | None] | None = None) -> float | None:
    """GPU memory this process holds now, from `nvidia-smi --query-compute-apps` (None without nvidia-smi or on Jetson,
    whose integrated GPU shares RAM: there the peak RSS already counts it)."""
    from pdd.runtime.benchmark import _run

    out = (query or _run)(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
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


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run_benchmark(options: BenchOptions, *, progress: Callable[[str], None] | None = None,
                  bundle: Bundle | None = None) -> dict[str, Any]:
    """Measure `options` and return the report (schema: `REPORT_FORMAT`, see `report_keys`)."""
    from pdd.runtime.generate import resolve_engine
    from pdd.runtime.spectral import fft_workers

    options.validate()
    say = progress or (lambda message: None)
    load_start = load_average()
    if bundle is None:
        bundle = load_bundle(resolve_engine(options.engine), check_graphs=False)
    backend = TimedBackend(create_backend(options.backend, bundle, device=options.device))
    try:
        backend.events = cuda_events_for(backend.inner)
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
        resolved = request.sampler
        ab = None
        if options.ab:
            say(f"side by side at batch {options.batches[0]}: {options.ab_runs} interleaved rounds per pair")
            ab = side_by_side(bundle, backend, options, options.batches[0])
        describe = backend.describe()
        device = backend.device
        gpu_memory = gpu_memory_mb() if device != "cpu" else None  # while the sessions/engines still hold their memory
    finally:
        backend.close()
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
        "engine": {
            "name": bundle.name, "path": str(bundle.path), "manifest_sha256": bundle.hash, "steps": bundle.steps,
            "precision": bundle.precision, "audio": bundle.audio.name, "clip_seconds": bundle.audio.clip_seconds,
            "model": bundle.manifest.get("model", {}).get("name"),
        },
        "options": options.to_dict(),
        "backend": {"name": backend.name, "detail": describe, "device": device},
        "resolved": {"mode": resolved.mode, "steps": resolved.steps, "vocoder": resolved.vocoder, "gl_iters": resolved.gl_iters},
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


def check_targets(report: dict[str, Any], torch_speedup: float | None = None) -> dict[str, Any]:
    """DESIGN §10 CPU targets against this report; `applies` says whether the run matched their conditions."""
    resolved = report["resolved"]
    first = next((r for r in report["results"] if r["batch"] == 1), None)
    applies = (
        report["engine"]["audio"] == TARGET_CONDITIONS["audio"] and first is not None
        and resolved["steps"] == TARGET_CONDITIONS["steps"] and resolved["gl_iters"] == TARGET_CONDITIONS["gl_iters"]
        and report["backend"]["device"] == TARGET_CONDITIONS["device"]
    )
    checks: dict[str, Any] = {}

    def add(name: str, measured: float | None, target: float, higher_is_better: bool = False) -> None:
        if measured is None:
            return
        met = measured >= target if higher_is_better else measured <= target
        checks[name] = {"measured": measured, "target": target, "met": bool(met)}

    if first is not None:
        add("end_to_end_ms", first["end_to_end"]["p50"], TARGETS["end_to_end_ms"])
    cold = report.get("cold_start")
    if cold:
        add("cold_start_s", cold["total_s"], TARGETS["cold_start_s"])
        add("peak_rss_mb", cold["peak_rss_mb"], TARGETS["peak_rss_mb"])
    ab = report.get("side_by_side") or {}
    if "griffin_lim_vs_fft_floor" in ab:
        add("gl_over_fft_floor", ab["griffin_lim_vs_fft_floor"]["ratio"]["median"], TARGETS["gl_over_fft_floor"])
    if torch_speedup is not None:
        add("speedup_vs_torch", torch_speedup, TARGETS["speedup_vs_torch"], higher_is_better=True)
    return {"applies": bool(applies), "conditions": TARGET_CONDITIONS, "checks": checks}


def report_keys() -> dict[str, Any]:
    """The report's required top-level keys and the keys of each per-batch result (the JSON schema tests check)."""
    return {
        "top": ["format", "pdd_version", "created", "engine", "options", "backend", "resolved", "machine", "load_average",
                "results", "cold_start", "peak_rss_mb", "gpu_memory_mb", "side_by_side", "targets", "warnings"],
        "result": ["batch", "steps", "mode", "audio_seconds_per_request", "end_to_end", "end_to_end_with_io", "stages",
                   "denoiser_step", "rtf", "clips_per_s", "device_ms", "vocoder", "gl_iters"],
        "stages": [*STAGES, "host_overhead"],
        "stats": ["n", "p50", "p90", "p99", "mean", "min", "max"],
    }


# ---------------------------------------------------------------------------------------------------------------------
# Writing: JSON, markdown, plot
# ---------------------------------------------------------------------------------------------------------------------



def check_output_paths(paths: Sequence[Path | None], overwrite: bool) -> None:
    """Refuse before measuring anything: an output that exists (without overwrite), or whose folder is missing."""
    for path in paths:
        if path is None:
            continue
        path = Path(path)
        if path.is_dir():
            raise AudioError(f"{path} is a folder; give a file name")
        if path.exists() and not overwrite:
            raise AudioError(f"{path} already exists; pass --overwrite to replace it")
        if not path.parent.is_dir():
            raise AudioError(f"cannot write {path}: folder {path.parent} does not exist")


def write_json(path: Path, report: dict[str, Any], *, overwrite: bool) -> Path:
    return atomic_write_text(path, json.dumps(report, indent=2, sort_keys=False) + "\n", overwrite=overwrite)


def _ms(value: float) -> str:
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def markdown(report: dict[str, Any]) -> str:
    """The report as tables for people."""
    eng, machine, backend = report["engine"], report["machine"], report["backend"]
    lines = [
        f"# pdd-bench: {eng['name']} ({eng['model']}, {eng['audio']} preset, {eng['clip_seconds']:.2f} s clips)",
        "",
        f"- backend: {backend['detail']} on {backend['device']}; mode {report['resolved']['mode']}, "
        f"{report['resolved']['steps']} steps, vocoder {report['resolved']['vocoder']} ({report['resolved']['gl_iters']} GL it.)",
        f"- machine: {machine['cpu']}, {machine['cores_available']} cores available, threads {machine.get('threads')}, "
        f"onnxruntime {machine['onnxruntime']}, numpy {machine['numpy']}, python {machine['python']}",
        f"- load average (1/5/15 min) at start {report['load_average']['start']}, at end {report['load_average']['end']}",
        f"- {report['options']['warmup']} warm-up + {report['options']['runs']} timed requests per batch size; times in ms",
    ]
    for warning in report.get("warnings", []):
        lines.append(f"- **warning: {warning}**")
    for gpu in machine.get("gpus", []):
        lines.append(f"- GPU: {gpu['name']}, driver {gpu['driver']}, {gpu['memory']}")
    if machine.get("jetson"):
        jet = machine["jetson"]
        lines.append(f"- Jetson: {jet['model']}, nvpmodel {jet['nvpmodel']!r}, clocks locked: {jet['clocks_locked']}")
    lines += ["", "## End to end and throughput", "",
              "| batch | p50 | p90 | p99 | mean | min | with I/O p50 | RTF (audio s / s) | clips/s |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        e = r["end_to_end"]
        lines.append(f"| {r['batch']} | {_ms(e['p50'])} | {_ms(e['p90'])} | {_ms(e['p99'])} | {_ms(e['mean'])} | "
                     f"{_ms(e['min'])} | {_ms(r['end_to_end_with_io']['p50'])} | {r['rtf']:.1f} | {r['clips_per_s']:.2f} |")
    lines += ["", "## Stages (p50 / p90 / p99, ms per request)", "",
              "| batch | " + " | ".join([*STAGES, "host_overhead", "denoiser per step"]) + " |",
              "|---:|" + "---:|" * (len(STAGES) + 2)]
    for r in report["results"]:
        cells = [f"{_ms(r['stages'][s]['p50'])} / {_ms(r['stages'][s]['p90'])} / {_ms(r['stages'][s]['p99'])}"
                 for s in [*STAGES, "host_overhead"]]
        step = r["denoiser_step"]
        cells.append(f"{_ms(step['p50'])} / {_ms(step['p90'])} / {_ms(step['p99'])}")
        lines.append(f"| {r['batch']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Denoiser per step = {report['results'][0]['denoiser_step']['what']}.")
    if any(r["device_ms"] for r in report["results"]):
        lines += ["", "## Device time (CUDA events, p50 ms per request)", ""]
        for r in report["results"]:
            parts = ", ".join(f"{g} {_ms(s['p50'])}" for g, s in r["device_ms"].items())
            lines.append(f"- batch {r['batch']}: {parts}")
    cold = report.get("cold_start")
    if cold:
        lines += ["", f"## Cold start (fresh process, batch 1, median of {cold['runs']})", "",
                  "| interpreter | imports | bundle verification | sessions | first request | total (after interpreter) | "
                  "peak RSS | torch imported |",
                  "|---:|---:|---:|---:|---:|---:|---:|---|",
                  f"| {cold['interpreter_s'] * 1e3:.0f} ms | {cold['imports_s'] * 1e3:.0f} ms | {cold['verify_s'] * 1e3:.0f} ms | "
                  f"{cold['sessions_s'] * 1e3:.0f} ms | {cold['first_request_s'] * 1e3:.0f} ms | {cold['total_s'] * 1e3:.0f} ms | "
                  f"{cold['peak_rss_mb']:.0f} MB | {cold['torch_imported']} |"]
    lines += ["", f"Peak RSS of this benchmark process: {report['peak_rss_mb']['this_process']:.0f} MB "
              f"(torch imported: {report['peak_rss_mb']['torch_imported']})."]
    if report.get("gpu_memory_mb") is not None:
        lines.append(f"GPU memory held by this process (nvidia-smi): {report['gpu_memory_mb']:.0f} MiB.")
    ab = report.get("side_by_side")
    if ab:
        lines += ["", "## Side by side (interleaved A/B; ratio = median of per-round ratios, [p10, p90])", "",
                  "| comparison | arm A p50 | arm B p50 | ratio | spread |", "|---|---:|---:|---:|---|"]
        for name, res in ab.items():
            if name == "skipped":
                continue
            (a_name, a), (b_name, b) = list(res["arms"].items())[:2]
            ratio = res["ratio"]
            lines.append(f"| {name}: {res.get('what', '')} | {a_name} {_ms(a['p50'])} | {b_name} {_ms(b['p50'])} | "
                         f"{ratio['of']} = {ratio['median']:.2f} | [{ratio['p10']:.2f}, {ratio['p90']:.2f}] |")
        for name, why in (ab.get("skipped") or {}).items():
            lines.append(f"| {name}: skipped ({why}) | | | | |")
        floor = ab.get("griffin_lim_vs_fft_floor")
        if floor:
            lines.append("")
            lines.append(f"Griffin-Lim's FFT work: {floor['fft_gflop']:.2f} GFLOP per request; the floor runs it at "
                         f"{floor['fft_floor_gflops_per_s']:.1f} GFLOP/s.")
    targets = report.get("targets")
    if targets and targets["checks"]:
        note = "" if targets["applies"] else " (this run does not match the targets' conditions: informational only)"
        lines += ["", f"## Targets (DESIGN §10: {targets['conditions']}){note}", "",
                  "| target | measured | limit | met |", "|---|---:|---:|---|"]
        for name, check in targets["checks"].items():
            sign = "≥" if name == "speedup_vs_torch" else "≤"
            lines.append(f"| {name} | {check['measured']:.3g} | {sign} {check['target']:g} | {'yes' if check['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, report: dict[str, Any], *, overwrite: bool) -> Path:
    return atomic_write_text(path, markdown(report), overwrite=overwrite)


def write_plot(path: Path, report: dict[str, Any], *, overwrite: bool) -> Path:
    """Stacked per-stage p50 per batch size (left) and per-clip end-to-end latency (right), as a PNG."""
    from pdd.runtime.plots import pyplot, save_figure

    try:
        plt = pyplot()
    except ConfigError:
        raise ConfigError("--plot needs matplotlib: pip install 'pdd[plot]'") from None
    path = Path(path)
    if path.exists() and not overwrite:
        raise AudioError(f"{path} already exists; pass --overwrite to replace it")
    results = report["results"]
    labels = [str(r["batch"]) for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    bottom = np.zeros(len(results))
    for stage in ("noise", "denoiser", "ddim_host", "vocoder", "glue", "io"):
        values = np.array([r["stages"][stage]["p50"] for r in results])
        left.bar(labels, values, bottom=bottom, label=stage)
        bottom += values
    left.set_xlabel("batch")
    left.set_ylabel("ms per request (p50)")
    left.set_title("stages")
    left.legend(fontsize=8)
    per_clip = [r["end_to_end"]["p50"] / r["batch"] for r in results]
    right.plot(labels, per_clip, marker="o")
    right.set_xlabel("batch")
    right.set_ylabel("ms per clip (p50)")
    right.set_title(f"end to end, {report['engine']['clip_seconds']:.1f} s clips")
    fig.suptitle(f"pdd-bench {report['engine']['name']} — {report['backend']['detail']}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def summary_line(report: dict[str, Any]) -> str:
    """One line per batch size for the terminal."""
    parts = []
    for r in report["results"]:
        e = r["end_to_end"]
        parts.append(f"batch {r['batch']}: p50 {_ms(e['p50'])} ms (p99 {_ms(e['p99'])}), RTF {r['rtf']:.1f}")
    return "; ".join(parts)


__all__ = [
    "BenchOptions", "RequestBench", "RequestTimes", "TimedBackend", "CudaEvents", "interleaved", "ratio_stats", "ab_result",
    "parse_batches", "run_benchmark", "measure_cold_start", "side_by_side", "check_targets", "report_keys", "markdown",
    "write_json", "write_markdown", "write_plot", "check_output_paths", "summary_line", "TARGETS", "REPORT_FORMAT",
]
