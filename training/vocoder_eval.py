"""The learned vocoder as `pdd-eval` uses it: a timed mel → waveform decoder for the "vocoder ceiling" row and the
generated rows decoded with it (next to Griffin-Lim's)."""

from __future__ import annotations

import os
import time
from typing import Callable

import numpy as np
import torch

from pdd.runtime.config import AudioConfig
from pdd.runtime.silence import SilenceGate
from pdd.training.vocoder_train import load_vocoder

NeuralDecoder = Callable[[np.ndarray], tuple[np.ndarray, float]]


def neural_decoder(path: str | os.PathLike[str], audio: AudioConfig, batch_size: int = 8,
                   gate: SilenceGate | None = None) -> NeuralDecoder:
    """A decoder for the vocoder checkpoint at `path` (refused when made for another preset): (N, F, T) normalised
    mels → ((N, samples) waves, seconds per clip). The EMA weights, on the CPU, in batches of `batch_size`; behind
    `gate` when given (as `pdd-export --vocoder-gate` bakes one into a bundle), else the gate it was trained with."""
    model, _ = load_vocoder(path, audio)
    if gate is not None:
        model.gate = gate

    def decode(mels: np.ndarray) -> tuple[np.ndarray, float]:
        mels = np.asarray(mels, dtype=np.float32)
        started = time.perf_counter()
        waves = []
        with torch.no_grad():
            for first in range(0, mels.shape[0], batch_size):
                chunk = torch.from_numpy(np.ascontiguousarray(mels[first:first + batch_size]))
                waves.append(model.waveform(chunk, audio.clip_samples).numpy())
        return np.concatenate(waves), (time.perf_counter() - started) / max(mels.shape[0], 1)

    return decode
