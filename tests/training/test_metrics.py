"""Tests for pdd.training.metrics: Fréchet distance against closed forms, FD-mel, spectral flux and teacher fidelity."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from pdd.runtime.config import get_preset
from pdd.runtime.errors import ConfigError
from pdd.training.metrics import (
    GaussianStats,
    fd_mel,
    frechet_distance,
    frechet_distance_features,
    mel_frame_features,
    spectral_flux,
    teacher_fidelity,
    trace_sqrt_product,
)

TINY = get_preset("tiny")


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    # For diagonal covariances FD = ‖μ1−μ2‖² + Σ (s1_i − s2_i)², s = standard deviations.
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([3.0, 0.5, 0.5])
    a = GaussianStats(mu1, np.diag(s1**2), 1000)
    b = GaussianStats(mu2, np.diag(s2**2), 1000)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_matches_closed_form_for_rotated_gaussians():
    # Rotating both covariances by the same orthogonal matrix keeps them commuting: the same closed form holds.
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    s1, s2 = rng.uniform(0.2, 3.0, 6), rng.uniform(0.2, 3.0, 6)
    a = GaussianStats(np.zeros(6), q @ np.diag(s1**2) @ q.T, 100)
    b = GaussianStats(np.full(6, 0.5), q @ np.diag(s2**2) @ q.T, 100)
    expected = 6 * 0.25 + np.sum((s1 - s2) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)


def test_trace_sqrt_product_agrees_with_scipy_sqrtm_on_full_rank_covariances():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(200, 8)), rng.normal(size=(200, 8)) @ rng.normal(size=(8, 8))
    c1, c2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    reference = np.trace(scipy.linalg.sqrtm(c1 @ c2)).real
    assert trace_sqrt_product(c1, c2) == pytest.approx(reference, rel=1e-8)


def test_fd_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(500, 16))
    assert frechet_distance_features(feats, feats) == pytest.approx(0.0, abs=1e-8)
    shifts = [0.1, 0.5, 1.0, 2.0]
    distances = [frechet_distance_features(feats, feats + s) for s in shifts]
    # A pure mean shift by s in 16 dims adds exactly 16·s².
    assert distances == pytest.approx([16 * s**2 for s in shifts], rel=1e-6)
    assert all(d1 < d2 for d1, d2 in zip(distances, distances[1:]))


def test_fd_stays_finite_and_zero_on_itself_with_singular_covariances():
    rng = np.random.default_rng(3)
    feats = rng.normal(size=(5, 40))  # 5 samples in 40 dims: rank-4 covariance
    assert frechet_distance_features(feats, feats) == pytest.approx(0.0, abs=1e-6)
    other = rng.normal(size=(5, 40)) + 1.0
    d = frechet_distance_features(feats, other)
    assert np.isfinite(d) and d > 30  # the mean shift alone contributes ≈ 40


def test_fd_rejects_bad_features():
    with pytest.raises(ConfigError, match="at least 2"):
        frechet_distance_features(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(ConfigError, match="dimensions differ"):
        frechet_distance_features(np.random.rand(4, 3), np.random.rand(4, 5))
    with pytest.raises(ConfigError, match="NaN"):
        frechet_distance_features(np.full((4, 3), np.nan), np.random.rand(4, 3))


def _random_mels(seed: int, clips: int = 6, offset: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.uniform(-0.8, 0.6, size=(clips, TINY.n_mels, TINY.frames)) + offset, -1, 1).astype(np.float32)


def test_fd_mel_zero_on_itself_grows_with_loudness_shift():
    mels = _random_mels(4)
    assert fd_mel(mels, mels, TINY) == pytest.approx(0.0, abs=1e-6)
    near, far = fd_mel(mels, _random_mels(4, offset=0.05), TINY), fd_mel(mels, _random_mels(4, offset=0.2), TINY)
    assert 0 < near < far


def test_mel_frame_features_are_per_frame_db_vectors():
    mels = _random_mels(5, clips=2)
    feats = mel_frame_features(mels, TINY)
    assert feats.shape == (2 * TINY.frames, TINY.n_mels)
    # frame 3 of clip 1, in dB: (x − 1)·top_db/2
    np.testing.assert_allclose(feats[TINY.frames + 3], (mels[1, :, 3] - 1.0) * TINY.top_db / 2, rtol=1e-6)
    with pytest.raises(ConfigError, match="expected mels"):
        mel_frame_features(np.zeros((2, TINY.n_mels + 1, 10)), TINY)


def test_spectral_flux_is_zero_for_static_and_high_for_flicker():
    static = np.zeros((2, TINY.n_mels, TINY.frames), dtype=np.float32)
    assert spectral_flux(static, TINY).mean == 0.0
    flicker = static.copy()
    flicker[..., ::2] = 0.5  # +20 dB every other frame (top_db 80: 0.5 in [-1,1] units = 20 dB)
    stats = spectral_flux(flicker, TINY)
    pairs = TINY.frames - 1
    rises = pairs // 2  # frames 1→2, 3→4, …: every other pair rises by 20 dB, the others fall (flux 0)
    p = rises / pairs
    assert stats.mean == pytest.approx(20.0 * p, rel=1e-9)
    assert stats.std == pytest.approx(20.0 * np.sqrt(p * (1 - p)), rel=1e-9)


def test_spectral_flux_pools_clips_of_any_length_and_is_the_one_pdd_eval_uses():
    from pdd.training import heldout

    assert heldout.spectral_flux is spectral_flux  # pdd-eval's rows (heldout.Scorer) come from the function pinned above
    rng = np.random.default_rng(5)
    short, long = rng.uniform(-1, 1, (TINY.n_mels, 5)), rng.uniform(-1, 1, (2, TINY.n_mels, 9))
    pooled = spectral_flux([short, long], TINY)
    per_frame = np.concatenate([np.maximum(np.diff((m.clip(-1, 1) - 1) * TINY.top_db / 2, axis=-1), 0).mean(axis=-2).ravel()
                                for m in (short, long)])
    assert (pooled.mean, pooled.std) == pytest.approx((per_frame.mean(), per_frame.std()), rel=1e-12)
    assert spectral_flux(long, TINY) == spectral_flux([long[:1], long[1:]], TINY)
    with pytest.raises(ConfigError, match="at least 2 frames"):
        spectral_flux([short[:, :1]], TINY)


def test_teacher_fidelity_is_mel_db_mae():
    a = _random_mels(6, clips=3)
    assert teacher_fidelity(a, a, TINY) == 0.0
    b = np.clip(a + 0.1, -1, 1)
    expected = np.abs(np.clip(a, -1, 1) - b).mean() * TINY.top_db / 2
    assert teacher_fidelity(a, b, TINY) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ConfigError, match="paired"):
        teacher_fidelity(a, a[:2], TINY)


# -- FD-BP embeddings (Basic Pitch's bundled ONNX model) ---------------------------------------------------------------

def _basic_pitch_or_skip():
    import importlib.util

    if importlib.util.find_spec("basic_pitch") is None:
        pytest.skip("basic-pitch not installed (pip install --no-deps basic-pitch==0.4.0)")
    from pdd.training.basic_pitch import BasicPitchEmbedder

    return BasicPitchEmbedder(threads=1)


def _tone_set(seed: int, clips: int, seconds: float = 3.0, sample_rate: int = 16000) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return [(0.3 * np.sin(2 * np.pi * f * t) * np.exp(-3 * (t % 0.5))).astype(np.float32)
            for f in rng.uniform(220, 440, clips)]


def test_basic_pitch_embeddings_shape_and_fd_behaviour():
    embedder = _basic_pitch_or_skip()
    assert embedder.dim == 72 and len(embedder.info.model_sha256) == 64
    tones = _tone_set(0, 4)
    feats = embedder.embed_many(tones, 16000)  # resampled to 22050 inside
    assert feats.shape == (4 * 3, 72)  # three 1-s blocks per 3-s clip
    assert frechet_distance_features(feats, feats) == pytest.approx(0.0, abs=1e-8)
    other_tones = embedder.embed_many(_tone_set(1, 4), 16000)
    noise = embedder.embed_many([np.random.default_rng(i).normal(0, 0.1, 48000).astype(np.float32) for i in range(4)], 16000)
    assert frechet_distance_features(feats, other_tones) < frechet_distance_features(feats, noise)


def test_basic_pitch_missing_says_how_to_install(monkeypatch):
    import importlib.util

    from pdd.training import basic_pitch

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "basic_pitch" else real_find_spec(name, *a))
    with pytest.raises(basic_pitch.BasicPitchUnavailable, match="pip install --no-deps basic-pitch==0.4.0"):
        basic_pitch.BasicPitchEmbedder()


def test_basic_pitch_rejects_a_file_that_is_not_onnx(tmp_path):
    from pdd.training import basic_pitch

    bogus = tmp_path / "nmp.onnx"
    bogus.write_bytes(b"not a model")
    with pytest.raises(basic_pitch.BasicPitchUnavailable, match="not a readable ONNX model"):
        basic_pitch.BasicPitchEmbedder(bogus)
