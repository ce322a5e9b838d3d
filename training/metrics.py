"""Quality metrics for generated music: Fréchet distances, spectral flux and teacher fidelity (how to read them against the
three floors: docs/architecture.md, "Quality and the three floors").

All of these work on numpy arrays and need no model, except FD-BP, whose embeddings come from `pdd.training.basic_pitch`:

* `frechet_distance` — ‖μ₁−μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^½ between two Gaussians fitted to feature sets.
* FD-mel — that distance between per-frame log-mel vectors (in dB), so it needs no embedding network at all.
* spectral flux — mean/std over frames of the positive dB increase per mel band between neighbouring frames; blurry,
  over-smoothed samples (a typical few-step failure) show a flux well below that of real music.
* teacher fidelity — mel-dB mean absolute error between two sets of mels made from the same noise (student@N vs teacher@1024).
* KAD — kernel audio distance (Chung et al. 2025): the unbiased MMD² between two feature sets under a Gaussian kernel.
  Fréchet distances are biased upwards at small sample counts (a 72-d covariance from a few hundred blocks); unbiased
  MMD² is not (its expectation is 0 for equal distributions, so a single value can be slightly negative).

This is *not* FAD: the Fréchet Audio Distance of the seed uses VGGish embeddings whose weights are fetched from a model hub,
which this project cannot do at run time; FD-BP uses the Basic Pitch network that ships inside its PyPI wheel instead. Numbers
from the two are not comparable to each other or to published FAD values — compare rows within one table only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.linalg

from pdd.runtime.config import AudioConfig
from pdd.runtime.errors import ConfigError
from pdd.runtime.mel import normalized_to_db

# Relative size of the ridge added to singular covariances (fewer samples than dimensions): small enough not to move a
# well-conditioned distance, large enough that the eigen-decompositions stay finite.
_RIDGE = 1e-6


@dataclass(frozen=True)
class GaussianStats:
    """Mean and covariance of a feature set, and how many samples they came from."""

    mean: np.ndarray  # (D,)
    cov: np.ndarray  # (D, D)
    count: int

    @classmethod
    def from_features(cls, features: np.ndarray) -> "GaussianStats":
        """Fit to an (n, D) array of feature vectors (float64 accumulation; n ≥ 2)."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2:
            raise ConfigError(f"features must be an (n, dim) array, got shape {features.shape}")
        if features.shape[0] < 2:
            raise ConfigError(f"need at least 2 feature vectors to fit a Gaussian, got {features.shape[0]}")
        if not np.all(np.isfinite(features)):
            raise ConfigError("features contain NaN or inf")
        return cls(mean=features.mean(axis=0), cov=np.cov(features, rowvar=False).reshape(features.shape[1], -1),
                   count=features.shape[0])


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigen-decomposition (negative round-off clipped to 0)."""
    values, vectors = scipy.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray) -> float:
    """tr (Σ₁Σ₂)^½ for symmetric PSD Σ₁, Σ₂, computed stably and exactly real.

    Σ₁Σ₂ is not symmetric, so a general `scipy.linalg.sqrtm` of it can return complex round-off (and fails outright on
    singular covariances). It is similar to the symmetric PSD matrix Σ₁^½ Σ₂ Σ₁^½, which has the same eigenvalues, so the
    trace of its square root is the sum of the square roots of those (real, non-negative) eigenvalues.
    """
    root1 = _psd_sqrt(cov1)
    middle = root1 @ cov2 @ root1
    middle = (middle + middle.T) / 2  # symmetric up to round-off; make it exactly so for eigvalsh
    eigenvalues = scipy.linalg.eigvalsh(middle)
    return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())


def frechet_distance(a: GaussianStats, b: GaussianStats) -> float:
    """Fréchet (2-Wasserstein) distance between the Gaussians N(μ_a, Σ_a) and N(μ_b, Σ_b); 0 for identical statistics.

    Singular covariances (fewer samples than dimensions) get a tiny ridge, scaled to the covariances' average variance,
    on both sides so the distance of a set to itself stays 0.
    """
    if a.mean.shape != b.mean.shape:
        raise ConfigError(f"feature dimensions differ: {a.mean.shape[0]} vs {b.mean.shape[0]}")
    cov_a, cov_b = a.cov, b.cov
    dim = cov_a.shape[0]
    if min(a.count, b.count) <= dim:
        scale = max((np.trace(cov_a) + np.trace(cov_b)) / (2 * dim), 1e-12)
        ridge = _RIDGE * scale * np.eye(dim)
        cov_a, cov_b = cov_a + ridge, cov_b + ridge
    diff = a.mean - b.mean
    distance = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt_product(cov_a, cov_b))
    return max(distance, 0.0)  # round-off can make identical sets a hair negative


def frechet_distance_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two (n, D) feature sets."""
    return frechet_distance(GaussianStats.from_features(features_a), GaussianStats.from_features(features_b))


