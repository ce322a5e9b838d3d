"""Piano rolls and MIDI files: roll ↔ notes ↔ MIDI round trips, pedal and overlap rules, and hostile MIDI files."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from pdd.runtime.config import get_preset
from pdd.runtime.midi import MAX_TRACKS, MidiError, midi_bytes, read_midi, write_midi
from pdd.runtime.roll import (
    ONSET,
    SUSTAIN,
    RollConfig,
    clip_notes,
    from_signed,
    make_notes,
    notes_to_roll,
    roll_to_notes,
    to_signed,
)
from pdd.runtime.errors import ConfigError

CFG = RollConfig.for_audio(get_preset("paper"))
FRAME = 1.0 / CFG.frame_rate


def on_grid(rows):
    """Notes whose onsets and offsets sit exactly on frame times (what a roll can represent)."""
    return make_notes([(a * FRAME, b * FRAME, p) for a, b, p in rows])


def test_roll_config_follows_the_audio_preset_and_rejects_nonsense():
    assert CFG.frames == 384 and abs(CFG.frame_rate - 22050 / 512) < 1e-12
    assert CFG.shape == (2, 88, 384)
    assert RollConfig.from_dict(CFG.to_dict()) == CFG
    for bad in ({"low_pitch": 60}, {"n_pitches": 0}, {"frame_rate": 0.0}, {"frames": 0}, {"format": "x"}):
        with pytest.raises(ConfigError):
            RollConfig(**{**CFG.to_dict(), **bad})


def test_notes_to_roll_marks_onsets_and_sustain_on_the_nearest_frame():
    roll = notes_to_roll(on_grid([(10, 20, 60), (15, 16, 21), (380, 400, 108)]), CFG)
    assert roll.shape == CFG.shape and roll.dtype == np.float32
    assert roll[ONSET, 60 - 21].nonzero()[0].tolist() == [10]
    assert roll[SUSTAIN, 60 - 21].nonzero()[0].tolist() == list(range(10, 20))
    assert roll[SUSTAIN, 0].nonzero()[0].tolist() == [15]
    assert roll[SUSTAIN, 87].nonzero()[0].tolist() == list(range(380, 384))  # cut at the clip's end


def test_a_note_sounding_before_the_window_has_sustain_but_no_onset_and_out_of_range_pitches_drop():
    notes = make_notes([(0.0, 1.0, 60), (0.5, 0.6, 10), (0.5, 0.6, 120)])
    roll = notes_to_roll(notes, CFG, start=0.5)
    assert roll[ONSET].sum() == 0
    assert roll[SUSTAIN, 60 - 21, 0] == 1 and roll[SUSTAIN].sum() == roll[SUSTAIN, 60 - 21].sum()


def test_roll_to_notes_inverts_notes_to_roll_on_the_frame_grid():
    notes = on_grid([(0, 4, 60), (4, 9, 60), (2, 30, 64), (100, 101, 36), (200, 383, 100)])  # repeated key 60
    back = roll_to_notes(notes_to_roll(notes, CFG), CFG)
    np.testing.assert_allclose(back["onset"], notes["onset"], atol=1e-9)
    np.testing.assert_allclose(back["offset"], notes["offset"], atol=1e-9)
    assert back["pitch"].tolist() == notes["pitch"].tolist()


def test_soft_rolls_are_cleaned_by_threshold_and_minimum_length():
    roll = notes_to_roll(on_grid([(10, 30, 60)]), CFG) * 0.8
    roll[SUSTAIN, 70, 50] = 0.9  # one-frame speckle
    roll[SUSTAIN, 71, 60:70] = 0.3  # below threshold
    notes = roll_to_notes(roll, CFG, threshold=0.5, min_frames=2)
    assert notes["pitch"].tolist() == [60]
    signed = to_signed(notes_to_roll(on_grid([(1, 3, 50)]), CFG))
    assert signed.min() == -1 and signed.max() == 1
    np.testing.assert_array_equal(from_signed(signed), notes_to_roll(on_grid([(1, 3, 50)]), CFG))
    with pytest.raises(ConfigError):
        roll_to_notes(np.zeros((3, 88, 10)), CFG)


def test_clip_notes_shifts_and_cuts_to_the_window():
    notes = make_notes([(0.0, 2.0, 60), (1.5, 3.0, 62), (5.0, 6.0, 64)])
    cut = clip_notes(notes, 1.0, 2.0)
    assert cut["pitch"].tolist() == [60, 62]
    np.testing.assert_allclose(cut["onset"], [0.0, 0.5])
    np.testing.assert_allclose(cut["offset"], [1.0, 2.0])


def test_midi_round_trip_keeps_notes_within_a_millisecond(tmp_path):
    notes = make_notes([(0.0, 0.5, 60, 100), (0.25, 1.0, 64, 50), (1.0, 1.001, 67, 1), (2.3456, 9.87, 21, 127)])
    path = write_midi(tmp_path / "a.mid", notes)
    back = read_midi(path)
    assert back["pitch"].tolist() == notes["pitch"].tolist()
    assert back["velocity"].tolist() == notes["velocity"].tolist()
    np.testing.assert_allclose(back["onset"], notes["onset"], atol=1.1e-3)
    np.testing.assert_allclose(back["offset"], notes["offset"], atol=1.1e-3)
    with pytest.raises(MidiError, match="exists"):
        write_midi(path, notes)  # never overwritten silently


def test_roll_midi_roll_round_trip(tmp_path):
    roll = notes_to_roll(on_grid([(0, 40, 60), (40, 80, 62), (10, 200, 48)]), CFG)
    back = notes_to_roll(read_midi(write_midi(tmp_path / "r.mid", roll_to_notes(roll, CFG))), CFG)
    np.testing.assert_array_equal(back, roll)


def _smf(*tracks: bytes, ntracks: int | None = None, fmt: int = 1) -> bytes:
    header = b"MThd" + struct.pack(">IHHH", 6, fmt, len(tracks) if ntracks is None else ntracks, 480)
    return header + b"".join(b"MTrk" + struct.pack(">I", len(t)) + t for t in tracks)


def test_sustain_pedal_holds_released_notes_and_tempo_changes_are_followed(tmp_path):
    # tempo 60 bpm (1 s per beat): note on at 0, off at 480 ticks (1 s) while the pedal is down; pedal up at 960 (2 s)
    track = (b"\x00\xff\x51\x03\x0f\x42\x40" + b"\x00\xb0\x40\x7f" + b"\x00\x90\x3c\x64"
             + b"\x83\x60\x80\x3c\x00" + b"\x83\x60\xb0\x40\x00" + b"\x00\xff\x2f\x00")  # fmt: skip
    path = tmp_path / "pedal.mid"
    path.write_bytes(_smf(track))
    notes = read_midi(path)
    assert notes["pitch"].tolist() == [60]
    np.testing.assert_allclose([notes["onset"][0], notes["offset"][0]], [0.0, 2.0], atol=1e-6)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p.write_bytes(b"RIFF....WAVEfmt "), "not a Standard MIDI File"),
        (lambda p: p.write_bytes(_smf(b"\x00\xff\x2f\x00")), "holds no notes"),
        (lambda p: p.write_bytes(_smf(b"\x00\x90\x3c", ntracks=1)), "damaged"),
        (lambda p: p.write_bytes(_smf(*[b"\x00\xff\x2f\x00"] * 3, ntracks=10_000)), "10000 tracks"),
        (lambda p: p.write_bytes(_smf(b"\x00\xff\x51\x03\x00\x00\x01\x00\x90\x3c\x64\x60\x80\x3c\x00\x00\xff\x2f\x00")),
         "tempo"),
        (lambda p: p.write_bytes(_smf(b"\x00\x90\x3c\x64\x00\xff\x2f\x00", fmt=2)), "type-2"),
        (lambda p: p.mkdir(), "not a regular file"),
        (lambda p: os.mkfifo(p), "not a regular file"),
        (lambda p: None, "cannot be read"),
    ],
)
def test_hostile_midi_files_are_one_midi_error(tmp_path, make, match):
    path = tmp_path / "song.mid"
    make(path)
    with pytest.raises(MidiError, match=match) as info:
        read_midi(path)
    assert "\n" not in str(info.value)


def test_midi_bytes_of_no_notes_is_a_valid_empty_file(tmp_path):
    path = tmp_path / "empty.mid"
    path.write_bytes(midi_bytes(make_notes([])))
    with pytest.raises(MidiError, match="no notes"):
        read_midi(path)
    assert MAX_TRACKS >= 16
