"""`pdd-data corpus` library: selection, tool discovery, the time-limited process pool, and (where FluidSynth is installed)
a real render of two small Bach chorales — deterministic, re-run skips done work, failures listed with the reason."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pdd.runtime.errors import ConfigError
from pdd.runtime.midi import read_midi
from pdd.training import corpus as corpus_module
from pdd.training.corpus import (
    APT_INSTALL,
    CorpusError,
    Work,
    find_fluidsynth,
    find_soundfont,
    render_corpus,
    select_works,
)
from pdd.training.process_pool import run_limited
from pdd.training.render_score import peak_normalise, score_to_midi

HAVE_FLUIDSYNTH = shutil.which("fluidsynth") is not None and any(Path(p).is_file() for p in corpus_module.SOUNDFONT_CANDIDATES)
needs_fluidsynth = pytest.mark.skipif(not HAVE_FLUIDSYNTH, reason="fluidsynth and a GM soundfont are not installed")
CHORALES = ["bach/bwv10.7", "bach/bwv101.7"]  # two short chorales (~50 s of audio each), seconds to render


# -- selection ------------------------------------------------------------------------------------------------------------


def test_default_selection_is_deterministic_and_interleaved():
    works = select_works()
    assert works == select_works()
    assert len(works) > 300
    first = [w.composer for w in works[:4]]
    assert first == ["bach", "beethoven", "mozart", "haydn"]
    ids = [w.id for w in works]
    assert len(ids) == len(set(ids))
    assert not any(w.source.endswith(".rntxt") for w in works)


def test_one_file_per_work_preferring_musicxml():
    beethoven = {w.id: w for w in select_works(["beethoven"])}
    # the corpus holds this movement as both .krn and .mxl
    assert Path(beethoven["beethoven/opus59no1/movement1"].source).suffix == ".mxl"


def test_limit_and_composer_errors():
    assert [w.composer for w in select_works(["bach", "joplin"], limit=3)] == ["bach", "joplin", "bach"]
    with pytest.raises(CorpusError, match="no scores by 'nobody'"):
        select_works(["nobody"])
    with pytest.raises(CorpusError, match="limit"):
        select_works(["bach"], limit=0)
    with pytest.raises(CorpusError, match="no composers"):
        select_works([" ", ""])


# -- tools ----------------------------------------------------------------------------------------------------------------


def test_missing_fluidsynth_names_the_install_command(monkeypatch):
    monkeypatch.setattr(corpus_module.shutil, "which", lambda name: None)
    with pytest.raises(CorpusError) as exc:
        find_fluidsynth()
    assert APT_INSTALL in str(exc.value) and "\n" not in str(exc.value)
    assert "apt-get install --no-install-recommends fluidsynth timgm6mb-soundfont" in APT_INSTALL


def test_missing_soundfont(monkeypatch, tmp_path):
    monkeypatch.setattr(corpus_module, "SOUNDFONT_CANDIDATES", (str(tmp_path / "none.sf2"),))
    with pytest.raises(CorpusError) as exc:
        find_soundfont()
    assert APT_INSTALL in str(exc.value) and "--soundfont" in str(exc.value)
    with pytest.raises(CorpusError, match="does not exist"):
        find_soundfont(tmp_path / "missing.sf2")
    font = tmp_path / "mine.sf2"
    font.write_bytes(b"x")
    assert find_soundfont(font) == font


def test_peak_normalise():
    wave = np.array([0.0, 0.1, -0.15, 0.05], np.float32)
    out = peak_normalise(wave, -1.0)
    assert np.max(np.abs(out)) == pytest.approx(10 ** (-1 / 20), rel=1e-6)
    with pytest.raises(ValueError, match="silent"):
        peak_normalise(np.zeros(10, np.float32), -1.0)


# -- the time-limited pool ------------------------------------------------------------------------------------------------


def _sleep_then_return(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


def _fail(message: str) -> None:
    raise ValueError(message)


def _die() -> None:
    os._exit(3)


def test_pool_returns_results_errors_and_timeouts():
    results = {}
    tasks = [
        ("fast", _sleep_then_return, (0.0, 1)),
        ("bad", _fail, ("duplicate time signature\nsecond line",)),
        ("slow", _sleep_then_return, (30.0, 2)),
        ("dies", _die, ()),
        ("fast2", _sleep_then_return, (0.05, 3)),
    ]
    started = time.monotonic()
    run_limited(tasks, workers=2, time_limit=1.0, on_result=lambda k, s, v: results.__setitem__(k, (s, v)))
    assert time.monotonic() - started < 10
    assert results["fast"] == ("ok", 1) and results["fast2"] == ("ok", 3)
    assert results["bad"] == ("error", "ValueError: duplicate time signature")
    assert results["slow"][0] == "error" and results["slow"][1].startswith("timed out after 1 s")
    assert results["dies"][0] == "error" and "worker died" in results["dies"][1]


def test_pool_stops_when_asked():
    results = []
    tasks = [(str(i), _sleep_then_return, (0.0, i)) for i in range(6)]
    run_limited(tasks, 1, 5.0, lambda k, s, v: results.append(k), should_stop=lambda: len(results) >= 2)
    assert 2 <= len(results) < 6


# -- score → MIDI -------------------------------------------------------------------------------------------------------


def test_score_to_midi_puts_every_part_on_piano(tmp_path):
    from music21 import converter, corpus, instrument

    source = corpus.getWork("bach/bwv10.7")
    quarters = score_to_midi(source, tmp_path / "a.mid")
    assert quarters > 10
    back = converter.parse(str(tmp_path / "a.mid"))
    programs = {i.midiProgram for i in back.recurse().getElementsByClass(instrument.Instrument)}
    assert programs == {0}
    assert len(back.parts) == 4


def test_badly_formed_repeats_render_as_written(tmp_path):
    from music21 import corpus, repeat

    source = corpus.getWork("chopin/mazurka06-2")  # music21 refuses to expand its repeats (skipped by pdd-data before)
    with pytest.raises(repeat.ExpanderException):
        corpus.parse(source).expandRepeats()
    quarters = score_to_midi(source, tmp_path / "a.mid")
    assert quarters > 100 and (tmp_path / "a.mid").stat().st_size > 1000  # the whole mazurka, each section once


def test_unparseable_score_raises(tmp_path):
    bad = tmp_path / "broken.musicxml"
    bad.write_text("<score-partwise><part-list></part-list><this is not xml")
    with pytest.raises(Exception):
        score_to_midi(bad, tmp_path / "b.mid")


# -- real renders ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def two_chorales(monkeypatch):
    works = [w for w in select_works(["bach"]) if w.id in CHORALES]
    assert [w.id for w in works] == CHORALES
    monkeypatch.setattr(corpus_module, "select_works", lambda composers, limit: works[: limit or None])
    return works


@needs_fluidsynth
def test_render_is_deterministic_and_rerun_skips_done_work(tmp_path, two_chorales):
    out = tmp_path / "corpus"
    report = render_corpus(out, ["bach"], time_limit=60)
    assert [e["id"] for e in report.rendered] == CHORALES and not report.skipped
    manifest = json.loads((out / "corpus.json").read_text())
    assert manifest["format"] == "pdd-corpus/1" and manifest["settings"]["soundfont"].endswith(".sf2")
    for entry in manifest["works"]:
        wave, rate = sf.read(str(out / entry["file"]), dtype="float32")
        assert rate == 22050 and wave.ndim == 1
        assert entry["seconds"] == pytest.approx(wave.shape[0] / rate, abs=1e-3)
        assert 20 < entry["seconds"] < 200
        assert np.max(np.abs(wave)) == pytest.approx(10 ** (-1 / 20), abs=2e-3)  # peak-normalised to -1 dBFS
        notes = read_midi(out / entry["midi"])  # the rendered MIDI is kept beside its audio, for the piano rolls
        assert entry["midi"] == entry["file"][: -len(".flac")] + ".mid" and notes.size > 20
        assert entry["seconds"] - 4.0 < notes["offset"].max() < entry["seconds"]  # the render rings out after the last note
    assert manifest["hours"] == pytest.approx(sum(e["seconds"] for e in manifest["works"]) / 3600, abs=1e-4)

    manifest_bytes = (out / "corpus.json").read_bytes()
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.flac")}
    again = render_corpus(out, ["bach"], time_limit=60)
    assert not again.rendered and len(again.reused) == 2
    assert (out / "corpus.json").read_bytes() == manifest_bytes
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.flac")} == mtimes

    elsewhere = tmp_path / "corpus2"
    render_corpus(elsewhere, ["bach"], time_limit=60, workers=1)
    assert (elsewhere / "corpus.json").read_bytes() == manifest_bytes  # same arguments, same files and manifest


@needs_fluidsynth
def test_damaged_render_is_redone_and_other_settings_refused(tmp_path, two_chorales):
    out = tmp_path / "corpus"
    render_corpus(out, ["bach"], limit=1, time_limit=60)
    target = out / "bach" / "bwv10.7.flac"
    good = target.read_bytes()
    target.write_bytes(good[:1000])
    report = render_corpus(out, ["bach"], limit=1, time_limit=60)
    assert [e["id"] for e in report.rendered] == ["bach/bwv10.7"]
    assert target.read_bytes() == good
    target.with_suffix(".mid").unlink()  # a render whose notes are missing (or from before they were kept) is redone
    assert [e["id"] for e in render_corpus(out, ["bach"], limit=1, time_limit=60).rendered] == ["bach/bwv10.7"]
    assert target.with_suffix(".mid").is_file()
    with pytest.raises(CorpusError, match="other settings.*peak_dbfs.*--force"):
        render_corpus(out, ["bach"], limit=1, peak_dbfs=-3.0)
    forced = render_corpus(out, ["bach"], limit=1, peak_dbfs=-3.0, force=True, time_limit=60)
    assert len(forced.rendered) == 1


@needs_fluidsynth
def test_failing_and_slow_scores_are_skipped_and_listed(tmp_path, monkeypatch):
    bad = tmp_path / "broken.musicxml"
    bad.write_text("<score-partwise><this is not xml")
    works = [Work("test/broken", "test", str(bad)), *[w for w in select_works(["bach"]) if w.id == CHORALES[0]]]
    monkeypatch.setattr(corpus_module, "select_works", lambda composers, limit: works)
    out = tmp_path / "corpus"
    report = render_corpus(out, ["bach"], time_limit=60)
    assert [e["id"] for e in report.rendered] == [CHORALES[0]]
    assert [s["id"] for s in report.skipped] == ["test/broken"] and report.skipped[0]["reason"]
    manifest = json.loads((out / "corpus.json").read_text())
    assert manifest["skipped"] == report.skipped
    # a parse failure is remembered (not retried); the rendered work is reused
    again = render_corpus(out, ["bach"], time_limit=60)
    assert again.skipped == report.skipped and len(again.reused) == 1 and not again.rendered
    # … unless an older renderer recorded it: a newer pdd may render what it failed on, so it is tried again
    older = json.loads((out / "corpus.json").read_text())
    del older["renderer"]
    (out / "corpus.json").write_text(json.dumps(older))
    retry = render_corpus(out, ["bach"], time_limit=60)
    assert [s["id"] for s in retry.skipped] == ["test/broken"] and len(retry.reused) == 1
    assert json.loads((out / "corpus.json").read_text())["renderer"] == corpus_module.RENDERER_VERSION
    # a time-out is reported, remembered under the same limit, and retried with a longer one
    slow_out = tmp_path / "slow"
    timed = render_corpus(slow_out, ["bach"], time_limit=0.05)
    reasons = {s["id"]: s["reason"] for s in timed.skipped}
    assert reasons[CHORALES[0]] == "timed out after 0.05 s" and not timed.rendered
    same = render_corpus(slow_out, ["bach"], time_limit=0.05)
    assert {s["id"]: s["reason"] for s in same.skipped} == reasons and not same.rendered
    retried = render_corpus(slow_out, ["bach"], time_limit=60)
    assert [e["id"] for e in retried.rendered] == [CHORALES[0]]


@needs_fluidsynth
def test_max_hours_keeps_a_deterministic_prefix(tmp_path, two_chorales):
    report = render_corpus(tmp_path / "c", ["bach"], max_hours=0.001, time_limit=60)
    manifest = json.loads((tmp_path / "c" / "corpus.json").read_text())
    assert [w["id"] for w in manifest["works"]] == [CHORALES[0]] == [e["id"] for e in report.works]
    assert manifest["selection"]["max_hours"] == 0.001


@needs_fluidsynth
def test_output_folder_checks(tmp_path, two_chorales):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    with pytest.raises(CorpusError, match="not empty"):
        render_corpus(mine, ["bach"])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CorpusError, match="not a folder"):
        render_corpus(blocker, ["bach"])
    with pytest.raises(CorpusError, match="cannot write"):
        render_corpus(blocker / "sub", ["bach"])
    bad_manifest = tmp_path / "badm"
    bad_manifest.mkdir()
    (bad_manifest / "corpus.json").write_text("{oops")
    with pytest.raises(CorpusError, match="corrupt"):
        render_corpus(bad_manifest, ["bach"])


@pytest.mark.parametrize(
    "kwargs", [{"workers": 0}, {"time_limit": 0}, {"peak_dbfs": 3.0}, {"sample_rate": 100}, {"max_hours": -1.0}]
)
def test_bad_render_arguments(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        render_corpus(tmp_path / "c", ["bach"], **kwargs)