# -- mel-based metrics -------------------------------------------------------------------------------------------------

def mel_to_db(mels: np.ndarray, config: AudioConfig) -> np.ndarray:
    """Normalised log-mels in [-1, 1] (values outside are clipped, as the vocoder does) → float64 dB in [-top_db, 0]."""
    return normalized_to_db(np.asarray(mels, dtype=np.float64), config.top_db)


def _as_clip_batch(mels: np.ndarray, config: AudioConfig) -> np.ndarray:
    mels = np.asarray(mels)
    if mels.ndim == 2:
        mels = mels[None]
    if mels.ndim != 3 or mels.shape[1] != config.n_mels:
        raise ConfigError(f"expected mels shaped (clips, {config.n_mels}, frames), got {mels.shape}")
    return mels


def mel_frame_features(mels: np.ndarray, config: AudioConfig) -> np.ndarray:
    """(clips, n_mels, frames) normalised mels → (clips·frames, n_mels) per-frame log-mel vectors in dB (FD-mel's features)."""
    db = mel_to_db(_as_clip_batch(mels, config), config)
    return np.ascontiguousarray(np.swapaxes(db, 1, 2).reshape(-1, config.n_mels))


def fd_mel(mels_a: np.ndarray, mels_b: np.ndarray, config: AudioConfig) -> float:
    """FD-mel: Fréchet distance between the per-frame log-mel (dB) vectors of two sets of clips (units: dB²)."""
    return frechet_distance_features(mel_frame_features(mels_a, config), mel_frame_features(mels_b, config))


@dataclass(frozen=True)
class FluxStats:
    """Spectral flux of a set of clips, in dB per frame: mean and standard deviation over all frame pairs."""

    mean: float
    std: float


def spectral_flux(mels: np.ndarray | Sequence[np.ndarray], config: AudioConfig) -> FluxStats:
    """Mean and std over all frames of a set of the spectral flux: per frame, the mean over mel bands of the positive
    dB increase since the previous frame (the onset-strength envelope librosa computes, on our own mels).

    `mels` is one (clips, n_mels, frames) or (n_mels, frames) array, or a list of such arrays of any lengths (pdd-eval's
    rows, re-analysed from audio): every frame pair of every clip is pooled before the mean and std."""
    groups = [mels] if isinstance(mels, np.ndarray) else list(mels)
    per_frame = [np.maximum(np.diff(mel_to_db(_as_clip_batch(group, config), config), axis=-1), 0.0).mean(axis=1).ravel()
                 for group in groups]
    pooled = np.concatenate(per_frame) if per_frame else np.empty(0)
    if pooled.size == 0:
        raise ConfigError("spectral flux needs clips of at least 2 frames")
    return FluxStats(mean=float(pooled.mean()), std=float(pooled.std()))


SILENT_DB = 1.0  # a value within 1 dB of the floor (−top_db) counts as silent


