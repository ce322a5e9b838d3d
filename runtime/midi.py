"""MIDI files ↔ notes (`runtime/roll.py`'s NOTE_DTYPE), with mido (pure Python: nothing native ships to a Jetson).

Reading: every track merged on mido's tempo map, so onsets are in seconds as a synthesiser plays them; note-on with
velocity 0 is a note-off; a held sustain pedal (CC 64 ≥ 64) keeps released notes sounding until it lifts, as a piano
does and as FluidSynth renders them; a note still open at the end of the file ends there. A MIDI file is untrusted input:
its size, track count, note count, tempo and length are bounded before or while parsing, and every failure is one
MidiError line that names the file.

Writing: one track at 120 bpm and 480 ticks per beat (960 ticks a second: ~1 ms resolution, finer than a mel frame),
piano program 0, written atomically.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import numpy as np

from pdd.runtime.errors import PddError
from pdd.runtime.fileio import atomic_write_bytes
from pdd.runtime.roll import NOTE_DTYPE, make_notes, sort_notes
from pdd.runtime.untrusted import printable

MAX_MIDI_BYTES = 16 << 20  # the longest real piano pieces are well under 1 MB
MAX_TRACKS = 256
MAX_NOTES = 500_000
MAX_SECONDS = 4 * 3600.0
MIN_TEMPO_US, MAX_TEMPO_US = 10_000, 10_000_000  # µs per beat: 6000 bpm .. 6 bpm
SUSTAIN_CC = 64
WRITE_TICKS_PER_BEAT = 480
WRITE_TEMPO_US = 500_000  # 120 bpm: 960 ticks a second


class MidiError(PddError):
    """A MIDI file that cannot be read or written (not MIDI, damaged, out of bounds, no notes)."""


def read_midi(path: str | os.PathLike[str]) -> np.ndarray:
    """Notes (NOTE_DTYPE, sorted by onset) of a Standard MIDI File. See the module docstring for the rules and bounds."""
    path = Path(path)
    midi = _parse(path)
    notes = _collect_notes(midi, path)
    if notes.size == 0:
        raise MidiError(f"{printable(path)}: holds no notes")
    return notes


def _parse(path: Path) -> Any:
    import mido

    what = printable(path)
    try:
        info = path.stat()
    except OSError as exc:
        raise MidiError(f"{what}: cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise MidiError(f"{what}: not a regular file (a MIDI file is expected)")
    if info.st_size > MAX_MIDI_BYTES:
        raise MidiError(f"{what}: {info.st_size} bytes is larger than the {MAX_MIDI_BYTES >> 20} MB a MIDI file may have")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MidiError(f"{what}: cannot be read ({exc.strerror or exc})") from None
    if not data.startswith(b"MThd"):
        raise MidiError(f"{what}: not a Standard MIDI File (no MThd header)")
    if len(data) >= 12 and int.from_bytes(data[10:12], "big") > MAX_TRACKS:
        raise MidiError(f"{what}: declares {int.from_bytes(data[10:12], 'big')} tracks; at most {MAX_TRACKS} are read")
    try:
        import io

        midi = mido.MidiFile(file=io.BytesIO(data), clip=True)
    except Exception as exc:  # mido raises OSError, EOFError, ValueError, KeyError, IndexError on damaged files
        raise MidiError(f"{what}: damaged MIDI file ({printable(type(exc).__name__ + ': ' + str(exc), 120)})") from None
    if midi.type == 2:
        raise MidiError(f"{what}: type-2 (asynchronous) MIDI files are not supported; save it as type 0 or 1")
    if len(midi.tracks) > MAX_TRACKS:
        raise MidiError(f"{what}: {len(midi.tracks)} tracks; at most {MAX_TRACKS} are read")
    if midi.ticks_per_beat <= 0:
        raise MidiError(f"{what}: SMPTE time division is not supported")
    return midi


def _collect_notes(midi: Any, path: Path) -> np.ndarray:
    """Walk the merged tracks with their tempo map; pair note-ons with note-offs per (channel, pitch), pedal aware."""
    what = printable(path)
    now = 0.0
    open_notes: dict[tuple[int, int], list[tuple[float, int]]] = {}
    held_by_pedal: dict[int, list[tuple[int, float, int]]] = {}
    pedal = [False] * 16
    rows: list[tuple[float, float, int, int]] = []
    try:
        for message in midi:  # mido converts delta ticks to seconds on the tempo map
            now += float(message.time)
            if now > MAX_SECONDS:
                raise MidiError(f"{what}: lasts longer than {MAX_SECONDS / 3600:g} hours")
            kind = message.type
            if kind == "set_tempo" and not MIN_TEMPO_US <= message.tempo <= MAX_TEMPO_US:
                raise MidiError(f"{what}: tempo of {60e6 / max(message.tempo, 1):.4g} bpm is out of range (6..6000 bpm)")
            if kind == "note_on" and message.velocity > 0:
                open_notes.setdefault((message.channel, message.note), []).append((now, message.velocity))
            elif kind in ("note_off", "note_on"):
                started = open_notes.get((message.channel, message.note))
                if not started:
                    continue  # a note-off without a note-on: nothing to end
                onset, velocity = started.pop(0)
                if pedal[message.channel]:
                    held_by_pedal.setdefault(message.channel, []).append((message.note, onset, velocity))
                else:
                    rows.append((onset, now, message.note, velocity))
            elif kind == "control_change" and message.control == SUSTAIN_CC:
                down = message.value >= 64
                if pedal[message.channel] and not down:
                    rows.extend((onset, now, note, vel) for note, onset, vel in held_by_pedal.pop(message.channel, []))
                pedal[message.channel] = down
            if len(rows) > MAX_NOTES:
                raise MidiError(f"{what}: more than {MAX_NOTES} notes")
    except MidiError:
        raise
    except Exception as exc:
        raise MidiError(f"{what}: damaged MIDI file ({printable(type(exc).__name__ + ': ' + str(exc), 120)})") from None
    for channel, held in held_by_pedal.items():
        rows.extend((onset, now, note, vel) for note, onset, vel in held)
    for (_channel, note), started in open_notes.items():
        rows.extend((onset, now, note, vel) for onset, vel in started)
    notes = make_notes(rows) if rows else np.zeros(0, dtype=NOTE_DTYPE)
    return notes[notes["offset"] > notes["onset"]]


def midi_bytes(notes: np.ndarray) -> bytes:
    """A type-0 Standard MIDI File playing `notes` on a piano (see the module docstring for its time grid)."""
    import io

    import mido

    ticks_per_second = WRITE_TICKS_PER_BEAT * 1e6 / WRITE_TEMPO_US
    events: list[tuple[int, int, int, int]] = []  # (tick, order: offs before ons at one tick, pitch, velocity)
    for note in sort_notes(np.asarray(notes, dtype=NOTE_DTYPE)):
        start = int(round(float(note["onset"]) * ticks_per_second))
        end = max(int(round(float(note["offset"]) * ticks_per_second)), start + 1)
        pitch, velocity = int(note["pitch"]), int(np.clip(note["velocity"], 1, 127))
        events.append((start, 1, pitch, velocity))
        events.append((end, 0, pitch, 0))
    events.sort()
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=WRITE_TEMPO_US, time=0))
    track.append(mido.Message("program_change", program=0, channel=0, time=0))
    last = 0
    for tick, is_on, pitch, velocity in events:
        kind = "note_on" if is_on else "note_off"
        track.append(mido.Message(kind, note=pitch, velocity=velocity if is_on else 0, channel=0, time=tick - last))
        last = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    midi = mido.MidiFile(type=0, ticks_per_beat=WRITE_TICKS_PER_BEAT)
    midi.tracks.append(track)
    buffer = io.BytesIO()
    midi.save(file=buffer)
    return buffer.getvalue()


def write_midi(path: str | os.PathLike[str], notes: np.ndarray, *, overwrite: bool = False) -> Path:
    """`notes` as a MIDI file at `path`, written atomically; an existing file is refused unless `overwrite`."""
    return atomic_write_bytes(path, midi_bytes(notes), overwrite=overwrite, error=MidiError)
