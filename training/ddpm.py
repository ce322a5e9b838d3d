"""DDPM ancestral sampling: the paper's "DDPM + U-Net" baseline (1000 stochastic steps), for the sampler rows of
docs/ablations.md beside DDIM and the distilled student.

One step from t to s < t draws z_s from the exact Gaussian posterior q(z_s | z_t, x = x̂) of the variance-preserving
process (Kingma et al. 2021, "Variational Diffusion Models", eq. 32–33), with every α, σ from `pdd.runtime.schedule`:

    α_{t|s} = α_t / α_s,   σ²_{t|s} = σ_t² − α²_{t|s} σ_s²
    mean    = (α_{t|s} σ_s² / σ_t²) · z_t + (α_s σ²_{t|s} / σ_t²) · x̂
    var     = σ²_{t|s} σ_s² / σ_t²

On the grid t = k/1000 this is Ho et al.'s sampler with the posterior variance β̃ (the "T = 1000 cosine" of the seed). The last
step lands at s = 0, where the variance is 0 and z_0 = x̂. Like `ddim_sample`, the sampler takes its time grid as an argument.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

from pdd.runtime.errors import ConfigError
from pdd.runtime.schedule import alpha_sigma, grid, x0_from_v

DDPM_STEPS = 1000  # the paper's baseline


def ddpm_coefficients(t: float, s: float) -> tuple[float, float, float]:
    """(a, b, c) with z_s = a·z_t + b·x̂ + c·ε, ε ~ N(0, I): the posterior mean's weights and its standard deviation."""
    if not 0.0 <= s < t <= 1.0:
        raise ConfigError(f"a DDPM step goes down in time within [0, 1], got {t} → {s}")
    alpha_t, sigma_t = alpha_sigma(float(t))
    alpha_s, sigma_s = alpha_sigma(float(s))
    alpha_ts = alpha_t / alpha_s
    var_ts = max(sigma_t**2 - alpha_ts**2 * sigma_s**2, 0.0)  # ≥ 0 analytically; clip rounding
    a = alpha_ts * sigma_s**2 / sigma_t**2
    b = alpha_s * var_ts / sigma_t**2
    c = math.sqrt(var_ts * sigma_s**2 / sigma_t**2)
    return a, b, c


def ddpm_sample(denoise: Callable[[torch.Tensor, float], torch.Tensor], z: torch.Tensor, times: Sequence[Any],
                generator: torch.Generator | None = None) -> torch.Tensor:
    """x̂0 from noise z at times[0] by ancestral sampling down the decreasing grid `times` (e.g. `grid(1000)`), with
    `denoise(z, t) -> v̂`; the fresh noise of each step comes from `generator` (seeded: reproducible)."""
    steps = [float(t) for t in times]
    if len(steps) < 2:
        raise ConfigError(f"a DDPM grid needs at least two times, got {len(steps)}")
    for t, s in zip(steps[:-1], steps[1:]):
        alpha_t, sigma_t = alpha_sigma(t)
        x_hat = x0_from_v(z, denoise(z, t), alpha_t, sigma_t)
        a, b, c = ddpm_coefficients(t, s)
        z = a * z + b * x_hat
        if c > 0:
            z = z + c * torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device)
    return z


@torch.no_grad()
def sample_ddpm(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], z1: torch.Tensor, steps: int = DDPM_STEPS,
                seed: int = 0) -> torch.Tensor:
    """x̂0 from noise z1 (B, C·F, L) by `steps`-step DDPM on the grid t = k/steps, the model as denoiser."""
    batch = z1.shape[0]

    def denoise(z: torch.Tensor, t: float) -> torch.Tensor:
        return model(z, torch.full((batch,), t, dtype=z.dtype, device=z.device))

    return ddpm_sample(denoise, z1, grid(steps), torch.Generator().manual_seed(seed))


def timed_ddpm_sampling(model: Any, z1: torch.Tensor, steps: int, batch_size: int, seed: int = 0) -> tuple[Any, float]:
    """x̂0 of every noise in z1 by `steps`-step DDPM, in batches (batch b draws its step noise from seed + b); returns
    (x̂0 as numpy, seconds per clip), timed as pdd-eval times DDIM."""
    import time

    import numpy as np

    sample_ddpm(model, z1[:1], 1, seed)  # warm-up, as for DDIM
    outputs = []
    started = time.perf_counter()
    for index, first in enumerate(range(0, z1.shape[0], batch_size)):
        x0 = sample_ddpm(model, z1[first:first + batch_size], steps, seed + index)
        if x0.is_cuda:
            torch.cuda.synchronize()
        outputs.append(x0.float().cpu().numpy())
    return np.concatenate(outputs), (time.perf_counter() - started) / z1.shape[0]
