"""Short-time Fourier transform pair (centred frames, Hann window) on real FFTs, shared by the mel front end and Griffin-Lim.

Layout note: the public functions take and return (..., F, T) like librosa; Griffin-Lim keeps the (B, T, F) layout internally
so each FFT runs over contiguous frames with no transposes in its loop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft

from pdd.runtime.config import AudioConfig


def fft_workers() -> int:
    """Threads for scipy.fft: the physical cores we may use (PDD_FFT_WORKERS overrides)."""
    env = os.environ.get("PDD_FFT_WORKERS")
    if env:
        return max(1, int(env))
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


@lru_cache(maxsize=16)
def hann_window(win_length: int, n_fft: int) -> np.ndarray:
    """Periodic Hann window (scipy's `fftbins=True`, librosa's default), zero-padded to n_fft around the centre."""
    n = np.arange(win_length, dtype=np.float64)
    win = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)
    left = (n_fft - win_length) // 2
    padded = np.zeros(n_fft, dtype=np.float64)
    padded[left : left + win_length] = win
    padded.setflags(write=False)
    return padded


@dataclass(frozen=True)
class StftPlan:
    """Fixed STFT geometry for one audio preset, with the window and the inverse's normalisation precomputed."""

    n_fft: int
    hop_length: int
    win_length: int

    @classmethod
    def from_config(cls, config: AudioConfig) -> "StftPlan":
        return cls(config.n_fft, config.hop_length, config.win_length)

    @property
    def window(self) -> np.ndarray:
        return hann_window(self.win_length, self.n_fft)

    @property
    def window_sum(self) -> float:
        return float(self.window.sum())

    @property
    def window32(self) -> np.ndarray:
        return _as_float32(self.window.tobytes())

    def n_frames(self, n_samples: int) -> int:
        return 1 + n_samples // self.hop_length

    def n_samples(self, n_frames: int) -> int:
        return (n_frames - 1) * self.hop_length

    # -- frame-major core (B, T, F) -----------------------------------------------------------------------------------
    def forward_frames(self, wave: np.ndarray) -> np.ndarray:
        """(..., samples) float → (..., T, F) complex64, centred frames with zero padding."""
        wave = np.asarray(wave, dtype=np.float32)
        pad = self.n_fft // 2
        widths = [(0, 0)] * (wave.ndim - 1) + [(pad, pad)]
        padded = np.pad(wave, widths)
        frames = np.lib.stride_tricks.sliding_window_view(padded, self.n_fft, axis=-1)[..., :: self.hop_length, :]
        frames = frames * self.window32
        return scipy.fft.rfft(frames, axis=-1, workers=fft_workers(), overwrite_x=True).astype(np.complex64, copy=False)

    def inverse_frames(self, spec: np.ndarray, length: int | None = None) -> np.ndarray:
        """(..., T, F) complex → (..., samples) float32: windowed overlap-add divided by the squared-window envelope."""
        n_frames = spec.shape[-2]
        frames = scipy.fft.irfft(spec, n=self.n_fft, axis=-1, workers=fft_workers()).astype(np.float32, copy=False)
        frames *= self.window32
        signal = self._overlap_add(frames)
        envelope = _window_envelope(self.window.tobytes(), self.n_fft, self.hop_length, n_frames)
        signal = signal * envelope
        pad = self.n_fft // 2
        length = self.n_samples(n_frames) if length is None else length
        out = signal[..., pad : pad + length]
        if out.shape[-1] < length:
            widths = [(0, 0)] * (out.ndim - 1) + [(0, length - out.shape[-1])]
            out = np.pad(out, widths)
        return out

    def project(self, spec: np.ndarray, length: int) -> np.ndarray:
        """STFT(iSTFT(spec)) for (..., T, F) spectra: the Griffin-Lim projection onto consistent spectrograms.

        Fused so the overlap-added signal is framed again in place: it already has the centred-padding layout, so the
        trim-then-pad of a separate istft/stft pair reduces to zeroing what lies outside [pad, pad + length).
        """
        n_frames = spec.shape[-2]
        workers = fft_workers()
        frames = scipy.fft.irfft(spec, n=self.n_fft, axis=-1, workers=workers).astype(np.float32, copy=False)
        frames *= self.window32
        signal = self._overlap_add(frames)
        signal *= _window_envelope(self.window.tobytes(), self.n_fft, self.hop_length, n_frames)
        pad = self.n_fft // 2
        signal[..., :pad] = 0.0
        signal[..., pad + length :] = 0.0
        view = np.lib.stride_tricks.sliding_window_view(signal, self.n_fft, axis=-1)[..., :: self.hop_length, :]
        np.multiply(view, self.window32, out=frames)
        return scipy.fft.rfft(frames, axis=-1, workers=workers, overwrite_x=True).astype(np.complex64, copy=False)

    def _overlap_add(self, frames: np.ndarray) -> np.ndarray:
        *lead, n_frames, n_fft = frames.shape
        hop = self.hop_length
        total = (n_frames - 1) * hop + n_fft
        if n_fft % hop == 0:
            # Each frame spans R whole hops: R vectorised adds instead of one add per frame.
            ratio = n_fft // hop
            blocks = frames.reshape(*lead, n_frames, ratio, hop)
            out = np.zeros((*lead, n_frames + ratio - 1, hop), dtype=np.float32)
            for r in range(ratio):
                out[..., r : r + n_frames, :] += blocks[..., r, :]
            return out.reshape(*lead, total)
        out = np.zeros((*lead, total), dtype=np.float32)
        for i in range(n_frames):
            out[..., i * hop : i * hop + n_fft] += frames[..., i, :]
        return out

    # -- librosa layout (..., F, T) -----------------------------------------------------------------------------------
    def stft(self, wave: np.ndarray) -> np.ndarray:
        return np.swapaxes(self.forward_frames(wave), -1, -2)

    def istft(self, spec: np.ndarray, length: int | None = None) -> np.ndarray:
        return self.inverse_frames(np.swapaxes(spec, -1, -2), length)


@lru_cache(maxsize=16)
def _as_float32(window_bytes: bytes) -> np.ndarray:
    window = np.frombuffer(window_bytes, dtype=np.float64).astype(np.float32)
    window.setflags(write=False)
    return window


@lru_cache(maxsize=16)
def _window_envelope(window_bytes: bytes, n_fft: int, hop: int, n_frames: int) -> np.ndarray:
    """1 / Σ w² over the overlapping frames (0 where the sum vanishes), cached per geometry."""
    window = np.frombuffer(window_bytes, dtype=np.float64)
    total = (n_frames - 1) * hop + n_fft
    env = np.zeros(total, dtype=np.float64)
    w2 = window**2
    for i in range(n_frames):
        env[i * hop : i * hop + n_fft] += w2
    tiny = np.finfo(np.float32).tiny
    inv = np.where(env > tiny, 1.0 / np.maximum(env, tiny), 0.0).astype(np.float32)
    inv.setflags(write=False)
    return inv


def stft(wave: np.ndarray, config: AudioConfig) -> np.ndarray:
    """Complex STFT (..., n_fft/2+1, frames) of a wave, unnormalised (as librosa.stft with center=True, zero padding)."""
    return StftPlan.from_config(config).stft(wave)


def istft(spec: np.ndarray, config: AudioConfig, length: int | None = None) -> np.ndarray:
    """Inverse of `stft` (least-squares overlap-add)."""
    return StftPlan.from_config(config).istft(spec, length)
