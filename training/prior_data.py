"""Training windows for the symbolic prior: token sequences cut from the default composers' scores, key-transposed.

Works are split once, by a hash of their id, into train and validation (VAL_EVERY-th share); works a mel cache holds out
(`--heldout-from`) are never read at all, so the structure metrics on that cache's held-out clips score music the prior
never saw. A window starts at a random onset of a work (drawn in proportion to the work's length), is transposed by a
random number of semitones that keeps every note on the piano, encoded, prefixed with BOS and cut or padded to the
context; loss is not taken on padding.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from pdd.runtime.events import BOS, LOW_PITCH, N_PITCHES, PAD, encode
from pdd.training.score_notes import ScoreNotes

VAL_EVERY = 20  # one work in 20 validates
MAX_TRANSPOSE = 6  # semitones either way: every key a piece can be heard in


def is_validation(work_id: str) -> bool:
    return int(hashlib.sha256(work_id.encode()).hexdigest(), 16) % VAL_EVERY == 0


@dataclass
class WindowSampler:
    """Random (B, context) int64 token windows from the works chosen by `split` ('train' or 'val')."""

    scores: ScoreNotes
    context: int
    split: str = "train"
    excluded: frozenset[str] = frozenset()
    transpose: bool = True

    def __post_init__(self) -> None:
        chosen = [i for i, w in enumerate(self.scores.works)
                  if w not in self.excluded and is_validation(w) == (self.split == "val")]  # fmt: skip
        counts = {i: self.scores.work_notes(i).shape[0] for i in chosen}
        self.work_indices = np.asarray([i for i in chosen if counts[i] > 0], dtype=np.int64)
        lengths = np.asarray([counts[i] for i in self.work_indices], dtype=np.float64)
        self.weights = lengths / lengths.sum() if lengths.size else lengths

    def __len__(self) -> int:
        return int(self.work_indices.shape[0])

    def window(self, rng: np.random.Generator) -> np.ndarray:
        """(context,) int64: BOS then the tokens of one random window, PAD-filled."""
        work = int(rng.choice(self.work_indices, p=self.weights))
        notes = self.scores.work_notes(work).astype(np.int64)
        onsets = np.unique(notes[:, 0])
        start = int(onsets[rng.integers(len(onsets))])
        # enough notes for a full context even at one token a note, and no more (encoding is per window)
        piece = notes[(notes[:, 0] >= start)][: self.context]
        if self.transpose:
            low = max(-MAX_TRANSPOSE, LOW_PITCH - int(piece[:, 2].min()))
            high = min(MAX_TRANSPOSE, LOW_PITCH + N_PITCHES - 1 - int(piece[:, 2].max()))
            if low <= high:
                piece = piece.copy()
                piece[:, 2] += int(rng.integers(low, high + 1))
        tokens = np.concatenate([[BOS], encode(piece)])[: self.context]
        return np.pad(tokens, (0, self.context - tokens.shape[0]), constant_values=PAD)

    def batch(self, size: int, rng: np.random.Generator) -> np.ndarray:
        return np.stack([self.window(rng) for _ in range(size)])
