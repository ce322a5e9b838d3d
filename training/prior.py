"""The symbolic prior: a small decoder-only transformer over `runtime/events.py` tokens (docs/architecture.md, "The
symbolic prior").

Why an autoregressive event model and not a diffusion model over rolls with the U-Net: measured per CPU-hour, a
3.8 M-param U-Net diffusion prior over a 16th-note grid had not learned stepwise melody or pulse after 25 one-core
minutes, while a next-token model learns local melodic motion and metre within minutes (its loss is exact likelihood,
and a stepwise move or an on-beat onset is one frequent token pattern). Sampling costs one small forward per token.

Two forwards over the same weights:
- `forward(tokens)`: (B, T) → (B, T, vocab) logits with causal attention, for training;
- `step(token, position, keys, values)`: one token with a fixed-size key/value cache (layers, B, heads, context, head
  width) → logits and the updated cache. The cache write is a one-hot blend and the attention mask compares positions,
  so the exported graph has static shapes (one ONNX/TensorRT graph, CUDA-graph friendly) and no data-dependent control
  flow. `step` run over a sequence reproduces `forward`'s last logits (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from pdd.runtime.errors import ConfigError
from pdd.runtime.events import DURATIONS, N_PITCHES, NOTE0, VOCAB_SIZE
from pdd.runtime.jsonconfig import JsonConfig

PRIOR_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(width=64, layers=2, heads=2, context=128),  # tests
    "small": dict(width=192, layers=4, heads=4, context=256),  # 2.1 M params; 256 tokens cover 8.9-s clips (86–185)
}


@dataclass(frozen=True)
class PriorConfig(JsonConfig):
    config_kind: ClassVar[str] = "prior config"

    name: str = "small"
    vocab: int = VOCAB_SIZE
    context: int = 256
    width: int = 192
    layers: int = 4
    heads: int = 4
    ff_mult: int = 4
    dropout: float = 0.1

    def __post_init__(self) -> None:
        problems = []
        if self.vocab != VOCAB_SIZE:
            problems.append(f"vocab must be {VOCAB_SIZE} (runtime/events.py)")
        if not (8 <= self.context <= 4096 and 8 <= self.width <= 4096 and 1 <= self.layers <= 64):
            problems.append("context 8..4096, width 8..4096, layers 1..64")
        if self.heads < 1 or self.width % self.heads:
            problems.append("heads must divide width")
        if not (1 <= self.ff_mult <= 16 and 0.0 <= self.dropout < 1.0):
            problems.append("ff_mult 1..16, dropout in [0, 1)")
        if problems:
            raise ConfigError(f"invalid prior config: {'; '.join(problems)}")

    @property
    def head_width(self) -> int:
        return self.width // self.heads

    @property
    def cache_shape(self) -> tuple[int, int, int, int]:
        """Per batch item: (layers, heads, context, head width); the step graph's cache is (layers, B, heads, …)."""
        return (self.layers, self.heads, self.context, self.head_width)


def prior_config(preset: str, **overrides: Any) -> PriorConfig:
    if preset not in PRIOR_PRESETS:
        raise ConfigError(f"unknown prior preset {preset!r}; choose one of: {', '.join(PRIOR_PRESETS)}")
    return PriorConfig(**{**PRIOR_PRESETS[preset], "name": preset, **overrides})


