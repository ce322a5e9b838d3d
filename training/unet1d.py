"""The 1D U-Net denoiser: packed mel (B, C·F, L) with mel bins as channels, time t ∈ [0, 1] → v̂ of the same shape
(docs/architecture.md, "The model").

Residual Conv1d blocks (GroupNorm + SiLU) with the time embedding applied as a per-channel scale and shift, down/up-sampling
along time, self-attention (`scaled_dot_product_attention`) at chosen levels, skip connections and a zero-initialised output.
The input conv narrows C·F channels (384 for the paper preset) to base_channels; a cheap full-rank skip (time-gated identity
plus a depthwise conv of the input, added to the output) lets the network act on every input dimension anyway — measured on
the tiny preset it takes DDIM samples from noise-like (total variation 0.93 vs the data's 0.024) to data-like (0.065).
Everything is set by `UNetConfig`, which travels with every checkpoint and bundle.

Export-friendly by construction: the layer structure is fixed at construction time, `forward` has no data-dependent Python
control flow, and every op (Conv1d, GroupNorm, SiLU, nearest Resize, SDPA, sin/cos) exists in ONNX opset 18.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from pdd.runtime.config import AudioConfig
from pdd.runtime.errors import ConfigError
from pdd.runtime.jsonconfig import JsonConfig
from pdd.runtime.schedule import log_snr

TIME_INPUTS = ("t", "logsnr")


class LevelShape:
    """What the 1D and 2D U-Net configs share (both are frozen dataclasses with these fields): the level arithmetic and the
    checks of level widths, attention heads and time input. Each config adds its own geometry's checks."""

    channel_mults: tuple[int, ...]
    attention_levels: tuple[int, ...]
    base_channels: int
    num_res_blocks: int
    head_channels: int
    norm_groups: int
    dropout: float
    time_input: str
    time_embed_mult: int
    mid_attention: bool

    def _store_tuples(self) -> None:
        # Accept lists from JSON but store tuples, so configs hash and compare by value.
        object.__setattr__(self, "channel_mults", tuple(int(m) for m in self.channel_mults))
        object.__setattr__(self, "attention_levels", tuple(int(a) for a in self.attention_levels))

    @property
    def levels(self) -> int:
        return len(self.channel_mults)

    @property
    def time_embed_dim(self) -> int:
        return self.base_channels * self.time_embed_mult

    def level_channels(self, level: int) -> int:
        return self.base_channels * self.channel_mults[level]

    def level_problems(self) -> list[str]:
        problems = []
        if not self.channel_mults or any(m <= 0 for m in self.channel_mults):
            problems.append("channel_mults must be a non-empty list of positive integers")
        if self.num_res_blocks < 1:
            problems.append("num_res_blocks must be >= 1")
        if any(not 0 <= a < max(len(self.channel_mults), 1) for a in self.attention_levels):
            problems.append(f"attention_levels must index levels 0..{len(self.channel_mults) - 1}")
        widths = [self.level_channels(i) for i in range(len(self.channel_mults))] if self.channel_mults else []
        if self.norm_groups <= 0 or any(w % self.norm_groups for w in widths):
            problems.append(f"norm_groups ({self.norm_groups}) must divide every level width {widths}")
        attn_widths = [widths[a] for a in self.attention_levels if 0 <= a < len(widths)]
        if self.mid_attention and widths:
            attn_widths.append(widths[-1])
        if self.head_channels <= 0 or any(w % self.head_channels for w in attn_widths):
            problems.append(f"head_channels ({self.head_channels}) must divide every attention width {attn_widths}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append("dropout must be in [0, 1)")
        if self.time_input not in TIME_INPUTS:
            problems.append(f"time_input must be one of {', '.join(TIME_INPUTS)}")
        if self.time_embed_mult <= 0:
            problems.append("time_embed_mult must be positive")
        return problems


@dataclass(frozen=True)
class UNetConfig(LevelShape, JsonConfig):
    """Shape of a 1D U-Net. `in_channels` is the packed channel count C·F (also the output's)."""

    config_kind: ClassVar[str] = "U-Net config"

    name: str = "small"
    in_channels: int = 384
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 2, 3)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = (3,)  # level index 0 = full resolution
    head_channels: int = 64
    norm_groups: int = 16
    dropout: float = 0.0
    time_input: str = "t"  # "t": embed 1000·t; "logsnr": embed the clipped log-SNR of t
    time_embed_mult: int = 4  # time-MLP width = base_channels × this
    mid_attention: bool = True
    # A full-rank path from input to output: per-channel, time-gated z and depthwise-filtered z added to v̂. Without it the
    # input conv (C·F → base_channels) has a null space whose noise the network never sees, so DDIM cannot remove it.
    input_skip: bool = True
    # Width of the top (full-resolution) level and of the input conv; 0 keeps base_channels × channel_mults[0]. The paper
    # preset packs 384 channels, which the default input conv narrows to 64: a wider top keeps more of them (the ablation).
    top_channels: int = 0
    # Conditioning channels (runtime/conditioning.py: packed piano roll, known frames and their mask) added through a
    # zero-initialised conv beside the input conv: 0 is the unconditional model, and a conditioned one starts as it.
    cond_channels: int = 0

    def __post_init__(self) -> None:
        self._store_tuples()
        self.validate()

    @property
    def downsample_factor(self) -> int:
        """The packed length must be a multiple of this (one halving between consecutive levels)."""
        return 2 ** (self.levels - 1)

    def level_channels(self, level: int) -> int:
        if level == 0 and self.top_channels:
            return self.top_channels
        return super().level_channels(level)

    @property
    def stem_channels(self) -> int:
        """Output width of the input conv."""
        return self.top_channels or self.base_channels

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        for optional in ("top_channels", "cond_channels"):
            if not data.get(optional):
                del data[optional]  # configs without it serialise exactly as before the field existed
        return data

    def validate(self) -> None:
        problems = []
        if self.in_channels <= 0 or self.base_channels <= 0:
            problems.append("in_channels and base_channels must be positive")
        if self.cond_channels < 0:
            problems.append("cond_channels must be >= 0")
        if self.top_channels < 0:
            problems.append("top_channels must be >= 0 (0: base_channels × channel_mults[0])")
        problems += self.level_problems()
        if problems:
            raise ConfigError(f"invalid U-Net config {self.name!r}: " + "; ".join(problems))

    def check_audio(self, audio: AudioConfig) -> None:
        """Refuse an audio preset whose packed shape this network cannot take."""
        if audio.packed_channels != self.in_channels:
            raise ConfigError(
                f"U-Net {self.name!r} takes {self.in_channels} channels but audio preset {audio.name!r} packs to "
                f"{audio.packed_channels}"
            )
        if audio.packed_length % self.downsample_factor:
            raise ConfigError(
                f"U-Net {self.name!r} halves time {self.levels - 1} times, so the packed length must be a multiple of "
                f"{self.downsample_factor}; audio preset {audio.name!r} gives {audio.packed_length}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "UNetConfig":
        if isinstance(data, dict):
            data = {"input_skip": False, **data}  # configs saved before the skip existed describe networks without it
        return super().from_dict(data)


# Presets without in_channels: that comes from the audio preset (see `unet_config`).
UNET_PRESETS: dict[str, dict[str, Any]] = {
    # Tests: ~0.3 M params, milliseconds per step on the "tiny" audio preset (96 × 32).
    "tiny": dict(
        base_channels=32,
        channel_mults=(1, 2),
        num_res_blocks=1,
        attention_levels=(1,),
        head_channels=32,
        norm_groups=8,
        time_embed_mult=2,
        mid_attention=False,
    ),
    # The shipped default for the "paper" audio preset (384 × 128): 4.6 M params, ~0.14 s per batch-16 step on one CPU core.
    "small": dict(
        base_channels=64,
        channel_mults=(1, 2, 2, 3),
        num_res_blocks=1,
        attention_levels=(3,),
        head_channels=64,
        norm_groups=16,
        time_embed_mult=4,
        mid_attention=True,
    ),
    # GPU scale.
    "paper": dict(
        base_channels=128,
        channel_mults=(1, 2, 3, 4),
        num_res_blocks=2,
        attention_levels=(2, 3),
        head_channels=64,
        norm_groups=32,
        time_embed_mult=4,
        mid_attention=True,
        dropout=0.1,
    ),
}


def unet_config(preset: str, audio: AudioConfig, **overrides: Any) -> UNetConfig:
    """The named U-Net preset sized for `audio` (in_channels = C·F), with optional field overrides; checked against it."""
    if preset not in UNET_PRESETS:
        raise ConfigError(f"unknown model preset {preset!r}; choose one of: {', '.join(UNET_PRESETS)}")
    fields = dict(UNET_PRESETS[preset], name=preset, in_channels=audio.packed_channels)
    fields.update(overrides)
    config = UNetConfig(**fields)
    config.check_audio(audio)
    return config


# ---------------------------------------------------------------------------------------------------------------------
# Layers


def time_value(t: torch.Tensor, time_input: str) -> torch.Tensor:
    """What the sinusoidal features see: the clipped log-SNR of t, or 1000·t (spreads [0, 1] over their frequency range)."""
    return log_snr(t.float()) if time_input == "logsnr" else t.float() * 1000.0


class SinusoidalEmbedding(nn.Module):
    """Transformer-style sin/cos features of a scalar per batch item; the frequencies are a buffer (an ONNX constant)."""

    def __init__(self, dim: int, max_period: float = 10000.0) -> None:
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        angles = value.float()[:, None] * self.freqs[None, :]
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def input_skip_layers(channels: int, embed_dim: int) -> tuple[nn.Linear, nn.Conv1d]:
    """The full-rank input skip's layers (see `UNetConfig.input_skip`): per-channel gains from the time embedding, zero at
    start (the skip begins closed), and a depthwise time filter. Plain layers, so the models keep their parameter names."""
    gain = nn.Linear(embed_dim, 2 * channels)
    nn.init.zeros_(gain.weight)
    nn.init.zeros_(gain.bias)
    return gain, nn.Conv1d(channels, channels, 3, padding=1, groups=channels)


def add_input_skip(out: torch.Tensor, x: torch.Tensor, emb: torch.Tensor, gain: nn.Linear, conv: nn.Conv1d) -> torch.Tensor:
    """v̂ `out` plus the skip of x (B, C, L): a time-gated x and a time-gated depthwise filter of x."""
    gain_x, gain_s = gain(F.silu(emb))[:, :, None].chunk(2, dim=1)
    return out + gain_x * x + gain_s * conv(x)


CONVS = {1: nn.Conv1d, 2: nn.Conv2d}  # `dims`: 1 = convolve over time (this U-Net), 2 = over mel × time (unet2d.py)


class ResBlock(nn.Module):
    """GroupNorm → SiLU → Conv, time embedding as scale/shift on the second norm, GroupNorm → SiLU → Conv; residual.
    `dims` 2 makes it the 2D U-Net's block (3×3 convolutions); the parameter names are the same either way."""

    def __init__(self, in_ch: int, out_ch: int, embed_dim: int, groups: int, dropout: float, dims: int = 1) -> None:
        super().__init__()
        conv = CONVS[dims]
        self.spatial = (slice(None), slice(None)) + (None,) * dims  # (B, 2·out) → (B, 2·out, 1[, 1]) for the scale/shift
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = conv(in_ch, out_ch, 3, padding=1)
        self.embed = nn.Linear(embed_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv(out_ch, out_ch, 3, padding=1)
        # Zero-init the last conv so every block starts as the identity: stable early training of deep stacks.
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = conv(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.embed(F.silu(emb))[self.spatial].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over every position (time; or mel × time with `dims` 2), with a residual; the output
    projection starts at zero."""

    def __init__(self, channels: int, head_channels: int, groups: int, dims: int = 1) -> None:
        super().__init__()
        conv = CONVS[dims]
        self.heads = channels // head_channels
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = conv(channels, 3 * channels, 1)
        self.proj = conv(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels = x.shape[0], x.shape[1]
        qkv = self.qkv(self.norm(x)).reshape(batch, 3 * self.heads, channels // self.heads, -1)  # positions flattened
        q, k, v = qkv.transpose(2, 3).chunk(3, dim=1)  # each (B, heads, positions, head_ch)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(2, 3).reshape(x.shape))


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest ×2 then a conv: no checkerboard artefacts, and Resize(nearest) is plain ONNX."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """Res blocks (each optionally followed by attention) at one resolution."""

    def __init__(self, blocks: list[ResBlock], attentions: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attentions = nn.ModuleList(attentions)


# ---------------------------------------------------------------------------------------------------------------------
# The network


class UNet1D(nn.Module):
    """v-prediction denoiser: forward(x (B, C·F, L) float32, t (B,) float32 in [0, 1]) → v̂ (B, C·F, L)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        groups = cfg.norm_groups
        embed_dim = cfg.time_embed_dim

        self.time_features = SinusoidalEmbedding(cfg.base_channels)
        self.time_mlp = nn.Sequential(
            nn.Linear(cfg.base_channels, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim)
        )
        self.input_conv = nn.Conv1d(cfg.in_channels, cfg.stem_channels, 3, padding=1)
        if cfg.cond_channels:
            self.cond_conv = nn.Conv1d(cfg.cond_channels, cfg.stem_channels, 3, padding=1)
            nn.init.zeros_(self.cond_conv.weight)  # starts as the unconditional model (see UNetConfig.cond_channels)
            nn.init.zeros_(self.cond_conv.bias)

        def attention_or_identity(level: int, channels: int) -> nn.Module:
            if level in cfg.attention_levels:
                return SelfAttention(channels, cfg.head_channels, groups)
            return nn.Identity()

        # Encoder: remember every output's width, the decoder consumes them in reverse as skips.
        skip_widths = [cfg.stem_channels]
        channels = cfg.stem_channels
        self.down_levels = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        for level in range(cfg.levels):
            width = cfg.level_channels(level)
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(channels, width, embed_dim, groups, cfg.dropout))
                attns.append(attention_or_identity(level, width))
                channels = width
                skip_widths.append(channels)
            self.down_levels.append(Level(blocks, attns))
            if level < cfg.levels - 1:
                self.downsamples.append(Downsample(channels))
                skip_widths.append(channels)

        self.mid_block1 = ResBlock(channels, channels, embed_dim, groups, cfg.dropout)
        self.mid_attention = (
            SelfAttention(channels, cfg.head_channels, groups) if cfg.mid_attention else nn.Identity()
        )
        self.mid_block2 = ResBlock(channels, channels, embed_dim, groups, cfg.dropout)

        # Decoder: num_res_blocks + 1 blocks per level, each eating one skip.
        self.up_levels = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for level in reversed(range(cfg.levels)):
            width = cfg.level_channels(level)
            blocks, attns = [], []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResBlock(channels + skip_widths.pop(), width, embed_dim, groups, cfg.dropout))
                attns.append(attention_or_identity(level, width))
                channels = width
            self.up_levels.append(Level(blocks, attns))
            if level > 0:
                self.upsamples.append(Upsample(channels))
        assert not skip_widths, "encoder and decoder skips must pair up"

        self.output_norm = nn.GroupNorm(groups, channels)
        self.output_conv = nn.Conv1d(channels, cfg.in_channels, 3, padding=1)
        # Zero-initialised output: the untrained model predicts v̂ = 0 (x̂ = α·z), a calm starting point.
        nn.init.zeros_(self.output_conv.weight)
        nn.init.zeros_(self.output_conv.bias)
        if cfg.input_skip:
            self.skip_gain, self.skip_conv = input_skip_layers(cfg.in_channels, embed_dim)

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        return self.time_mlp(self.time_features(time_value(t, self.config.time_input)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """v̂ for x (B, C·F, L) at times t (B,); `cond` (B, cond_channels, L) for a conditioned model (None: all zeros,
        no notes and nothing known)."""
        emb = self.embed_time(t)
        h = self.input_conv(x)
        if self.config.cond_channels:
            if cond is None:
                cond = x.new_zeros((x.shape[0], self.config.cond_channels, x.shape[2]))
            h = h + self.cond_conv(cond)
        elif cond is not None:
            raise ValueError("this U-Net takes no condition (cond_channels is 0)")
        skips = [h]
        for index, level in enumerate(self.down_levels):
            for block, attn in zip(level.blocks, level.attentions):
                h = attn(block(h, emb))
                skips.append(h)
            if index < len(self.downsamples):
                h = self.downsamples[index](h)
                skips.append(h)

        h = self.mid_block2(self.mid_attention(self.mid_block1(h, emb)), emb)

        for index, level in enumerate(self.up_levels):
            for block, attn in zip(level.blocks, level.attentions):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
            if index < len(self.upsamples):
                h = self.upsamples[index](h)

        out = self.output_conv(F.silu(self.output_norm(h)))
        if self.config.input_skip:
            out = add_input_skip(out, x, emb, self.skip_gain, self.skip_conv)
        return out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
