"""What `pdd-run` does, as library calls the tests use directly: generate clips to files through `Engine`, verify golden.

- `generate(RunOptions)`: `Engine.clips` → audio files `pdd-<seed>-<i>.<fmt>` with a JSON sidecar each (engine name +
  manifest sha256, seed, index, steps, mode, backend, timings) and an optional spectrogram PNG. All target paths are
  checked before any work, and nothing is overwritten without `overwrite`.
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
from pdd.runtime.backends import Backend
from pdd.runtime.bundle import MANIFEST_FORMAT, Bundle, golden_tolerance
from pdd.runtime.engine import MAX_BATCH, Engine, GeneratedClip, check_generate_args, crossfade_samples, load_engine_bundle
from pdd.runtime.errors import AudioError, BundleError, ConfigError
from pdd.runtime.fileio import ensure_writable_dir, write_json_atomic
from pdd.runtime.sampler import Sampler

SIDECAR_SUFFIX = ".json"
PLOT_SUFFIX = ".png"


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
    check_generate_args(options.n, options.seed, options.steps, options.gl_iters, options.batch_size, options.seamless,
                        options.crossfade)
    if options.format not in WRITE_FORMATS:
        raise ConfigError(f"unknown --format {options.format!r}; use one of: {', '.join(WRITE_FORMATS)}")
    if options.plot:
        from pdd.runtime.plots import pyplot

        try:
            pyplot()  # fail before any work if matplotlib is missing
        except ConfigError:
            raise ConfigError("--plot needs matplotlib: pip install 'pdd[plot]'") from None


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


def generate(
    options: RunOptions,
    *,
    progress: Callable[[int, int], None] | None = None,
    bundle: Bundle | None = None,
) -> list[ClipResult]:
    """Generate `options.n` files through `Engine`; returns what was written. `progress(done, total)` is called per
    batch. With `seamless` K > 1 every file joins K consecutive clips (see `Engine.clips`)."""
    started = time.perf_counter()
    check_options(options)
    if bundle is None:
        bundle = load_engine_bundle(options.engine)
    crossfade_samples(options.crossfade, options.seamless, bundle)
    created = missing_folders(Path(options.out))
    prepare_out_dir(options)
    try:
        with Engine.open(bundle, options.backend, options.device) as engine:
            sampler = engine.prepare(options.n, options.seed, options.steps, options.vocoder, mode=options.mode,
                                     gl_iters=options.gl_iters, batch_size=options.batch_size, seamless=options.seamless,
                                     crossfade=options.crossfade)
            setup_ms = (time.perf_counter() - started) * 1e3
            clips = engine.clips(sampler, options.n, options.seed, seamless=options.seamless, crossfade=options.crossfade,
                                 peak_guard=options.subtype == "pcm16", progress=progress)
            return [_write_clip(options, engine, sampler, clip, setup_ms) for clip in clips]
    except BaseException:
        remove_empty(created)  # a refused run leaves no empty --out behind; a folder holding anything stays
        raise


def missing_folders(out: Path) -> list[Path]:
    """`out` and each parent that does not exist yet, deepest first: what creating `out` would make."""
    missing = []
    for folder in (out, *out.parents):
        if folder.exists() or folder.is_symlink():
            break
        missing.append(folder)
    return missing


def remove_empty(folders: list[Path]) -> None:
    """Remove the folders this run created, deepest first, each only while it is empty (never anything in them)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _write_clip(options: RunOptions, engine: Engine, sampler: Sampler, clip: GeneratedClip, setup_ms: float) -> ClipResult:
    write_start = time.perf_counter()
    bundle, backend, wave = engine.bundle, engine.backend, clip.audio
    paths = clip_paths(Path(options.out), options.seed, clip.index, options.format, options.plot)
    audio = write_audio(paths["audio"], wave, bundle.audio.sample_rate, subtype=options.subtype, overwrite=options.overwrite)
    plot = _write_plot(paths["plot"], wave, bundle, options.overwrite) if "plot" in paths else None
    meta = {
        "pdd_version": __version__,
        "engine": {"name": bundle.name, "manifest_sha256": bundle.hash, "path": str(bundle.path), "precision": bundle.precision},
        "seed": options.seed,
        "index": clip.index,
        "noise": f"numpy Generator({options.seed}).standard_normal, clips {clip.first_clip}.."
                 f"{clip.first_clip + options.seamless - 1} of the stream",
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
        "peak_guard_gain_db": round(clip.gain_db, 2),
        "timings_ms": {
            "setup": round(setup_ms, 3),  # bundle load + hash checks + backend sessions, once per run
            # This file's share of its batches: noise → x̂0 (sample), x̂0 → waveform (decode), and their sum.
            "sample": round(clip.sample_ms, 3),
            "decode": round(clip.decode_ms, 3),
            "generate": round(clip.sample_ms + clip.decode_ms, 3),
            "write": round((time.perf_counter() - write_start) * 1e3, 3),
        },
    }
    write_json(paths["sidecar"], meta, overwrite=options.overwrite)
    return ClipResult(index=clip.index, audio=audio, sidecar=paths["sidecar"], plot=plot, meta=meta)


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


__all__ = ["RunOptions", "ClipResult", "GoldenCheck", "generate", "verify", "check_options", "prepare_out_dir", "write_json"]
