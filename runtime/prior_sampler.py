"""Sampling the symbolic prior: the one token loop, for the exported step graph (runtime) and the torch model (training).

`sample_events(step, ...)` runs B sequences side by side: each step feeds one token per sequence at a shared position
and gets next-token logits back (`step(tokens (B,) int64, position (1,) int64, keys, values) -> (logits (B, vocab),
keys, values)`, the exported graph's signature). The grammar of `runtime/events.py` masks the logits, then temperature
and nucleus (top-p) sampling pick the next token from a seeded numpy Generator. A sequence is done once its shifts cover
`ticks` or it has used the context; the loop ends when all are done. `events_to_notes` turns tokens into notes in
seconds at a tempo, cut to the clip.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from pdd.runtime.errors import ConfigError
from pdd.runtime.events import BOS, NOTE0, SHIFT0, TICKS_PER_QUARTER, VOCAB_SIZE, allowed_next, decode, ticks_to_notes
from pdd.runtime.roll import clip_notes

StepFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


@functools.cache
def grammar() -> np.ndarray:
    """(vocab, vocab) bool, row = last token: `allowed_next` for every token, built on first use (not at import)."""
    return np.stack([allowed_next(token) for token in range(VOCAB_SIZE)])


@dataclass(frozen=True)
class PriorSettings:
    """How notes are drawn: softmax temperature, nucleus mass, and the tempo the beat grid is played at."""

    temperature: float = 1.0
    top_p: float = 0.95
    bpm: float = 100.0

    def validate(self) -> None:
        if not 0.05 <= self.temperature <= 5.0:
            raise ConfigError(f"prior temperature must be in 0.05..5, got {self.temperature}")
        if not 0.05 <= self.top_p <= 1.0:
            raise ConfigError(f"prior top-p must be in 0.05..1, got {self.top_p}")
        if not 20.0 <= self.bpm <= 400.0:
            raise ConfigError(f"tempo must be 20..400 bpm, got {self.bpm}")

    def ticks_for(self, seconds: float) -> int:
        return int(np.ceil(seconds * self.bpm / 60.0 * TICKS_PER_QUARTER))


def nucleus_sample(logits: np.ndarray, allowed: np.ndarray, temperature: float, top_p: float,
                   rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """(B,) tokens: one draw per row from softmax(logits / temperature) restricted to `allowed` and to the smallest set
    of tokens holding `top_p` of the probability."""
    scaled = np.where(allowed, logits.astype(np.float64) / temperature, -np.inf)
    scaled -= scaled.max(axis=1, keepdims=True)
    probs = np.exp(scaled)
    probs /= probs.sum(axis=1, keepdims=True)
    order = np.argsort(-probs, axis=1)
    sorted_probs = np.take_along_axis(probs, order, axis=1)
    keep = np.cumsum(sorted_probs, axis=1) - sorted_probs < top_p  # always keeps the most likely token
    sorted_probs = np.where(keep, sorted_probs, 0.0)
    sorted_probs /= sorted_probs.sum(axis=1, keepdims=True)
    draws = rng.random(logits.shape[0])[:, None]
    picks = np.minimum((np.cumsum(sorted_probs, axis=1) < draws).sum(axis=1), logits.shape[1] - 1)
    return order[np.arange(logits.shape[0]), picks].astype(np.int64)


def sample_events(step: StepFn, cache_shape: tuple[int, int, int, int], batch: int, ticks: int,
                  settings: PriorSettings, rng: np.random.Generator) -> list[np.ndarray]:  # fmt: skip
    """Token sequences (without BOS) of `batch` clips, each covering at least `ticks` or the whole context."""
    settings.validate()
    layers, heads, context, width = cache_shape
    keys = np.zeros((layers, batch, heads, context, width), dtype=np.float32)
    values = np.zeros_like(keys)
    tokens = np.full(batch, BOS, dtype=np.int64)
    elapsed = np.zeros(batch, dtype=np.int64)
    done = np.zeros(batch, dtype=bool)
    out: list[list[int]] = [[] for _ in range(batch)]
    for position in range(context):
        logits, keys, values = step(tokens, np.asarray([position], dtype=np.int64), keys, values)
        nxt = nucleus_sample(logits, grammar()[tokens], settings.temperature, settings.top_p, rng)
        for b in np.flatnonzero(~done):
            out[b].append(int(nxt[b]))
        is_shift = (nxt >= SHIFT0) & (nxt < NOTE0)
        elapsed += np.where(is_shift & ~done, nxt - SHIFT0 + 1, 0)
        done |= elapsed >= ticks
        if done.all():
            break
        tokens = nxt
    return [np.asarray(seq, dtype=np.int64) for seq in out]


def events_to_notes(tokens: np.ndarray, bpm: float, seconds: float) -> np.ndarray:
    """NOTE_DTYPE notes in seconds of one token sequence at `bpm`, cut to [0, seconds)."""
    return clip_notes(ticks_to_notes(decode(tokens), bpm), 0.0, seconds)
