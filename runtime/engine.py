"""`Engine`: music from an engine bundle in Python, the same samples `pdd-run` writes.

    from pdd.runtime import Engine
    with Engine.load() as engine:                       # the shipped default engine, or a bundle folder or name
        out = engine.generate(n=2, seed=7)              # out.audio: (2, samples) float32 at out.sample_rate

`pdd-run`, `pdd-bench` and `benchmarks/load.py` are users of this class; settings are resolved by the pure
`sampler.resolve_settings`, which `pdd-serve` uses too. Clip i of a seed is clip i of numpy's Generator(seed) noise
stream, whatever the batch size and on every backend.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from pdd.runtime.audio import peak_guard as guard_peaks
from pdd.runtime.backends import Backend, create_backend
from pdd.runtime.bundle import Bundle, load_bundle
from pdd.runtime.errors import BundleError, ConfigError
from pdd.runtime.manifest import MAX_MANIFEST_STEPS
from pdd.runtime.sampler import AUTO, NoiseStream, ResolvedSettings, Sampler, SamplerSettings, resolve_settings

DEFAULT_BATCH = 4
# Upper bounds on counts that size allocations or loops up front (a typo of -n 1e9 must not start hours of work).
MAX_CLIPS = 10_000  # files per run (each keeps a small result record until the summary)
MAX_BATCH = 128  # clips per model call: (batch, n_freqs, frames) phase buffers are ~1.6 MB a clip for paper
MAX_SEAMLESS = 256  # clips joined per file (≈ 38 min at 8.9 s a clip)
MAX_STEPS = MAX_MANIFEST_STEPS  # no manifest may record a finer grid, so no engine runs more steps
MAX_GL_ITERS = 1000  # numpy Griffin-Lim iterations (32 is the default; 1000 is ~30× its cost)


# -- where engines live -------------------------------------------------------------------------------------------------
def engines_root() -> Path:
    """The installed `pdd.engines` package folder (engines/ in the repo; package data after `pip install .`)."""
    from importlib.resources import files

    return Path(str(files("pdd.engines")))


def default_engine_dir(root: Path | None = None) -> Path:
    """The shipped default bundle: engines/DEFAULT (one line, a folder name) or engines/default/ in package pdd.engines."""
    root = engines_root() if root is None else root
    marker = root / "DEFAULT"
    if marker.is_file():
        name = marker.read_text().strip()
        if not name or "/" in name or name.startswith("."):
            raise BundleError(f"{marker} must name one bundle folder next to it; reinstall pdd")
        return root / name
    if (root / "default" / "manifest.json").is_file():
        return root / "default"
    raise BundleError(
        "this install ships no default engine yet (pdd.engines has no DEFAULT file or default/ bundle); "
        "pass --engine DIR with a bundle made by `pdd-export`"
    )


def resolve_engine(engine: str | os.PathLike[str] | None) -> Path:
    """The bundle folder for `engine`: None is the shipped default; a path that exists is itself; a bare name that is
    no path here but names a shipped engine ("small-piano") is that engine; anything else is returned as given, so
    loading it reports the missing folder."""
    if engine is None:
        return default_engine_dir()
    path = Path(engine)
    if not path.exists() and len(path.parts) == 1 and not str(engine).startswith("."):
        shipped = engines_root() / path.name
        if (shipped / "manifest.json").is_file():
            return shipped
    return path


# -- argument checks ----------------------------------------------------------------------------------------------------
def check_count(value: int, flag: str, low: int, high: int, what: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{flag} must be a whole number, got {value!r}")
    if value < low:
        raise ConfigError(f"{flag} must be >= {low}{what}, got {value}")
    if value > high:
        raise ConfigError(f"{flag} must be <= {high}{what}, got {value}")


def check_generate_args(n: int, seed: int, steps: int | None, gl_iters: int | None, batch_size: int | None,
                        seamless: int, crossfade: float) -> None:
    """Checks of `Engine.generate`'s arguments that need no engine (the bounds `pdd-run` reports as its flags)."""
    check_count(n, "-n", 1, MAX_CLIPS, " (number of clips)")
    if batch_size is not None:
        check_count(batch_size, "--batch-size", 1, MAX_BATCH)
    if steps is not None:
        check_count(steps, "--steps", 1, MAX_STEPS)
    if gl_iters is not None:
        check_count(gl_iters, "--gl-iters", 0, MAX_GL_ITERS)
    check_count(seamless, "--seamless", 1, MAX_SEAMLESS, " (clips per file)")
    if not math.isfinite(crossfade) or crossfade < 0:
        raise ConfigError(f"--crossfade must be a finite number of seconds >= 0, got {crossfade}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"--seed must be a whole number, got {seed!r}")
    if seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {seed}")


# -- joining clips ------------------------------------------------------------------------------------------------------
def crossfade_samples(crossfade: float, seamless: int, bundle: Bundle) -> int:
    """`crossfade` seconds in samples, checked against the clip length (0 when files hold single clips)."""
    if seamless == 1:
        return 0
    overlap = int(round(crossfade * bundle.audio.sample_rate))
    if not 0 <= overlap < bundle.audio.clip_samples // 2:
        limit = bundle.audio.clip_samples / 2 / bundle.audio.sample_rate
        raise ConfigError(f"--crossfade must be in [0, {limit:.2f}) seconds for this engine's clips, got {crossfade}")
    return overlap


def crossfade_join(waves: list[np.ndarray], overlap: int) -> np.ndarray:
    """Concatenate clips, overlapping neighbours by `overlap` samples with an equal-power (cos/sin) crossfade."""
    if len(waves) == 1 or overlap == 0:
        return np.concatenate(waves).astype(np.float32, copy=False)
    ramp = np.linspace(0.0, np.pi / 2, overlap, dtype=np.float64)
    fade_out, fade_in = np.cos(ramp).astype(np.float32), np.sin(ramp).astype(np.float32)
    out = np.asarray(waves[0], dtype=np.float32)
    for wave in waves[1:]:
        wave = np.asarray(wave, dtype=np.float32)
        mixed = out[-overlap:] * fade_out + wave[:overlap] * fade_in
        out = np.concatenate([out[:-overlap], mixed, wave[overlap:]])
    return out


# -- results ------------------------------------------------------------------------------------------------------------
@dataclass
class GeneratedClip:
    """One output of `Engine.clips`: `seamless` consecutive clips of one seed's noise stream, joined."""

    index: int  # output number within the call
    audio: np.ndarray  # (samples,) float32
    first_clip: int  # the stream's clip numbers first_clip .. first_clip + seamless - 1
    gain_db: float  # the peak guard's gain (0.0: untouched)
    sample_ms: float  # this output's share of its batches: noise → x̂0
    decode_ms: float  # and x̂0 → waveform


@dataclass
class GenerationOutput:
    """What `Engine.generate` returns: the audio, the rate, where each row's noise came from, and how it ran."""

    audio: np.ndarray  # (n, samples) float32, peak-guarded as pdd-run's 16-bit files are unless peak_guard=False
    sample_rate: int
    seeds: tuple[int, ...]  # per row: the seed of its noise stream
    stream_clips: tuple[tuple[int, int], ...]  # per row: first and last clip of that stream it is made of
    settings: ResolvedSettings  # steps, mode, vocoder as they ran
    timings: dict[str, float]  # sample_ms, decode_ms (summed over the call), total_ms (wall)
    gain_db: tuple[float, ...]  # per row: the peak guard's gain
    engine: dict[str, str] = field(default_factory=dict)  # name, manifest_sha256, backend

    @property
    def seconds(self) -> float:
        return self.audio.shape[-1] / self.sample_rate


# -- the engine ---------------------------------------------------------------------------------------------------------
class Engine:
    """An engine bundle opened on a backend, ready to make music; the Python face of `pdd-run`.

        from pdd.runtime import Engine
        with Engine.load() as engine:                       # the shipped default engine, or a bundle folder or name
            out = engine.generate(n=2, seed=7)              # out.audio: (2, samples) float32 at out.sample_rate

    `out.audio[i]` has exactly the samples `pdd-run --seed 7 -n 2` writes to `pdd-7-i.wav` (the same noise, batching
    and peak guard; write it with `pdd.runtime.audio.write_audio` for the same bytes). `steps=None` and
    `vocoder="auto"` are the bundle's own; `steps` off the bundle's N runs the denoiser loop (a divisor of N for a
    distilled engine). Bad arguments raise `pdd.runtime.errors.PddError` subclasses with one-line messages.
    `close()` (or leaving the `with` block) releases the backend's sessions.
    """

    def __init__(self, bundle: Bundle, backend: Backend, *, load_ms: float = 0.0) -> None:
        self.bundle, self.backend = bundle, backend
        self.load_ms = load_ms  # bundle checks + backend start-up, for reports
        self.closed = False

    @classmethod
    def load(cls, name_or_path: str | os.PathLike[str] | None = None, backend: str = "auto",
             device: str = "auto") -> "Engine":
        """Open a bundle: None is the shipped default, else a bundle folder or a shipped engine's name. `backend`:
        "auto" | "ort" | "trt"; `device`: "auto" | "cpu" | "cuda"."""
        started = time.perf_counter()
        bundle = load_bundle(resolve_engine(name_or_path), check_graphs=False)  # the backend checks the I/O it opens
        return cls.open(bundle, backend, device, started=started)

    @classmethod
    def open(cls, bundle: Bundle, backend: str = "auto", device: str = "auto", *,
             started: float | None = None) -> "Engine":
        """An already loaded `Bundle` on a new backend."""
        started = time.perf_counter() if started is None else started
        opened = create_backend(backend, bundle, device=device)
        return cls(bundle, opened, load_ms=(time.perf_counter() - started) * 1e3)

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the backend's sessions; the engine cannot generate afterwards."""
        self.closed = True
        self.backend.close()

    # -- facts ----------------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.bundle.name

    @property
    def sample_rate(self) -> int:
        return self.bundle.audio.sample_rate

    @property
    def clip_samples(self) -> int:
        return self.bundle.audio.clip_samples

    def describe(self) -> dict[str, str]:
        return {"name": self.bundle.name, "manifest_sha256": self.bundle.hash, "backend": self.backend.describe()}

    def resolve(self, steps: int | None = None, vocoder: str = "auto", *, mode: str = AUTO,
                gl_iters: int | None = None) -> ResolvedSettings:
        """The settings these arguments run with on this engine (opens nothing)."""
        return resolve_settings(self.bundle, SamplerSettings(mode, steps, vocoder, gl_iters), self.backend.device)

    def sampler(self, batch: int, steps: int | None = None, vocoder: str = "auto", *, mode: str = AUTO,
                gl_iters: int | None = None) -> Sampler:
        """A `Sampler` at `batch` clips per call (its graphs' sessions opened): for callers that time stages."""
        if self.closed:
            raise ConfigError(f"engine {self.bundle.name!r} is closed; load it again to generate")
        return Sampler(self.bundle, self.backend, SamplerSettings(mode, steps, vocoder, gl_iters), batch)

    # -- generation -----------------------------------------------------------------------------------------------
    def generate(self, n: int = 1, seed: int = 0, steps: int | None = None, vocoder: str = "auto", *,
                 mode: str = AUTO, gl_iters: int | None = None, batch_size: int | None = None, seamless: int = 1,
                 crossfade: float = 0.5, peak_guard: bool = True) -> GenerationOutput:
        """`n` clips of seed `seed` as one (n, samples) float32 array, with `pdd-run`'s defaults and samples.

        steps: None is the bundle's N (the fused sampler graph); another count runs the denoiser loop (`mode="auto"`).
        vocoder: "auto" (the bundle's default) | "neural" (the learned vocoder) | "gl" (Griffin-Lim) | "graph" |
            "numpy" (one Griffin-Lim implementation); `gl_iters` sets Griffin-Lim's iterations.
        mode: "auto" | "sampler" | "loop" (as `pdd-run --mode`); batch_size: clips per model call (None: min(n, 4),
            as pdd-run; batching never changes which noise a clip gets).
        seamless, crossfade: join this many consecutive clips per row with an equal-power crossfade (seconds).
        peak_guard: scale rows that would clip 16-bit PCM to -1 dBFS (pdd-run does for its 16-bit files).
        """
        started = time.perf_counter()
        sampler = self.prepare(n, seed, steps, vocoder, mode=mode, gl_iters=gl_iters, batch_size=batch_size,
                               seamless=seamless, crossfade=crossfade)
        made = list(self.clips(sampler, n, seed, seamless=seamless, crossfade=crossfade, peak_guard=peak_guard))
        return GenerationOutput(
            audio=np.stack([clip.audio for clip in made]),
            sample_rate=self.sample_rate,
            seeds=(seed,) * n,
            stream_clips=tuple((c.first_clip, c.first_clip + seamless - 1) for c in made),
            settings=sampler.resolved,
            timings={"sample_ms": sum(c.sample_ms for c in made), "decode_ms": sum(c.decode_ms for c in made),
                     "total_ms": (time.perf_counter() - started) * 1e3},
            gain_db=tuple(c.gain_db for c in made),
            engine=self.describe(),
        )

    def prepare(self, n: int, seed: int, steps: int | None = None, vocoder: str = "auto", *, mode: str = AUTO,
                gl_iters: int | None = None, batch_size: int | None = None, seamless: int = 1,
                crossfade: float = 0.5) -> Sampler:
        """Check the arguments of a generation and open what it runs: the sampler `clips` takes. Every bad argument
        fails here, before any output. `batch_size` None is pdd-run's min(n · seamless, 4)."""
        check_generate_args(n, seed, steps, gl_iters, batch_size, seamless, crossfade)
        crossfade_samples(crossfade, seamless, self.bundle)
        batch = batch_size or min(n * seamless, DEFAULT_BATCH)
        return self.sampler(batch, steps, vocoder, mode=mode, gl_iters=gl_iters)

    def clips(self, sampler: Sampler, n: int, seed: int, *, seamless: int = 1, crossfade: float = 0.5,
              peak_guard: bool = True, progress: Callable[[int, int], None] | None = None) -> Iterator[GeneratedClip]:
        """Yield `n` outputs one by one as their batches finish (nothing is held back: a long run streams to disk).

        Output i joins clips i·seamless … (i+1)·seamless − 1 of Generator(seed)'s noise stream with an equal-power
        crossfade of `crossfade` seconds (independent clips, so a smooth medley, not one continuous piece).
        `peak_guard` scales an output that would clip 16-bit PCM down to -1 dBFS, as pdd-run does for 16-bit files.
        `progress(done, total)` is called after every batch."""
        overlap = crossfade_samples(crossfade, seamless, self.bundle)
        total, batch = n * seamless, sampler.batch
        noise = NoiseStream(seed, self.bundle.packed_shape)
        pending: list[np.ndarray] = []
        pending_ms = np.zeros(2)  # this output's share of (sample, decode) time
        done = index = 0
        while done < total:
            # Always a full batch (fixed shapes for CUDA graphs / plans); surplus clips' noise is drawn and dropped.
            before = np.array([sampler.timings.sample_ms, sampler.timings.decode_ms])
            waves = sampler(noise.take(batch), noise.take_phase(batch, sampler.phase_shape))
            clip_ms = (np.array([sampler.timings.sample_ms, sampler.timings.decode_ms]) - before) / batch
            for wave in waves[: total - done]:
                pending.append(wave)
                pending_ms += clip_ms
                done += 1
                if len(pending) == seamless:
                    joined = crossfade_join(pending, overlap)
                    joined, gain_db = guard_peaks(joined) if peak_guard else (joined, 0.0)
                    yield GeneratedClip(index, joined, index * seamless, gain_db, float(pending_ms[0]),
                                        float(pending_ms[1]))
                    index += 1
                    pending, pending_ms = [], np.zeros(2)
            if progress:
                progress(done, total)


def load_engine_bundle(name_or_path: str | os.PathLike[str] | None) -> Bundle:
    """The bundle `Engine.load` would open, without a backend (for callers that wrap their own, e.g. timing)."""
    return load_bundle(resolve_engine(name_or_path), check_graphs=False)


__all__ = ["Engine", "GenerationOutput", "GeneratedClip", "default_engine_dir", "engines_root", "resolve_engine",
           "crossfade_join", "load_engine_bundle"]

