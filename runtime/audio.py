"""Audio file I/O: any file soundfile reads → mono float32 at the preset rate; WAV/FLAC out, never overwriting by accident."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from pdd.runtime.errors import AudioError

WRITE_FORMATS = {"wav": "WAV", "flac": "FLAC"}
WRITE_SUBTYPES = {"pcm16": "PCM_16", "float": "FLOAT"}


def load_audio(path: str | os.PathLike[str], sample_rate: int) -> np.ndarray:
    """Read `path`, mix to mono and resample to `sample_rate` (soxr, high quality). Returns float32 in [-1, 1]."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty")
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AudioError(f"{path}: not a readable audio file ({reason})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: audio has no samples")
    mono = data.mean(axis=1, dtype=np.float32)
    return resample(mono, file_rate, sample_rate)


def resample(wave: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling with soxr; identity when the rates agree."""
    wave = np.asarray(wave, dtype=np.float32)
    if from_rate == to_rate:
        return wave
    if wave.shape[0] < 2:
        raise AudioError(f"cannot resample {wave.shape[0]} sample(s) from {from_rate} Hz to {to_rate} Hz")
    return soxr.resample(wave, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


def write_audio(
    path: str | os.PathLike[str],
    wave: np.ndarray,
    sample_rate: int,
    *,
    subtype: str = "pcm16",
    overwrite: bool = False,
) -> Path:
    """Write a mono (T,) or multi-channel (T, ch) wave as WAV or FLAC (by extension), atomically.

    `subtype` is "pcm16" or "float" (float is WAV only). An existing file is kept unless `overwrite`.
    """
    path = Path(path)
    fmt = WRITE_FORMATS.get(path.suffix.lower().lstrip("."))
    if fmt is None:
        raise AudioError(f"{path}: unsupported output format; use one of .{', .'.join(WRITE_FORMATS)}")
    if subtype not in WRITE_SUBTYPES:
        raise AudioError(f"unknown sample format {subtype!r}; use one of: {', '.join(WRITE_SUBTYPES)}")
    if fmt == "FLAC" and subtype == "float":
        raise AudioError("FLAC stores integer samples only; use pcm16 or write .wav")
    if path.exists() and not overwrite:
        raise AudioError(f"{path} already exists; pass --overwrite to replace it")
    wave = np.asarray(wave, dtype=np.float32)
    if not np.all(np.isfinite(wave)):
        raise AudioError(f"{path}: refusing to write audio with NaN/inf samples")
    if subtype == "pcm16":
        wave = np.clip(wave, -1.0, 1.0)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        sf.write(str(tmp), wave, sample_rate, format=fmt, subtype=WRITE_SUBTYPES[subtype])
        os.replace(tmp, path)
    except (OSError, sf.LibsndfileError) as exc:
        _remove_quietly(tmp)
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise AudioError(f"cannot write {path}: {reason}") from None
    return path


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass
