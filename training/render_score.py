"""One score → audio, offline: music21 parses it and writes MIDI with every part on acoustic piano, FluidSynth renders it
with a General-MIDI soundfont (runs inside pdd-data corpus's time-limited child processes)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf


def score_to_midi(source: str | os.PathLike[str], midi_path: str | os.PathLike[str]) -> float:
    """Parse a score, expand its repeats, put every part on acoustic piano, write MIDI. Returns its length in quarter notes."""
    from music21 import converter, instrument, midi, stream

    score = converter.parse(str(source))
    if isinstance(score, stream.Opus):
        # A file holding several pieces (some .abc files): play them one after another.
        score = score.mergeScores() if hasattr(score, "mergeScores") else score.scores[0]
    if not score.parts:
        raise ValueError("score has no parts")
    score = expand_repeats(score)
    for part in score.parts:
        for old in list(part.recurse().getElementsByClass(instrument.Instrument)):
            old.activeSite.remove(old)
        part.insert(0, instrument.Piano())  # General MIDI program 0: acoustic grand piano
    midi_file = midi.translate.streamToMidiFile(score)
    midi_file.open(str(midi_path), "wb")
    try:
        midi_file.write()
    finally:
        midi_file.close()
    return float(score.duration.quarterLength)


def expand_repeats(score: Any) -> Any:
    """The score with its repeats played out; as written (repeat marks dropped) where music21 cannot expand them. About one
    work in nine of the default composers has repeats music21 calls "badly formed" (ExpanderException), and skipping those
    lost whole works (Beethoven and Haydn quartets, Mozart, Chopin) where playing each section once is still real music.
    The marks must go, not just the expansion: music21's MIDI writer expands repeats again on its own."""
    from music21.repeat import ExpanderException

    try:
        return score.expandRepeats()
    except ExpanderException:
        return without_repeat_marks(score)


def without_repeat_marks(score: Any) -> Any:
    """Drop repeat barlines, volta brackets and repeat expressions (segno, coda, D.C., …) in place, keeping the notes."""
    from music21 import bar, repeat, spanner, stream

    for measure in score.recurse().getElementsByClass(stream.Measure):
        if isinstance(measure.leftBarline, bar.Repeat):
            measure.leftBarline = None
        if isinstance(measure.rightBarline, bar.Repeat):
            measure.rightBarline = bar.Barline("regular")
    for mark in list(score.recurse().getElementsByClass((repeat.RepeatExpression, spanner.RepeatBracket))):
        if mark.activeSite is not None:
            mark.activeSite.remove(mark)
    for bracket in list(score.spannerBundle.getByClass(spanner.RepeatBracket)):
        score.spannerBundle.remove(bracket)
    return score


def render_midi(midi_path: Path, sample_rate: int, soundfont: str, fluidsynth: str, scratch: Path) -> np.ndarray:
    """FluidSynth fast render (float, no clipping) → mono float32 at `sample_rate`, not yet normalised."""
    raw = scratch / "render.wav"
    cmd = [
        fluidsynth, "-ni", "-q", "-r", str(sample_rate), "-T", "wav", "-O", "float",
        "-F", str(raw), soundfont, str(midi_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not raw.is_file():
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(f"fluidsynth failed ({detail[-1] if detail else f'exit {proc.returncode}'})")
    wave, rate = sf.read(str(raw), dtype="float32", always_2d=True)
    if rate != sample_rate:
        raise RuntimeError(f"fluidsynth wrote {rate} Hz instead of {sample_rate} Hz")
    return wave.mean(axis=1, dtype=np.float32)


def peak_normalise(wave: np.ndarray, peak_dbfs: float) -> np.ndarray:
    """Scale so the largest sample sits at `peak_dbfs` (FluidSynth's default gain peaks near 0.15, wasting 16 dB)."""
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if peak <= 0.0 or not np.isfinite(peak):
        raise ValueError("rendered audio is silent")
    return (wave * np.float32(10.0 ** (peak_dbfs / 20.0) / peak)).astype(np.float32)
