"""Structure metrics, KAD and note F1 on hand-built note lists with known answers; Basic Pitch's note decoding against the
original code and on synthesised tones of known pitch (when basic-pitch is installed)."""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest

from pdd.runtime.errors import ConfigError
from pdd.training.eval_report import Row, markdown_table
from pdd.training.metrics import kad, median_bandwidth
from pdd.training.structure import (
    METRICS,
    as_notes,
    clip_structure,
    key_clarity,
    note_f1,
    note_f1_many,
    pitch_class_entropy,
    polyphony,
    pulse_clarity,
    set_structure,
    split_notes,
    stepwise_motion,
    structure_ratios,
    top_voice,
)

HAVE_BASIC_PITCH = importlib.util.find_spec("basic_pitch") is not None
C_MAJOR = [60, 62, 64, 65, 67, 69, 71, 72]


def melody(pitches: list[int], step: float = 0.5, length: float = 0.45, start: float = 0.0) -> np.ndarray:
    return np.array([(start + step * i, start + step * i + length, p) for i, p in enumerate(pitches)], dtype=float)


# -- per-clip metrics ----------------------------------------------------------------------------------------------------

def test_a_c_major_scale():
    m = clip_structure(melody(C_MAJOR), 4.0)
    assert m["stepwise_motion"] == 1.0  # every move of a scale is a tone or a semitone
    assert m["note_density"] == 2.0 and m["pitch_range"] == 12.0 and m["polyphony"] == 1.0
    # seven pitch classes of equal duration, C twice: -(1/4 log2 1/4 + 6 · 1/8 log2 1/8) = 0.5 + 2.25
    assert m["pitch_class_entropy"] == pytest.approx(2.75)
    assert m["key_clarity"] > 0.85


def test_key_clarity_separates_a_key_from_a_cluster():
    triads = np.array([(t, t + 1, p) for t, chord in enumerate([(60, 64, 67), (65, 69, 72), (67, 71, 74), (60, 64, 67)])
                       for p in chord], dtype=float)
    chromatic = np.array([(0, 1, 60 + i) for i in range(12)], dtype=float)
    half_cluster = np.array([(0, 1, 60 + i) for i in range(6)], dtype=float)
    assert key_clarity(triads) > 0.8
    assert key_clarity(chromatic) == 0.0  # all twelve equal: no key at all
    assert key_clarity(half_cluster) < 0.5 < key_clarity(triads)
    assert pitch_class_entropy(chromatic) == pytest.approx(np.log2(12))
    assert pitch_class_entropy(melody([60, 72, 48])) == 0.0  # one pitch class in three octaves
    held = np.array([(0, 3, 60), (0, 0.1, 61)], dtype=float)  # duration weighting: a grace note barely counts
    assert pitch_class_entropy(held) < 0.3


def test_pulse_clarity_of_a_click_track_and_of_random_onsets():
    click = melody([76] * 18, step=0.5, length=0.05)  # 120 BPM for 9 s
    rng = np.random.default_rng(0)
    onsets = np.sort(rng.uniform(0, 9, 40))
    scattered = np.stack([onsets, onsets + 0.2, rng.integers(50, 80, 40)], axis=1)
    assert pulse_clarity(click, 9.0) > 0.85
    assert pulse_clarity(scattered, 9.0) < 0.4
    slow = melody([76] * 5, step=2.0, length=0.05)  # a 2-s period is outside the 0.25–1.5 s beat lags
    assert pulse_clarity(slow, 9.0) < 0.3
    assert np.isnan(pulse_clarity(melody([60]), 9.0))  # one onset has no period


