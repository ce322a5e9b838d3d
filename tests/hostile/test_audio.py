"""Hostile audio folders against `pdd-data prepare`: a bad file is skipped and listed with its reason (the run goes on
with the good ones); a folder with nothing usable is one `error:` line. Input files never change."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf

from pdd.runtime.config import get_preset
from pdd.training.cache import open_cache, synthetic_piece
from pdd.training.cli_data import app

from hostile_checks import Guard, error_line, invoke

TINY = get_preset("tiny")


def good_piece(path: Path, seed: int = 0) -> None:
    sf.write(str(path), synthetic_piece(TINY, 3 * TINY.clip_seconds, seed=seed), TINY.sample_rate, subtype="PCM_16")


def huge_samples(folder: Path) -> str:
    wave = np.full(TINY.sample_rate * 4, 1e30, dtype=np.float32)
    sf.write(str(folder / "huge.wav"), wave, TINY.sample_rate, subtype="FLOAT")
    return "far beyond full scale"


def nan_samples(folder: Path) -> str:
    wave = synthetic_piece(TINY, 4.0)
    wave[100] = np.nan
    sf.write(str(folder / "nan.wav"), wave, TINY.sample_rate, subtype="FLOAT")
    return "NaN/inf"


def header_claims_1_hz(folder: Path) -> str:
    """96 KB of samples that a 1 Hz header would stretch into hours at the preset rate."""
    path = folder / "one-hz.wav"
    sf.write(str(path), np.zeros(48_000, dtype=np.int16), 8000, subtype="PCM_16")
    raw = bytearray(path.read_bytes())
    fmt = raw.index(b"fmt ")
    struct.pack_into("<II", raw, fmt + 12, 1, 2)  # sample rate 1 Hz, byte rate 2
    path.write_bytes(bytes(raw))
    return "sample rate of 1 Hz"


def dangling_symlink(folder: Path) -> str:
    (folder / "gone.wav").symlink_to(folder / "nowhere.wav")
    return "broken symbolic link"


def symlink_loop(folder: Path) -> str:
    (folder / "loop.wav").symlink_to(folder / "loop.wav")
    return "symbolic link loop"


def non_utf8_name(folder: Path) -> str:
    good_piece(folder / "cafe.wav", seed=5)
    os.rename(os.fsencode(folder / "cafe.wav"), os.path.join(os.fsencode(folder), b"caf\xe9.wav"))
    return "not valid UTF-8"


def fifo(folder: Path) -> str:
    os.mkfifo(folder / "pipe.wav")  # a reader would block forever
    return "not a regular file"


def garbage(folder: Path) -> str:
    (folder / "garbage.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 10)
    return "not a readable audio file"


def too_many_channels(folder: Path) -> str:
    sf.write(str(folder / "wide.wav"), np.zeros((16000, 100), dtype=np.float32), 16000, subtype="FLOAT")
    return "100 channels"


CASES: dict[str, Callable[[Path], str]] = {
    "float samples of 1e30": huge_samples,
    "NaN samples": nan_samples,
    "header claiming 1 Hz": header_claims_1_hz,
    "dangling symlink": dangling_symlink,
    "symlink loop": symlink_loop,
    "non-UTF-8 file name": non_utf8_name,
    "FIFO named .wav": fifo,
    "garbage with a RIFF header": garbage,
    "100 channels": too_many_channels,
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_file_is_skipped_and_listed_the_rest_is_cached(tmp_path: Path, case: str) -> None:
    music = tmp_path / "music"
    music.mkdir()
    good_piece(music / "a.flac", seed=1)
    good_piece(music / "b.flac", seed=2)
    reason = CASES[case](music)
    guard = Guard(music)
    result = invoke(app, "prepare", music, "--out", tmp_path / "cache", "--preset", "tiny", "--json")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "\x1b" not in result.output
    guard.unchanged()
    report = open_cache(tmp_path / "cache").index["report"]
    reasons = [item["reason"] for item in report["skipped_files"]]
    assert any(reason in r for r in reasons), reasons
    assert report["splits"]["train"]["clips"] > 0


@pytest.mark.parametrize("case", ["float samples of 1e30", "header claiming 1 Hz", "symlink loop", "FIFO named .wav"])
def test_a_folder_of_only_bad_files_is_one_error(tmp_path: Path, case: str) -> None:
    music = tmp_path / "music"
    music.mkdir()
    CASES[case](music)
    guard = Guard(tmp_path)
    line = error_line(invoke(app, "prepare", music, "--out", tmp_path / "cache", "--preset", "tiny"))
    assert "no audio files" in line or "no usable clips" in line
    guard.unchanged()
    assert not (tmp_path / "cache" / "index.json").exists()


def test_file_names_with_escapes_and_markup_are_printed_literally(tmp_path: Path) -> None:
    music = tmp_path / "music"
    music.mkdir()
    good_piece(music / "a.flac", seed=1)
    good_piece(music / "\x1b[31mred[bold]x.flac", seed=2)
    (music / "\x1b]0;owned\x07.wav").write_bytes(b"not audio")
    result = invoke(app, "prepare", music, "--out", tmp_path / "cache", "--preset", "tiny")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "\\x1b]0;owned\\x07.wav" in result.output.replace("\n", "").replace(" ", "").replace("│", "") or \
        "\\x1b]0;owned" in result.output
