"""v-diffusion on the torch side against the numpy schedule functions: loss weights, DDIM, previews."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from pdd.runtime.config import get_preset
from pdd.runtime.errors import ConfigError
from pdd.runtime.schedule import alpha_sigma, ddim_coefficients, ddim_sample, grid
from pdd.training.diffusion import sample_ddim, sample_noise, sample_times, v_loss, write_previews
from pdd.training.unet1d import UNet1D, unet_config

TINY = get_preset("tiny")


def per_item(t: torch.Tensor) -> torch.Tensor:
    return t[:, None, None]


def oracle_for(x0: torch.Tensor):
    """A 'model' that knows the clean data: v̂ = (α·z − x0)/σ, so x̂ = x0 exactly (σ > 0)."""

    def model(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = alpha_sigma(per_item(t.double()))
        return ((alpha * z.double() - x0.double()) / sigma).float()

    return model


def test_oracle_model_has_zero_loss_under_every_weighting() -> None:
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 6, 8, generator=gen) * 2 - 1
    noise = torch.randn(4, 6, 8, generator=gen)
    t = torch.tensor([0.05, 0.3, 0.7, 0.95])
    for weighting in ("snr+1", "truncated", "snr"):
        assert v_loss(oracle_for(x0), x0, t, noise, weighting).item() < 1e-8


def test_snr_plus_one_is_plain_v_mse_and_truncated_is_max_alpha_sigma() -> None:
    gen = torch.Generator().manual_seed(1)
    x0 = torch.rand(3, 4, 8, generator=gen) * 2 - 1
    noise = torch.randn(3, 4, 8, generator=gen)
    t = torch.tensor([0.1, 0.5, 0.9])
    zero = lambda z, tt: torch.zeros_like(z)  # noqa: E731
    alpha, sigma = alpha_sigma(per_item(t))
    v = alpha * noise - sigma * x0
    per = v.pow(2).flatten(1).mean(1)
    assert v_loss(zero, x0, t, noise, "snr+1").item() == pytest.approx(per.mean().item(), rel=1e-5)
    # max(SNR, 1)·σ² = max(α², σ²)
    a, s = alpha.flatten(), sigma.flatten()
    want = (torch.maximum(a**2, s**2) * per).mean().item()
    assert v_loss(zero, x0, t, noise, "truncated").item() == pytest.approx(want, rel=1e-4)
    with pytest.raises(ConfigError, match="snr\\+1"):
        v_loss(zero, x0, t, noise, "l1")


def test_time_sampling_ranges() -> None:
    gen = torch.Generator().manual_seed(0)
    t = sample_times(10_000, gen)
    assert 0.0 <= t.min() and t.max() < 1.0 and abs(t.mean().item() - 0.5) < 0.02
    k = sample_times(10_000, gen, kind="grid1000") * 1000
    assert torch.allclose(k, k.round(), atol=1e-3) and k.min() >= 1 and k.max() <= 1000
    with pytest.raises(ConfigError):
        sample_times(2, gen, kind="beta")


@pytest.mark.parametrize("steps", [1, 2, 8])
def test_ddim_with_an_oracle_lands_on_the_data(steps: int) -> None:
    x0 = torch.rand(2, 6, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    z1 = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(sample_ddim(oracle_for(x0), z1, steps), x0, atol=1e-5, rtol=1e-5)


def test_torch_ddim_matches_the_numpy_sampler_with_the_unet() -> None:
    torch.manual_seed(0)
    model = UNet1D(unet_config("tiny", TINY)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    z1 = sample_noise(2, TINY, seed=5)

    def numpy_denoise(z: np.ndarray, t: float) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(z).float(), torch.full((2,), t)).numpy()

    want = ddim_sample(numpy_denoise, z1.numpy(), grid(4))
    got = sample_ddim(model, z1, 4)
    assert got.shape == z1.shape
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5, rtol=1e-5)
    # and by hand from the literal grid and coefficients: one step from t = 1 to 3/4
    assert list(grid(4)) == [1.0, 0.75, 0.5, 0.25, 0.0]
    a, b = ddim_coefficients(1.0, 0.75)
    assert a == pytest.approx(math.sin(0.75 * math.pi / 2)) and b == pytest.approx(-math.cos(0.75 * math.pi / 2))


def test_previews_write_wav_and_png_of_the_clip_length(tmp_path) -> None:
    x0 = torch.rand(2, *TINY.packed_shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    paths = write_previews(x0, TINY, tmp_path, "step-10", n_iter=4)
    names = sorted(p.name for p in paths)
    assert names == ["step-10-0.png", "step-10-0.wav", "step-10-1.png", "step-10-1.wav"]
    wave, rate = sf.read(tmp_path / "step-10-0.wav")
    assert rate == TINY.sample_rate and wave.shape == (TINY.clip_samples,)
    assert np.abs(wave).max() > 0
    assert (tmp_path / "step-10-0.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".*"))  # no temp files left
