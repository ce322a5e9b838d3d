"""Diffusion math, the single source of truth (DESIGN §4): cosine schedule, grids, v-parameterisation, DDIM, distillation target.

Every function is plain arithmetic with scalar or broadcast coefficients, so numpy arrays (runtime, export) and torch tensors
(training) pass through the same code. Transcendentals go through `_cos`/`_sin`/`_log`, which call the tensor's own method when
it has one (torch) and numpy otherwise — without importing torch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pdd.runtime.errors import ConfigError

LOGSNR_MIN = -20.0
LOGSNR_MAX = 20.0


def _apply(name: str, t: Any) -> Any:
    if isinstance(t, (int, float)):
        return getattr(math, name)(t)
    method = getattr(t, name, None)
    if callable(method) and not isinstance(t, np.ndarray):
        return method()  # torch.Tensor.cos() etc.
    return getattr(np, name)(t)


def _cos(t: Any) -> Any:
    return _apply("cos", t)


def _sin(t: Any) -> Any:
    return _apply("sin", t)


def alpha_sigma(t: Any) -> tuple[Any, Any]:
    """Variance-preserving cosine schedule: α_t = cos(πt/2), σ_t = sin(πt/2); α² + σ² = 1, t ∈ [0, 1]."""
    angle = t * (math.pi / 2)
    return _cos(angle), _sin(angle)


def log_snr(t: Any) -> Any:
    """log(α²/σ²) = −2·log(tan(πt/2)), clipped to [LOGSNR_MIN, LOGSNR_MAX] so t = 0 and t = 1 stay finite."""
    if isinstance(t, (int, float)):
        tan = math.tan(t * math.pi / 2) if t < 1 else math.inf
        value = -2.0 * math.log(tan) if tan > 0 else math.inf
        return min(max(value, LOGSNR_MIN), LOGSNR_MAX)
    alpha, sigma = alpha_sigma(t)
    lo, hi = math.exp(LOGSNR_MIN / 2), math.exp(LOGSNR_MAX / 2)
    ratio = (alpha / (sigma + 1e-30)).clip(lo, hi)
    return 2.0 * _apply("log", ratio)


def snr_weight(t: Any, kind: str = "snr+1") -> Any:
    """Loss weight on the x̂-error: "snr+1" (≡ plain v-MSE), "truncated" = max(SNR, 1) (Salimans & Ho), or "snr"."""
    alpha, sigma = alpha_sigma(t)
    snr = alpha**2 / (sigma**2 + math.exp(-LOGSNR_MAX))
    if kind == "snr+1":
        return snr + 1.0
    if kind == "truncated":
        return snr.clip(min=1.0) if not isinstance(snr, (float, np.ndarray, np.generic)) else np.maximum(snr, 1.0)
    if kind == "snr":
        return snr
    raise ConfigError(f"unknown loss weighting {kind!r}; use snr+1, truncated or snr")


def grid(steps: int) -> np.ndarray:
    """Sampling times for an N-step sampler, from t_N = 1 down to t_0 = 0: [1, (N−1)/N, …, 1/N, 0] (float64, length N+1)."""
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    return np.arange(steps, -1, -1, dtype=np.float64) / steps


def grid_coefficients(steps: int) -> dict[str, np.ndarray]:
    """The grid with its α_i, σ_i (what a bundle manifest records and a fused sampler bakes in)."""
    t = grid(steps)
    alpha, sigma = alpha_sigma(t)
    sigma[-1] = 0.0  # exactly: the last step lands on clean data
    alpha[-1] = 1.0
    return {"t": t, "alpha": alpha, "sigma": sigma}


def v_target(x0: Any, eps: Any, alpha: Any, sigma: Any) -> Any:
    """v = α·ε − σ·x (what the network is trained to output)."""
    return alpha * eps - sigma * x0


def diffuse(x0: Any, eps: Any, alpha: Any, sigma: Any) -> Any:
    """z_t = α·x + σ·ε."""
    return alpha * x0 + sigma * eps


def x0_from_v(z: Any, v: Any, alpha: Any, sigma: Any) -> Any:
    """x̂ = α·z − σ·v̂."""
    return alpha * z - sigma * v


def eps_from_v(z: Any, v: Any, alpha: Any, sigma: Any) -> Any:
    """ε̂ = σ·z + α·v̂."""
    return sigma * z + alpha * v


def ddim_step(z_t: Any, v_hat: Any, t: Any, s: Any) -> Any:
    """Deterministic DDIM (η = 0) from time t to s < t given the model's v̂ at (z_t, t): z_s = α_s·x̂ + σ_s·ε̂."""
    alpha_t, sigma_t = alpha_sigma(t)
    alpha_s, sigma_s = alpha_sigma(s)
    x_hat = x0_from_v(z_t, v_hat, alpha_t, sigma_t)
    eps_hat = eps_from_v(z_t, v_hat, alpha_t, sigma_t)
    return alpha_s * x_hat + sigma_s * eps_hat


def ddim_coefficients(t: float, s: float) -> tuple[float, float]:
    """(a, b) with z_s = a·z_t + b·v̂: the DDIM step folded into two scalars (what fused graphs bake in)."""
    alpha_t, sigma_t = alpha_sigma(float(t))
    alpha_s, sigma_s = alpha_sigma(float(s))
    if s == 0:
        alpha_s, sigma_s = 1.0, 0.0
    return alpha_s * alpha_t + sigma_s * sigma_t, sigma_s * alpha_t - alpha_s * sigma_t


def ddim_sample(denoise: Any, z1: Any, steps: int) -> Any:
    """Run the N-step DDIM sampler from z_1 with `denoise(z, t) -> v̂` (t a Python float); returns x̂_0."""
    times = grid(steps)
    z = z1
    for t, s in zip(times[:-1], times[1:]):
        a, b = ddim_coefficients(t, s)
        z = a * z + b * denoise(z, float(t))
    return z


def distill_target(z_t: Any, z_t2: Any, t: Any, t2: Any) -> Any:
    """Progressive-distillation target x̃ (Salimans & Ho 2022, Alg. 2) for a student step t → t″ = t2.

    x̃ = (z_t″ − (σ_t″/σ_t)·z_t) / (α_t″ − (σ_t″/σ_t)·α_t): the x̂ with which one DDIM step from z_t lands exactly on the
    teacher's two-step result z_t″. At t″ = 0 (σ = 0) it reduces to z_t″ itself, the teacher's final x̂.
    """
    alpha_t, sigma_t = alpha_sigma(t)
    alpha_2, sigma_2 = alpha_sigma(t2)
    ratio = sigma_2 / sigma_t
    return (z_t2 - ratio * z_t) / (alpha_2 - ratio * alpha_t)
