"""Sampling a bundle on a backend: host-seeded noise → x̂0 (fused `sampler` graph or host `loop` over the denoiser) →
waveform (the `vocoder` graph or numpy Griffin-Lim).

Modes:

- `sampler`: one call of the fused N-step graph (z_1 → x̂0); the step count is fixed at export, so `steps` must be the
  bundle's N.
- `loop`: the denoiser once per step with the DDIM update (`schedule.ddim_sample` over `grid(steps)`) on the host between calls.
  Valid step counts are the schedule's (`ScheduleConfig.steps_problem`, the one rule): the divisors of N, whose grids
  t = k/M are subsets of the trained grid (a distilled student only ever saw those times); any count up to the teacher
  grid for a bundle marked "continuous" (a teacher).
- `auto`: `sampler` where it runs the asked steps, else `loop` (what `Engine` and `pdd-serve` use).

`resolve_settings` decides all of this from the manifest alone (no sessions), so a server can validate a request and
`Sampler` can prepare exactly the graphs it will run.

Vocoders (`SamplerSettings.vocoder`):

- `neural`: the bundle's learned vocoder. On the CPU its `neural_vocoder` graph gives STFT frames and numpy finishes the
  inverse STFT (cheapest there); on a GPU backend the `neural_vocoder_wave` graph, when present, does the whole decode
  on the device.
- `gl`: Griffin-Lim behind the bundle's silence gate: the bundle's `vocoder` graph on a GPU backend (it keeps x̂0 on the
  device), numpy on the CPU (real FFTs beat DFT-as-convolution there) and whenever --gl-iters differs from the graph's.
  `graph` and `numpy` force one of the two Griffin-Lim implementations.
- `auto`: the bundle's default (`neural` when it ships a learned vocoder), Griffin-Lim when --gl-iters is given.

Noise comes from numpy's Generator(seed) on the host and is drawn clip by clip in order, so clip i of a seed is the same
whatever the batch size and the same on every backend.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pdd.runtime.backends import Backend
from pdd.runtime.bundle import Bundle, finite_or_error
from pdd.runtime.errors import ConfigError
from pdd.runtime.griffinlim import DEFAULT_ITERS, DEFAULT_MOMENTUM, packed_to_audio, random_phase
from pdd.runtime.neural_vocoder import spectrum_to_audio
from pdd.runtime.schedule import ddim_sample, grid

MODES = ("sampler", "loop")
AUTO = "auto"  # a mode for callers that name only steps: the fused graph where it runs them, else the loop
PHASE_STREAM = 1  # NoiseStream's phases come from Generator([seed, 1]): independent of the noise, fixed per seed
VOCODERS = ("auto", "neural", "gl", "graph", "numpy")  # graph/numpy: Griffin-Lim with that implementation


def initial_noise(seed: int, batch: int, shape: tuple[int, ...]) -> np.ndarray:
    """(batch, *shape) float32 standard normal noise from numpy's Generator(seed)."""
    if batch < 1:
        raise ConfigError(f"batch must be >= 1, got {batch}")
    return np.random.default_rng(seed).standard_normal((batch, *shape), dtype=np.float32)


class NoiseStream:
    """Consecutive clips of `initial_noise(seed, n, shape)`, drawn a batch at a time (clip i never depends on batching),
    and, from a second stream of the same seed, each clip's Griffin-Lim start phase."""

    def __init__(self, seed: int, shape: tuple[int, ...]) -> None:
        self.rng = np.random.default_rng(seed)
        self.phase_rng = np.random.default_rng([seed, PHASE_STREAM])
        self.shape = shape

    def take(self, count: int) -> np.ndarray:
        return self.rng.standard_normal((count, *self.shape), dtype=np.float32)

    def take_phase(self, count: int, shape: tuple[int, ...]) -> np.ndarray:
        """(count, n_freqs, frames) start phases for the vocoder, one per clip, in clip order."""
        return random_phase(self.phase_rng, (count, *shape))


@dataclass(frozen=True)
class SamplerSettings:
    """How to sample, as asked: `resolve_settings` turns it into `ResolvedSettings` for one bundle and device."""

    mode: str = "sampler"  # MODES, or "auto": the fused graph at the bundle's N, the denoiser loop otherwise
    steps: int | None = None  # None: the bundle's N
    vocoder: str = "auto"
    gl_iters: int | None = None  # None: the vocoder graph's count, else griffinlim.DEFAULT_ITERS


@dataclass(frozen=True)
class ResolvedSettings:
    """Settings as they will run: every `auto` decided, every rule of the bundle checked; JSON-serialisable."""

    mode: str  # "sampler" | "loop"
    steps: int
    vocoder: str  # "neural" (learned) | "gl" (Griffin-Lim)
    vocoder_impl: str  # "graph" | "wave-graph" | "numpy"
    gl_iters: int  # 0 for the learned vocoder
    gl_momentum: float
    graphs: tuple[str, ...]  # the bundle graphs these settings run, in order

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["graphs"] = list(self.graphs)
        return data