def test_top_voice_follows_the_highest_note_over_an_accompaniment():
    tune = melody([72, 74, 76, 74, 72, 72])  # four steps and one repeated note, 50-ms gaps between them
    bass = np.array([(0, 3, 48), (0, 3, 55)], dtype=float)  # held under the whole tune, never the top
    notes = np.concatenate([tune, bass])
    assert top_voice(notes).tolist() == [72, 74, 76, 74, 72, 72]
    assert stepwise_motion(notes) == pytest.approx(4 / 5)  # the repeat is a move, not a step
    held = np.array([(0, 2, 79)], float)  # a long tune note over a running accompaniment that starts under it
    alberti = melody([48, 55, 52, 55], step=0.5, length=0.4)
    after = melody([77], start=2.0)
    assert top_voice(np.concatenate([held, alberti, after])).tolist() == [79, 77]
    legato = np.array([(0, 0.55, 67), (0.5, 1.0, 65)], float)  # a 50-ms overlap: still one falling step
    assert top_voice(legato).tolist() == [67, 65]
    leaps = melody([60, 67, 72, 79])
    assert stepwise_motion(leaps) == 0.0
    assert np.isnan(stepwise_motion(melody([60])))


def test_polyphony_counts_only_sounding_frames_and_range_is_in_semitones():
    notes = np.array([(0, 1, 60), (0, 1, 64), (0, 1, 67), (1, 2, 72), (3, 4, 40)], dtype=float)  # a rest from 2 to 3 s
    assert polyphony(notes, 4.0) == pytest.approx((3 * 100 + 100 + 100) / 300)
    assert clip_structure(notes, 4.0)["pitch_range"] == 32.0


def test_an_empty_clip_has_density_zero_and_nothing_else():
    m = clip_structure(np.zeros((0, 4)), 9.0)
    assert m["note_density"] == 0.0
    assert all(np.isnan(m[k]) for k in METRICS if k != "note_density")


def test_set_means_skip_undefined_clips_and_ratios_are_against_the_reference():
    a = clip_structure(melody(C_MAJOR), 4.0)
    empty = clip_structure(np.zeros((0, 3)), 4.0)
    mean = set_structure([a, empty])
    assert mean["stepwise_motion"] == 1.0 and mean["note_density"] == 1.0  # density is defined (0) on the empty clip
    ref = set_structure([a])
    ratios = structure_ratios(mean, ref)
    assert ratios["note_density"] == 0.5 and ratios["stepwise_motion"] == 1.0
    assert structure_ratios(set_structure([empty]), ref)["key_clarity"] is None


def test_long_recordings_are_measured_window_by_window():
    notes = np.concatenate([melody(C_MAJOR), melody(C_MAJOR, start=4.0), melody([60], start=8.5, length=1.0)])
    windows = split_notes(notes, 10.0, 4.0)
    assert [len(n) for n, _ in windows] == [8, 8] and all(d == 4.0 for _, d in windows)  # the 2-s tail is dropped
    assert windows[1][0][0, 0] == 0.0  # shifted to the window's start
    short = split_notes(notes, 3.0, 4.0)
    assert len(short) == 1 and short[0][1] == 3.0
    crossing = split_notes(np.array([(3.5, 6.0, 60)], float), 8.0, 4.0)
    assert crossing[0][0][0, 1] == 4.0  # cut at the window's end


def test_bad_note_lists_are_refused():
    for bad, message in [(np.zeros((3, 2)), "n, 3"), (np.array([[1.0, 0.5, 60]]), "ends before"),
                         (np.array([[0, np.nan, 60]]), "NaN")]:
        with pytest.raises(ConfigError, match=message):
            as_notes(bad)
    assert as_notes([[0, 1, 60]])[0, 3] == 1.0  # three columns: velocity 1


# -- KAD ---------------------------------------------------------------------------------------------------------------------

def test_kad_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    same = kad(a, b)
    assert abs(same) < 2e-3
    shifted = [kad(a + shift, b) for shift in (0.25, 0.5, 1.0)]
    assert shifted[0] > 5 * abs(same) and shifted[0] < shifted[1] < shifted[2]
    # Unbiased: equal sets score below zero (the within-set means leave out each sample with itself).
    assert kad(a, a) < 0
    draws = [kad(rng.normal(size=(30, 4)), rng.normal(size=(30, 4))) for _ in range(40)]
    assert min(draws) < 0 < max(draws) and abs(np.mean(draws)) < 0.01