def _pooled_db(mels: np.ndarray | Sequence[np.ndarray], config: AudioConfig) -> np.ndarray:
    """(n_mels, all frames of all clips) dB values of one array or a list of arrays."""
    groups = [mels] if isinstance(mels, np.ndarray) else list(mels)
    return np.concatenate([np.moveaxis(mel_to_db(_as_clip_batch(g, config), config), 1, 0).reshape(config.n_mels, -1)
                           for g in groups], axis=1)


def silent_fraction(mels: np.ndarray | Sequence[np.ndarray], config: AudioConfig) -> float:
    """Fraction of mel values at the floor (within SILENT_DB of −top_db): real playing has rests and decays (8–22 % in the
    middle bands of the corpus), an over-busy model has almost none (the "busy and flat" statistic of docs/ablations.md)."""
    return float((_pooled_db(mels, config) <= -config.top_db + SILENT_DB).mean())


def band_std(mels: np.ndarray | Sequence[np.ndarray], config: AudioConfig) -> float:
    """Mean over mel bands of each band's standard deviation over all frames and clips, in normalised [-1, 1] units
    (dB / (top_db / 2)): how much each band moves; a flat model scores lower than real music (0.30 vs 0.40 measured)."""
    return float((_pooled_db(mels, config) / (config.top_db / 2.0)).std(axis=1).mean())


def teacher_fidelity(student_mels: np.ndarray, teacher_mels: np.ndarray, config: AudioConfig) -> float:
    """Mel-dB mean absolute error between clips made from the same noise (student@N vs teacher@1024); 0 = identical."""
    a = _as_clip_batch(student_mels, config)
    b = _as_clip_batch(teacher_mels, config)
    if a.shape != b.shape:
        raise ConfigError(f"fidelity needs paired clips of one shape, got {a.shape} and {b.shape}")
    return float(np.abs(mel_to_db(a, config) - mel_to_db(b, config)).mean())


# -- kernel audio distance --------------------------------------------------------------------------------------------------

def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances (n, m), clipped at 0 against round-off."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def _features(features: np.ndarray, name: str) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ConfigError(f"{name} must be an (n >= 2, dim) feature array, got shape {features.shape}")
    if not np.all(np.isfinite(features)):
        raise ConfigError(f"{name} contains NaN or inf")
    return features


def median_bandwidth(features: np.ndarray) -> float:
    """The median heuristic: the median pairwise Euclidean distance between distinct rows of a feature set."""
    features = _features(features, "features")
    d = np.sqrt(_sq_distances(features, features)[np.triu_indices(features.shape[0], k=1)])
    positive = d[d > 0]
    if positive.size == 0:
        raise ConfigError("every feature vector is identical: no kernel bandwidth fits")
    return float(np.median(positive))


def kad(features_a: np.ndarray, features_b: np.ndarray, bandwidth: float | None = None) -> float:
    """Unbiased MMD² between two (n, D) feature sets with k(x, y) = exp(−‖x − y‖² / 2σ²):
    mean_{i≠j} k(a_i, a_j) + mean_{i≠j} k(b_i, b_j) − 2 mean k(a_i, b_j). σ defaults to the median heuristic on
    `features_b`, the reference: pass one σ for every row of a table so the rows share one kernel."""
    a, b = _features(features_a, "features_a"), _features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ConfigError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    sigma = median_bandwidth(b) if bandwidth is None else float(bandwidth)
    if not sigma > 0 or not np.isfinite(sigma):
        raise ConfigError(f"kernel bandwidth must be positive and finite, got {bandwidth}")
    gamma = 1.0 / (2.0 * sigma * sigma)

    def within(x: np.ndarray) -> float:
        k = np.exp(-gamma * _sq_distances(x, x))
        n = x.shape[0]
        return float((k.sum() - np.trace(k)) / (n * (n - 1)))  # the diagonal (k = 1) is what biases the V-statistic

    return within(a) + within(b) - 2.0 * float(np.exp(-gamma * _sq_distances(a, b)).mean())
