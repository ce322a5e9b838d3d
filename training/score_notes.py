"""Scores → notes on a beat grid, the symbolic prior's training data (`pdd-data scores`).

The prior learns from music21's bundled scores of the corpus's default composers only — never another composer's, because
held-out evaluation is scored on composers the corpus never picks (`select_works` is the one selection; a test pins it).
It may read more of their works than `pdd-data corpus` renders: notes cost no audio.

Each score is parsed the way `render_score.score_to_midi` parses it (repeats played out, or as written where music21
cannot expand them), ties merged, and every note kept as (onset, duration, pitch) in ticks of TICKS_PER_QUARTER — 12 a
quarter note holds sixteenths and eighth-note triplets exactly. Its first metronome mark (or music21's default, 120 bpm,
which is what the renders play) is kept too, so the prior's tempo follows the renders'. Parsing runs in the same
time-limited child processes as rendering; a score that fails is listed with the reason, never fatal.

Output: OUT/scores.npz (notes of all works concatenated, with per-work start indices) and OUT/scores.json (the work list,
composers, bpm, skipped works), both written atomically; the same arguments give the same files.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pdd.runtime.errors import PddError
from pdd.runtime.fileio import atomic_write_bytes, ensure_writable_dir, write_json_atomic
from pdd.training.corpus import DEFAULT_COMPOSERS, select_works
from pdd.training.process_pool import run_limited
from pdd.training.render_score import expand_repeats

TICKS_PER_QUARTER = 12
DEFAULT_BPM = 120.0  # music21 writes MIDI at 120 bpm where a score has no metronome mark
SCORES_FORMAT = "pdd-scores/1"
NOTES_NAME, LIST_NAME = "scores.npz", "scores.json"
MAX_NOTES_PER_WORK = 200_000


class ScoresError(PddError):
    """Score notes that cannot be extracted or read."""


@dataclass(frozen=True)
class ScoreNotes:
    """The notes of many works: `notes[starts[i]:starts[i + 1]]` are work i's (onset, duration, pitch) in ticks."""

    works: list[str]
    composers: list[str]
    bpm: np.ndarray  # (n_works,) float
    starts: np.ndarray  # (n_works + 1,) int64
    notes: np.ndarray  # (N, 3) int32: onset tick, duration ticks, MIDI pitch

    def work_notes(self, i: int) -> np.ndarray:
        return self.notes[self.starts[i] : self.starts[i + 1]]

    def __len__(self) -> int:
        return len(self.works)


def score_notes(source: str | os.PathLike[str]) -> tuple[np.ndarray, float]:
    """(N, 3) int32 (onset tick, duration ticks, pitch) of one score, sorted, and its tempo in bpm."""
    from music21 import converter, stream, tempo

    warnings.simplefilter("ignore")  # music21 warns about every overfull measure
    score = converter.parse(str(source))
    if isinstance(score, stream.Opus):
        score = score.mergeScores() if hasattr(score, "mergeScores") else score.scores[0]
    score = expand_repeats(score)
    parts = score.parts if score.parts else [score]
    rows: list[tuple[int, int, int]] = []
    for part in parts:
        for element in part.flatten().stripTies().notes:
            length = float(element.quarterLength)
            if length <= 0:  # grace notes take no time on the grid
                continue
            onset = int(round(float(element.offset) * TICKS_PER_QUARTER))
            duration = max(1, int(round(length * TICKS_PER_QUARTER)))
            rows.extend((onset, duration, int(p.midi)) for p in element.pitches)
    if not rows:
        raise ValueError("score has no notes")
    if len(rows) > MAX_NOTES_PER_WORK:
        raise ValueError(f"more than {MAX_NOTES_PER_WORK} notes")
    notes = np.unique(np.asarray(rows, dtype=np.int32), axis=0)  # sorted by onset, then duration, then pitch
    marks = list(score.flatten().getElementsByClass(tempo.MetronomeMark))
    bpm = float(marks[0].getQuarterBPM()) if marks and marks[0].getQuarterBPM() else DEFAULT_BPM
    return notes, bpm


