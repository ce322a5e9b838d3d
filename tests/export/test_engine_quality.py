"""benchmarks/engine_quality.py, the re-ship check: engines side by side on one held-out reference. Run end to end on the
tiny preset (a cache prepared from real files, so the reference is original audio, and an engine with a learned vocoder)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pdd.runtime.audio import write_audio
from pdd.runtime.config import get_preset
from pdd.training.cache import synthetic_piece
from pdd.training.prepare import PrepareParams, prepare_cache

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "engine_quality.py"
TINY = get_preset("tiny")


def _cache_with_original_audio(root: Path) -> Path:
    audio_dir = root / "audio"
    audio_dir.mkdir()
    for i in range(6):
        write_audio(audio_dir / f"piece-{i}.wav", synthetic_piece(TINY, 4.0, seed=i), TINY.sample_rate, subtype="float")
    prepare_cache(audio_dir, root / "cache", TINY, PrepareParams(heldout_fraction=0.5))
    return root / "cache"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(importlib.util.find_spec("basic_pitch") is None, reason="FD-BP needs basic-pitch")
def test_the_same_engine_twice_scores_the_same_and_real_is_the_unit(neural_bundle: Path, tmp_path: Path) -> None:
    cache = _cache_with_original_audio(tmp_path)
    result = _run("--cache", str(cache), "--engine", str(neural_bundle), "--engine", str(neural_bundle), "-k", "3",
                  "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "out" / "engine_quality.json").read_text())["rows"]
    assert [r["row"].split(" → ")[-1] for r in rows] == ["real vs real (held-out halves)"] + ["learned vocoder",
                                                                                              "Griffin-Lim 32 + gate"] * 2
    real, first, second = rows[0], rows[1:3], rows[3:5]
    assert real["flux_mean_x_real"] == pytest.approx(1.0) and real["band_std_x_real"] == pytest.approx(1.0)
    assert real["silent_fraction"] == 0 and real["silent_fraction_x_real"] is None  # synthetic music has no floor values
    for a, b in zip(first, second):  # same seeded noise, same graphs: the rows differ only by model, here not at all
        assert a["fd_bp"] == pytest.approx(b["fd_bp"]) and a["fd_mel"] == pytest.approx(b["fd_mel"])
    assert first[0]["fd_mel"] != pytest.approx(first[1]["fd_mel"])  # the two back ends decode differently
    assert first[0]["flux_mean_x_real"] == pytest.approx(first[0]["flux_mean"] / real["flux_mean"])
    table = (tmp_path / "out" / "engine_quality.md").read_text()
    assert table.count("\n| ") == 6 and "K = 3 clips" in table


def test_bad_inputs_are_one_line(neural_bundle: Path, tiny_checkpoints, tmp_path: Path) -> None:
    from pdd.training.cache import write_synthetic_cache

    cache = write_synthetic_cache(tmp_path / "cache", TINY, n_train=2, n_heldout=4)
    for args, expected in [
        (["--cache", str(cache), "--engine", str(neural_bundle), "-k", "1"], "-k must be between 2 and 1024"),
        (["--cache", str(cache), "--engine", str(neural_bundle), "-k", "2"], "the reference needs the original audio"),
        (["--cache", str(tmp_path / "none"), "--engine", str(neural_bundle)], "error: "),
    ]:
        result = _run(*args, "--out", str(tmp_path / "out"))
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode != 0 and len(lines) == 1 and expected in lines[0], result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
