"""`pdd-data` command line: help with examples, reports, and every bad input as one `error:` line with exit code 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from pdd.runtime.config import get_preset
from pdd.training import corpus as corpus_module
from pdd.training.cache import open_cache, synthetic_piece, write_synthetic_cache
from pdd.training.cli_data import app

TINY = get_preset("tiny")
runner = CliRunner()


def _text(stream: str) -> str:
    """Console text with rich's line wrapping undone."""
    return " ".join(stream.split())


def _error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def audio_dir(tmp_path):
    root = tmp_path / "audio"
    root.mkdir()
    for i in range(3):
        sf.write(str(root / f"song{i}.wav"), synthetic_piece(TINY, 9.5, seed=i), TINY.sample_rate)
    (root / "broken.wav").write_text("not audio")
    return root


def test_help_has_examples():
    for args in ([], ["corpus"], ["prepare"]):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0
        assert "Example" in result.output and "pdd-data" in result.output


def test_console_script_is_installed():
    exe = shutil.which("pdd-data")
    assert exe is not None
    result = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "prepare" in result.stdout and "corpus" in result.stdout


def test_prepare_reports_and_reruns_as_noop(audio_dir, tmp_path):
    out = tmp_path / "cache"
    args = ["prepare", str(audio_dir), "--out", str(out), "--preset", "tiny", "--heldout", "0.34", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["files_found"] == 4 and report["files_read"] == 3
    assert report["skipped_files"][0]["file"] == "broken.wav"
    assert report["splits"]["train"]["clips"] > 0 and report["splits"]["heldout"]["clips"] > 0
    assert "broken.wav" in result.stderr and "dropped as silent" in _text(result.stderr)
    cache = open_cache(out)
    assert cache.config == TINY and cache.dtype == np.float16

    again = runner.invoke(app, args[:-1])
    assert again.exit_code == 0 and "up to date" in _text(again.stderr)


def test_prepare_heldout_from_keeps_another_caches_held_out_pieces(audio_dir, tmp_path):
    small = tmp_path / "small"
    first = runner.invoke(app, ["prepare", str(audio_dir), "--out", str(small), "--preset", "tiny", "--heldout", "0.34"])
    assert first.exit_code == 0, first.output
    held = set(open_cache(small).sources("heldout"))
    # the corpus grows by two pieces; the bigger cache holds out exactly the same ones, whatever the seed would pick
    for i in (3, 4):
        sf.write(str(audio_dir / f"song{i}.wav"), synthetic_piece(TINY, 9.5, seed=i), TINY.sample_rate)
    big = tmp_path / "big"
    grown = runner.invoke(app, ["prepare", str(audio_dir), "--out", str(big), "--preset", "tiny", "--heldout-from", str(small)])
    assert grown.exit_code == 0, grown.output
    cache = open_cache(big)
    assert set(cache.sources("heldout")) == held
    assert {"song3.wav", "song4.wav"} <= set(cache.sources("train")) and not held & set(cache.sources("train"))
    assert cache.index["params"]["heldout_sources"] == sorted(held)


def test_prepare_heldout_from_bad_caches(audio_dir, tmp_path):
    not_a_cache = runner.invoke(app, ["prepare", str(audio_dir), "--out", str(tmp_path / "c"), "--preset", "tiny",
                                      "--heldout-from", str(tmp_path)])
    assert "index.json" in _error_line(not_a_cache) or "cache" in _error_line(not_a_cache)
    other = write_synthetic_cache(tmp_path / "other", TINY, 4, 2)  # its held-out sources are not files of audio_dir
    unrelated = runner.invoke(app, ["prepare", str(audio_dir), "--out", str(tmp_path / "c"), "--preset", "tiny",
                                    "--heldout-from", str(other)])
    assert "none of the" in _error_line(unrelated) and not (tmp_path / "c" / "index.json").exists()


def test_prepare_float32_and_hop(audio_dir, tmp_path):
    out = tmp_path / "cache"
    result = runner.invoke(
        app, ["prepare", str(audio_dir), "--out", str(out), "--preset", "tiny", "--dtype", "float32", "--hop", "0.5"]
    )
    assert result.exit_code == 0, result.output
    cache = open_cache(out)
    assert cache.dtype == np.float32 and cache.index["params"]["hop_samples"] == 31 * TINY.hop_length


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--preset", "huge"], "unknown audio preset 'huge'"),
        (["--preset", "tiny", "--heldout", "1.5"], "--heldout"),
        (["--preset", "tiny", "--hop", "-1"], "--hop"),
        (["--preset", "tiny", "--dtype", "int8"], "--dtype"),
    ],
)
def test_prepare_bad_options(audio_dir, tmp_path, extra, message):
    result = runner.invoke(app, ["prepare", str(audio_dir), "--out", str(tmp_path / "c"), *extra])
    assert message in _error_line(result)


def test_prepare_bad_inputs(tmp_path, audio_dir):
    missing = runner.invoke(app, ["prepare", str(tmp_path / "nope"), "--out", str(tmp_path / "c"), "--preset", "tiny"])
    assert "no such folder" in _error_line(missing)
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("hello")
    empty = runner.invoke(app, ["prepare", str(tmp_path / "texts"), "--out", str(tmp_path / "c"), "--preset", "tiny"])
    assert "no audio files" in _error_line(empty)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    unwritable = runner.invoke(app, ["prepare", str(audio_dir), "--out", str(blocker / "c"), "--preset", "tiny"])
    assert "cannot write" in _error_line(unwritable)


def test_prepare_other_preset_is_refused_then_forced(audio_dir, tmp_path):
    out = write_synthetic_cache(tmp_path / "cache", TINY, 4, 2)
    paper = runner.invoke(app, ["prepare", str(audio_dir), "--out", str(out), "--preset", "paper"])
    assert "--force" in _error_line(paper)
    assert open_cache(out).config == TINY
    forced = runner.invoke(app, ["prepare", str(audio_dir), "--out", str(out), "--preset", "paper", "--force"])
    assert forced.exit_code == 0, forced.output
    assert open_cache(out).config.name == "paper"


def test_corpus_without_fluidsynth_names_apt(monkeypatch, tmp_path):
    monkeypatch.setattr(corpus_module.shutil, "which", lambda name: None)
    result = runner.invoke(app, ["corpus", "--out", str(tmp_path / "c"), "--limit", "1"])
    line = _error_line(result)
    assert "apt-get install --no-install-recommends fluidsynth timgm6mb-soundfont" in line


def test_corpus_bad_options(tmp_path):
    assert "--limit" in _error_line(runner.invoke(app, ["corpus", "--out", str(tmp_path / "c"), "--limit", "0"]))
    line = _error_line(runner.invoke(app, ["corpus", "--out", str(tmp_path / "c"), "--composers", "nobody"]))
    assert "nobody" in line
    missing_font = runner.invoke(app, ["corpus", "--out", str(tmp_path / "c"), "--soundfont", str(tmp_path / "x.sf2")])
    assert "does not exist" in _error_line(missing_font)


@pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="fluidsynth is not installed")
def test_corpus_renders_one_small_score(tmp_path):
    out = tmp_path / "corpus"
    result = runner.invoke(app, ["corpus", "--out", str(out), "--composers", "bach", "--limit", "1", "--workers", "1"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "corpus.json").read_text())
    assert len(manifest["works"]) == 1 and (out / manifest["works"][0]["file"]).is_file()
    assert "1 works" in _text(result.stderr)


def test_module_runs_as_a_script():
    result = subprocess.run([sys.executable, "-m", "pdd.training.cli_data", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "corpus" in result.stdout