def test_kad_bandwidth_and_bad_inputs():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(50, 3))
    assert median_bandwidth(a * 2) == pytest.approx(2 * median_bandwidth(a))
    assert kad(a, a * 1.0 + 3, bandwidth=1.0) == pytest.approx(kad(a, a + 3, bandwidth=1.0))
    for args, message in [((a, rng.normal(size=(50, 4))), "dimensions differ"), ((a[:1], a), "n >= 2"),
                          ((a, a, 0.0), "bandwidth must be positive")]:
        with pytest.raises(ConfigError, match=message):
            kad(*args)
    with pytest.raises(ConfigError, match="identical"):
        median_bandwidth(np.ones((5, 3)))


# -- note F1 -------------------------------------------------------------------------------------------------------------

def test_note_f1_exact_shifted_missing_and_wrong_pitch():
    ref = melody(C_MAJOR)
    assert note_f1(ref, ref).f1 == 1.0
    late = ref.copy()
    late[:, :2] += 0.03
    assert note_f1(ref, late).f1 == 1.0  # within 50 ms
    later = ref.copy()
    later[:, :2] += 0.08
    assert note_f1(ref, later).f1 == 0.0
    assert note_f1(ref, later, onset_tol=0.1).f1 == 1.0
    half = note_f1(ref, ref[::2])
    assert (half.precision, half.recall, half.matched) == (1.0, 0.5, 4)
    assert half.f1 == pytest.approx(2 / 3)
    transposed = ref.copy()
    transposed[:, 2] += 1
    assert note_f1(ref, transposed).f1 == 0.0  # the right time, the wrong key
    doubled = note_f1(ref[:1], np.concatenate([ref[:1], ref[:1]]))
    assert (doubled.matched, doubled.precision, doubled.recall) == (1, 0.5, 1.0)  # one reference note matches once


def test_note_f1_matching_is_maximal_and_empty_sides_are_defined():
    ref = np.array([(0.00, 0.3, 60), (0.06, 0.3, 60)], float)
    est = np.array([(0.04, 0.3, 60), (0.10, 0.3, 60)], float)  # pairing 0.06 with 0.04 first would strand both others
    assert note_f1(ref, est).matched == 2
    assert note_f1(np.zeros((0, 3)), np.zeros((0, 3))).f1 == 1.0
    assert note_f1(ref, np.zeros((0, 3))).f1 == 0.0 and note_f1(np.zeros((0, 3)), est).precision == 0.0
    with pytest.raises(ConfigError, match="tolerance"):
        note_f1(ref, est, onset_tol=-1)


def test_note_f1_over_many_clips_pools_the_counts():
    ref = melody(C_MAJOR)
    pooled = note_f1_many([ref, ref[:2]], [ref, np.zeros((0, 3))])
    assert (pooled.matched, pooled.reference, pooled.estimated) == (8, 10, 8)
    assert pooled.precision == 1.0 and pooled.recall == 0.8  # a mean over clips would say recall 0.5
    assert note_f1_many([], []).f1 == 1.0
    with pytest.raises(ConfigError, match="2 reference note lists but 1"):
        note_f1_many([ref, ref], [ref])


def test_the_table_shows_structure_as_times_real():
    structure = {m: 1.0 for m in METRICS}
    rows = [Row("real vs real", "reference", None, 4, fd_bp=0.1, kad=-0.0004, structure=structure,
                structure_x_real={m: 1.0 for m in METRICS}),
            Row("student@8", "student", 8, 4, fd_bp=0.3, kad=0.0123, structure={**structure, "stepwise_motion": 0.3},
                structure_x_real={**{m: 1.0 for m in METRICS}, "stepwise_motion": 0.3})]
    table = markdown_table(rows, ["a note"], "t")
    assert "| KAD ↓ |" in table and "| 0.0123 |" in table
    assert "top-voice stepwise" in table and "0.300 (0.30×)" in table
    assert "top-voice stepwise" not in markdown_table([Row("x", "generated", None, 2)], [], "t")


# -- Basic Pitch's notes ---------------------------------------------------------------------------------------------------