def extract_scores(out: str | os.PathLike[str], composers: Iterable[str] = DEFAULT_COMPOSERS, limit: int | None = None,
                   workers: int = 1, time_limit: float = 120.0,
                   on_result: Callable[[str, str], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """Parse the selected works into OUT/scores.npz + scores.json; returns the listing (see the module docstring)."""
    out = ensure_writable_dir(out, ScoresError)
    works = select_works(composers, limit)
    done: dict[str, tuple[np.ndarray, float]] = {}
    failed: dict[str, str] = {}

    def collect(key: str, status: str, value: Any) -> None:
        if status == "ok":
            done[key] = value
        else:
            failed[key] = str(value)
        if on_result:
            on_result(key, status)

    run_limited([(w.id, score_notes, (w.source,)) for w in works], workers, time_limit, collect)
    kept = [w for w in works if w.id in done]
    if not kept:
        raise ScoresError("no score could be parsed; see the skipped list")
    skipped = [{"id": w.id, "reason": failed[w.id]} for w in works if w.id in failed]
    return write_scores(out, [(w.id, w.composer, *done[w.id]) for w in kept], skipped)


def write_scores(out: str | os.PathLike[str], works: list[tuple[str, str, np.ndarray, float]],
                 skipped: list[dict[str, str]] | None = None) -> dict[str, Any]:  # fmt: skip
    """OUT/scores.npz + scores.json from (id, composer, notes (N, 3) ticks, bpm) per work, written atomically."""
    import io

    out = ensure_writable_dir(out, ScoresError)
    notes = np.concatenate([np.asarray(w[2], dtype=np.int32).reshape(-1, 3) for w in works])
    starts = np.cumsum([0] + [np.asarray(w[2]).reshape(-1, 3).shape[0] for w in works]).astype(np.int64)
    bpm = np.asarray([w[3] for w in works], dtype=np.float64)
    buffer = io.BytesIO()
    np.savez(buffer, notes=notes, starts=starts, bpm=bpm)
    atomic_write_bytes(out / NOTES_NAME, buffer.getvalue(), error=ScoresError)
    listing = {
        "format": SCORES_FORMAT,
        "ticks_per_quarter": TICKS_PER_QUARTER,
        "composers": sorted({w[1] for w in works}),
        "works": [{"id": w[0], "composer": w[1]} for w in works],
        "notes": int(notes.shape[0]),
        "skipped": skipped or [],
    }
    write_json_atomic(out / LIST_NAME, listing, sort_keys=False)
    return listing


def load_scores(folder: str | os.PathLike[str], composers: Iterable[str] = DEFAULT_COMPOSERS) -> ScoreNotes:
    """Read OUT/scores.npz + scores.json back (untrusted: shapes, counts and composers are checked)."""
    from pdd.runtime.untrusted import load_json, printable

    folder = Path(folder)
    listing = load_json(folder / LIST_NAME, "score list", ScoresError)
    try:
        if listing.get("format") != SCORES_FORMAT or listing.get("ticks_per_quarter") != TICKS_PER_QUARTER:
            raise ValueError(f"format {printable(listing.get('format'), 40)} is not {SCORES_FORMAT}")
        works = [str(w["id"]) for w in listing["works"]]
        work_composers = [str(w["composer"]) for w in listing["works"]]
        with np.load(folder / NOTES_NAME, allow_pickle=False) as data:
            notes, starts, bpm = data["notes"], data["starts"], data["bpm"]
        if notes.ndim != 2 or notes.shape[1] != 3 or starts.shape != (len(works) + 1,) or bpm.shape != (len(works),):
            raise ValueError("array shapes do not match the work list")
        if starts[0] != 0 or starts[-1] != notes.shape[0] or np.any(np.diff(starts) < 0):
            raise ValueError("work start indices are not a partition of the notes")
    except (OSError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ScoresError(f"{printable(folder)} holds no readable score notes ({printable(exc, 120)}); "
                          "run `pdd-data scores` again") from None  # fmt: skip
    allowed = set(composers)
    foreign = sorted(set(work_composers) - allowed)
    if foreign:
        raise ScoresError(f"{printable(folder)} holds works of composers outside the selection: {printable(', '.join(foreign), 80)}")
    return ScoreNotes(works, work_composers, bpm.astype(np.float64), starts.astype(np.int64), notes.astype(np.int32))


def heldout_work_ids(cache: Any) -> set[str]:
    """Work ids ("bach/bwv10.7") of a mel cache's held-out clips: the prior never trains on the pieces it is scored on."""
    return {name.rsplit(".", 1)[0] for name in cache.sources("heldout")} if "heldout" in cache.splits else set()


