"""Sampling a bundle on a backend: host-seeded noise → x̂0 (fused `sampler` graph or host `loop` over the denoiser) →
waveform (the `vocoder` graph or numpy Griffin-Lim).

Modes:

- `sampler`: one call of the fused N-step graph (z_1 → x̂0); the step count is fixed at export, so `steps` must be the
  bundle's N.
- `loop`: the denoiser once per step with the DDIM update (`schedule.ddim_sample` over `grid(steps)`) on the host between calls.
  Valid step counts are `Bundle.valid_loop_steps()`: the divisors of N, whose grids t = k/M are subsets of the trained
  grid (a distilled student only ever saw those times); any count for a bundle marked "continuous" (a teacher).

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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pdd.runtime.backends import Backend
from pdd.runtime.bundle import Bundle, finite_or_error
from pdd.runtime.errors import ConfigError
from pdd.runtime.griffinlim import DEFAULT_ITERS, DEFAULT_MOMENTUM, packed_to_audio, random_phase
from pdd.runtime.neural_vocoder import spectrum_to_audio
from pdd.runtime.schedule import ddim_sample, grid

MODES = ("sampler", "loop")
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


def loop_steps_error(bundle: Bundle, steps: int) -> str | None:
    """Why loop mode cannot run `steps` on this bundle, or None."""
    if steps < 1:
        return f"--steps must be >= 1, got {steps}"
    if bundle.continuous_time or bundle.steps % steps == 0:
        return None
    valid = ", ".join(str(s) for s in bundle.valid_loop_steps())
    return (
        f"--steps {steps} is not on this bundle's {bundle.steps}-step grid; loop mode runs {valid} "
        f"(divisors of {bundle.steps}, whose times the model was trained on)"
    )


@dataclass
class SamplerSettings:
    """How to sample: resolved against a bundle and backend by `Sampler`."""

    mode: str = "sampler"
    steps: int | None = None  # None: the bundle's N
    vocoder: str = "auto"
    gl_iters: int | None = None  # None: the vocoder graph's count, else griffinlim.DEFAULT_ITERS


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
        if settings.mode not in MODES:
            raise ConfigError(f"unknown mode {settings.mode!r}; choose one of: {', '.join(MODES)}")
        if settings.vocoder not in VOCODERS:
            raise ConfigError(f"unknown vocoder {settings.vocoder!r}; choose one of: {', '.join(VOCODERS)}")
        if batch < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {batch}")
        self.bundle, self.backend, self.batch = bundle, backend, batch
        self.mode = settings.mode
        self.steps = self._resolve_steps(settings)
        self.vocoder, self.vocoder_impl, self.gl_iters, self.gl_momentum = self._resolve_vocoder(settings)
        graphs = ["sampler" if self.mode == "sampler" else "denoiser"] + self._decode_graphs()
        for graph in graphs:
            bundle.graph(graph)  # a clear error before anything is opened
        backend.prepare(graphs, batch)
        self.timings = Timings()

    def _resolve_steps(self, settings: SamplerSettings) -> int:
        bundle = self.bundle
        steps = bundle.steps if settings.steps is None else settings.steps
        if self.mode == "sampler":
            if steps != bundle.steps:
                raise ConfigError(
                    f"the fused sampler graph runs exactly {bundle.steps} steps; use --mode loop for --steps {steps}"
                    if bundle.has_graph("denoiser") else
                    f"this bundle's sampler runs exactly {bundle.steps} steps and it has no denoiser for other counts"
                )
            if not bundle.has_graph("sampler"):
                raise ConfigError("this bundle has no fused sampler graph; use --mode loop")
        else:
            problem = loop_steps_error(bundle, steps)
            if problem:
                raise ConfigError(problem)
            if not bundle.has_graph("denoiser"):
                raise ConfigError("this bundle has no denoiser graph for loop mode; use --mode sampler")
        return steps

    def _resolve_vocoder(self, settings: SamplerSettings) -> tuple[str, str, int, float]:
        """(vocoder "neural"|"gl", implementation, Griffin-Lim iterations, momentum) for the settings on this bundle."""
        choice = settings.vocoder
        if choice == "auto":
            choice = "gl" if settings.gl_iters is not None else self.bundle.default_vocoder
        if choice == "neural":
            neural = self.bundle.neural
            if neural is None:
                raise ConfigError(f"engine {self.bundle.name!r} has no learned vocoder; use --vocoder gl (Griffin-Lim) "
                                  "or export one with `pdd-export --vocoder-ckpt`")
            on_gpu = self.backend.device != "cpu"
            impl = "wave-graph" if on_gpu and neural.get("wave_graph") else "graph"
            return "neural", impl, 0, 0.0
        impl, iters, momentum = self._resolve_griffin_lim(settings, choice)
        return "gl", impl, iters, momentum

    def _decode_graphs(self) -> list[str]:
        if self.vocoder == "neural":
            return ["neural_vocoder_wave" if self.vocoder_impl == "wave-graph" else "neural_vocoder"]
        return ["vocoder"] if self.vocoder_impl == "graph" else []

    def _resolve_griffin_lim(self, settings: SamplerSettings, choice: str) -> tuple[str, int, float]:
        bundle = self.bundle
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
            on_gpu = self.backend.device != "cpu"
            choice = "graph" if graph is not None and on_gpu and iters == graph_iters else "numpy"
        return choice, iters, momentum

    # -- stages ---------------------------------------------------------------------------------------------------
    def sample_x0(self, z1: np.ndarray) -> Any:
        """x̂0 for a batch of noise; a device value when the vocoder graph will consume it on the device."""
        keep = ("x0",) if self._decode_graphs() else ()
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
