"""`prepare_cache`: any folder of audio → mel cache, with every bad input of the data issue (each skipped or one clear error)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf

from pdd.runtime.config import get_preset
from pdd.runtime.errors import AudioError, ConfigError
from pdd.runtime.mel import log_mel
from pdd.training import prepare as prepare_module
from pdd.training.cache import CacheError, open_cache, synthetic_piece, write_synthetic_cache
from pdd.training.prepare import PrepareParams, clip_rms_db, prepare_cache, split_by_source

TINY = get_preset("tiny")
SR = TINY.sample_rate


def _piece(seconds: float, seed: int, rate: int = SR, level: float = 0.3) -> np.ndarray:
    config = TINY if rate == SR else type(TINY)(**{**TINY.to_dict(), "name": "x", "sample_rate": rate, "fmax": None})
    return synthetic_piece(config, seconds, seed=seed, level=level)


def _write(path, wave, rate=SR, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, rate, **kwargs)
    return path


@pytest.fixture
def music_dir(tmp_path):
    """Six good pieces (one nested, one FLAC) of 2–4 clips each."""
    root = tmp_path / "music"
    for i in range(5):
        _write(root / f"piece{i}.wav", _piece(3.2 + 0.5 * i, seed=i))
    _write(root / "nested" / "deeper" / "piece5.flac", _piece(4.0, seed=5))
    return root


def _params(**kwargs) -> PrepareParams:
    return PrepareParams(**{"heldout_fraction": 0.34, **kwargs})


def test_prepare_builds_a_cache_split_by_source_file(music_dir, tmp_path):
    report = prepare_cache(music_dir, tmp_path / "cache", TINY, _params())
    cache = open_cache(tmp_path / "cache")
    assert cache.config == TINY and cache.splits == ["train", "heldout"]
    assert report.files_found == report.files_read == 6 and not report.skipped_files
    train, held = set(cache.sources("train")), set(cache.sources("heldout"))
    assert train and held and not train & held, "a source file has clips on both sides of the split"
    assert train | held == {f"piece{i}.wav" for i in range(5)} | {"nested/deeper/piece5.flac"}
    assert report.splits["train"]["files"] + report.splits["heldout"]["files"] == 6
    n_clips = cache.clips("train").shape[0] + cache.clips("heldout").shape[0]
    assert report.clips_kept == n_clips
    # every whole clip of every file, nothing more: floor(samples - clip) / hop + 1
    expected = sum((int(round((3.2 + 0.5 * i) * SR)) - TINY.clip_samples) // TINY.clip_samples + 1 for i in range(5))
    expected += (int(4.0 * SR) - TINY.clip_samples) // TINY.clip_samples + 1
    assert n_clips == expected
    assert report.splits["train"]["hours"] == pytest.approx(cache.clips("train").shape[0] * TINY.clip_seconds / 3600, abs=1e-4)
    assert cache.index["params"]["seed"] == 0 and cache.index["split_by"] == "source file"
    # the cached clip is the runtime front end applied to the file's samples at the recorded offset
    wave = sf.read(str(music_dir / "piece3.wav"), dtype="float32")[0]
    sources, offsets = cache.sources("train") + cache.sources("heldout"), np.concatenate([cache.offsets("train"), cache.offsets("heldout")])
    everything = np.concatenate([cache.clips("train"), cache.clips("heldout")])
    k = sources.index("piece3.wav") + 1
    start = offsets[k]
    np.testing.assert_allclose(everything[k].astype(np.float32), log_mel(wave[start : start + TINY.clip_samples], TINY), atol=2e-3)


def test_hop_sets_overlap_and_is_whole_stft_hops(music_dir, tmp_path):
    half = prepare_cache(music_dir, tmp_path / "half", TINY, _params(hop_seconds=TINY.clip_seconds / 2))
    full = prepare_cache(music_dir, tmp_path / "full", TINY, _params())
    assert half.clips_kept > 1.7 * full.clips_kept
    offsets = open_cache(tmp_path / "half").offsets("train")
    assert np.all(offsets % TINY.hop_length == 0)
    assert PrepareParams(hop_seconds=0.001).hop_samples(TINY) == TINY.hop_length


def test_split_is_seeded_and_recorded():
    names = [f"f{i}.wav" for i in range(20)]
    a = split_by_source(names, 0.25, seed=1)
    assert a == split_by_source(names, 0.25, seed=1)
    assert a != split_by_source(names, 0.25, seed=2)
    assert sum(v == "heldout" for v in a.values()) == 5
    assert list(split_by_source(["only.wav"], 0.5, 0).values()) == ["train"]
    assert sorted(split_by_source(["a", "b"], 0.01, 0).values()) == ["heldout", "train"]
    assert set(split_by_source(names, 0.0, 0).values()) == {"train"}


def test_bad_files_are_skipped_with_reasons(tmp_path):
    root = tmp_path / "mixed"
    _write(root / "good.wav", _piece(3.5, seed=1))
    _write(root / "stereo_96k_24bit.wav", np.stack([_piece(3.5, 2, 96000), _piece(3.5, 3, 96000)], axis=1), 96000, subtype="PCM_24")
    _write(root / "low_8k.wav", _piece(3.5, seed=4, rate=8000), 8000)
    _write(root / "float.flac", _piece(3.5, seed=5), subtype="PCM_24")
    (root / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + os.urandom(64))
    (root / "empty.wav").write_bytes(b"")
    (root / "text.wav").write_text("this is not audio, just a text file with the wrong name\n")
    _write(root / "one_sample_8k.wav", np.array([0.5], np.float32), 8000)
    _write(root / "one_sample.wav", np.array([0.5], np.float32))
    _write(root / "short.wav", _piece(0.5, seed=6))
    _write(root / "silent.wav", np.zeros(4 * SR, np.float32))
    (root / "notes.txt").write_text("ignored: not an audio extension")
    (root / ".hidden.wav").write_text("ignored: hidden")

    report = prepare_cache(root, tmp_path / "cache", TINY, _params(heldout_fraction=0.2))
    reasons = {item["file"]: item["reason"] for item in report.skipped_files}
    assert set(reasons) == {"corrupt.wav", "empty.wav", "text.wav", "one_sample_8k.wav", "one_sample.wav", "short.wav", "silent.wav"}
    assert "not a readable audio file" in reasons["corrupt.wav"]
    assert "empty" in reasons["empty.wav"]
    assert "not a readable audio file" in reasons["text.wav"]
    assert "resample" in reasons["one_sample_8k.wav"]
    assert "shorter than one clip" in reasons["one_sample.wav"] and "shorter than one clip" in reasons["short.wav"]
    assert "silence threshold" in reasons["silent.wav"]
    assert all("\n" not in r for r in reasons.values())
    assert report.files_found == 11 and report.files_read == 7
    assert report.clips_dropped["silent"] == 2
    cache = open_cache(tmp_path / "cache")
    used = set(cache.sources("train")) | set(cache.sources("heldout"))
    assert used == {"good.wav", "stereo_96k_24bit.wav", "low_8k.wav", "float.flac"}
    data = np.concatenate([cache.clips("train"), cache.clips("heldout")]).astype(np.float32)
    assert np.all(np.isfinite(data)) and data.min() >= -1 and data.max() <= 1
    # ordinary levels are neither clipped at the top nor crushed at the floor
    assert 0.2 < data.max() < 1.0 and np.mean(data <= -0.999) < 0.5
    assert "skipped" in report.summary_line() and "dropped as silent" in report.summary_line()
    assert json.loads((tmp_path / "cache" / "index.json").read_text())["report"]["skipped_files"] == report.skipped_files


def test_silence_threshold_is_reported_and_applied(tmp_path):
    root = tmp_path / "quiet"
    two_clips = 2 * TINY.clip_seconds
    loud, quiet = _piece(two_clips, seed=1, level=0.3), _piece(two_clips, seed=2, level=0.3) * 1e-3
    _write(root / "a.wav", np.concatenate([loud, quiet]))
    report = prepare_cache(root, tmp_path / "c", TINY, _params(silence_db=-50))
    levels = clip_rms_db(np.stack([loud[: TINY.clip_samples], quiet[: TINY.clip_samples]]))
    assert levels[0] > -50 > levels[1]
    assert report.clips_dropped["silent"] == 2 and report.clips_kept == 2
    report = prepare_cache(root, tmp_path / "c2", TINY, _params(silence_db=-120))
    assert report.clips_dropped["silent"] == 0 and report.clips_kept == 4


def test_rerun_is_a_noop_and_changed_input_rebuilds(music_dir, tmp_path):
    out = tmp_path / "cache"
    prepare_cache(music_dir, out, TINY, _params())
    index_before = (out / "index.json").read_bytes()
    shards = {p.name: p.stat().st_mtime_ns for p in out.glob("*.bin")}
    again = prepare_cache(music_dir, out, TINY, _params())
    assert again.up_to_date and again.clips_kept > 0
    assert (out / "index.json").read_bytes() == index_before
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.bin")} == shards
    _write(music_dir / "added.wav", _piece(3.2, seed=9))
    rebuilt = prepare_cache(music_dir, out, TINY, _params())
    assert not rebuilt.up_to_date and rebuilt.files_found == 7
    assert set(p.name for p in out.glob("*.bin")).isdisjoint(shards)
    assert not prepare_cache(music_dir, out, TINY, _params(seed=5)).up_to_date


def test_changed_preset_is_refused_without_force(music_dir, tmp_path):
    out = write_synthetic_cache(tmp_path / "cache", TINY, 4, 2)
    paper = get_preset("paper")
    with pytest.raises(CacheError) as exc:
        prepare_cache(music_dir, out, paper, _params())
    message = str(exc.value)
    assert "preset 'tiny'" in message and "--force" in message and "\n" not in message
    assert open_cache(out).config == TINY  # untouched
    other = type(TINY)(**{**TINY.to_dict(), "top_db": 60.0})
    with pytest.raises(CacheError, match="top_db 80.0 → 60.0"):
        prepare_cache(music_dir, out, other, _params())
    prepare_cache(music_dir, out, other, _params(), force=True)
    assert open_cache(out).config == other


def test_corrupt_or_foreign_output_folder(music_dir, tmp_path):
    out = write_synthetic_cache(tmp_path / "cache", TINY, 4, 2)
    (out / "index.json").write_text("{broken")
    with pytest.raises(CacheError, match="corrupt.*--force"):
        prepare_cache(music_dir, out, TINY, _params())
    prepare_cache(music_dir, out, TINY, _params(), force=True)
    open_cache(out)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(CacheError, match="not a mel cache"):
        prepare_cache(music_dir, foreign, TINY, _params())
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_folder_without_audio_and_missing_folder(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("no audio here")
    with pytest.raises(AudioError, match="no audio files"):
        prepare_cache(tmp_path / "docs", tmp_path / "cache", TINY)
    with pytest.raises(AudioError, match="no such folder"):
        prepare_cache(tmp_path / "nope", tmp_path / "cache", TINY)
    assert not (tmp_path / "cache").exists()


def test_only_unusable_files_is_an_error_and_writes_nothing(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "a.wav").write_bytes(b"")
    _write(root / "b.wav", np.zeros(4 * SR, np.float32))
    with pytest.raises(AudioError, match="no usable clips"):
        prepare_cache(root, tmp_path / "cache", TINY)
    assert not (tmp_path / "cache" / "index.json").exists()
    assert not list((tmp_path / "cache").glob("*.bin")) and not list((tmp_path / "cache").glob(".*.tmp"))


def test_unwritable_output_folder(music_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(CacheError, match="cannot write to"):
        prepare_cache(music_dir, blocker / "cache", TINY, _params())
    with pytest.raises(CacheError, match="not a folder"):
        prepare_cache(music_dir, blocker, TINY, _params())


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_output_folder(music_dir, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(CacheError, match="cannot write to"):
            prepare_cache(music_dir, locked / "cache", TINY, _params())
    finally:
        locked.chmod(0o700)


def test_interrupted_run_leaves_the_previous_cache_intact(music_dir, tmp_path, monkeypatch):
    out = tmp_path / "cache"
    prepare_cache(music_dir, out, TINY, _params())
    before = {s: np.array(open_cache(out).clips(s)) for s in ("train", "heldout")}
    index_before = (out / "index.json").read_bytes()
    _write(music_dir / "new.wav", _piece(3.2, seed=7))
    calls = {"n": 0}
    real = prepare_module.log_mel

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(prepare_module, "log_mel", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_cache(music_dir, out, TINY, _params())
    assert (out / "index.json").read_bytes() == index_before
    cache = open_cache(out)
    for split, data in before.items():
        np.testing.assert_array_equal(np.asarray(cache.clips(split)), data)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_corpus_folder_uses_only_listed_works(music_dir, tmp_path):
    manifest = {"format": "pdd-corpus/1", "works": [{"file": "piece0.wav"}, {"file": "nested/deeper/piece5.flac"}]}
    (music_dir / "corpus.json").write_text(json.dumps(manifest))
    report = prepare_cache(music_dir, tmp_path / "cache", TINY, _params(heldout_fraction=0.5))
    assert report.files_found == 2 and any("corpus folder" in n for n in report.notes)


def test_cache_inside_the_audio_folder_is_not_read_back(music_dir):
    prepare_cache(music_dir, music_dir / "cache", TINY, _params())
    assert prepare_cache(music_dir, music_dir / "cache", TINY, _params()).up_to_date


@pytest.mark.parametrize(
    "params",
    [
        PrepareParams(hop_seconds=0.0),
        PrepareParams(hop_seconds=float("nan")),
        PrepareParams(heldout_fraction=1.0),
        PrepareParams(heldout_fraction=-0.1),
        PrepareParams(silence_db=3.0),
        PrepareParams(dtype="int8"),
    ],
)
def test_bad_parameters(params, music_dir, tmp_path):
    with pytest.raises(ConfigError):
        prepare_cache(music_dir, tmp_path / "cache", TINY, params)


@pytest.mark.parametrize("fmt, subtype, suffix", [("OGG", "VORBIS", ".ogg"), ("MP3", "MPEG_LAYER_III", ".mp3")])
def test_compressed_formats_are_read(tmp_path, fmt, subtype, suffix):
    if fmt not in sf.available_formats():
        pytest.skip(f"this libsndfile cannot write {fmt}")
    root = tmp_path / "lossy"
    _write(root / f"song{suffix}", _piece(3.5, seed=8, rate=22050), 22050, format=fmt, subtype=subtype)
    report = prepare_cache(root, tmp_path / "cache", TINY, _params(heldout_fraction=0.0))
    assert report.files_read == 1 and not report.skipped_files and report.clips_kept == 2
    assert open_cache(tmp_path / "cache").sources("train") == [f"song{suffix}"] * 2
