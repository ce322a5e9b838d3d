"""Mel front end against librosa (the DSP reference), the fixed dB scale, and the inverse path.

Tolerances: filterbank max abs error < 1e-6 (float32 of the same formula); mel power relative error < 1e-5 of the peak
(float32 FFT vs librosa's float32 path); STFT max abs error < 1e-3 on values up to ~300.
"""

import numpy as np
import pytest

librosa = pytest.importorskip("librosa")

from pdd.runtime.config import get_preset
from pdd.runtime.mel import (
    denormalize,
    log_mel,
    mel_filterbank,
    mel_spectrogram,
    mel_to_magnitude,
    normalize,
    reference_power,
)
from pdd.runtime.spectral import StftPlan, istft, stft

PAPER = get_preset("paper")


def _chord(cfg, seconds=None, level=0.25):
    n = cfg.clip_samples if seconds is None else int(seconds * cfg.sample_rate)
    t = np.arange(n) / cfg.sample_rate
    notes = [261.63, 329.63, 392.0, 523.25]
    wave = sum(level * np.sin(2 * np.pi * f * t) * np.exp(-0.3 * t) for f in notes)
    return wave.astype(np.float32)


@pytest.mark.parametrize("name", ["paper", "tiny"])
def test_filterbank_matches_librosa(name):
    cfg = get_preset(name)
    ref = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.f_max)
    assert np.abs(mel_filterbank(cfg) - ref).max() < 1e-6


def test_stft_matches_librosa_and_inverts():
    wave = _chord(PAPER, seconds=2.0)
    ours = stft(wave, PAPER)
    ref = librosa.stft(wave, n_fft=2048, hop_length=512, win_length=2048, center=True, pad_mode="constant")
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-3
    assert np.abs(istft(ours, PAPER, len(wave)) - wave).max() < 1e-5


def test_mel_spectrogram_matches_librosa():
    wave = _chord(PAPER)
    ours = mel_spectrogram(wave, PAPER)
    ref = librosa.feature.melspectrogram(
        y=wave, sr=PAPER.sample_rate, n_fft=2048, hop_length=512, center=True, pad_mode="constant", power=2.0
    ) / StftPlan.from_config(PAPER).window_sum ** 2
    assert ours.shape == (128, 384)
    assert np.abs(ours - ref).max() / ref.max() < 1e-5


def test_full_scale_sine_sits_near_zero_db():
    t = np.arange(PAPER.clip_samples) / PAPER.sample_rate
    # A sine on the centre of the most sensitive (lowest) band peaks within 1 dB of the reference.
    loudest = max(
        10 * np.log10(mel_spectrogram(np.sin(2 * np.pi * f * t).astype(np.float32), PAPER).max() / reference_power(PAPER))
        for f in (21.5, 43.1, 64.6, 86.1, 107.7)
    )
    assert -1.0 < loudest <= 0.5


def test_ordinary_music_level_is_neither_clipped_nor_crushed():
    # Harmonic notes (10 partials, 1/h) peaking near -6 dBFS over a -50 dBFS noise floor. Broadband noise spreads over
    # ~1000 bins, so in a mel band it reads ~23 dB below a sine of the same RMS: this floor lands near -73 dB.
    t = np.arange(PAPER.clip_samples) / PAPER.sample_rate
    notes = sum(np.sin(2 * np.pi * f * h * t) / h for f in (196.0, 246.9, 293.7) for h in range(1, 11))
    wave = 0.5 * notes / np.abs(notes).max() + 10 ** (-50 / 20) * np.random.default_rng(0).normal(size=t.size)
    x = log_mel(wave.astype(np.float32), PAPER)
    assert x.max() < 0.95  # headroom: not clipped at the top
    assert x.max() > 0.4  # the loudest partial (≈ -25 dB re full scale) uses the upper range
    assert (x <= -0.999).mean() < 0.05  # the noise floor is not crushed to -1


def test_normalize_round_trip_and_range():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(2, 128, 384)).astype(np.float32)
    power = denormalize(x, PAPER)
    assert np.abs(normalize(power, PAPER) - x).max() < 1e-4
    assert normalize(np.zeros((128, 4), np.float32), PAPER).min() == -1.0
    assert normalize(np.full((128, 4), 1e9, np.float32), PAPER).max() == 1.0


def test_loudness_survives_the_round_trip():
    quiet, loud = log_mel(_chord(PAPER, level=0.02), PAPER), log_mel(_chord(PAPER, level=0.2), PAPER)
    # 20 dB louder is +0.5 in normalised units (80 dB span over 2.0) on the bands that carry the notes.
    loud_bands = loud.mean(axis=1) > 0
    diff = (loud - quiet).mean(axis=1)[loud_bands]
    assert diff.mean() == pytest.approx(0.5, abs=0.03)


def test_mel_to_magnitude_recovers_the_spectrum_shape():
    wave = _chord(PAPER, seconds=2.0)
    true_mag = np.abs(stft(wave, PAPER))
    approx = mel_to_magnitude(mel_spectrogram(wave, PAPER), PAPER)
    assert approx.shape == true_mag.shape and approx.min() >= 0
    # The pseudo-inverse smears energy within each band but keeps where it is: per-frame spectra correlate strongly.
    corr = np.corrcoef(approx[:, 20], true_mag[:, 20])[0, 1]
    assert corr > 0.8
    # And the mel of the recovered magnitude is close to the original mel (energy is kept per band).
    re_mel = mel_filterbank(PAPER) @ (approx / StftPlan.from_config(PAPER).window_sum) ** 2
    orig = mel_spectrogram(wave, PAPER)
    db = lambda p: 10 * np.log10(np.maximum(p, 1e-10) / reference_power(PAPER))
    loud = db(orig) > -40
    assert np.abs(db(re_mel) - db(orig))[loud].mean() < 3.0
