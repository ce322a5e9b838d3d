"""The 2D U-Net denoiser: the rival architecture, for the ablation "1D U-Net with mel bins as channels vs 2D U-Net"
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
from pdd.training.unet1d import (
    LevelShape,
    ResBlock,
    SelfAttention,
    SinusoidalEmbedding,
    add_input_skip,
    input_skip_layers,
    time_value,
)

ARCH = "unet2d"


@dataclass(frozen=True)
class UNet2DConfig(LevelShape, JsonConfig):
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
    # The 1D U-Net's full-rank input skip (time-gated z and a depthwise time filter of z, per mel bin, added to v̂). The
    # patch stem squeezes 16 pixels into base_channels, a null space whose noise the net never sees, as the 1D input conv
    # does; without the skip the 2D net stalled at v-loss 0.52 (1D: 0.17 at the same step), so the ablation compared a
    # crippled net rather than the geometry.
    input_skip: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "UNet2DConfig":
        if isinstance(data, dict):
            data = {"input_skip": False, **data}  # configs saved before the skip existed describe networks without it
        return super().from_dict(data)

    def __post_init__(self) -> None:
        self._store_tuples()
        self.validate()

    @property
    def downsample_factor(self) -> int:
        return self.stem_stride * 2 ** (self.levels - 1)

    @property
    def in_channels(self) -> int:
        """Channels of the (B, C, L) tensor the model takes: the unpacked mel's bins."""
        return self.n_mels

    def validate(self) -> None:
        problems = []
        if self.arch != ARCH:
            problems.append(f"arch must be {ARCH!r}")
        if self.n_mels <= 0 or self.frames <= 0 or self.base_channels <= 0:
            problems.append("n_mels, frames and base_channels must be positive")
        if not 1 <= self.stem_stride <= 16:
            problems.append("stem_stride must be in 1..16")
        problems += self.level_problems()
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
            return SelfAttention(channels, cfg.head_channels, groups, dims=2) if level in cfg.attention_levels else nn.Identity()

        skip_widths, channels = [cfg.base_channels], cfg.base_channels
        self.down_blocks, self.down_attns, self.downsamples = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for level in range(cfg.levels):
            width = cfg.level_channels(level)
            for _ in range(cfg.num_res_blocks):
                self.down_blocks.append(ResBlock(channels, width, embed_dim, groups, cfg.dropout, dims=2))
                self.down_attns.append(attention(level, width))
                channels = width
                skip_widths.append(channels)
            if level < cfg.levels - 1:
                self.downsamples.append(nn.Conv2d(channels, channels, 3, stride=2, padding=1))
                skip_widths.append(channels)

        self.mid_block1 = ResBlock(channels, channels, embed_dim, groups, cfg.dropout, dims=2)
        self.mid_attention = SelfAttention(channels, cfg.head_channels, groups, dims=2) if cfg.mid_attention else nn.Identity()
        self.mid_block2 = ResBlock(channels, channels, embed_dim, groups, cfg.dropout, dims=2)

        self.up_blocks, self.up_attns, self.upsamples = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(cfg.levels)):
            width = cfg.level_channels(level)
            for _ in range(cfg.num_res_blocks + 1):
                self.up_blocks.append(ResBlock(channels + skip_widths.pop(), width, embed_dim, groups, cfg.dropout, dims=2))
                self.up_attns.append(attention(level, width))
                channels = width
            if level > 0:
                self.upsamples.append(nn.Conv2d(channels, channels, 3, padding=1))
        assert not skip_widths, "encoder and decoder skips must pair up"

        self.output_norm = nn.GroupNorm(groups, channels)
        self.output_conv = nn.Conv2d(channels, 1, 3, padding=1)  # after upsampling by stem_stride: full resolution
        nn.init.zeros_(self.output_conv.weight)  # the untrained model predicts v̂ = 0, as the 1D one
        nn.init.zeros_(self.output_conv.bias)
        if cfg.input_skip:  # as the 1D U-Net's, per mel bin (the "channels" of x (B, F, T))
            self.skip_gain, self.skip_conv = input_skip_layers(cfg.n_mels, embed_dim)

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        return self.time_mlp(self.time_features(time_value(t, self.config.time_input)))

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
        out = self.output_conv(h).squeeze(1)
        if self.config.input_skip:
            out = add_input_skip(out, x, emb, self.skip_gain, self.skip_conv)
        return out
