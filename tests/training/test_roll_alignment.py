"""Rolls line up with the audio rendered from the same MIDI: FluidSynth plays a note's attack on the roll's onset frame
(measured, not assumed: the steepest rise of the rendered mel's energy falls within one frame of the roll's onset)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pdd.runtime.config import get_preset
from pdd.runtime.mel import log_mel
from pdd.runtime.midi import write_midi
from pdd.runtime.roll import ONSET, RollConfig, make_notes, notes_to_roll
from pdd.training import corpus as corpus_module
from pdd.training.render_score import render_midi

HAVE_FLUIDSYNTH = shutil.which("fluidsynth") is not None and any(Path(p).is_file() for p in corpus_module.SOUNDFONT_CANDIDATES)


def attack_frames(mel: np.ndarray, onset_frames: list[int], search: int = 4) -> list[int]:
    """For each expected onset frame, the frame of the steepest rise in mean mel level within ±`search` frames."""
    level = mel.mean(axis=0)
    rise = np.diff(level, prepend=level[0])
    return [k - search + int(np.argmax(rise[k - search : k + search + 1])) for k in onset_frames]


@pytest.mark.skipif(not HAVE_FLUIDSYNTH, reason="fluidsynth and a GM soundfont are not installed")
def test_rendered_attacks_fall_within_one_frame_of_the_roll_onsets(tmp_path):
    config = get_preset("paper")
    rolls = RollConfig.for_audio(config)
    # isolated notes at times that are not on the frame grid, across the keyboard
    times = [0.5 + 0.61 * i + 0.007 * i for i in range(12)]
    notes = make_notes([(t, t + 0.3, 36 + 5 * i, 100) for i, t in enumerate(times)])
    midi = write_midi(tmp_path / "probe.mid", notes)
    wave = render_midi(midi, config.sample_rate, str(corpus_module.find_soundfont()), corpus_module.find_fluidsynth(), tmp_path)
    wave = np.pad(wave, (0, max(0, config.clip_samples - wave.shape[0])))[: config.clip_samples]
    mel = log_mel(wave[None], config)[0]
    roll_onsets = [int(np.flatnonzero(notes_to_roll(notes[i : i + 1], rolls)[ONSET].any(axis=0))[0]) for i in range(len(notes))]
    lags = np.array(attack_frames(mel, roll_onsets)) - np.array(roll_onsets)
    print("attack lag (frames):", lags.tolist())
    assert np.all(np.abs(lags) <= 1), lags.tolist()
