"""v-diffusion on the torch side: training loss, time sampling, the DDIM sampler and audio previews
(docs/architecture.md, "Diffusion math").

Every formula comes from `pdd.runtime.schedule` (which takes torch tensors as well as numpy arrays); this module only wires
them to a model. Previews go through the runtime's own inverse chain (unpack → denormalise → mel⁻¹ → Griffin-Lim), so what a
training run lets you hear is exactly what the shipped runtime would make of the same x̂0.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from pdd.runtime.audio import write_audio
from pdd.runtime.config import AudioConfig
from pdd.runtime.errors import ConfigError
from pdd.runtime.griffinlim import DEFAULT_ITERS, initial_phase, mel_to_audio
from pdd.runtime.pack import unpack
from pdd.runtime.plots import save_spectrogram_png
from pdd.runtime.schedule import alpha_sigma, ddim_sample, diffuse, grid, v_target
from pdd.training.weighting import DEFAULT_MIN_SNR_GAMMA, WEIGHTINGS, v_loss_weight
TIME_SAMPLINGS = ("continuous", "grid1000")
GRID_STEPS = 1000  # the design's "T = 1000 cosine": t = k/1000 on the same schedule


def sample_times(batch: int, generator: torch.Generator | None = None, kind: str = "continuous",
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """(batch,) float32 training times: t ~ U(0, 1), or k/1000 with k uniform in 1..1000 ("grid1000")."""
    if kind == "continuous":
        t = torch.rand(batch, generator=generator)
    elif kind == "grid1000":
        t = torch.randint(1, GRID_STEPS + 1, (batch,), generator=generator).float() / GRID_STEPS
    else:
        raise ConfigError(f"unknown time sampling {kind!r}; use one of: {', '.join(TIME_SAMPLINGS)}")
    return t.to(device)


def _per_item(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) → (B, 1, 1, …) to broadcast against a batch shaped like `like`."""
    return values.reshape(values.shape[0], *([1] * (like.dim() - 1)))


def v_loss(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor, t: torch.Tensor,
           noise: torch.Tensor, weighting: str = "snr+1", min_snr_gamma: float = DEFAULT_MIN_SNR_GAMMA) -> torch.Tensor:
    """Weighted denoising loss of a v-predicting model, averaged over the batch.

    With x̂ = α·z − σ·v̂ one has x̂ − x = −σ·(v̂ − v), so a weight w(λ) on ‖x̂ − x‖² is w·σ²·‖v̂ − v‖². We compute it in that
    form (no division by σ near t = 0): "snr+1" gives (SNR + 1)·σ² = 1, the plain v-MSE; "truncated" gives max(SNR, 1)·σ²
    (Salimans & Ho's truncated SNR); "snr" the ε-MSE-equivalent weight; "min-snr" min(SNR, γ)·σ² (training/weighting.py).
    """
    if weighting not in WEIGHTINGS:
        raise ConfigError(f"unknown loss weighting {weighting!r}; use one of: {', '.join(WEIGHTINGS)}")
    t = t.to(x0.dtype)
    alpha, sigma = alpha_sigma(_per_item(t, x0))
    z_t = diffuse(x0, noise, alpha, sigma)
    target = v_target(x0, noise, alpha, sigma)
    v_hat = model(z_t, t)
    per_item = (v_hat.float() - target.float()).pow(2).flatten(1).mean(dim=1)
    weight = v_loss_weight(t.double(), weighting, min_snr_gamma).float()
    return (weight * per_item).mean()


@torch.no_grad()
def sample_ddim(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], z1: torch.Tensor, steps: int) -> torch.Tensor:
    """x̂0 from noise z1 (B, C·F, L) by N-step DDIM (η = 0): the runtime's `ddim_sample`, with the model as denoiser."""
    batch = z1.shape[0]

    def denoise(z: torch.Tensor, t: float) -> torch.Tensor:
        return model(z, torch.full((batch,), t, dtype=z.dtype, device=z.device))

    return ddim_sample(denoise, z1, grid(steps))


def sample_noise(batch: int, audio: AudioConfig, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """z1 ~ N(0, I) of the packed shape, from a seeded generator (reproducible previews)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *audio.packed_shape, generator=generator).to(device)


# ---------------------------------------------------------------------------------------------------------------------
# Previews: x̂0 → mel → WAV + spectrogram PNG through the runtime


def x0_to_mel(x0: torch.Tensor | np.ndarray, audio: AudioConfig) -> np.ndarray:
    """(B, C·F, L) packed model output → (B, n_mels, frames) normalised mel, clipped to [-1, 1]."""
    packed = x0.detach().float().cpu().numpy() if isinstance(x0, torch.Tensor) else np.asarray(x0, dtype=np.float32)
    return np.clip(unpack(packed, audio.pack_chunks, audio.pack_order), -1.0, 1.0)


def mel_to_wave(mel: np.ndarray, audio: AudioConfig, n_iter: int = DEFAULT_ITERS, phase_seed: int | None = 0) -> np.ndarray:
    """(..., n_mels, frames) normalised mel → (..., samples) waveform: denormalise → mel⁻¹ → Griffin-Lim (the runtime's)."""
    phase0 = initial_phase((*mel.shape[:-2], audio.n_freqs, mel.shape[-1]), phase_seed)
    return mel_to_audio(mel, audio, n_iter=n_iter, phase0=phase0, length=audio.clip_samples)


def write_previews(x0: torch.Tensor | np.ndarray, audio: AudioConfig, out_dir: str | os.PathLike[str], prefix: str,
                   n_iter: int = DEFAULT_ITERS, overwrite: bool = False) -> list[Path]:
    """Write `<prefix>-<i>.wav` and `<prefix>-<i>.png` for every clip of a packed x̂0 batch; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mels = x0_to_mel(x0, audio)
    waves = mel_to_wave(mels, audio, n_iter=n_iter)
    written: list[Path] = []
    for index, (mel, wave) in enumerate(zip(mels, waves)):
        stem = f"{prefix}-{index}"
        written.append(write_audio(out_dir / f"{stem}.wav", wave, audio.sample_rate, overwrite=overwrite))
        written.append(save_spectrogram_png(out_dir / f"{stem}.png", mel, audio, title=stem))
    return written


def preview(model: nn.Module, audio: AudioConfig, out_dir: str | os.PathLike[str], prefix: str, *, clips: int = 2,
            steps: int = 50, seed: int = 0, device: torch.device | str = "cpu", n_iter: int = DEFAULT_ITERS,
            overwrite: bool = False) -> dict[str, Any]:
    """Sample `clips` x̂0 with `steps`-step DDIM from seeded noise and write them as WAV + PNG; returns a summary."""
    was_training = model.training
    model.eval()
    try:
        x0 = sample_ddim(model, sample_noise(clips, audio, seed, device), steps)
    finally:
        model.train(was_training)
    paths = write_previews(x0, audio, out_dir, prefix, n_iter=n_iter, overwrite=overwrite)
    mel = x0_to_mel(x0, audio)
    return {"files": [str(p) for p in paths], "mel_mean": float(mel.mean()), "mel_std": float(mel.std())}
