"""The DDPM baseline sampler (training/ddpm.py) and the min-SNR-γ loss weight (training/weighting.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pdd.runtime.errors import ConfigError
from pdd.runtime.schedule import alpha_sigma, grid
from pdd.training.ddpm import ddpm_coefficients, ddpm_sample, sample_ddpm, timed_ddpm_sampling
from pdd.training.diffusion import v_loss
from pdd.training.weighting import min_snr_v_weight, v_loss_weight


def perfect_denoiser(x0: torch.Tensor):
    """v̂ computed from the known x0: the denoiser every sampler should turn into x0."""

    def denoise(z: torch.Tensor, t: float) -> torch.Tensor:
        alpha, sigma = alpha_sigma(t)
        eps = (z - alpha * x0) / sigma
        return alpha * eps - sigma * x0

    return denoise


def gaussian_data_denoiser(mean: float, std: float):
    """The exact posterior-mean denoiser of data x ~ N(mean, std²): DDPM with it must sample that distribution."""

    def denoise(z: torch.Tensor, t: float) -> torch.Tensor:
        alpha, sigma = alpha_sigma(t)
        x_hat = mean + alpha * std**2 / (alpha**2 * std**2 + sigma**2) * (z - alpha * mean)
        eps = (z - alpha * x_hat) / sigma
        return alpha * eps - sigma * x_hat

    return denoise


def test_ddpm_with_a_perfect_denoiser_recovers_x0_in_expectation() -> None:
    x0 = torch.linspace(-1.0, 1.0, 48, dtype=torch.float64)
    outs = [ddpm_sample(perfect_denoiser(x0), torch.randn(48, dtype=torch.float64, generator=torch.Generator().manual_seed(k)),
                        grid(1000), torch.Generator().manual_seed(100 + k)) for k in range(4)]
    assert torch.allclose(torch.stack(outs).mean(0), x0, atol=1e-9)


def test_ddpm_keeps_the_forward_marginal_half_way() -> None:
    """From t = 1 down to t = 0.5 with a perfect denoiser, z must be distributed as α·x0 + σ·ε (mean over seeds = α·x0):
    the posterior's mean and variance both matter here, unlike at t = 0."""
    x0 = torch.full((20000,), 0.7, dtype=torch.float64)
    z1 = torch.randn(20000, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    z = ddpm_sample(perfect_denoiser(x0), z1, grid(1000)[:501], torch.Generator().manual_seed(2))
    alpha, sigma = alpha_sigma(0.5)
    assert float(z.mean()) == pytest.approx(alpha * 0.7, abs=0.02)
    assert float(z.std()) == pytest.approx(sigma, rel=0.02)


def test_ddpm_with_the_bayes_denoiser_samples_the_data_distribution() -> None:
    z1 = torch.randn(20000, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x = ddpm_sample(gaussian_data_denoiser(0.3, 0.5), z1, grid(1000), torch.Generator().manual_seed(4))
    assert float(x.mean()) == pytest.approx(0.3, abs=0.02)
    assert float(x.std()) == pytest.approx(0.5, rel=0.03)


def test_ddpm_coefficients_are_the_vp_posterior() -> None:
    a, b, c = ddpm_coefficients(0.5, 0.25)
    alpha_t, sigma_t = math.cos(math.pi / 4), math.sin(math.pi / 4)
    alpha_s, sigma_s = math.cos(math.pi / 8), math.sin(math.pi / 8)
    var_ts = sigma_t**2 - (alpha_t / alpha_s) ** 2 * sigma_s**2
    assert (a, b, c) == pytest.approx(((alpha_t / alpha_s) * sigma_s**2 / sigma_t**2, alpha_s * var_ts / sigma_t**2,
                                       math.sqrt(var_ts * sigma_s**2 / sigma_t**2)))
    assert ddpm_coefficients(0.001, 0.0) == pytest.approx((0.0, 1.0, 0.0))  # the last step lands on x̂
    with pytest.raises(ConfigError):
        ddpm_coefficients(0.2, 0.5)


def test_ddpm_is_seeded_and_stochastic() -> None:
    model = lambda z, t: 0.5 * z  # noqa: E731 — any fixed denoiser
    z1 = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(0))
    a, b, c = sample_ddpm(model, z1, 20, seed=1), sample_ddpm(model, z1, 20, seed=1), sample_ddpm(model, z1, 20, seed=2)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    x0, seconds = timed_ddpm_sampling(model, z1, 20, batch_size=1, seed=1)
    assert x0.shape == (2, 6, 4) and seconds > 0


def test_min_snr_weights_are_pinned() -> None:
    t = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    # min(SNR, 5)/(SNR + 1) with SNR = cot²(πt/2): t = 0.1 → SNR 39.86 → 5/40.86; t = 0.5 → SNR 1 → 1/2; t = 0.9 → SNR 0.02508
    np.testing.assert_allclose(min_snr_v_weight(t, 5.0), [0.0, 0.12236, 0.5, 0.024472, 0.0], atol=2e-5)
    np.testing.assert_allclose(min_snr_v_weight(np.array([0.1, 0.5]), 1.0), [0.024472, 0.5], atol=2e-5)
    torch_weights = v_loss_weight(torch.tensor([0.1, 0.5], dtype=torch.float64), "min-snr", 5.0)
    np.testing.assert_allclose(torch_weights.numpy(), [0.12236, 0.5], atol=2e-5)
    np.testing.assert_allclose(v_loss_weight(np.array([0.1, 0.5, 0.9]), "snr+1"), [1.0, 1.0, 1.0])  # plain v-MSE
    with pytest.raises(ConfigError):
        min_snr_v_weight(t, 0.0)
    with pytest.raises(ConfigError):
        v_loss_weight(t, "nope")


def test_v_loss_applies_the_min_snr_weight() -> None:
    x0 = torch.randn(4, 6, 8, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(4, 6, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.1, 0.3, 0.5, 0.9])
    zero = lambda z, t: torch.zeros_like(z)  # noqa: E731 — loss = weight · ‖v‖² per item
    alpha, sigma = alpha_sigma(t[:, None, None])
    per_item = (alpha * noise - sigma * x0).pow(2).flatten(1).mean(1)
    want = (min_snr_v_weight(t.double(), 5.0).float() * per_item).mean()
    assert v_loss(zero, x0, t, noise, "min-snr", 5.0).item() == pytest.approx(want.item(), rel=1e-6)
    assert v_loss(zero, x0, t, noise, "snr+1").item() == pytest.approx(per_item.mean().item(), rel=1e-6)
