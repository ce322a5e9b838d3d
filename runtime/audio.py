"""Audio file I/O: any file soundfile reads → mono float32 at the preset rate; WAV/FLAC out (to a file, never
overwriting by accident, or as bytes in memory), and the peak guard every 16-bit output goes through.

An input file's header is untrusted: a claimed rate of 1 Hz would make 96 KB of samples resample into 13 hours of audio,
and a float WAV may hold finite samples of 1e30 that turn every mel into NaN. `load_audio` refuses both (and NaN/inf
samples) with an AudioError that says why, before any large allocation, so `pdd-data prepare` skips and lists the file.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from pdd.runtime.errors import AudioError
from pdd.runtime.fileio import atomic_write_bytes, os_reason
from pdd.runtime.untrusted import printable

# What an input file may claim: rates from 2 kHz (old speech recordings) to 768 kHz (the highest any converter ships),
# at most 2 hours (a few GB as float32 at 48 kHz stereo) and 64 channels, samples within ±16 (+24 dBFS: float masters
# a little over full scale pass, garbage does not).
MIN_INPUT_RATE = 2_000
MAX_INPUT_RATE = 768_000
MAX_INPUT_SECONDS = 2 * 3600
MAX_INPUT_CHANNELS = 64
MAX_INPUT_PEAK = 16.0

WRITE_FORMATS = {"wav": "WAV", "flac": "FLAC"}
WRITE_SUBTYPES = {"pcm16": "PCM_16", "float": "FLOAT"}


def load_audio(path: str | os.PathLike[str], sample_rate: int) -> np.ndarray:
    """Read `path`, mix to mono and resample to `sample_rate` (soxr, high quality). Returns float32 in [-1, 1]."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty")
    try:  # libsndfile reports a permission problem as "System error."; the OS says it plainly
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise AudioError(f"{path}: cannot be read ({os_reason(exc)})") from None
    check_audio_header(path)
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AudioError(f"{path}: not a readable audio file ({printable(reason, 120)})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: audio has no samples")
    check_samples(data, path)
    mono = data.mean(axis=1, dtype=np.float32)
    return resample(mono, file_rate, sample_rate)


def check_audio_header(path: Path) -> None:
    """Refuse a file whose header claims an absurd rate, length or channel count (before its samples are read)."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AudioError(f"{path}: not a readable audio file ({printable(reason, 120)})") from None
    if not MIN_INPUT_RATE <= info.samplerate <= MAX_INPUT_RATE:
        raise AudioError(
            f"{path}: header claims a sample rate of {info.samplerate} Hz (outside {MIN_INPUT_RATE}..{MAX_INPUT_RATE} Hz)"
        )
    if not 1 <= info.channels <= MAX_INPUT_CHANNELS:
        raise AudioError(f"{path}: header claims {info.channels} channels (at most {MAX_INPUT_CHANNELS})")
    if info.frames > MAX_INPUT_SECONDS * info.samplerate:
        hours = info.frames / info.samplerate / 3600
        raise AudioError(f"{path}: {hours:.1f} h long, over the limit of {MAX_INPUT_SECONDS / 3600:g} h per file; split it")


def check_samples(data: np.ndarray, path: Path) -> None:
    """Refuse NaN/inf samples and finite ones far outside full scale (a broken float file, not music)."""
    if not np.all(np.isfinite(data)):
        raise AudioError(f"{path}: contains NaN/inf samples")
    peak = float(np.max(np.abs(data)))
    if peak > MAX_INPUT_PEAK:
        raise AudioError(f"{path}: samples reach {peak:.3g}, far beyond full scale (limit ±{MAX_INPUT_PEAK:g}); not usable audio")


def resample(wave: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling with soxr; identity when the rates agree."""
    wave = np.asarray(wave, dtype=np.float32)
    if from_rate == to_rate:
        return wave
    if wave.shape[0] < 2:
        raise AudioError(f"cannot resample {wave.shape[0]} sample(s) from {from_rate} Hz to {to_rate} Hz")
    return soxr.resample(wave, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


def encode_audio(wave: np.ndarray, sample_rate: int, fmt: str = "wav", *, subtype: str = "pcm16") -> bytes:
    """The bytes of a WAV or FLAC file of a mono (T,) or multi-channel (T, ch) wave, encoded in memory: what
    `write_audio` puts on disk, for a caller that sends them elsewhere (an HTTP answer). `fmt` is "wav" or "flac";
    `subtype` "pcm16" (clipped to ±1) or "float" (WAV only)."""
    container = WRITE_FORMATS.get(fmt)
    if container is None:
        raise AudioError(f"unsupported output format {fmt!r}; use one of: {', '.join(WRITE_FORMATS)}")
    if subtype not in WRITE_SUBTYPES:
        raise AudioError(f"unknown sample format {subtype!r}; use one of: {', '.join(WRITE_SUBTYPES)}")
    if container == "FLAC" and subtype == "float":
        raise AudioError("FLAC stores integer samples only; use pcm16 or write .wav")
    wave = np.asarray(wave, dtype=np.float32)
    if not np.all(np.isfinite(wave)):
        raise AudioError("refusing to encode audio with NaN/inf samples")
    if subtype == "pcm16":
        wave = np.clip(wave, -1.0, 1.0)
    encoded = io.BytesIO()
    try:
        sf.write(encoded, wave, sample_rate, format=container, subtype=WRITE_SUBTYPES[subtype])
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioError(f"cannot encode {fmt}: {printable(str(exc).splitlines()[0] if str(exc) else exc, 120)}") from None
    return encoded.getvalue()


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
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in WRITE_FORMATS:
        raise AudioError(f"{path}: unsupported output format; use one of .{', .'.join(WRITE_FORMATS)}")
    try:
        encoded = encode_audio(wave, sample_rate, fmt, subtype=subtype)
    except AudioError as exc:
        raise AudioError(f"{path}: {exc}") from None
    if os.path.lexists(path) and not overwrite:
        raise AudioError(f"{path} already exists; pass --overwrite to replace it")
    # Encoded in memory, then the one atomic writer: OS errors come back in plain words (libsndfile says "System
    # error." for a full disk), and the temp file is made with O_EXCL, so a symlink planted in --out is never followed.
    return atomic_write_bytes(path, encoded, overwrite=overwrite)


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
