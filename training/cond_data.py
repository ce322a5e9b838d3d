"""Training items of a conditioned renderer: (packed mel, condition) pairs from a mel cache with piano rolls.

The condition is `runtime/conditioning.py`'s tensor. Two kinds of dropout make one model serve every use:
- notes: with probability `roll_dropout` the roll is all zeros, so the same model is the unconditional one and
  classifier-free guidance has its reference;
- context: with probability `context_prob` part of the clip's own mel is given as known frames — a prefix (continue), a
  suffix (lead into), or everything but a middle span (inpaint), each equally likely, the known part 1/8..7/8 of the clip.
The random shift of `MelDataset` moves the mel and its roll together. Every draw comes from torch's RNG, like the shift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pdd.runtime.conditioning import ConditionConfig, build_condition
from pdd.runtime.config import AudioConfig
from pdd.runtime.errors import ConfigError
from pdd.runtime.pack import pack
from pdd.training.data import MelDataset

MASK_KINDS = ("prefix", "suffix", "span")


@dataclass(frozen=True)
class ConditionDropout:
    roll_dropout: float = 0.15
    context_prob: float = 0.5

    def validate(self) -> None:
        if not (0.0 <= self.roll_dropout <= 1.0 and 0.0 <= self.context_prob <= 1.0):
            raise ConfigError("condition dropout probabilities must be in [0, 1]")


def context_mask(frames: int, kind: str, known: int, start: int = 0) -> np.ndarray:
    """(frames,) float32 mask, 1 = known: the first `known` frames (prefix), the last (suffix), or all but the span
    [start, start + frames − known) (span)."""
    mask = np.zeros(frames, dtype=np.float32)
    if kind == "prefix":
        mask[:known] = 1.0
    elif kind == "suffix":
        mask[frames - known :] = 1.0
    elif kind == "span":
        mask[:] = 1.0
        mask[start : start + frames - known] = 0.0
    else:
        raise ConfigError(f"mask kind must be one of {', '.join(MASK_KINDS)}")
    return mask


def random_mask(frames: int) -> np.ndarray:
    """A prefix, suffix or span mask whose known part is 1/8..7/8 of the clip, drawn from torch's RNG."""
    kind = MASK_KINDS[int(torch.randint(0, len(MASK_KINDS), ()).item())]
    known = int(torch.randint(frames // 8, 7 * frames // 8 + 1, ()).item())
    start = int(torch.randint(0, known + 1, ()).item()) if kind == "span" else 0
    return context_mask(frames, kind, known, start)


class ConditionedDataset(MelDataset):
    """Items (packed mel (C·F, L), condition (cond_channels, L)) as float32 tensors; see the module docstring."""

    def __init__(self, cache, condition: ConditionConfig, split: str = "train", random_shift: bool = False,
                 audio: AudioConfig | None = None, dropout: ConditionDropout = ConditionDropout()) -> None:  # fmt: skip
        super().__init__(cache, split=split, random_shift=random_shift, audio=audio)
        dropout.validate()
        if condition.roll and not self.cache.has_rolls:
            raise ConfigError(f"{self.cache.path} holds no piano rolls; rebuild it with `pdd-data prepare` beside MIDI "
                              "files (or --transcribe) to train a note-conditioned renderer")  # fmt: skip
        condition.check(self.config, self.cache.roll_config if condition.roll else None)
        self.condition = condition
        self.dropout = dropout
        self.rolls = self.cache.rolls(split) if condition.roll else None

    def shifted_roll(self, index: int, shift: int) -> np.ndarray:
        """(2, P, frames) float32 roll of the window `shifted_mel(index, shift)` covers."""
        assert self.rolls is not None
        return self.shifted_window(self.rolls, index, shift)

    def item(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(mel (F, T), condition (cond_channels, L)) with this item's shift, dropout and mask."""
        shift = self.draw_shift(index)
        mel = self.shifted_mel(index, shift)
        roll = None
        if self.condition.roll and float(torch.rand(())) >= self.dropout.roll_dropout:
            roll = self.shifted_roll(index, shift)
        known, mask = None, None
        if self.condition.context and float(torch.rand(())) < self.dropout.context_prob:
            mask = random_mask(self.config.frames)
            known = mel
        return mel, build_condition(self.condition, self.config, roll, known, mask)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        mel, cond = self.item(index % len(self))
        return torch.from_numpy(pack(mel, self.config.pack_chunks, self.config.pack_order)), torch.from_numpy(cond)
