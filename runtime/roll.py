"""Piano rolls: notes on the mel frame grid, the one representation the renderer is conditioned on and the prior writes.

A roll is a float32 array (planes, pitches, frames) in {0, 1}: plane 0 "onset" is 1 at the frame a note starts, plane 1
"sustain" is 1 on every frame the note sounds (its onset frame included). Pitches are the 88 piano keys, MIDI 21 (A0)
to 108 (C8), low to high. Frames are the mel frames of the audio preset: frame k of a centred STFT is centred on sample
k·hop, so a note at t seconds starts in frame round(t·sr/hop) — the frame whose window is centred nearest to it.
Why two planes: "sustain" alone cannot tell one long note from two repeated ones, and repeated notes are common in piano
music; "onset" alone loses how long a note rings, which decides what the renderer draws.

Notes are a numpy structured array of NOTE_DTYPE (onset and offset in seconds, MIDI pitch, velocity), the currency of
`runtime/midi.py` (MIDI files ↔ notes) and of transcription. `notes_to_roll` and `roll_to_notes` are each other's inverse
for notes on the frame grid (tested), and `roll_to_notes` is also the clean-up of a model's soft roll: threshold, then
drop notes shorter than a minimum length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from pdd.runtime.errors import ConfigError
from pdd.runtime.jsonconfig import JsonConfig

NOTE_DTYPE = np.dtype([("onset", "<f8"), ("offset", "<f8"), ("pitch", "<i2"), ("velocity", "<i2")])
PLANES = ("onset", "sustain")
ONSET, SUSTAIN = 0, 1
ROLL_FORMAT = "pdd-roll/1"
DEFAULT_VELOCITY = 80  # what a roll (which carries no velocity) plays at when written back to MIDI


@dataclass(frozen=True)
class RollConfig(JsonConfig):
    """Shape and time grid of a piano roll; saved in cache indexes, checkpoints and bundles beside the audio preset."""

    config_kind: ClassVar[str] = "roll config"

    format: str = ROLL_FORMAT
    low_pitch: int = 21  # A0, the lowest piano key
    n_pitches: int = 88
    frame_rate: float = 22050 / 512  # frames per second: the audio preset's sample_rate / hop_length
    frames: int = 384

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.format != ROLL_FORMAT:
            raise ConfigError(f"roll format {self.format!r} is not {ROLL_FORMAT!r}")
        if not (0 <= self.low_pitch and self.low_pitch + self.n_pitches <= 128 and self.n_pitches >= 1):
            raise ConfigError(f"roll pitches {self.low_pitch}..{self.low_pitch + self.n_pitches - 1} must lie in MIDI 0..127")
        if not (1.0 <= self.frame_rate <= 1000.0):
            raise ConfigError(f"roll frame rate must be 1..1000 frames/s, got {self.frame_rate}")
        if not (1 <= self.frames <= 1 << 16):
            raise ConfigError(f"roll frames must be 1..65536, got {self.frames}")

    @classmethod
    def for_audio(cls, audio: Any) -> "RollConfig":
        """The roll aligned with an AudioConfig's mel frames."""
        return cls(frame_rate=audio.sample_rate / audio.hop_length, frames=audio.frames)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(PLANES), self.n_pitches, self.frames)

    @property
    def seconds(self) -> float:
        return self.frames / self.frame_rate


def empty_notes(n: int = 0) -> np.ndarray:
    return np.zeros(n, dtype=NOTE_DTYPE)


def make_notes(rows: Any) -> np.ndarray:
    """Notes from (onset_s, offset_s, pitch[, velocity]) rows, sorted by onset then pitch."""
    rows = list(rows)
    notes = empty_notes(len(rows))
    for i, row in enumerate(rows):
        onset, offset, pitch, *rest = row
        notes[i] = (onset, offset, pitch, rest[0] if rest else DEFAULT_VELOCITY)
    return sort_notes(notes)


def sort_notes(notes: np.ndarray) -> np.ndarray:
    return notes[np.lexsort((notes["pitch"], notes["onset"]))]


