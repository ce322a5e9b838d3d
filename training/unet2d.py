"""The 2D U-Net denoiser: the seed's rival architecture, for the ablation "1D U-Net with mel bins as channels vs 2D U-Net"
(docs/ablations.md).

It sees the unpacked mel image: input (B, F, T) — the packed tensor of a C = 1 ("--pack none") audio preset — is viewed as
(B, 1, F, T), and Conv2d residual blocks halve both mel and time axes per level. Same ingredients as the 1D U-Net
(GroupNorm + SiLU, time embedding as scale/shift, self-attention over the flattened low-resolution grid, zero-initialised
block outputs) so the comparison is about the geometry, not the recipe. Its I/O shape is the 1D model's with C = 1, so
training, sampling, export and the runtime take it unchanged.

The `small` preset is sized to the FLOPs of the 1D `small` preset per forward on the paper preset (training/flops.py
measures both; tests pin the ratio).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from pdd.runtime.config import AudioConfig
from pdd.runtime.errors import ConfigError
from pdd.runtime.jsonconfig import JsonConfig
from pdd.runtime.schedule import log_snr
from pdd.training.unet1d import TIME_INPUTS, SinusoidalEmbedding

ARCH = "unet2d"


@dataclass(frozen=True)
class UNet2DConfig(JsonConfig):
    """Shape of a 2D U-Net over the (n_mels, frames) mel image. `arch` tells checkpoints which network to build."""

    config_kind: ClassVar[str] = "2D U-Net config"

    arch: str = ARCH
    name: str = "small"
    n_mels: int = 128
    frames: int = 384
    base_channels: int = 10
    channel_mults: tuple[int, ...] = (1, 2, 4, 6)
    num_res_blocks: int = 1
    attention_levels: tuple[int, ...] = ()
    head_channels: int = 30
    norm_groups: int = 10
    dropout: float = 0.0
    time_input: str = "t"
    time_embed_mult: int = 4
    mid_attention: bool = True
    # Patchify stem: the input conv cuts the image into stem_stride × stem_stride patches and the output upsamples back.
    # Why: at full resolution (128 × 384 = 49 152 positions) even 4 channels cost 3.6× the 1D small's FLOPs; equal compute
    # needs the 2D net to start at a coarser grid (as latent / patch-based image diffusion models do).
    stem_stride: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mults", tuple(int(m) for m in self.channel_mults))
        object.__setattr__(self, "attention_levels", tuple(int(a) for a in self.attention_levels))
        self.validate()

    @property
    def levels(self) -> int:
        return len(self.channel_mults)

    @property
    def downsample_factor(self) -> int:
        return self.stem_stride * 2 ** (self.levels - 1)

    @property
    def time_embed_dim(self) -> int:
        return self.base_channels * self.time_embed_mult

    @property
    def in_channels(self) -> int:
        """Channels of the (B, C, L) tensor the model takes: the unpacked mel's bins."""
        return self.n_mels

    def level_channels(self, level: int) -> int:
        return self.base_channels * self.channel_mults[level]

    def validate(self) -> None:
        problems = []
        if self.arch != ARCH:
            problems.append(f"arch must be {ARCH!r}")
        if self.n_mels <= 0 or self.frames <= 0 or self.base_channels <= 0:
            problems.append("n_mels, frames and base_channels must be positive")
        if not self.channel_mults or any(m <= 0 for m in self.channel_mults):
            problems.append("channel_mults must be a non-empty list of positive integers")
        if self.num_res_blocks < 1:
            problems.append("num_res_blocks must be >= 1")
        if not 1 <= self.stem_stride <= 16:
            problems.append("stem_stride must be in 1..16")
        if any(not 0 <= a < max(len(self.channel_mults), 1) for a in self.attention_levels):
            problems.append(f"attention_levels must index levels 0..{len(self.channel_mults) - 1}")
        widths = [self.base_channels * m for m in self.channel_mults] if self.channel_mults else []
        if self.norm_groups <= 0 or any(w % self.norm_groups for w in widths):
            problems.append(f"norm_groups ({self.norm_groups}) must divide every level width {widths}")
        attn = [widths[a] for a in self.attention_levels if 0 <= a < len(widths)] + ([widths[-1]] if self.mid_attention and widths else [])
        if self.head_channels <= 0 or any(w % self.head_channels for w in attn):
            problems.append(f"head_channels ({self.head_channels}) must divide every attention width {attn}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append("dropout must be in [0, 1)")
        if self.time_input not in TIME_INPUTS:
            problems.append(f"time_input must be one of {', '.join(TIME_INPUTS)}")
        if self.time_embed_mult <= 0:
            problems.append("time_embed_mult must be positive")
        if problems:
            raise ConfigError(f"invalid 2D U-Net config {self.name!r}: " + "; ".join(problems))

    def check_audio(self, audio: AudioConfig) -> None:
        """Refuse a preset that is packed (the 2D U-Net sees the plain mel image) or whose image it cannot halve."""
        if audio.pack_chunks != 1:
            raise ConfigError(f"the 2D U-Net sees the unpacked mel image; train it with --pack none "
                              f"(audio preset {audio.name!r} packs {audio.pack_chunks} chunks)")
        if (audio.n_mels, audio.frames) != (self.n_mels, self.frames):
            raise ConfigError(f"2D U-Net {self.name!r} takes {self.n_mels}×{self.frames} mels, audio preset {audio.name!r} "
                              f"gives {audio.n_mels}×{audio.frames}")
        if audio.n_mels % self.downsample_factor or audio.frames % self.downsample_factor:
            raise ConfigError(f"2D U-Net {self.name!r} halves both axes {self.levels - 1} times: n_mels and frames must be "
                              f"multiples of {self.downsample_factor} (audio preset {audio.name!r}: {audio.n_mels}×{audio.frames})")


# Presets without n_mels/frames (from the audio preset). `small` matches the 1D `small` preset's FLOPs per forward on the
# paper preset, measured by training/flops.py: 0.254 vs 0.255 GFLOP per clip (0.67 M vs 4.79 M params; a test pins the
# ratio). Full-resolution alternatives cost far more: base 4 with no patch stem is already 0.92 GFLOP.
UNET2D_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(), head_channels=16,
                 norm_groups=4, time_embed_mult=2, mid_attention=True, stem_stride=2),
    "small": dict(base_channels=10, channel_mults=(1, 2, 4, 6), num_res_blocks=1, attention_levels=(), head_channels=30,
                  norm_groups=10, time_embed_mult=4, mid_attention=True, stem_stride=4),
}