def resolve_settings(bundle: Bundle, settings: SamplerSettings, device: str) -> ResolvedSettings:
    """The one resolution of sampling settings: a pure function of the bundle's manifest, the settings and where the
    backend runs (`device` "cpu" or a GPU: `auto` vocoder choices differ). Opens nothing; ConfigError/BundleError with
    one line for anything the bundle cannot run."""
    if settings.mode not in MODES + (AUTO,):
        raise ConfigError(f"unknown mode {settings.mode!r}; choose one of: {', '.join(MODES + (AUTO,))}")
    if settings.vocoder not in VOCODERS:
        raise ConfigError(f"unknown vocoder {settings.vocoder!r}; choose one of: {', '.join(VOCODERS)}")
    steps = bundle.steps if settings.steps is None else settings.steps
    mode = settings.mode
    if mode == AUTO:
        mode = "sampler" if steps == bundle.steps and bundle.has_graph("sampler") else "loop"
    _check_steps(bundle, mode, steps)
    vocoder, impl, iters, momentum = _resolve_vocoder(bundle, settings, device != "cpu")
    graphs = ("sampler" if mode == "sampler" else "denoiser",) + _decode_graphs(vocoder, impl)
    for graph in graphs:
        bundle.graph(graph)  # a clear error before anything is opened
    return ResolvedSettings(mode, steps, vocoder, impl, iters, momentum, graphs)


def offered_steps(bundle: Bundle, limit: int = 64) -> tuple[int, ...]:
    """Step counts a user may pick from (a page's menu): the fused graph's N and the loop's counts up to `limit`."""
    steps = {bundle.steps} if bundle.has_graph("sampler") else set()
    if bundle.has_graph("denoiser"):
        steps.update(bundle.schedule_config.valid_steps(max(bundle.steps, limit)))
    return tuple(sorted(steps))


def _check_steps(bundle: Bundle, mode: str, steps: int) -> None:
    if mode == "sampler":
        if steps != bundle.steps:
            raise ConfigError(
                f"the fused sampler graph runs exactly {bundle.steps} steps; use --mode loop for --steps {steps}"
                if bundle.has_graph("denoiser") else
                f"this bundle's sampler runs exactly {bundle.steps} steps and it has no denoiser for other counts"
            )
        if not bundle.has_graph("sampler"):
            raise ConfigError("this bundle has no fused sampler graph; use --mode loop")
        return
    problem = bundle.schedule_config.steps_problem(steps)
    if problem:
        raise ConfigError(problem)
    if not bundle.has_graph("denoiser"):
        raise ConfigError("this bundle has no denoiser graph for loop mode; use --mode sampler")


def _resolve_vocoder(bundle: Bundle, settings: SamplerSettings, on_gpu: bool) -> tuple[str, str, int, float]:
    """(vocoder "neural"|"gl", implementation, Griffin-Lim iterations, momentum) for the settings on this bundle."""
    choice = settings.vocoder
    if choice == "auto":
        choice = "gl" if settings.gl_iters is not None else bundle.default_vocoder
    if choice == "neural":
        neural = bundle.neural
        if neural is None:
            raise ConfigError(f"engine {bundle.name!r} has no learned vocoder; use --vocoder gl (Griffin-Lim) "
                              "or export one with `pdd-export --vocoder-ckpt`")
        return "neural", "wave-graph" if on_gpu and neural.get("wave_graph") else "graph", 0, 0.0
    impl, iters, momentum = _resolve_griffin_lim(bundle, settings, choice, on_gpu)
    return "gl", impl, iters, momentum


def _resolve_griffin_lim(bundle: Bundle, settings: SamplerSettings, choice: str, on_gpu: bool) -> tuple[str, int, float]:
    graph = bundle.graph("vocoder").extra if bundle.has_graph("vocoder") else None
    momentum = float(graph["gl_momentum"]) if graph else DEFAULT_MOMENTUM
    graph_iters = int(graph["gl_iters"]) if graph else None
    iters = settings.gl_iters if settings.gl_iters is not None else (graph_iters or DEFAULT_ITERS)
    if iters < 0:
        raise ConfigError(f"--gl-iters must be >= 0, got {iters}")
    if choice == "graph":
        if graph is None:
            raise ConfigError("this bundle has no Griffin-Lim graph; use --vocoder numpy")
        if iters != graph_iters:
            raise ConfigError(f"the Griffin-Lim graph runs exactly {graph_iters} iterations; use --vocoder numpy for {iters}")
    elif choice == "gl":
        # The graph keeps x̂0 on a GPU; on the CPU real FFTs beat DFT-as-convolution, so numpy decodes there.
        choice = "graph" if graph is not None and on_gpu and iters == graph_iters else "numpy"
    return choice, iters, momentum


