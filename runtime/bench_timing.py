"""Timing for `pdd-bench`: percentiles, interleaved A/B, a backend wrapper that times every graph call, and one request
split into stages. Torch-free; benchmarks/compare.py times its PyTorch arm with the same `interleaved` and `RequestBench`.

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

Everything here measures; nothing asserts speed (performance claims live in benchmark output, never in tests).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from pdd.runtime.backends import Backend
from pdd.runtime.bundle import Bundle
from pdd.runtime.sampler import NoiseStream, Sampler, SamplerSettings

STAGES = ("noise", "denoiser", "ddim_host", "vocoder", "glue", "io")
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


@dataclass
class RequestTimes:
    """Seconds per stage of one request (see the module docstring), plus per-call details."""

    stages: dict[str, float]
    end_to_end: float
    model_calls: list[float]  # wall seconds of each denoiser/sampler graph call
    device_ms: dict[str, float] = field(default_factory=dict)  # per graph, summed over the request's calls


MODEL_GRAPHS = ("denoiser", "sampler")


def device_ms_per_graph(calls: Sequence[Call]) -> dict[str, float]:
    """CUDA-event milliseconds summed per graph over one request's calls (empty where no call was event-timed)."""
    device: dict[str, float] = {}
    for call in calls:
        if call.device_ms is not None:
            device[call.graph] = device.get(call.graph, 0.0) + call.device_ms
    return device


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
        noise_s = noise_done - start
        stages = {
            "noise": noise_s,
            "denoiser": sum(model),
            "ddim_host": max(sample_s - sum(model), 0.0),
            "vocoder": decode_s,
            "glue": max(e2e - noise_s - sample_s - decode_s, 0.0),
            "io": io_s,
        }
        return RequestTimes(stages, e2e, model, device_ms_per_graph(calls))

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
