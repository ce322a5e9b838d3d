"""`pdd-data prepare` with piano rolls: a roll per clip from the MIDI beside each audio file, cut at the clip's offset;
files without MIDI skipped under --rolls midi; the roll shards checked like the mel shards; the modes on the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from pdd.runtime.config import get_preset
from pdd.runtime.errors import ConfigError
from pdd.runtime.midi import write_midi
from pdd.runtime.roll import ONSET, RollConfig, notes_to_roll
from pdd.training.cache import CacheError, open_cache
from pdd.training.prepare import PrepareParams, prepare_cache
from pdd.training.synthetic_notes import render_notes, scale_notes

TINY = get_preset("tiny")


def _piece(folder, name, seconds, seed, midi=True):
    notes = scale_notes(seconds, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(str(folder / f"{name}.wav"), render_notes(notes, TINY.sample_rate, seconds), TINY.sample_rate)
    if midi:
        write_midi(folder / f"{name}.mid", notes)
    return notes


def test_rolls_follow_the_midi_beside_each_file_at_each_clips_offset(tmp_path):
    music = tmp_path / "music"
    notes = {f"p{i}.wav": _piece(music, f"p{i}", 3.0 * TINY.clip_seconds, seed=i) for i in range(4)}
    prepare_cache(music, tmp_path / "cache", TINY, PrepareParams(heldout_fraction=0.25, silence_db=-80))
    cache = open_cache(tmp_path / "cache")
    assert cache.has_rolls and cache.roll_source == "midi" and cache.roll_config == RollConfig.for_audio(TINY)
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert index["roll"]["config"]["frames"] == TINY.frames
    for split in ("train", "heldout"):
        rolls, sources, offsets = cache.rolls(split), cache.sources(split), cache.offsets(split)
        assert rolls.shape == (cache.num_clips(split), *cache.roll_config.shape) and rolls.dtype == np.uint8
        for roll, source, offset in zip(rolls, sources, offsets):
            expected = notes_to_roll(notes[source], cache.roll_config, start=offset / TINY.sample_rate)
            np.testing.assert_array_equal(roll, expected.astype(np.uint8))
            assert roll[ONSET].sum() > 0


def test_rolls_midi_skips_files_without_midi_and_none_keeps_no_rolls(tmp_path):
    music = tmp_path / "music"
    for i in range(3):
        _piece(music, f"p{i}", 2.0 * TINY.clip_seconds, seed=i, midi=i != 1)
    report = prepare_cache(music, tmp_path / "cache", TINY, PrepareParams(heldout_fraction=0.0, silence_db=-80, rolls="midi"))
    assert [s["file"] for s in report.skipped_files] == ["p1.wav"]
    assert "no MIDI file beside it" in report.skipped_files[0]["reason"]
    plain = prepare_cache(music, tmp_path / "plain", TINY, PrepareParams(heldout_fraction=0.0, silence_db=-80, rolls="none"))
    assert not plain.skipped_files and not open_cache(tmp_path / "plain").has_rolls
    with pytest.raises(CacheError, match="no piano rolls"):
        open_cache(tmp_path / "plain").rolls("train")
    with pytest.raises(ConfigError, match="--rolls"):
        PrepareParams(rolls="sometimes").validate()


def test_a_damaged_roll_shard_or_index_is_refused(tmp_path):
    music = tmp_path / "music"
    _piece(music, "p0", 2.0 * TINY.clip_seconds, seed=0)
    prepare_cache(music, tmp_path / "cache", TINY, PrepareParams(heldout_fraction=0.0, silence_db=-80))
    shard = next((tmp_path / "cache").glob("train-*.roll.bin"))
    shard.write_bytes(shard.read_bytes()[:-1])
    with pytest.raises(CacheError, match="roll.bin has"):
        open_cache(tmp_path / "cache")
    index_path = tmp_path / "cache" / "index.json"
    index = json.loads(index_path.read_text())
    index["splits"]["train"]["roll_file"] = "../../etc/passwd"
    index_path.write_text(json.dumps(index))
    with pytest.raises(CacheError):
        open_cache(tmp_path / "cache")
    index["splits"]["train"]["roll_file"] = shard.name
    index["roll"]["source"] = "guesswork"
    index_path.write_text(json.dumps(index))
    with pytest.raises(CacheError, match="corrupt"):
        open_cache(tmp_path / "cache")


def test_editing_the_midi_rebuilds_the_cache(tmp_path):
    music = tmp_path / "music"
    _piece(music, "p0", 2.0 * TINY.clip_seconds, seed=0)
    params = PrepareParams(heldout_fraction=0.0, silence_db=-80)
    prepare_cache(music, tmp_path / "cache", TINY, params)
    assert prepare_cache(music, tmp_path / "cache", TINY, params).up_to_date
    write_midi(music / "p0.mid", scale_notes(2.0 * TINY.clip_seconds, seed=5), overwrite=True)
    assert not prepare_cache(music, tmp_path / "cache", TINY, params).up_to_date


def _have_basic_pitch() -> bool:
    try:
        from pdd.training.basic_pitch import find_model_file

        find_model_file()
        return True
    except Exception:  # noqa: BLE001 — any reason it is missing means skip
        return False


@pytest.mark.skipif(not _have_basic_pitch(), reason="basic-pitch (its bundled ONNX model) is not installed")
def test_transcribe_makes_rolls_for_audio_without_midi_and_a_renderer_trains_on_them(tmp_path):
    from pdd.training.train import TrainConfig, train

    music = tmp_path / "music"
    notes = {f"p{i}.wav": _piece(music, f"p{i}", 3.0 * TINY.clip_seconds, seed=i, midi=False) for i in range(3)}
    prepare_cache(music, tmp_path / "cache", TINY, PrepareParams(heldout_fraction=0.0, silence_db=-80, rolls="transcribe"))
    cache = open_cache(tmp_path / "cache")
    assert cache.roll_source == "transcription"
    rolls, sources, offsets = cache.rolls("train"), cache.sources("train"), cache.offsets("train")
    hits = total = 0
    for roll, source, offset in zip(rolls, sources, offsets):
        exact = notes_to_roll(notes[source], cache.roll_config, start=offset / TINY.sample_rate)
        total += int(exact[ONSET].sum())
        # a transcribed onset within one frame and at the same key counts
        near = np.maximum.reduce([np.roll(roll[ONSET], k, axis=1) for k in (-1, 0, 1)])
        hits += int((exact[ONSET] * near).sum())
    assert total > 10 and hits / total > 0.6, (hits, total)
    config = TrainConfig(data=str(tmp_path / "cache"), preset="tiny", batch_size=4, steps=3, warmup_steps=1,
                         preview_every=0, threads=1, log_every=1, checkpoint_every=3, condition="notes")  # fmt: skip
    assert train(config, tmp_path / "run", progress=False).step == 3


def test_held_out_audio_is_never_read_from_outside_the_folder_the_cache_was_made_from(tmp_path):
    from pdd.training.heldout import original_clips

    music = tmp_path / "music"
    _piece(music, "p0", 2.0 * TINY.clip_seconds, seed=0)
    prepare_cache(music, tmp_path / "cache", TINY, PrepareParams(heldout_fraction=0.0, silence_db=-80, rolls="none"))
    cache = open_cache(tmp_path / "cache")
    assert original_clips(cache, "train", np.array([0])) is not None  # the real audio, from the recorded folder
    # the same audio outside the folder (so only the path, not the mel check, can refuse it), named by a hostile index
    (tmp_path / "secret.wav").write_bytes((music / "p0.wav").read_bytes())
    cache.index["sources"][0] = "../secret.wav"
    assert original_clips(cache, "train", np.array([0])) is None