def _embedder():
    if not HAVE_BASIC_PITCH:
        pytest.skip("needs basic-pitch (pip install --no-deps basic-pitch==0.4.0)")
    from pdd.training.basic_pitch import BasicPitchEmbedder

    return BasicPitchEmbedder(threads=1)


def tones(notes: np.ndarray, seconds: float, rate: int = 22050) -> np.ndarray:
    """Piano-like tones: a fundamental and two harmonics under a fast attack and an exponential decay."""
    t = np.arange(int(seconds * rate)) / rate
    wave = np.zeros_like(t)
    for onset, offset, pitch in notes:
        f0 = 440.0 * 2 ** ((pitch - 69) / 12)
        on = (t >= onset) & (t < offset)
        env = on * np.minimum((t - onset) / 0.005, 1) * np.exp(-(t - onset) * 2.0)
        wave += env * sum(np.sin(2 * np.pi * h * f0 * t) / h ** 1.5 for h in (1, 2, 3))
    return (0.3 * wave / np.abs(wave).max()).astype(np.float32)


def test_synthesised_tones_are_transcribed_at_their_pitches():
    embedder = _embedder()
    played = melody(C_MAJOR, step=0.5, length=0.45)
    notes = embedder.transcribe(tones(played, 4.5), 22050)
    assert notes.shape[1] == 4 and np.all(np.diff(notes[:, 0]) >= 0)
    scores = note_f1(played, notes)
    assert scores.f1 >= 0.85, (scores, notes)
    assert clip_structure(notes, 4.5)["stepwise_motion"] >= 0.8
    blocks, same = embedder.analyse(tones(played, 4.5), 22050)  # one pass, the same notes and embed()'s blocks
    np.testing.assert_array_equal(same, notes)
    np.testing.assert_allclose(blocks, embedder.embed(tones(played, 4.5), 22050), rtol=1e-5, atol=1e-6)
    assert embedder.transcribe(np.zeros(22050, np.float32), 22050).shape == (0, 4)  # silence: no notes, no NaN


def _original_note_creation(monkeypatch):
    """basic-pitch's own note_creation, importable by standing in for the packages a --no-deps install lacks (only
    librosa's frames_to_time is called on the path compared here)."""
    for name in ("mir_eval", "resampy", "pretty_midi"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    librosa, core = types.ModuleType("librosa"), types.ModuleType("librosa.core")
    core.frames_to_time = lambda frames, sr, hop_length: np.asarray(frames) * hop_length / sr
    librosa.core = core
    monkeypatch.setitem(sys.modules, "librosa", librosa)
    monkeypatch.setitem(sys.modules, "librosa.core", core)
    sys.modules.get("pretty_midi").PrettyMIDI = object
    monkeypatch.delitem(sys.modules, "basic_pitch.note_creation", raising=False)
    from basic_pitch import note_creation

    return note_creation


def test_the_note_decoder_matches_basic_pitch_exactly(monkeypatch):
    embedder = _embedder()
    from pdd.training.basic_pitch import MIN_NOTE_FRAMES, frame_times, posteriors_to_notes

    original = _original_note_creation(monkeypatch)
    rng = np.random.default_rng(0)
    onsets = np.sort(rng.uniform(0, 5.5, 24))
    played = np.stack([onsets, onsets + rng.uniform(0.2, 1.0, 24), rng.integers(40, 90, 24)], axis=1)
    _, note, onset = embedder._frames(tones(played, 6.0), 22050, posteriors=True)
    ours = posteriors_to_notes(note, onset)
    events = original.output_to_notes_polyphonic(note.astype(np.float64), onset.astype(np.float64), onset_thresh=0.5,
                                                 frame_thresh=0.3, min_note_len=MIN_NOTE_FRAMES, infer_onsets=True,
                                                 max_freq=None, min_freq=None, melodia_trick=True)
    times = original.model_frames_to_time(note.shape[0])
    theirs = np.array([(times[s], times[e], p, a) for s, e, p, a in events])
    theirs = theirs[np.lexsort((theirs[:, 2], theirs[:, 0]))]
    assert len(ours) >= 15
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(frame_times(600), original.model_frames_to_time(600), atol=1e-12)