def unet2d_config(preset: str, audio: AudioConfig, **overrides: Any) -> UNet2DConfig:
    """The named 2D preset sized for `audio`'s mel image, with optional field overrides; checked against it."""
    if preset not in UNET2D_PRESETS:
        raise ConfigError(f"unknown 2D model preset {preset!r}; choose one of: {', '.join(UNET2D_PRESETS)}")
    fields = dict(UNET2D_PRESETS[preset], name=preset, n_mels=audio.n_mels, frames=audio.frames)
    fields.update(overrides)
    config = UNet2DConfig(**fields)
    config.check_audio(audio)
    return config


class ResBlock2D(nn.Module):
    """As the 1D ResBlock, with 3×3 convolutions."""

    def __init__(self, in_ch: int, out_ch: int, embed_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.embed = nn.Linear(embed_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # every block starts as the identity
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.embed(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.dropout(F.silu(h)))


class SelfAttention2D(nn.Module):
    """Multi-head self-attention over every (mel, time) position of a low-resolution grid, residual, zero-init output."""

    def __init__(self, channels: int, head_channels: int, groups: int) -> None:
        super().__init__()
        self.heads = channels // head_channels
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        qkv = self.qkv(self.norm(x)).reshape(batch, 3 * self.heads, channels // self.heads, height * width)
        q, k, v = qkv.transpose(2, 3).chunk(3, dim=1)
        out = F.scaled_dot_product_attention(q, k, v).transpose(2, 3).reshape(batch, channels, height, width)
        return x + self.proj(out)


class UNet2D(nn.Module):
    """v-prediction denoiser: forward(x (B, F, T), t (B,)) → v̂ (B, F, T), convolving the mel image in 2D."""

    def __init__(self, config: UNet2DConfig) -> None:
        super().__init__()
        self.config = cfg = config
        groups, embed_dim = cfg.norm_groups, cfg.time_embed_dim
        self.time_features = SinusoidalEmbedding(cfg.base_channels)
        self.time_mlp = nn.Sequential(nn.Linear(cfg.base_channels, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))
        stride = cfg.stem_stride
        self.input_conv = nn.Conv2d(1, cfg.base_channels, 3 if stride == 1 else stride, stride=stride,
                                    padding=1 if stride == 1 else 0)

        def attention(level: int, channels: int) -> nn.Module:
            return SelfAttention2D(channels, cfg.head_channels, groups) if level in cfg.attention_levels else nn.Identity()

        skip_widths, channels = [cfg.base_channels], cfg.base_channels
        self.down_blocks, self.down_attns, self.downsamples = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for level in range(cfg.levels):
            width = cfg.level_channels(level)
            for _ in range(cfg.num_res_blocks):
                self.down_blocks.append(ResBlock2D(channels, width, embed_dim, groups, cfg.dropout))
                self.down_attns.append(attention(level, width))
                channels = width
                skip_widths.append(channels)
            if level < cfg.levels - 1:
                self.downsamples.append(nn.Conv2d(channels, channels, 3, stride=2, padding=1))
                skip_widths.append(channels)

        self.mid_block1 = ResBlock2D(channels, channels, embed_dim, groups, cfg.dropout)
        self.mid_attention = SelfAttention2D(channels, cfg.head_channels, groups) if cfg.mid_attention else nn.Identity()
        self.mid_block2 = ResBlock2D(channels, channels, embed_dim, groups, cfg.dropout)

        self.up_blocks, self.up_attns, self.upsamples = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(cfg.levels)):
            width = cfg.level_channels(level)
            for _ in range(cfg.num_res_blocks + 1):
                self.up_blocks.append(ResBlock2D(channels + skip_widths.pop(), width, embed_dim, groups, cfg.dropout))
                self.up_attns.append(attention(level, width))
                channels = width
            if level > 0:
                self.upsamples.append(nn.Conv2d(channels, channels, 3, padding=1))
        assert not skip_widths, "encoder and decoder skips must pair up"

        self.output_norm = nn.GroupNorm(groups, channels)
        self.output_conv = nn.Conv2d(channels, 1, 3, padding=1)  # after upsampling by stem_stride: full resolution
        nn.init.zeros_(self.output_conv.weight)  # the untrained model predicts v̂ = 0, as the 1D one
        nn.init.zeros_(self.output_conv.bias)

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        value = log_snr(t.float()) if self.config.time_input == "logsnr" else t.float() * 1000.0
        return self.time_mlp(self.time_features(value))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.embed_time(t)
        h = self.input_conv(x.unsqueeze(1))
        skips = [h]
        per_level = self.config.num_res_blocks
        for index, (block, attn) in enumerate(zip(self.down_blocks, self.down_attns)):
            h = attn(block(h, emb))
            skips.append(h)
            level = index // per_level
            if index % per_level == per_level - 1 and level < len(self.downsamples):
                h = self.downsamples[level](h)
                skips.append(h)
        h = self.mid_block2(self.mid_attention(self.mid_block1(h, emb)), emb)
        per_level += 1
        for index, (block, attn) in enumerate(zip(self.up_blocks, self.up_attns)):
            h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
            level = index // per_level
            if index % per_level == per_level - 1 and level < len(self.upsamples):
                h = self.upsamples[level](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = F.silu(self.output_norm(h))
        if self.config.stem_stride > 1:
            h = F.interpolate(h, scale_factor=float(self.config.stem_stride), mode="nearest")
        return self.output_conv(h).squeeze(1)
