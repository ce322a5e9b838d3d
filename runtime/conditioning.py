"""What a conditioned renderer sees beside the noisy mel: the notes to play and the frames already known, packed like the mel.

One home for the layout of the condition tensor (training builds it per clip, export names it, the runtime builds it per
request), (cond_channels, L) with L the packed length:

    [ roll (2 planes × pitches, packed: C·2·P channels) | known mel × mask (C·F) | mask (C) ]

- roll: `runtime/roll.py`'s {0, 1} roll; all zeros = "no notes given", the unconditional model (condition dropout trains
  it as such). Values are {0, 1}, not ±1, so the null condition is exactly zero input.
- context: the normalised mel of frames that are known (a previous window's end, a loop's start, what surrounds an
  inpainted span) times the mask, and the mask itself (1 = known frame). All zeros = nothing known.
Every part is packed with the audio preset's `pack`, so a frame's notes, context and mel sit at the same tensor position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from pdd.runtime.config import AudioConfig
from pdd.runtime.errors import ConfigError
from pdd.runtime.jsonconfig import JsonConfig
from pdd.runtime.pack import pack
from pdd.runtime.roll import RollConfig


@dataclass(frozen=True)
class ConditionConfig(JsonConfig):
    """Which conditions a renderer takes; saved in its checkpoint and bundle."""

    config_kind: ClassVar[str] = "condition config"

    roll: bool = True
    context: bool = True
    n_pitches: int = 88

    def channels(self, audio: AudioConfig) -> int:
        """Packed channel count of the condition tensor for `audio`."""
        chunks = audio.pack_chunks
        return (chunks * 2 * self.n_pitches if self.roll else 0) + (chunks * audio.n_mels + chunks if self.context else 0)

    def check(self, audio: AudioConfig, rolls: RollConfig | None) -> None:
        if not (self.roll or self.context):
            raise ConfigError("a condition config must take notes, context or both")
        if self.roll and (rolls is None or rolls.n_pitches != self.n_pitches or rolls.frames != audio.frames):
            raise ConfigError("the roll config does not match the renderer's condition (pitches or frames differ)")


def pack_roll(roll: np.ndarray, audio: AudioConfig) -> np.ndarray:
    """(2, P, T) roll → (C·2·P, T/C) float32, snake-packed like the mel."""
    planes, pitches, frames = roll.shape
    return pack(np.asarray(roll, dtype=np.float32).reshape(planes * pitches, frames), audio.pack_chunks, audio.pack_order)


def build_condition(config: ConditionConfig, audio: AudioConfig, roll: np.ndarray | None = None,
                    known_mel: np.ndarray | None = None, mask: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """(cond_channels, L) float32 for one clip. `roll` (2, P, T) in {0, 1} or None (no notes); `known_mel` (F, T)
    normalised and `mask` (T,) in {0, 1}, or None (nothing known)."""
    parts = []
    length = audio.frames // audio.pack_chunks
    if config.roll:
        if roll is None:
            parts.append(np.zeros((audio.pack_chunks * 2 * config.n_pitches, length), dtype=np.float32))
        else:
            if roll.shape != (2, config.n_pitches, audio.frames):
                raise ConfigError(f"roll must be (2, {config.n_pitches}, {audio.frames}), got {tuple(roll.shape)}")
            parts.append(pack_roll(roll, audio))
    if config.context:
        if (known_mel is None) != (mask is None):
            raise ConfigError("context needs both the known mel and its mask")
        if known_mel is None or mask is None:
            parts.append(np.zeros((audio.pack_chunks * (audio.n_mels + 1), length), dtype=np.float32))
        else:
            if known_mel.shape != (audio.n_mels, audio.frames) or mask.shape != (audio.frames,):
                raise ConfigError(f"context must be ({audio.n_mels}, {audio.frames}) with a ({audio.frames},) mask")
            mask = np.asarray(mask, dtype=np.float32)
            parts.append(pack(np.asarray(known_mel, dtype=np.float32) * mask[None], audio.pack_chunks, audio.pack_order))
            parts.append(pack(mask[None], audio.pack_chunks, audio.pack_order))
    return np.concatenate(parts, axis=0)
