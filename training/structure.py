"""Structure metrics: what a listener hears as music rather than timbre, read from note events (docs/architecture.md,
"Quality and the three floors").

FD-BP says whether clips sound like piano; it cannot say whether they have a key, a beat or a tune. These metrics work on
note lists — (n, ≥3) arrays of [onset_s, offset_s, midi_pitch, (velocity 0–1)] — transcribed from audio by
`pdd.training.basic_pitch.BasicPitchEmbedder.transcribe` (or taken from a score), one clip at a time:

* note density — notes per second;
* pitch-class entropy — Shannon entropy (bits, 0 … log2 12 = 3.58) of the duration-weighted pitch-class histogram;
* key clarity — the best of the 24 Krumhansl–Kessler key profiles' Pearson correlations with that histogram (the
  Krumhansl–Schmuckler key-finding algorithm, Krumhansl 1990);
* pulse clarity — the highest normalised autocorrelation of the note-onset envelope at lags 0.25–1.5 s (40–240 BPM beats);
* stepwise motion — the fraction of the top voice's moves of 1–2 semitones (the top voice: the notes that are the
  highest sounding note when they start);
* polyphony — mean number of notes sounding, over the frames where any note sounds;
* pitch range — highest minus lowest pitch, in semitones.

A set of clips is summarised by the mean of each metric over the clips where it is defined, and compared with a reference
set as a ratio ("× real"). `note_f1` scores transcribed notes against the notes a renderer was asked to play (`note_f1_many`
for a set of clips).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from pdd.runtime.errors import ConfigError
from pdd.runtime.roll import NOTE_DTYPE

METRICS = ("note_density", "pitch_class_entropy", "key_clarity", "pulse_clarity", "stepwise_motion", "polyphony",
           "pitch_range")
LABELS = {"note_density": "notes/s", "pitch_class_entropy": "pitch-class entropy (bits)", "key_clarity": "key clarity",
          "pulse_clarity": "pulse clarity", "stepwise_motion": "top-voice stepwise", "polyphony": "polyphony",
          "pitch_range": "pitch range (st)"}

FRAME_RATE = 100  # frames/s of the rolls built here: 10 ms resolves onsets finer than basic-pitch's 11.6-ms frames
PULSE_LAGS_S = (0.25, 1.5)  # beat periods of 240 down to 40 BPM
ONSET_SMOOTH_S = 0.02  # Gaussian σ of the onset envelope: a played beat wanders by tens of ms, a click track does not
STEP_SEMITONES = (1, 2)
CHORD_S = 0.03  # onsets this close belong to one chord (basic-pitch's frames are 11.6 ms)
LEGATO_S = 0.1  # a higher note must outlast another's onset by this much to cover it

# Krumhansl & Kessler (1982) probe-tone ratings, C major and C minor, from the tonic upwards.
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


# -- note lists -----------------------------------------------------------------------------------------------------------

def as_notes(notes: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """A note list as a float64 (n, 4) array [onset_s, offset_s, pitch, velocity]; 3 columns get velocity 1, and the
    runtime's notes (runtime/roll.py NOTE_DTYPE, MIDI velocity) become the same columns. Refuses non-finite values and
    notes that end before they start."""
    if isinstance(notes, np.ndarray) and notes.dtype.names == NOTE_DTYPE.names:
        notes = np.stack([notes["onset"], notes["offset"], notes["pitch"], notes["velocity"] / 127.0], axis=1)
    arr = np.asarray(notes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4))
    if arr.ndim != 2 or arr.shape[1] not in (3, 4):
        raise ConfigError(f"notes must be an (n, 3) or (n, 4) array [onset_s, offset_s, pitch(, velocity)], got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError("notes contain NaN or inf")
    if np.any(arr[:, 1] < arr[:, 0]):
        raise ConfigError("a note ends before it starts (offset < onset)")
    if arr.shape[1] == 3:
        arr = np.concatenate([arr, np.ones((arr.shape[0], 1))], axis=1)
    return arr


def split_notes(notes: np.ndarray, duration_s: float, window_s: float) -> list[tuple[np.ndarray, float]]:
    """Cut a long recording's notes into consecutive windows of `window_s` (the clip length), so a whole piece is measured
    at the same scale as generated clips (pitch range and pulse grow with length). A note belongs to the window of its
    onset, shifted to the window's start and cut at its end; a recording shorter than one window stays whole."""
    notes = as_notes(notes)
    if window_s <= 0 or duration_s <= 0:
        raise ConfigError(f"window and duration must be positive, got {window_s} and {duration_s}")
    n_windows = int(duration_s // window_s)
    if n_windows <= 1:
        return [(notes, float(duration_s))]
    out = []
    for w in range(n_windows):
        start, end = w * window_s, (w + 1) * window_s
        part = notes[(notes[:, 0] >= start) & (notes[:, 0] < end)].copy()
        part[:, :2] = np.minimum(part[:, :2], end) - start
        out.append((part, float(window_s)))
    return out


def _frame_span(notes: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """First and one-past-last frame of every note; every note covers at least one frame."""
    start = np.clip(np.round(notes[:, 0] * FRAME_RATE).astype(int), 0, max(n_frames - 1, 0))
    stop = np.clip(np.round(notes[:, 1] * FRAME_RATE).astype(int), start + 1, n_frames)
    return start, stop


def _n_frames(notes: np.ndarray, duration_s: float) -> int:
    last = float(notes[:, 1].max()) if notes.shape[0] else 0.0
    return max(1, int(np.ceil(max(duration_s, last) * FRAME_RATE)))


# -- per-clip metrics -------------------------------------------------------------------------------------------------------

def pitch_class_histogram(notes: np.ndarray) -> np.ndarray:
    """Duration-weighted pitch-class histogram (12,), summing to 1 (all zeros for no notes): a held chord tone weighs more
    than a passing grace note, as in Krumhansl's key-finding."""
    notes = as_notes(notes)
    hist = np.zeros(12)
    # a zero-length note still sounded: give it one frame's weight
    np.add.at(hist, np.round(notes[:, 2]).astype(int) % 12, np.maximum(notes[:, 1] - notes[:, 0], 1.0 / FRAME_RATE))
    total = hist.sum()
    return hist / total if total > 0 else hist


def pitch_class_entropy(notes: np.ndarray) -> float:
    """Entropy in bits of the duration-weighted pitch-class histogram; NaN without notes."""
    hist = pitch_class_histogram(notes)
    if hist.sum() == 0:
        return float("nan")
    p = hist[hist > 0]
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0: a single pitch class is 0 bits, not -0


def key_clarity(notes: np.ndarray) -> float:
    """Highest Pearson correlation of the pitch-class histogram with the 24 Krumhansl–Kessler key profiles. A histogram
    with no shape at all (all twelve pitch classes equal, e.g. a chromatic cluster) fits no key: 0. NaN without notes."""
    hist = pitch_class_histogram(notes)
    if hist.sum() == 0:
        return float("nan")
    if np.allclose(hist, hist[0]):
        return 0.0
    profiles = np.stack([np.roll(profile, tonic) for profile in (KK_MAJOR, KK_MINOR) for tonic in range(12)])
    return float(max(np.corrcoef(hist, profile)[0, 1] for profile in profiles))


def onset_envelope(notes: np.ndarray, duration_s: float) -> np.ndarray:
    """Velocity-weighted note onsets at FRAME_RATE, smoothed by a Gaussian of ONSET_SMOOTH_S."""
    notes = as_notes(notes)
    n_frames = _n_frames(notes, duration_s)
    env = np.zeros(n_frames)
    np.add.at(env, np.clip(np.round(notes[:, 0] * FRAME_RATE).astype(int), 0, n_frames - 1), notes[:, 3])
    sigma = ONSET_SMOOTH_S * FRAME_RATE
    taps = np.arange(-int(4 * sigma), int(4 * sigma) + 1)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    return np.convolve(env, kernel / kernel.sum(), mode="same")


def pulse_clarity(notes: np.ndarray, duration_s: float) -> float:
    """Peak of the onset envelope's autocorrelation (mean removed, normalised by lag 0) over lags of 0.25–1.5 s: near 1
    for a steady beat, near 0 for onsets at random times. NaN with fewer than 2 onsets or a clip too short for a lag."""
    notes = as_notes(notes)
    if notes.shape[0] < 2:
        return float("nan")
    env = onset_envelope(notes, duration_s)
    env = env - env.mean()
    energy = float(env @ env)
    lo, hi = (int(round(s * FRAME_RATE)) for s in PULSE_LAGS_S)
    hi = min(hi, env.size - 1)
    if energy <= 0 or hi < lo:
        return float("nan")
    return float(max(env[:-lag] @ env[lag:] for lag in range(lo, hi + 1)) / energy)


def top_voice(notes: np.ndarray) -> np.ndarray:
    """Pitches of the top voice in onset order: the notes that are the highest sounding note when they start. A note is
    covered when a higher note has started (up to CHORD_S after it: one spread chord) and still sounds LEGATO_S after
    its onset; an overlap shorter than that is a legato hand, not a second voice. A per-frame skyline would instead drop
    to the accompaniment in every gap between two tune notes and count two leaps there."""
    notes = as_notes(notes)
    if notes.shape[0] == 0:
        return np.zeros(0)
    notes = notes[np.lexsort((-notes[:, 2], notes[:, 0]))]
    onset, offset, pitch = notes[:, 0], notes[:, 1], np.round(notes[:, 2])
    covered = ((pitch[None, :] > pitch[:, None]) & (onset[None, :] <= onset[:, None] + CHORD_S)
               & (offset[None, :] > onset[:, None] + LEGATO_S)).any(axis=1)
    return pitch[~covered]


def stepwise_motion(notes: np.ndarray) -> float:
    """Fraction of the top voice's moves of 1–2 semitones (a repeated note is a move, not a step); NaN without a move."""
    moves = np.abs(np.diff(top_voice(notes)))
    if moves.size == 0:
        return float("nan")
    return float(((moves >= STEP_SEMITONES[0]) & (moves <= STEP_SEMITONES[1])).mean())


def polyphony(notes: np.ndarray, duration_s: float) -> float:
    """Mean number of notes sounding over the frames where at least one sounds; NaN without notes."""
    notes = as_notes(notes)
    if notes.shape[0] == 0:
        return float("nan")
    n_frames = _n_frames(notes, duration_s)
    start, stop = _frame_span(notes, n_frames)
    delta = np.zeros(n_frames + 1)
    np.add.at(delta, start, 1)
    np.add.at(delta, stop, -1)
    count = np.cumsum(delta)[:n_frames]
    return float(count[count > 0].mean())


def pitch_range(notes: np.ndarray) -> float:
    """Highest minus lowest pitch in semitones; NaN without notes."""
    notes = as_notes(notes)
    return float(notes[:, 2].max() - notes[:, 2].min()) if notes.shape[0] else float("nan")


def clip_structure(notes: np.ndarray, duration_s: float) -> dict[str, float]:
    """Every structure metric of one clip lasting `duration_s` (NaN where a metric is undefined, e.g. no notes)."""
    notes = as_notes(notes)
    if duration_s <= 0:
        raise ConfigError(f"clip duration must be positive, got {duration_s}")
    return {
        "note_density": notes.shape[0] / duration_s,
        "pitch_class_entropy": pitch_class_entropy(notes),
        "key_clarity": key_clarity(notes),
        "pulse_clarity": pulse_clarity(notes, duration_s),
        "stepwise_motion": stepwise_motion(notes),
        "polyphony": polyphony(notes, duration_s),
        "pitch_range": pitch_range(notes),
    }


# -- sets of clips --------------------------------------------------------------------------------------------------------

def set_structure(clips: Iterable[dict[str, float]]) -> dict[str, float | None]:
    """Mean of every metric over the clips where it is defined (None where no clip defines it)."""
    clips = list(clips)
    out: dict[str, float | None] = {}
    for metric in METRICS:
        values = np.array([c[metric] for c in clips], dtype=np.float64)
        values = values[np.isfinite(values)]
        out[metric] = float(values.mean()) if values.size else None
    return out


def structure_ratios(values: dict[str, float | None], reference: dict[str, float | None]) -> dict[str, float | None]:
    """Each metric as × reference (1.0 = like the reference); None where either side is missing or the reference is 0."""
    return {m: (None if values.get(m) is None or not reference.get(m) else float(values[m] / reference[m]))
            for m in METRICS}


# -- notes played vs notes asked for --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NoteScores:
    """Onset-only note transcription scores (mir_eval.transcription's "onset" variant: offsets are ignored)."""

    precision: float
    recall: float
    f1: float
    matched: int
    reference: int
    estimated: int


def _match_sorted(ref: np.ndarray, est: np.ndarray, tol: float) -> int:
    """Size of a maximum one-to-one matching of two sorted onset lists with |ref − est| ≤ tol. On a line, pairing each
    reference with the earliest still-unmatched estimate in reach is optimal (an exchange argument), so no Hopcroft–Karp."""
    i = j = matched = 0
    eps = 1e-9  # onsets on a frame grid: 0.05 s written as 0.0499999 must still match
    while i < ref.size and j < est.size:
        if est[j] < ref[i] - tol - eps:
            j += 1
        elif est[j] > ref[i] + tol + eps:
            i += 1
        else:
            matched, i, j = matched + 1, i + 1, j + 1
    return matched


def note_f1(reference_notes: np.ndarray, estimated_notes: np.ndarray, onset_tol: float = 0.05) -> NoteScores:
    """Precision, recall and F1 of estimated notes against reference notes: a match is the same (rounded) MIDI pitch with
    onsets within `onset_tol` seconds, each note matched at most once. Notes are (n, ≥3) [onset_s, offset_s, pitch, …].
    With nothing to play and nothing played all three are 1; with only one side empty they are 0."""
    if onset_tol < 0:
        raise ConfigError(f"onset tolerance must be >= 0, got {onset_tol}")
    ref, est = as_notes(reference_notes), as_notes(estimated_notes)
    if ref.shape[0] == 0 and est.shape[0] == 0:
        return NoteScores(1.0, 1.0, 1.0, 0, 0, 0)
    ref_pitch, est_pitch = np.round(ref[:, 2]).astype(int), np.round(est[:, 2]).astype(int)
    matched = sum(_match_sorted(np.sort(ref[ref_pitch == p, 0]), np.sort(est[est_pitch == p, 0]), onset_tol)
                  for p in np.intersect1d(ref_pitch, est_pitch))
    precision = matched / est.shape[0] if est.shape[0] else 0.0
    recall = matched / ref.shape[0] if ref.shape[0] else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return NoteScores(float(precision), float(recall), float(f1), int(matched), int(ref.shape[0]), int(est.shape[0]))


def note_f1_many(references: Sequence[np.ndarray], estimates: Sequence[np.ndarray],
                 onset_tol: float = 0.05) -> NoteScores:
    """`note_f1` over a set of clips, pooled: matches, reference and estimated notes summed over the clips before the
    ratios, so a clip with two notes weighs less than one with two hundred (mir_eval's convention for a dataset is the
    mean over pieces; pooling keeps near-empty clips from swinging a table row)."""
    if len(references) != len(estimates):
        raise ConfigError(f"{len(references)} reference note lists but {len(estimates)} estimated ones")
    scores = [note_f1(r, e, onset_tol) for r, e in zip(references, estimates)]
    matched = sum(s.matched for s in scores)
    n_ref, n_est = sum(s.reference for s in scores), sum(s.estimated for s in scores)
    if n_ref == 0 and n_est == 0:
        return NoteScores(1.0, 1.0, 1.0, 0, 0, 0)
    precision = matched / n_est if n_est else 0.0
    recall = matched / n_ref if n_ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return NoteScores(float(precision), float(recall), float(f1), matched, n_ref, n_est)
