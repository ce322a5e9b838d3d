"""The symbolic prior's language: notes on a beat grid as a token sequence, and back (torch-free: the runtime decodes).

A piece is read onset by onset. At each onset the notes that start there are written highest pitch first — the top voice,
where a melody lives, is decided before its accompaniment — one NOTE token each (pitch and duration together); then SHIFT
tokens move time on to the next onset. Times are in ticks of TICKS_PER_QUARTER (12: sixteenths and eighth-note triplets
exact).

    BOS  NOTE(72, 12)  NOTE(60, 24)  SHIFT_12  NOTE(74, 12)  SHIFT_12 …

- SHIFT_k, k = 1..MAX_SHIFT ticks; a longer rest is several SHIFTs.
- NOTE(p, d): p one of the 88 piano keys, d one of DURATIONS ticks (a note's length is its nearest bin).
One token a note, not a pitch token and a duration token: half the sequence, so half the sampling steps and twice the
music per context (measured on the corpus: ~1.2 tokens a note with the shifts).
The grammar (`allowed_next`) is what a sampler masks with: within one onset the pitches strictly fall, and a clip starts
on a note. Encoded real music always obeys it, so the mask only removes what the model should never say.
"""

from __future__ import annotations

import numpy as np

from pdd.runtime.roll import NOTE_DTYPE, sort_notes

TICKS_PER_QUARTER = 12
MAX_SHIFT = 24  # two quarter notes
LOW_PITCH, N_PITCHES = 21, 88
DURATIONS = (1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 36, 48, 72, 96)

PAD, BOS = 0, 1
SHIFT0 = 2  # SHIFT_k is SHIFT0 + k − 1
NOTE0 = SHIFT0 + MAX_SHIFT  # NOTE(p, d) is NOTE0 + (p − LOW_PITCH) · len(DURATIONS) + index of d
VOCAB_SIZE = NOTE0 + N_PITCHES * len(DURATIONS)
_DURATIONS = np.asarray(DURATIONS)


def shift_token(ticks: int) -> int:
    return SHIFT0 + ticks - 1


def note_token(pitch: int, ticks: int) -> int:
    """NOTE(pitch, the duration bin nearest `ticks`)."""
    return NOTE0 + (pitch - LOW_PITCH) * len(DURATIONS) + int(np.argmin(np.abs(_DURATIONS - ticks)))


def note_of(token: int) -> tuple[int, int]:
    """(pitch, duration ticks) of a NOTE token."""
    row, column = divmod(token - NOTE0, len(DURATIONS))
    return LOW_PITCH + row, DURATIONS[column]


def is_shift(token: int) -> bool:
    return SHIFT0 <= token < NOTE0


def is_note(token: int) -> bool:
    return NOTE0 <= token < VOCAB_SIZE


def encode(notes: np.ndarray) -> np.ndarray:
    """(N, 3) int (onset tick, duration ticks, pitch) → int64 tokens (no BOS). Pitches outside the piano are dropped, a
    pitch repeated at one onset is written once (its longest duration)."""
    notes = np.asarray(notes, dtype=np.int64)
    keep = (notes[:, 2] >= LOW_PITCH) & (notes[:, 2] < LOW_PITCH + N_PITCHES) if notes.size else np.zeros(0, bool)
    notes = notes[keep] if notes.size else notes.reshape(0, 3)
    tokens: list[int] = []
    now = int(notes[0, 0]) if notes.shape[0] else 0
    for onset in np.unique(notes[:, 0]):
        gap = int(onset) - now
        while gap > 0:
            step = min(gap, MAX_SHIFT)
            tokens.append(shift_token(step))
            gap -= step
        now = int(onset)
        here = notes[notes[:, 0] == onset]
        longest: dict[int, int] = {}
        for _, duration, pitch in here:
            longest[int(pitch)] = max(longest.get(int(pitch), 0), int(duration))
        tokens += [note_token(pitch, longest[pitch]) for pitch in sorted(longest, reverse=True)]
    return np.asarray(tokens, dtype=np.int64)


def decode(tokens: np.ndarray) -> np.ndarray:
    """Tokens → (N, 3) int64 (onset tick, duration ticks, pitch), ignoring anything that breaks the grammar."""
    rows: list[tuple[int, int, int]] = []
    now = 0
    for token in (int(t) for t in tokens):
        if is_shift(token):
            now += token - SHIFT0 + 1
        elif is_note(token):
            pitch, duration = note_of(token)
            rows.append((now, duration, pitch))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def ticks_to_notes(grid_notes: np.ndarray, bpm: float, velocity: int = 80) -> np.ndarray:
    """Beat-grid notes → NOTE_DTYPE notes in seconds at `bpm` quarter notes a minute."""
    seconds_per_tick = 60.0 / (bpm * TICKS_PER_QUARTER)
    notes = np.zeros(grid_notes.shape[0], dtype=NOTE_DTYPE)
    notes["onset"] = grid_notes[:, 0] * seconds_per_tick
    notes["offset"] = (grid_notes[:, 0] + grid_notes[:, 1]) * seconds_per_tick
    notes["pitch"] = grid_notes[:, 2]
    notes["velocity"] = velocity
    return sort_notes(notes)


def elapsed_ticks(tokens: np.ndarray) -> int:
    """Ticks the SHIFT tokens of a sequence advance."""
    tokens = np.asarray(tokens)
    shifts = tokens[(tokens >= SHIFT0) & (tokens < NOTE0)]
    return int(np.sum(shifts - SHIFT0 + 1))


def allowed_next(last: int) -> np.ndarray:
    """(VOCAB_SIZE,) bool: the tokens the grammar allows after `last`: after a note, a shift or a lower note at the same
    onset; after a shift, a shift or any note; after BOS, any note (a clip starts on a note)."""
    allowed = np.zeros(VOCAB_SIZE, dtype=bool)
    if last != BOS:
        allowed[SHIFT0:NOTE0] = True
    top = note_of(last)[0] - LOW_PITCH if is_note(last) else N_PITCHES
    allowed[NOTE0 : NOTE0 + top * len(DURATIONS)] = True
    return allowed
