"""The learned vocoder (Vocos-style): normalised log-mel frames → log-magnitude and phase per STFT bin → inverse STFT.

Design (docs/architecture.md, "Decode"): a Conv1d embedding over mel frames, ConvNeXt blocks (depthwise conv, LayerNorm,
pointwise MLP with GELU, layer scale), a final LayerNorm and one Linear head that reads, per frame, n_freqs log-magnitudes and
n_freqs phases. The inverse STFT is the runtime's (centred Hann frames, windowed overlap-add over Σw²), so the same
spectrum decodes to the same samples in PyTorch (`torch.istft`), in numpy (`StftPlan.inverse_frames`) and in the
ConvTranspose graph for GPUs. The input is the silence-gated mel (`pdd.runtime.silence.gated_floor`): the vocoder sees
what the runtime gives it, and a model's x̂0 near the floor decodes as the silence it was trained on.

Magnitudes are of the unnormalised STFT (`pdd.runtime.spectral.StftPlan.stft`): what `log_mel` analyses, before its division
by the window sum.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from pdd.runtime.config import AudioConfig
from pdd.runtime.errors import ConfigError
from pdd.runtime.jsonconfig import JsonConfig
from pdd.runtime.mel import AMIN, mel_filterbank, reference_power
from pdd.runtime.silence import SilenceGate, gated_floor
from pdd.runtime.spectral import StftPlan
from pdd.runtime.untrusted import check_audio_bounds, printable

# The head's log-magnitude is clamped here before exp: e^7 ≈ 1100 is above the largest bin of a full-scale sine in the
# unnormalised STFT (window sum / 2 = 512 at n_fft 2048) and keeps exp() finite in fp16 graphs.
MAX_LOG_MAGNITUDE = 7.0

# The learned vocoder's own gate: it renders quiet detail without hiss, so only values within a few dB of the floor
# (a model's x̂0 rarely lands exactly on −1) are pulled onto it; Griffin-Lim's gate (pdd.runtime.silence.DEFAULT_GATE)
# is far more aggressive. Recorded in each checkpoint and manifest, so the runtime applies what training saw.
VOCODER_GATE = SilenceGate(threshold=-0.9, knee=0.1)
MAX_VOCODER_PARAMS = 200_000_000  # 65× the shipped 3.1 M; a checkpoint claiming more is refused before allocating


@dataclass(frozen=True)
class VocoderConfig(JsonConfig):
    """Size of the ConvNeXt backbone. Presets: `tiny` (tests, seconds on a CPU) and `small` (~3.1 M params, shipped)."""

    config_kind: ClassVar[str] = "vocoder config"

    name: str = "small"
    dim: int = 256
    intermediate: int = 768
    layers: int = 6
    kernel: int = 7
    layer_scale: float = 1e-2

    def __post_init__(self) -> None:
        for key in ("dim", "intermediate", "layers", "kernel"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 8192:
                raise ConfigError(f"vocoder {key} must be an integer in [1, 8192], got {value!r}")
        if self.kernel % 2 == 0:
            raise ConfigError(f"vocoder kernel must be odd (same-length convolutions), got {self.kernel}")
        if not 0.0 < float(self.layer_scale) <= 1.0:
            raise ConfigError(f"vocoder layer_scale must be in (0, 1], got {self.layer_scale}")


VOCODER_PRESETS: dict[str, VocoderConfig] = {
    "tiny": VocoderConfig(name="tiny", dim=32, intermediate=64, layers=2, kernel=7),
    "small": VocoderConfig(name="small"),
}


def vocoder_preset(name: str) -> VocoderConfig:
    if name not in VOCODER_PRESETS:
        raise ConfigError(f"unknown vocoder preset {name!r}; choose one of: {', '.join(VOCODER_PRESETS)}")
    return VOCODER_PRESETS[name]


class ConvNeXtBlock(nn.Module):
    """Depthwise conv over time → LayerNorm over channels → Linear, GELU, Linear → layer scale → residual."""

    def __init__(self, dim: int, intermediate: int, kernel: int, layer_scale: float) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.up = nn.Linear(dim, intermediate)
        self.down = nn.Linear(intermediate, dim)
        self.scale = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.depthwise(x).transpose(1, 2)  # (B, T, dim)
        h = self.down(F.gelu(self.up(self.norm(h)))) * self.scale
        return x + h.transpose(1, 2)


class MelVocoder(nn.Module):
    """(B, n_mels, T) gated normalised log-mel → (B, T, n_freqs, 2) STFT frames (real, imaginary), frame-major.

    Frame-major with re/im last: a float32 (…, 2) array is a complex64 array in memory, so the runtime's numpy iSTFT reads
    the graph's output without a copy or a transpose.
    """

    def __init__(self, audio: AudioConfig, config: VocoderConfig, gate: SilenceGate | None = VOCODER_GATE) -> None:
        super().__init__()
        self.audio, self.config, self.gate = audio, config, gate
        self.embed = nn.Conv1d(audio.n_mels, config.dim, config.kernel, padding=config.kernel // 2)
        self.embed_norm = nn.LayerNorm(config.dim, eps=1e-6)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(config.dim, config.intermediate, config.kernel, config.layer_scale) for _ in range(config.layers)
        )
        self.final_norm = nn.LayerNorm(config.dim, eps=1e-6)
        self.head = nn.Linear(config.dim, 2 * audio.n_freqs)

    def spectrum(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.embed(gated_floor(mel, self.gate))
        x = self.embed_norm(x.transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        log_mag, phase = self.head(self.final_norm(x.transpose(1, 2))).chunk(2, dim=-1)  # (B, T, n_freqs) each
        magnitude = torch.exp(log_mag.clamp(max=MAX_LOG_MAGNITUDE))
        return torch.stack([magnitude * torch.cos(phase), magnitude * torch.sin(phase)], dim=-1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.spectrum(mel)

    def waveform(self, mel: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """(B, n_mels, T) → (B, (T−1)·hop) samples through `torch.istft` (the runtime's inverse, see module docstring)."""
        return spectrum_to_wave(self.spectrum(mel), self.audio, length)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- torch twins of the runtime's front end (tests pin them to the numpy originals) ---------------------------------------

def _window(audio: AudioConfig, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(StftPlan.from_config(audio).window32.copy()).to(device)


def spectrum_to_wave(spectrum: torch.Tensor, audio: AudioConfig, length: int | None = None) -> torch.Tensor:
    """(B, T, n_freqs, 2) frames → (B, samples): `torch.istft` with the runtime's window, centring and Σw² normalisation."""
    frames = spectrum.shape[1]
    complex_spec = torch.view_as_complex(spectrum.float().contiguous()).transpose(1, 2)  # (B, n_freqs, T)
    length = (frames - 1) * audio.hop_length if length is None else length
    return torch.istft(complex_spec, audio.n_fft, audio.hop_length, audio.win_length, window=_window(audio, spectrum.device),
                       center=True, length=length)


def torch_stft(wave: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """|STFT| with a periodic Hann window, centred, zero padding (for the multi-resolution loss)."""
    window = torch.hann_window(n_fft, periodic=True, device=wave.device)
    spec = torch.stft(wave, n_fft, hop, n_fft, window=window, center=True, pad_mode="constant", return_complex=True)
    return spec.abs()


class LogMel(nn.Module):
    """The runtime's `log_mel` (pdd.runtime.mel) in torch: window-sum-normalised power → Slaney mel → dB clip → [-1, 1]."""

    def __init__(self, audio: AudioConfig) -> None:
        super().__init__()
        self.audio = audio
        self.register_buffer("filterbank", torch.from_numpy(mel_filterbank(audio).copy()), persistent=False)
        self.register_buffer("window", torch.from_numpy(StftPlan.from_config(audio).window32.copy()), persistent=False)
        self.window_sum = StftPlan.from_config(audio).window_sum
        self.reference = reference_power(audio)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        a = self.audio
        spec = torch.stft(wave, a.n_fft, a.hop_length, a.win_length, window=self.window, center=True,
                          pad_mode="constant", return_complex=True)
        power = (spec.real**2 + spec.imag**2) / (self.window_sum**2)
        mel = torch.matmul(self.filterbank, power)
        db = 10.0 * torch.log10(mel.clamp(min=AMIN) / self.reference)
        return db.clamp(-a.top_db, 0.0) / a.top_db * 2.0 + 1.0


@dataclass(frozen=True)
class LossConfig(JsonConfig):
    """Multi-resolution STFT loss (spectral convergence + log-magnitude L1) plus `mel_weight` × L1 on the normalised log-mel."""

    config_kind: ClassVar[str] = "vocoder loss config"

    resolutions: tuple[tuple[int, int], ...] = ((512, 128), (1024, 256), (2048, 512))
    mel_weight: float = 4.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "resolutions", tuple(tuple(int(v) for v in r) for r in self.resolutions))
        if not self.resolutions or any(len(r) != 2 or r[0] < 16 or not 0 < r[1] <= r[0] for r in self.resolutions):
            raise ConfigError("vocoder loss resolutions must be (n_fft >= 16, 0 < hop <= n_fft) pairs")
        if not 0.0 <= float(self.mel_weight) <= 1e3:
            raise ConfigError(f"vocoder mel_weight must be in [0, 1000], got {self.mel_weight}")


class VocoderLoss(nn.Module):
    def __init__(self, audio: AudioConfig, config: LossConfig = LossConfig()) -> None:
        super().__init__()
        self.config = config
        self.log_mel = LogMel(audio)

    def forward(self, wave: torch.Tensor, target: torch.Tensor, target_mel: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        convergence = torch.zeros((), device=wave.device)
        log_l1 = torch.zeros((), device=wave.device)
        for n_fft, hop in self.config.resolutions:
            got, want = torch_stft(wave, n_fft, hop), torch_stft(target, n_fft, hop)
            convergence = convergence + torch.linalg.norm(got - want) / torch.linalg.norm(want).clamp(min=1e-7)
            log_l1 = log_l1 + F.l1_loss(torch.log(got.clamp(min=1e-5)), torch.log(want.clamp(min=1e-5)))
        n = len(self.config.resolutions)
        mel_l1 = F.l1_loss(self.log_mel(wave)[..., : target_mel.shape[-1]], target_mel)
        total = (convergence + log_l1) / n + self.config.mel_weight * mel_l1
        parts = {"sc": float(convergence.detach()) / n, "logmag": float(log_l1.detach()) / n, "mel": float(mel_l1.detach())}
        return total, parts


@dataclass
class VocoderInfo:
    """What a vocoder checkpoint records besides weights: the audio preset, the backbone size, the gate, the training."""

    audio: AudioConfig
    config: VocoderConfig
    gate: SilenceGate | None
    training: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"audio": self.audio.to_dict(), "vocoder": self.config.to_dict(),
                "gate": None if self.gate is None else self.gate.to_dict(), "training": dict(self.training)}

    @classmethod
    def from_dict(cls, data: Any) -> "VocoderInfo":
        if not isinstance(data, dict) or not {"audio", "vocoder", "gate"} <= set(data):
            raise ConfigError("vocoder checkpoint info needs audio, vocoder and gate")
        try:
            check_audio_bounds(data["audio"], "vocoder checkpoint audio preset", ConfigError)
            info = cls(AudioConfig.from_dict(dict(data["audio"])), VocoderConfig.from_dict(dict(data["vocoder"])),
                       SilenceGate.from_manifest(data["gate"]), dict(data.get("training") or {}))
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise ConfigError(f"vocoder checkpoint info is malformed ({printable(exc, 200)})") from None
        # Bounded before anything is allocated: each size alone may pass its own check and still multiply to gigabytes.
        params = expected_params(info.audio, info.config)
        if params > MAX_VOCODER_PARAMS:
            raise ConfigError(f"vocoder checkpoint info describes a model of {params:,} parameters, over the limit of "
                              f"{MAX_VOCODER_PARAMS:,} (the shipped vocoder has 3.1 M); not a pdd vocoder")
        return info


def expected_params(audio: AudioConfig, config: VocoderConfig) -> int:
    """Parameter count without building the model (for help texts and checks)."""
    d, i, k, f = config.dim, config.intermediate, config.kernel, audio.n_mels
    block = d * k + d + 2 * d + d * i + i + i * d + d + d
    return f * d * k + d + 2 * d + config.layers * block + 2 * d + d * 2 * audio.n_freqs + 2 * audio.n_freqs


__all__ = [
    "VocoderConfig", "VOCODER_GATE", "VOCODER_PRESETS", "vocoder_preset", "MelVocoder", "LogMel", "LossConfig", "VocoderLoss", "VocoderInfo",
    "spectrum_to_wave", "parameter_count", "expected_params", "MAX_LOG_MAGNITUDE", "MAX_VOCODER_PARAMS",
]
