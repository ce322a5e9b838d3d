"""Synthetic music with known notes (test fixtures, smoke runs): scales played by a plain additive synthesiser, so a test
knows every note the audio holds and a tiny renderer or prior has something learnable in CI time."""

from __future__ import annotations

import numpy as np

from pdd.runtime.roll import make_notes

C_MAJOR = (0, 2, 4, 5, 7, 9, 11)


def scale_notes(seconds: float, seed: int = 0, beat: float = 0.25, low: int = 55, span: int = 14) -> np.ndarray:
    """A stepwise C-major melody, one note per `beat` seconds, walking up and down from a seeded start degree."""
    rng = np.random.default_rng(seed)
    degrees = [d + 12 * octave for octave in range(4) for d in C_MAJOR]
    allowed = [i for i, d in enumerate(degrees) if low <= 48 + d <= low + span]
    position = int(rng.integers(len(allowed)))
    direction = 1 if rng.random() < 0.5 else -1
    rows = []
    for k in range(int(seconds / beat)):
        rows.append((k * beat, (k + 0.9) * beat, 48 + degrees[allowed[position]], 90))
        if not 0 <= position + direction < len(allowed):
            direction = -direction
        position += direction
    return make_notes(rows)


def render_notes(notes: np.ndarray, sample_rate: int, seconds: float, level: float = 0.25) -> np.ndarray:
    """float32 mono: each note a decaying tone with three harmonics (a piano-ish envelope, deterministic)."""
    wave = np.zeros(int(round(seconds * sample_rate)), dtype=np.float64)
    for note in notes:
        start = int(round(float(note["onset"]) * sample_rate))
        stop = min(int(round(float(note["offset"]) * sample_rate)), wave.shape[0])
        if stop <= start:
            continue
        t = np.arange(stop - start) / sample_rate
        f0 = 440.0 * 2.0 ** ((int(note["pitch"]) - 69) / 12.0)
        tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in (1, 2, 3) if f0 * h < sample_rate / 2)
        envelope = np.exp(-3.0 * t) * np.minimum(1.0, t * 200.0) * np.minimum(1.0, (t[-1] - t) * 200.0 + 1e-3)
        wave[start:stop] += level * (int(note["velocity"]) / 127.0) * tone * envelope
    return wave.astype(np.float32)