class Block(nn.Module):
    def __init__(self, cfg: PriorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.norm1 = nn.LayerNorm(cfg.width)
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)
        self.norm2 = nn.LayerNorm(cfg.width)
        self.ff = nn.Sequential(nn.Linear(cfg.width, cfg.ff_mult * cfg.width), nn.GELU(),
                                nn.Linear(cfg.ff_mult * cfg.width, cfg.width))  # fmt: skip
        self.drop = nn.Dropout(cfg.dropout)

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, length = x.shape[0], x.shape[1]
        q, k, v = self.qkv(self.norm1(x)).reshape(batch, length, 3, self.cfg.heads, self.cfg.head_width).unbind(2)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, T, head width)

    def _finish(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        batch, length = x.shape[0], x.shape[1]
        x = x + self.drop(self.proj(attended.transpose(1, 2).reshape(batch, length, self.cfg.width)))
        return x + self.drop(self.ff(self.norm2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(x)
        drop = self.cfg.dropout if self.training else 0.0
        return self._finish(x, F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=drop))

    def step(self, x: torch.Tensor, write: torch.Tensor, visible: torch.Tensor, keys: torch.Tensor,
             values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """x (B, 1, width); `write` (1, 1, context, 1) one-hot of the position; `visible` (1, 1, 1, context) bool."""
        q, k, v = self._heads(x)
        keys = keys * (1.0 - write) + k * write
        values = values * (1.0 - write) + v * write
        scores = (q @ keys.transpose(2, 3)) / math.sqrt(self.cfg.head_width)
        weights = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
        return self._finish(x, weights @ values), keys, values


class EventPrior(nn.Module):
    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        self.config = config
        # A NOTE token's embedding is its pitch's plus its duration's: what the model learns about a pitch is shared by
        # all 16 durations (a whole table of 1408 free NOTE embeddings learned melody several times slower). The output
        # is tied to the same table, so p(pitch, duration | context) ∝ exp(h·pitch + h·duration).
        self.special_embed = nn.Embedding(NOTE0, config.width)
        self.pitch_embed = nn.Embedding(N_PITCHES, config.width)
        self.duration_embed = nn.Embedding(len(DURATIONS), config.width)
        self.position_embed = nn.Embedding(config.context, config.width)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.width)
        for table in (self.special_embed, self.pitch_embed, self.duration_embed, self.position_embed):
            nn.init.normal_(table.weight, std=0.02)
        # Fixed sinusoids of the pitch (periods from 2 semitones to several octaves, the octave among them) added to
        # every NOTE embedding: moving a pitch by k semitones is then a fixed rotation of these features, so "a step
        # above the last note" is one linear map the network can learn once for all keys — without them a small prior
        # learned rhythm in 300 steps but drew its melody's pitches almost at random.
        self.register_buffer("pitch_features", pitch_sinusoids(N_PITCHES, config.width), persistent=False)

    def token_table(self) -> torch.Tensor:
        """(vocab, width): specials, then NOTE(p, d) = pitch p + duration d in runtime/events.py's order."""
        pitches = self.pitch_embed.weight + self.pitch_features
        notes = pitches[:, None, :] + self.duration_embed.weight[None, :, :]
        return torch.cat([self.special_embed.weight, notes.reshape(-1, self.config.width)])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) int64 → (B, T, vocab) logits of the next token at every position (T ≤ context)."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        table = self.token_table()
        x = F.embedding(tokens, table) + self.position_embed(positions)[None]
        for block in self.blocks:
            x = block(x)
        return self.norm(x) @ table.T

    def step(self, token: torch.Tensor, position: torch.Tensor, keys: torch.Tensor,
             values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """token (B,) int64 at `position` (1,) int64; keys/values (layers, B, heads, context, head width) → (logits (B,
        vocab), keys, values) with this token's keys and values written at `position`."""
        slots = torch.arange(self.config.context, device=token.device)
        write = (slots == position).to(keys.dtype).reshape(1, 1, -1, 1)
        visible = (slots <= position).reshape(1, 1, 1, -1)
        table = self.token_table()
        x = (F.embedding(token, table) + self.position_embed(position))[:, None, :]
        new_keys, new_values = [], []
        for layer, block in enumerate(self.blocks):
            x, k, v = block.step(x, write, visible, keys[layer], values[layer])
            new_keys.append(k)
            new_values.append(v)
        return (self.norm(x) @ table.T)[:, 0, :], torch.stack(new_keys), torch.stack(new_values)

    def empty_cache(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        layers, heads, context, width = self.config.cache_shape
        shape = (layers, batch, heads, context, width)
        return torch.zeros(shape), torch.zeros(shape)


def pitch_sinusoids(pitches: int, width: int, min_period: float = 2.0, max_period: float = 96.0) -> torch.Tensor:
    """(pitches, width) cos/sin features of the pitch index at periods spaced geometrically from `min_period` to
    `max_period` semitones, with the octave (12) exactly among them, scaled to unit mean square."""
    half = width // 2
    periods = torch.logspace(math.log10(min_period), math.log10(max_period), half)
    periods[int(torch.argmin((periods - 12.0).abs()))] = 12.0
    angles = 2 * math.pi * torch.arange(pitches, dtype=torch.float32)[:, None] / periods[None, :]
    features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    return torch.nn.functional.pad(features, (0, width - 2 * half))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