def nearest_frame(seconds: np.ndarray, frame_rate: float) -> np.ndarray:
    """Frame index nearest to each time, halves rounded up: unlike round-half-to-even this is shift-invariant, so a clip
    cut k frames later gets the same roll moved by exactly k frames."""
    return np.floor(np.asarray(seconds, dtype=np.float64) * frame_rate + 0.5).astype(np.int64)


def notes_to_roll(notes: np.ndarray, config: RollConfig, start: float = 0.0, frames: int | None = None) -> np.ndarray:
    """The (2, n_pitches, frames) roll of `notes` seen from `start` seconds on. Notes outside the piano range are dropped;
    a note that began before `start` but still sounds marks sustain without an onset."""
    frames = config.frames if frames is None else frames
    roll = np.zeros((len(PLANES), config.n_pitches, frames), dtype=np.float32)
    if notes.size == 0:
        return roll
    rows = notes["pitch"].astype(np.int64) - config.low_pitch
    first = nearest_frame(notes["onset"] - start, config.frame_rate)
    last = np.maximum(nearest_frame(notes["offset"] - start, config.frame_rate), first + 1)
    keep = (rows >= 0) & (rows < config.n_pitches) & (last > 0) & (first < frames)
    for row, a, b in zip(rows[keep], first[keep], last[keep]):
        roll[SUSTAIN, row, max(a, 0) : min(b, frames)] = 1.0
        if a >= 0:
            roll[ONSET, row, a] = 1.0
    return roll


def roll_to_notes(roll: np.ndarray, config: RollConfig, threshold: float = 0.5, min_frames: int = 1,
                  start: float = 0.0, velocity: int = DEFAULT_VELOCITY) -> np.ndarray:  # fmt: skip
    """Notes of a (2, n_pitches, frames) roll, hard or soft (values in [0, 1]; a model's output after `from_signed`).

    A note starts at a frame whose onset value passes `threshold` — or where sustain switches on without one — and lasts
    while sustain stays above it, up to the next onset of the same key. Notes shorter than `min_frames` are dropped: a
    soft roll's speckle would otherwise play as clicks."""
    if roll.ndim != 3 or roll.shape[:2] != (len(PLANES), config.n_pitches):
        raise ConfigError(f"roll must be (2, {config.n_pitches}, frames), got {tuple(roll.shape)}")
    onset = np.asarray(roll[ONSET]) >= threshold
    sustain = (np.asarray(roll[SUSTAIN]) >= threshold) | onset
    found: list[tuple[float, float, int, int]] = []
    n_frames = roll.shape[2]
    for row in range(config.n_pitches):
        on_row, sus_row = onset[row], sustain[row]
        if not sus_row.any():
            continue
        begin = None
        for k in range(n_frames + 1):
            active = k < n_frames and bool(sus_row[k])
            restart = k < n_frames and bool(on_row[k]) and begin is not None and k > begin
            if begin is not None and (not active or restart):
                if k - begin >= min_frames:
                    found.append((start + begin / config.frame_rate, start + k / config.frame_rate,
                                  config.low_pitch + row, velocity))  # fmt: skip
                begin = None
            if active and begin is None:
                begin = k
    return make_notes(found)


def to_signed(roll: np.ndarray) -> np.ndarray:
    """{0, 1} → {-1, 1}: the scale models see (the same range as the normalised mel)."""
    return np.asarray(roll, dtype=np.float32) * 2.0 - 1.0


def from_signed(values: np.ndarray) -> np.ndarray:
    """A model's roll in [-1, 1] → [0, 1] (clipped), ready for `roll_to_notes`."""
    return np.clip((np.asarray(values, dtype=np.float32) + 1.0) * 0.5, 0.0, 1.0)


def clip_notes(notes: np.ndarray, start: float, seconds: float) -> np.ndarray:
    """Notes sounding in [start, start + seconds), times shifted so the window starts at 0 and cut to it."""
    keep = (notes["offset"] > start) & (notes["onset"] < start + seconds)
    out = notes[keep].copy()
    out["onset"] = np.clip(out["onset"] - start, 0.0, seconds)
    out["offset"] = np.clip(out["offset"] - start, 0.0, seconds)
    return out[out["offset"] > out["onset"]]
