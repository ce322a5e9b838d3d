"""Mel front end and its inverse: power mel spectrogram, log normalisation to [-1, 1], and mel → linear magnitude.

Scale: the STFT is divided by its window sum, so a full-scale sine has power 1/4 in its bin; `reference_power` puts such a sine
through the most sensitive mel band at 0 dB. The reference is fixed (never the clip's maximum), so loudness survives the round trip.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from pdd.runtime.config import AudioConfig
from pdd.runtime.spectral import StftPlan

AMIN = 1e-10  # power floor before the log; far below the -top_db clip for any reference we use


def hz_to_mel(freq: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale (librosa `htk=False`): linear below 1 kHz, logarithmic above."""
    freq = np.asarray(freq, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    mels = freq / f_sp
    log_part = min_log_mel + np.log(np.maximum(freq, min_log_hz) / min_log_hz) / logstep
    return np.where(freq >= min_log_hz, log_part, mels)


def mel_to_hz(mels: np.ndarray | float) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    freqs = f_sp * mels
    log_part = min_log_hz * np.exp(logstep * (mels - min_log_mel))
    return np.where(mels >= min_log_mel, log_part, freqs)


@lru_cache(maxsize=16)
def _filterbank_cached(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # Slaney: constant energy per band
    weights = weights.astype(np.float32)
    weights.setflags(write=False)
    return weights


def mel_filterbank(config: AudioConfig) -> np.ndarray:
    """(n_mels, n_fft/2+1) Slaney-normalised triangular filters, equal to librosa.filters.mel(norm='slaney')."""
    return _filterbank_cached(config.sample_rate, config.n_fft, config.n_mels, float(config.fmin), config.f_max)


@lru_cache(maxsize=16)
def _pinv_cached(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    basis = _filterbank_cached(sample_rate, n_fft, n_mels, fmin, fmax).astype(np.float64)
    inv = np.linalg.pinv(basis).astype(np.float32)
    inv.setflags(write=False)
    return inv


def mel_pseudo_inverse(config: AudioConfig) -> np.ndarray:
    """(n_fft/2+1, n_mels) Moore-Penrose inverse of the filterbank: the linear part of mel → power spectrum."""
    return _pinv_cached(config.sample_rate, config.n_fft, config.n_mels, float(config.fmin), config.f_max)


def reference_power(config: AudioConfig) -> float:
    """Mel power that maps to 0 dB: a full-scale sine (bin power 1/4, Hann neighbours 1/16) in the most sensitive band."""
    fb = mel_filterbank(config).astype(np.float64)
    padded = np.pad(fb, ((0, 0), (1, 1)))
    response = 0.25 * padded[:, 1:-1] + 0.0625 * (padded[:, :-2] + padded[:, 2:])
    return float(response.max())


def mel_spectrogram(wave: np.ndarray, config: AudioConfig) -> np.ndarray:
    """(..., samples) → (..., n_mels, frames) mel power of the window-sum-normalised STFT."""
    plan = StftPlan.from_config(config)
    spec = plan.stft(wave)
    power = (spec.real**2 + spec.imag**2) / np.float32(plan.window_sum**2)
    return np.matmul(mel_filterbank(config), power).astype(np.float32, copy=False)


def normalize(mel_power: np.ndarray, config: AudioConfig) -> np.ndarray:
    """Mel power → dB against the fixed reference, clipped to [-top_db, 0], mapped linearly to [-1, 1]."""
    db = 10.0 * np.log10(np.maximum(mel_power, AMIN) / reference_power(config))
    db = np.clip(db, -config.top_db, 0.0)
    return (db / config.top_db * 2.0 + 1.0).astype(np.float32)


def denormalize(x: np.ndarray, config: AudioConfig) -> np.ndarray:
    """Exact inverse of `normalize` on [-1, 1] (values outside are clipped first): [-1, 1] → mel power."""
    db = normalized_to_db(np.asarray(x, dtype=np.float32), config.top_db)
    return (reference_power(config) * np.power(10.0, db / 10.0)).astype(np.float32)


def normalized_to_db(x: Any, top_db: float) -> Any:
    """Normalised log-mel in [-1, 1] (values outside are clipped first) → dB in [-top_db, 0]: the inverse of `normalize`'s
    linear map. Only `.clip` and arithmetic, so numpy arrays (runtime, metrics) and torch tensors (export) share it."""
    return (x.clip(-1.0, 1.0) - 1.0) * (top_db / 2.0)


def mel_to_magnitude(mel_power: np.ndarray, config: AudioConfig) -> np.ndarray:
    """(..., n_mels, T) mel power → (..., n_fft/2+1, T) linear STFT magnitude (unnormalised, ready for Griffin-Lim).

    Clipped pseudo-inverse: one matmul, the same arithmetic the ONNX vocoder graph uses.
    """
    power = np.matmul(mel_pseudo_inverse(config), np.asarray(mel_power, dtype=np.float32))
    window_sum = StftPlan.from_config(config).window_sum
    return (np.sqrt(np.maximum(power, 0.0)) * np.float32(window_sum)).astype(np.float32, copy=False)


def log_mel(wave: np.ndarray, config: AudioConfig) -> np.ndarray:
    """The whole front end: wave → normalised log-mel in [-1, 1], shape (..., n_mels, frames)."""
    return normalize(mel_spectrogram(wave, config), config)
