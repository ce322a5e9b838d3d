"""`pdd-bench --ab`: the torch-free side-by-side comparisons at one batch size, each interleaved (A, B, A, B, …) so machine
noise hits both arms alike:

    sampler_vs_loop          noise → x̂0 with the fused sampler graph vs the denoiser per step with the DDIM update on the host
    numpy_vs_graph_vocoder   x̂0 → waveform with numpy Griffin-Lim vs the vocoder graph on the backend
    neural_vs_griffin_lim    x̂0 → waveform with the learned vocoder (its graph + numpy inverse STFT, the CPU path) vs
                             numpy Griffin-Lim behind the silence gate (what `--vocoder neural` and `--vocoder gl` cost)
    griffin_lim_vs_fft_floor numpy Griffin-Lim vs its floor: one rfft + one irfft per iteration, same scipy.fft settings
    threads                  whole requests with the default thread pools vs one thread for onnxruntime and scipy.fft

A comparison that cannot run on this bundle or machine is listed under "skipped" with the reason.
The PyTorch-eager side by side lives in benchmarks/compare.py (it needs torch; this module never imports it).
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from pdd.runtime.backends import create_backend, physical_cores
from pdd.runtime.bench_timing import RequestBench, TimedBackend, ab_result, interleaved
from pdd.runtime.bundle import Bundle
from pdd.runtime.griffinlim import DEFAULT_ITERS, DEFAULT_MOMENTUM, griffin_lim, packed_to_audio
from pdd.runtime.mel import denormalize, mel_to_magnitude
from pdd.runtime.neural_vocoder import spectrum_to_audio
from pdd.runtime.pack import unpack
from pdd.runtime.sampler import MODES
from pdd.runtime.spectral import fft_workers

if TYPE_CHECKING:
    from pdd.runtime.bench import BenchOptions


def fft_floor_fn(bundle: Bundle, batch: int, iters: int) -> Callable[[], None]:
    """One rfft + one irfft over every frame per iteration, plus the final irfft: Griffin-Lim's floor, same scipy.fft
    settings as `pdd.runtime.spectral` (float32, workers = fft_workers())."""
    import scipy.fft

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
    """Interleaved A/B at one batch size: sampler vs loop, numpy GL vs the vocoder graph, GL vs its FFT floor, threads."""
    out: dict[str, Any] = {}
    skipped: dict[str, str] = {}

    def record(name: str, result: dict[str, Any] | str) -> None:
        if isinstance(result, str):
            skipped[name] = result
        else:
            out[name] = result

    record("sampler_vs_loop", sampler_vs_loop(bundle, backend, options, batch))
    x0 = np.random.default_rng(options.seed).uniform(-1, 0.5, (batch, *bundle.packed_shape)).astype(np.float32)
    vocoder_result, (iters, momentum) = numpy_vs_graph_vocoder(bundle, backend, options, x0)
    record("numpy_vs_graph_vocoder", vocoder_result)
    gl_iters = options.gl_iters if options.gl_iters is not None else iters
    record("neural_vs_griffin_lim", neural_vs_griffin_lim(bundle, backend, options, x0, gl_iters, momentum))
    record("griffin_lim_vs_fft_floor", griffin_lim_vs_fft_floor(bundle, x0, options.ab_runs, gl_iters, momentum))
    if backend.device == "cpu" and physical_cores() > 1:
        record("threads", threads_ab(bundle, backend, options, batch))
    else:
        record("threads", "only on a CPU backend with more than one core")
    if skipped:
        out["skipped"] = skipped
    return out


def sampler_vs_loop(bundle: Bundle, backend: TimedBackend, options: BenchOptions, batch: int) -> dict[str, Any] | str:
    """Same steps, same vocoder choice: only the sampling stage differs (noise → x̂0). A string says why it was skipped."""
    if not (bundle.has_graph("sampler") and bundle.has_graph("denoiser") and options.steps in (None, bundle.steps)):
        return "needs both the sampler and denoiser graphs at the bundle's own step count"
    arms = {}
    for mode in MODES:
        request = RequestBench(bundle, backend, options.settings(mode=mode), batch, seed=options.seed)
        arms[mode] = lambda r=request: (r.sampler.sample_x0(r.noise.take(batch)), r.backend.take_calls())
    result = ab_result(interleaved(arms, options.ab_runs), "loop", "sampler")
    result["what"] = f"noise → x̂0 only, {bundle.steps} steps, batch {batch}"
    return result


def numpy_vs_graph_vocoder(bundle: Bundle, backend: TimedBackend, options: BenchOptions, x0: np.ndarray,
                           ) -> tuple[dict[str, Any] | str, tuple[int, float]]:
    """(result or why skipped, (Griffin-Lim iterations, momentum) the comparison ran with: the vocoder graph's, else the
    option's or the runtime defaults)."""
    audio, batch = bundle.audio, x0.shape[0]
    if not bundle.has_graph("vocoder"):
        iters = options.gl_iters if options.gl_iters is not None else DEFAULT_ITERS
        return "the bundle has no vocoder graph", (iters, DEFAULT_MOMENTUM)
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

    result = ab_result(interleaved({"numpy": numpy_gl, "graph": graph_gl}, options.ab_runs), "graph", "numpy")
    result["what"] = f"x̂0 → waveform, Griffin-Lim {iters} it., batch {batch}, {backend.describe()}"
    return result, (iters, momentum)


def neural_vs_griffin_lim(bundle: Bundle, backend: TimedBackend, options: BenchOptions, x0: np.ndarray, iters: int,
                          momentum: float) -> dict[str, Any] | str:
    if bundle.neural is None:
        return "the bundle has no learned vocoder (export one with pdd-export --vocoder-ckpt)"
    audio, batch = bundle.audio, x0.shape[0]
    backend.prepare(["neural_vocoder"], batch)

    def neural() -> None:
        spectrum = backend.to_host(backend.run("neural_vocoder", {"x0": x0})["spectrum"])
        spectrum_to_audio(np.asarray(spectrum), audio)
        backend.take_calls()

    def gl() -> None:
        packed_to_audio(x0, audio, n_iter=iters, momentum=momentum, gate=bundle.gl_gate)

    result = ab_result(interleaved({"neural": neural, "griffin_lim": gl}, options.ab_runs), "griffin_lim", "neural")
    result["what"] = (f"x̂0 → waveform, learned vocoder graph + numpy iSTFT vs numpy Griffin-Lim {iters} it. "
                      f"(silence gate), batch {batch}, {backend.describe()}")
    return result


def griffin_lim_vs_fft_floor(bundle: Bundle, x0: np.ndarray, runs: int, iters: int, momentum: float) -> dict[str, Any]:
    """numpy Griffin-Lim on x̂0's magnitudes vs the FFTs it cannot avoid, with the floor's achieved GFLOP/s."""
    audio, batch = bundle.audio, x0.shape[0]
    magnitude = mel_to_magnitude(denormalize(unpack(x0, bundle.chunks), audio), audio)
    times = interleaved({"griffin_lim": lambda: griffin_lim(magnitude, audio, n_iter=iters, momentum=momentum),
                         "fft_floor": fft_floor_fn(bundle, batch, iters)}, runs)
    result = ab_result(times, "griffin_lim", "fft_floor")
    flops = fft_flops(bundle, batch, iters)
    result.update({
        "what": f"numpy Griffin-Lim {iters} it. vs (2·{iters}+1) real FFTs of {audio.n_fft} × {audio.frames} frames, "
                f"batch {batch}",
        "fft_gflop": flops / 1e9,
        "fft_floor_gflops_per_s": flops / 1e9 / (result["arms"]["fft_floor"]["p50"] / 1e3),
    })
    return result


def threads_ab(bundle: Bundle, backend: TimedBackend, options: BenchOptions, batch: int) -> dict[str, Any]:
    """Whole requests with the default threads (onnxruntime intra-op = physical cores, scipy.fft workers = cores) vs one
    thread for both (a backend made with threads=1, PDD_FFT_WORKERS=1): on a shared machine, thread pools can lose more to
    waiting for a descheduled worker than they gain."""
    default = RequestBench(bundle, backend, options.settings(), batch, seed=options.seed)
    single_backend = TimedBackend(create_backend(options.backend, bundle, device=options.device, threads=1))
    single = RequestBench(bundle, single_backend, options.settings(), batch, seed=options.seed)

    def one_thread() -> None:
        with fft_workers_set_to(1):
            single()

    try:
        result = ab_result(interleaved({"default": default, "1_thread": one_thread}, options.ab_runs), "1_thread", "default")
    finally:
        single_backend.close()
    result["what"] = (f"whole requests, batch {batch}: default threads (ort {physical_cores()}, fft "
                      f"{fft_workers()}) vs 1 thread for both")
    return result


@contextlib.contextmanager
def fft_workers_set_to(workers: int) -> Iterator[None]:
    """PDD_FFT_WORKERS set for the duration of a block (`spectral.fft_workers` reads it per call), then restored exactly."""
    before = os.environ.get("PDD_FFT_WORKERS")
    os.environ["PDD_FFT_WORKERS"] = str(workers)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PDD_FFT_WORKERS", None)
        else:
            os.environ["PDD_FFT_WORKERS"] = before