def _decode_graphs(vocoder: str, impl: str) -> tuple[str, ...]:
    if vocoder == "neural":
        return ("neural_vocoder_wave" if impl == "wave-graph" else "neural_vocoder",)
    return ("vocoder",) if impl == "graph" else ()


@dataclass
class Timings:
    """Milliseconds spent per stage (summed over batches)."""

    sample_ms: float = 0.0
    decode_ms: float = 0.0
    batches: int = 0
    per_batch_ms: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"sample_ms": round(self.sample_ms, 3), "decode_ms": round(self.decode_ms, 3), "batches": self.batches,
                "per_batch_ms": [round(t, 3) for t in self.per_batch_ms]}


class Sampler:
    """Noise → waveform for one bundle on one backend at a fixed batch size."""

    def __init__(self, bundle: Bundle, backend: Backend, settings: SamplerSettings, batch: int) -> None:
        self.resolved = resolve_settings(bundle, settings, backend.device)
        if batch < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {batch}")
        self.bundle, self.backend, self.batch = bundle, backend, batch
        resolved = self.resolved
        self.mode, self.steps, self.vocoder, self.vocoder_impl = resolved.mode, resolved.steps, resolved.vocoder, resolved.vocoder_impl
        self.gl_iters, self.gl_momentum = resolved.gl_iters, resolved.gl_momentum
        backend.prepare(list(resolved.graphs), batch)
        self.timings = Timings()

    # -- stages ---------------------------------------------------------------------------------------------------
    def sample_x0(self, z1: np.ndarray) -> Any:
        """x̂0 for a batch of noise; a device value when the vocoder graph will consume it on the device."""
        keep = ("x0",) if len(self.resolved.graphs) > 1 else ()
        if self.mode == "sampler":
            return self.backend.run("sampler", {"z_1": z1}, keep=keep)["x0"]
        t_in = np.empty((z1.shape[0],), dtype=np.float32)

        def denoise(z: np.ndarray, t: float) -> np.ndarray:
            t_in.fill(t)
            return np.asarray(self.backend.run("denoiser", {"z_t": z, "t": t_in})["v"], dtype=np.float32)

        # Python-float coefficients never upcast a float32 array, so z stays float32 from step to step
        return ddim_sample(denoise, np.asarray(z1, dtype=np.float32), grid(self.steps))

    @property
    def phase_shape(self) -> tuple[int, int]:
        """Per-clip shape of the Griffin-Lim start phase: (n_freqs, frames)."""
        return (self.bundle.audio.n_freqs, self.bundle.audio.frames)

    def decode(self, x0: Any, phase0: np.ndarray | None = None) -> np.ndarray:
        """(B, C·F, L) x̂0 → (B, samples) waveform with the resolved vocoder; Griffin-Lim starts from `phase0`
        (B, n_freqs, frames) radians, or zeros (the learned vocoder ignores it)."""
        audio = self.bundle.audio
        if self.vocoder == "neural":
            if self.vocoder_impl == "wave-graph":
                return self.backend.run("neural_vocoder_wave", {"x0": x0})["waveform"]
            spectrum = self.backend.to_host(self.backend.run("neural_vocoder", {"x0": x0})["spectrum"])
            return spectrum_to_audio(finite_or_error(np.asarray(spectrum), "the neural vocoder"), audio)
        if phase0 is None:
            phase0 = np.zeros((self.batch, *self.phase_shape), dtype=np.float32)
        if self.vocoder_impl == "graph":
            return self.backend.run("vocoder", {"x0": x0, "phase0": phase0})["waveform"]
        x0 = finite_or_error(self.backend.to_host(x0), "the sampler")
        return packed_to_audio(x0, audio, n_iter=self.gl_iters, momentum=self.gl_momentum, phase0=phase0,
                               gate=self.bundle.gl_gate)

    def __call__(self, z1: np.ndarray, phase0: np.ndarray | None = None) -> np.ndarray:
        """One batch of noise (and optional Griffin-Lim start phases) → (B, samples) float32 waveforms; stage times
        accumulate in `timings`."""
        if z1.shape[0] != self.batch:
            raise ConfigError(f"noise batch {z1.shape[0]} differs from the prepared batch {self.batch}")
        start = time.perf_counter()
        x0 = self.sample_x0(z1)
        mid = time.perf_counter()
        wave = finite_or_error(np.asarray(self.decode(x0, phase0), dtype=np.float32), "the vocoder")
        end = time.perf_counter()
        self.timings.sample_ms += (mid - start) * 1e3
        self.timings.decode_ms += (end - mid) * 1e3
        self.timings.batches += 1
        self.timings.per_batch_ms.append((end - start) * 1e3)
        return wave
