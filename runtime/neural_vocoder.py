"""The runtime half of the learned vocoder: STFT frames from the `neural_vocoder` graph → waveform, in numpy.

The graph (made by `pdd-export --vocoder-ckpt`) ends at (B, frames, n_freqs, 2) float32 frames, re/im last: that array is
a complex64 (B, frames, n_freqs) array in memory, so the inverse STFT (`StftPlan.inverse_frames`: irfft, Hann window,
overlap-add over Σw²) reads it without a copy or a transpose. On a CPU this beats doing the inverse inside the graph as a
ConvTranspose with DFT bases; GPU bundles also carry that in-graph variant (`neural_vocoder_wave`).
"""

from __future__ import annotations

import numpy as np

from pdd.runtime.config import AudioConfig
from pdd.runtime.errors import BundleError
from pdd.runtime.spectral import StftPlan


def spectrum_to_audio(spectrum: np.ndarray, config: AudioConfig, length: int | None = None) -> np.ndarray:
    """(B, frames, n_freqs, 2) float32 STFT frames → (B, samples) float32 waveform."""
    spectrum = np.asarray(spectrum)
    if spectrum.ndim != 4 or spectrum.shape[-2:] != (config.n_freqs, 2):
        raise BundleError(f"the neural vocoder gave shape {spectrum.shape}, expected (batch, frames, {config.n_freqs}, 2); "
                          "re-export the bundle")
    frames = np.ascontiguousarray(spectrum, dtype=np.float32).view(np.complex64)[..., 0]
    return StftPlan.from_config(config).inverse_frames(frames, length)
