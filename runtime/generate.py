"""What `pdd-run` does, as library calls the tests use directly: find the engine, generate clips to files, verify golden.

- `default_engine_dir()`: the bundle shipped in the `pdd.engines` package (engines/DEFAULT names it, else engines/default/).
- `generate(RunOptions)`: noise (Generator(seed), clip by clip) → audio files `pdd-<seed>-<i>.<fmt>` with a JSON sidecar each
  (engine name + manifest sha256, seed, index, steps, mode, backend, timings) and an optional spectrogram PNG. All target
  paths are checked before any work, and nothing is overwritten without `overwrite`.
- `verify(bundle, backend)`: runs golden.npz through the backend and reports the max error per output.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pdd.runtime import __version__
from pdd.runtime.audio import WRITE_FORMATS, write_audio
from pdd.runtime.backends import Backend, create_backend
from pdd.runtime.bundle import MANIFEST_FORMAT, Bundle, golden_tolerance, load_bundle
from pdd.runtime.errors import AudioError, BundleError, ConfigError
from pdd.runtime.fileio import ensure_writable_dir, write_json_atomic
from pdd.runtime.sampler import NoiseStream, Sampler, SamplerSettings

DEFAULT_BATCH = 4
# Upper bounds on counts that size allocations or loops up front (a typo of -n 1e9 must not start hours of work).
MAX_CLIPS = 10_000  # files per run (each keeps a small result record until the summary)
MAX_BATCH = 128  # clips per model call: (batch, n_freqs, frames) phase buffers are ~1.6 MB a clip for paper
MAX_SEAMLESS = 256  # clips joined per file (≈ 38 min at 8.9 s a clip)
MAX_STEPS = 1024
MAX_GL_ITERS = 1000
SIDECAR_SUFFIX = ".json"
PLOT_SUFFIX = ".png"


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
    return default_engine_dir() if engine is None else Path(engine)


@dataclass
class RunOptions:
    """Everything `pdd-run` takes (see cli_run for the user-facing help)."""

    engine: Path | None = None
    n: int = 4
    seed: int = 0
    batch_size: int | None = None  # None: min(n, DEFAULT_BATCH)
    steps: int | None = None
    mode: str = "sampler"
    backend: str = "auto"
    device: str = "auto"
    vocoder: str = "auto"
    gl_iters: int | None = None
    format: str = "wav"
    subtype: str = "pcm16"
    out: Path = Path("out")
    plot: bool = False
    overwrite: bool = False
    seamless: int = 1  # clips joined per file
    crossfade: float = 0.5  # seconds, between joined clips


@dataclass
class ClipResult:
    index: int
    audio: Path
    sidecar: Path
    plot: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def clip_paths(out: Path, seed: int, index: int, fmt: str, plot: bool) -> dict[str, Path]:
    stem = out / f"pdd-{seed}-{index}"
    paths = {"audio": stem.with_suffix(f".{fmt}"), "sidecar": stem.with_suffix(SIDECAR_SUFFIX)}
    if plot:
        paths["plot"] = stem.with_suffix(PLOT_SUFFIX)
    return paths


def check_options(options: RunOptions) -> None:
    """Input checks that need no engine: counts, format, the plotting dependency."""
    check_count(options.n, "-n", 1, MAX_CLIPS, " (number of clips)")
    if options.batch_size is not None:
        check_count(options.batch_size, "--batch-size", 1, MAX_BATCH)
    if options.steps is not None:
        check_count(options.steps, "--steps", 1, MAX_STEPS)
    if options.gl_iters is not None:
        check_count(options.gl_iters, "--gl-iters", 0, MAX_GL_ITERS)
    check_count(options.seamless, "--seamless", 1, MAX_SEAMLESS, " (clips per file)")
    if not math.isfinite(options.crossfade) or options.crossfade < 0:
        raise ConfigError(f"--crossfade must be a finite number of seconds >= 0, got {options.crossfade}")
    if options.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {options.seed}")
    if options.format not in WRITE_FORMATS:
        raise ConfigError(f"unknown --format {options.format!r}; use one of: {', '.join(WRITE_FORMATS)}")
    if options.plot:
        from pdd.runtime.plots import pyplot

        try:
            pyplot()  # fail before any work if matplotlib is missing
        except ConfigError:
            raise ConfigError("--plot needs matplotlib: pip install 'pdd[plot]'") from None


def check_count(value: int, flag: str, low: int, high: int, what: str = "") -> None:
    if value < low:
        raise ConfigError(f"{flag} must be >= {low}{what}, got {value}")
    if value > high:
        raise ConfigError(f"{flag} must be <= {high}{what}, got {value}")


def prepare_out_dir(options: RunOptions) -> None:
    """Create --out, make sure it is writable and that no target exists (unless overwrite). One scan of the folder,
    not one check per clip: the paths themselves are made clip by clip (`clip_paths`) as the clips are written."""
    out = Path(options.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise AudioError(f"cannot use --out {out}: a file is in the way of the folder") from None
    except OSError as exc:
        raise AudioError(f"cannot create --out {out}: {exc.strerror or exc}") from None
    if not out.is_dir():
        raise AudioError(f"cannot use --out {out}: not a folder")
    ensure_writable_dir(out, AudioError)  # os.access lies for root and on some mounts: a real write; stale temps go
    if not options.overwrite:
        existing = existing_targets(out, options)
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise AudioError(f"{existing[0]} already exists{more}; pass --overwrite to replace, or choose another --out/--seed")


def existing_targets(out: Path, options: RunOptions) -> list[Path]:
    """Files in `out` that this run would write (pdd-SEED-I.* with I < n), found by listing the folder once."""
    suffixes = {f".{options.format}", SIDECAR_SUFFIX} | ({PLOT_SUFFIX} if options.plot else set())
    prefix = f"pdd-{options.seed}-"
    found = []
    for entry in os.scandir(out):
        stem, suffix = os.path.splitext(entry.name)
        index = stem[len(prefix):]
        if stem.startswith(prefix) and suffix in suffixes and index.isdigit() and int(index) < options.n:
            found.append(Path(entry.path))
    return sorted(found, key=lambda p: (int(os.path.splitext(p.name)[0][len(prefix):]), p.suffix))


def open_backend(bundle: Bundle, name: str, device: str) -> Backend:
    return create_backend(name, bundle, device=device)


def generate(
    options: RunOptions,
    *,
    progress: Callable[[int, int], None] | None = None,
    bundle: Bundle | None = None,
) -> list[ClipResult]:
    """Generate `options.n` files; returns what was written. `progress(done, total)` is called per batch.

    With `seamless` K > 1 every file joins K consecutive clips of the noise stream with an equal-power crossfade of
    `crossfade` seconds (independent clips, so this is a smooth medley rather than one continuous piece).
    """
    started = time.perf_counter()
    check_options(options)
    if bundle is None:
        bundle = load_bundle(resolve_engine(options.engine), check_graphs=False)  # the backend checks the I/O it opens
    overlap = crossfade_samples(options, bundle)
    prepare_out_dir(options)
    total_clips = options.n * options.seamless
    batch = options.batch_size or min(total_clips, DEFAULT_BATCH)
    settings = SamplerSettings(mode=options.mode, steps=options.steps, vocoder=options.vocoder, gl_iters=options.gl_iters)

    with open_backend(bundle, options.backend, options.device) as backend:
        sampler = Sampler(bundle, backend, settings, batch)
        setup_ms = (time.perf_counter() - started) * 1e3
        noise = NoiseStream(options.seed, bundle.packed_shape)
        results: list[ClipResult] = []
        pending: list[np.ndarray] = []
        pending_ms = np.zeros(2)  # this file's share of (sample, decode) time
        done = 0
        while done < total_clips:
            # Always a full batch (fixed shapes for CUDA graphs / plans); surplus clips' noise is drawn and dropped.
            before = np.array([sampler.timings.sample_ms, sampler.timings.decode_ms])
            waves = sampler(noise.take(batch), noise.take_phase(batch, sampler.phase_shape))
            clip_ms = (np.array([sampler.timings.sample_ms, sampler.timings.decode_ms]) - before) / batch
            for wave in waves[: total_clips - done]:
                pending.append(wave)
                pending_ms += clip_ms
                done += 1
                if len(pending) == options.seamless:
                    index = len(results)
                    joined = crossfade_join(pending, overlap)
                    paths = clip_paths(Path(options.out), options.seed, index, options.format, options.plot)
                    results.append(
                        _write_clip(options, bundle, backend, sampler, paths, index, joined, pending_ms, setup_ms)
                    )
                    pending, pending_ms = [], np.zeros(2)
            if progress:
                progress(done, total_clips)
    return results


def crossfade_samples(options: RunOptions, bundle: Bundle) -> int:
    """--crossfade in samples, checked against the clip length (0 when files hold single clips)."""
    if options.seamless == 1:
        return 0
    overlap = int(round(options.crossfade * bundle.audio.sample_rate))
    if not 0 <= overlap < bundle.audio.clip_samples // 2:
        limit = bundle.audio.clip_samples / 2 / bundle.audio.sample_rate
        raise ConfigError(f"--crossfade must be in [0, {limit:.2f}) seconds for this engine's clips, got {options.crossfade}")
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


PEAK_CEILING = 10 ** (-1 / 20)  # -1 dBFS, the level the training corpus was normalised to


def peak_guard(wave: np.ndarray) -> tuple[np.ndarray, float]:
    """Scale a clip whose peak would clip 16-bit PCM down to -1 dBFS; returns it and the gain applied (dB, ≤ 0).

    Griffin-Lim's phase is not the original's, so a clip's peaks can exceed full scale even when its mel is in range
    (measured: up to 1.9 on the default engine); hard clipping would add distortion, a gain change adds none.
    """
    peak = float(np.abs(wave).max(initial=0.0))
    if peak <= 1.0:
        return wave, 0.0
    gain = PEAK_CEILING / peak
    return (wave * np.float32(gain)).astype(np.float32, copy=False), float(20 * np.log10(gain))


def _write_clip(
    options: RunOptions, bundle: Bundle, backend: Backend, sampler: Sampler, paths: dict[str, Path], index: int,
    wave: np.ndarray, stage_ms: np.ndarray, setup_ms: float,
) -> ClipResult:
    write_start = time.perf_counter()
    wave, gain_db = peak_guard(wave) if options.subtype == "pcm16" else (wave, 0.0)
    audio = write_audio(paths["audio"], wave, bundle.audio.sample_rate, subtype=options.subtype, overwrite=options.overwrite)
    plot = _write_plot(paths["plot"], wave, bundle, options.overwrite) if "plot" in paths else None
    first_clip = index * options.seamless
    meta = {
        "pdd_version": __version__,
        "engine": {"name": bundle.name, "manifest_sha256": bundle.hash, "path": str(bundle.path), "precision": bundle.precision},
        "seed": options.seed,
        "index": index,
        "noise": f"numpy Generator({options.seed}).standard_normal, clips {first_clip}..{first_clip + options.seamless - 1} "
                 "of the stream",
        "clips": options.seamless,
        "crossfade_s": options.crossfade if options.seamless > 1 else 0.0,
        "steps": sampler.steps,
        "mode": sampler.mode,
        "backend": backend.name,
        "backend_detail": backend.describe(),
        "device": backend.device,
        "vocoder": sampler.vocoder,  # "neural" (learned) or "gl" (Griffin-Lim)
        "vocoder_impl": sampler.vocoder_impl,  # graph / wave-graph / numpy
        "gl_iters": sampler.gl_iters if sampler.vocoder == "gl" else None,
        "gl_momentum": sampler.gl_momentum if sampler.vocoder == "gl" else None,
        "silence_gate": _gate_dict(sampler),
        "batch_size": sampler.batch,
        "sample_rate": bundle.audio.sample_rate,
        "samples": int(wave.shape[-1]),
        "seconds": round(wave.shape[-1] / bundle.audio.sample_rate, 4),
        "audio_file": audio.name,
        "peak_guard_gain_db": round(gain_db, 2),
        "timings_ms": {
            "setup": round(setup_ms, 3),  # bundle load + hash checks + backend sessions, once per run
            # This file's share of its batches: noise → x̂0 (sample), x̂0 → waveform (decode), and their sum.
            "sample": round(float(stage_ms[0]), 3),
            "decode": round(float(stage_ms[1]), 3),
            "generate": round(float(stage_ms.sum()), 3),
            "write": round((time.perf_counter() - write_start) * 1e3, 3),
        },
    }
    write_json(paths["sidecar"], meta, overwrite=options.overwrite)
    return ClipResult(index=index, audio=audio, sidecar=paths["sidecar"], plot=plot, meta=meta)


def _gate_dict(sampler: Sampler) -> dict[str, float] | None:
    """The silence gate the decode applied (None: none, e.g. a pdd-engine/1 Griffin-Lim graph)."""
    bundle = sampler.bundle
    if sampler.vocoder == "neural":
        gate = (bundle.neural or {}).get("silence_gate")
        return dict(gate) if gate else None
    if sampler.vocoder_impl == "graph" and bundle.format != MANIFEST_FORMAT:
        return None
    return bundle.gl_gate.to_dict() if bundle.gl_gate is not None else None


def write_json(path: Path, data: dict[str, Any], *, overwrite: bool) -> Path:
    """Atomic JSON write; an existing file is kept unless `overwrite`."""
    return write_json_atomic(path, data, overwrite=overwrite)


def _write_plot(path: Path, wave: np.ndarray, bundle: Bundle, overwrite: bool) -> Path:
    """Log-mel spectrogram of the generated audio (the model's own front end) as a PNG."""
    from pdd.runtime.mel import log_mel
    from pdd.runtime.plots import save_spectrogram_png

    if path.exists() and not overwrite:
        raise AudioError(f"{path} already exists; pass --overwrite to replace it")
    return save_spectrogram_png(path, log_mel(wave, bundle.audio), bundle.audio, title=path.stem)


@dataclass
class GoldenCheck:
    graph: str
    tensor: str
    max_abs_error: float
    reference_peak: float
    tolerance: float  # relative to the reference peak

    @property
    def relative_error(self) -> float:
        return self.max_abs_error / max(self.reference_peak, 1e-12)

    @property
    def ok(self) -> bool:
        return math.isfinite(self.max_abs_error) and self.relative_error <= self.tolerance


def verify(bundle: Bundle, backend: Backend, tolerance: float | None = None) -> list[GoldenCheck]:
    """Run every graph that has golden inputs through `backend`; max abs error per output against golden.npz.

    Pass/fail is relative to the golden output's peak, with `bundle.golden_tolerance` per graph (or `tolerance`).
    """
    golden = bundle.golden()
    checks: list[GoldenCheck] = []
    for name, spec in bundle.graphs.items():
        keys = [f"{name}.{t.name}" for t in spec.inputs]
        if not all(k in golden for k in keys):
            continue
        inputs = {t.name: golden[f"{name}.{t.name}"] for t in spec.inputs}
        batch = check_golden_inputs(name, spec.inputs, inputs)
        backend.prepare([name], batch)
        outputs = backend.run(name, inputs)
        tol = golden_tolerance(name, bundle.precision, tensorrt=backend.uses_tensorrt) if tolerance is None else tolerance
        for tensor in spec.outputs:
            key = f"{name}.{tensor.name}"
            if key not in golden:
                continue
            got = np.asarray(backend.to_host(outputs[tensor.name]), dtype=np.float64)
            want = golden[key].astype(np.float64)
            if got.shape != want.shape:
                raise BundleError(f"{key}: backend gave shape {got.shape}, golden has {want.shape}; re-export the bundle")
            error = float(np.max(np.abs(got - want))) if got.size else 0.0
            peak = float(np.max(np.abs(want))) if want.size else 0.0
            checks.append(GoldenCheck(name, tensor.name, error if math.isfinite(error) else math.inf, peak, tol))
    if not checks:
        raise BundleError(f"golden.npz of {bundle.name!r} has no inputs for any graph; re-export the bundle")
    return checks


def check_golden_inputs(graph: str, specs: Any, inputs: dict[str, np.ndarray]) -> int:
    """The batch of a graph's golden inputs, after checking each against its manifest spec (golden.npz is untrusted:
    a wrong shape or dtype must be a one-line error here, not an onnxruntime traceback)."""
    first = next(iter(inputs.values()))
    batch = int(first.shape[0]) if first.ndim else 0
    if not 1 <= batch <= MAX_BATCH:
        raise BundleError(f"golden.npz {graph} inputs have batch {batch} (expected 1..{MAX_BATCH}); re-export the bundle")
    for spec in specs:
        array = inputs[spec.name]
        if array.shape != spec.concrete(batch) or array.dtype != spec.np_dtype:
            raise BundleError(
                f"golden.npz {graph}.{spec.name} is {array.dtype}{list(array.shape)}, the graph takes "
                f"{spec.dtype}{list(spec.concrete(batch))}; re-export the bundle"
            )
    return batch


__all__ = [
    "RunOptions", "ClipResult", "GoldenCheck", "generate", "verify", "default_engine_dir", "resolve_engine", "check_options",
    "prepare_out_dir", "write_json", "crossfade_join",
]
