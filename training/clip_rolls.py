"""Where a clip's piano roll comes from when `pdd-data prepare` cuts audio: the MIDI file beside the audio (exact: the
corpus keeps the MIDI it rendered), or a transcription of the audio by basic-pitch for music that has no MIDI.

Modes: "auto" (rolls from MIDI when any audio file has one beside it, else no rolls), "midi" (every file needs its MIDI;
files without are skipped and listed), "transcribe" (basic-pitch notes for every file), "none". A MIDI file "beside" an
audio file has the same path with the suffix .mid or .midi.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pdd.runtime.config import AudioConfig
from pdd.runtime.errors import ConfigError
from pdd.runtime.midi import MidiError, read_midi
from pdd.runtime.roll import RollConfig, make_notes, notes_to_roll

ROLL_MODES = ("auto", "midi", "transcribe", "none")
MIDI_SUFFIXES = (".mid", ".midi")


class NoNotes(Exception):
    """This file has no usable notes; the message is the reason the report lists."""


def check_mode(mode: str) -> None:
    if mode not in ROLL_MODES:
        raise ConfigError(f"--rolls must be one of {', '.join(ROLL_MODES)}, got {mode!r}")


def midi_beside(audio: Path) -> Path | None:
    for suffix in MIDI_SUFFIXES:
        candidate = audio.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def resolve_mode(mode: str, files: list[Path]) -> str:
    """'auto' → 'midi' when any file has a MIDI beside it, else 'none'; other modes unchanged."""
    check_mode(mode)
    if mode != "auto":
        return mode
    return "midi" if any(midi_beside(f) is not None for f in files) else "none"


def roll_source_name(mode: str) -> str:
    return "transcription" if mode == "transcribe" else "midi"


def file_notes(path: Path, wave: np.ndarray, config: AudioConfig, mode: str) -> np.ndarray:
    """The notes of one audio file under `mode` ('midi' or 'transcribe'); NoNotes with the reason otherwise."""
    if mode == "midi":
        midi = midi_beside(path)
        if midi is None:
            raise NoNotes("no MIDI file beside it (.mid/.midi with the same name); pass --rolls none or --transcribe")
        try:
            return read_midi(midi)
        except MidiError as exc:
            raise NoNotes(f"its MIDI file cannot be used ({str(exc).split(': ', 1)[-1]})") from None
    notes = transcribe_notes(wave, config.sample_rate)
    if notes.size == 0:
        raise NoNotes("basic-pitch found no notes in it")
    return notes


_TRANSCRIBER: list = []  # one basic-pitch session per process: loading its graph costs more than transcribing a clip


def transcribe_notes(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """NOTE_DTYPE notes of a mono wave, transcribed by basic-pitch (BasicPitchUnavailable, one line, without it)."""
    from pdd.training.basic_pitch import BasicPitchEmbedder

    if not _TRANSCRIBER:
        _TRANSCRIBER.append(BasicPitchEmbedder())
    events = _TRANSCRIBER[0].transcribe(wave, sample_rate)
    rows = [(float(a), float(b), int(round(p)), int(np.clip(round(v * 127), 1, 127))) for a, b, p, v in events]
    return make_notes(rows)


def clip_rolls(notes: np.ndarray, starts: np.ndarray, config: AudioConfig, rolls: RollConfig) -> np.ndarray:
    """(n, 2, pitches, frames) rolls of the clips starting at sample `starts`."""
    return np.stack([notes_to_roll(notes, rolls, start=int(s) / config.sample_rate) for s in starts]).astype(np.uint8)
