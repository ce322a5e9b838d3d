"""`pdd-eval` command line: folder mode end to end, and every bad input is one error line with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pdd.runtime.audio import write_audio
from pdd.runtime.config import get_preset
from pdd.training.cache import synthetic_piece, write_synthetic_cache
from pdd.training.cli_eval import app

TINY = get_preset("tiny")


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    gen.mkdir()
    ref.mkdir()
    for i in range(3):
        write_audio(gen / f"g{i}.wav", synthetic_piece(TINY, 2.0, seed=10 + i), TINY.sample_rate)
        write_audio(ref / f"r{i}.wav", synthetic_piece(TINY, 2.0, seed=i), TINY.sample_rate)
    return gen, ref


def test_folder_mode_writes_a_table(folders, tmp_path: Path, one_error_line):
    gen, ref = folders
    result = invoke("--generated", gen, "--reference", ref, "--preset", "tiny", "--no-fd-bp", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    table = (tmp_path / "o" / "table.md").read_text()
    assert "| generated |" in table and "FD-BP disabled" in table and "| KAD ↓ |" in table
    assert "real vs real: needs at least 4 reference files" in table  # three here: no floor row, said so
    again = invoke("--generated", gen, "--reference", ref, "--preset", "tiny", "--no-fd-bp", "--out", tmp_path / "o")
    assert "--force" in one_error_line(again)
    forced = invoke("--generated", gen, "--reference", ref, "--preset", "tiny", "--no-fd-bp", "--out", tmp_path / "o",
                    "--force")
    assert forced.exit_code == 0, forced.output


def test_bad_input_is_one_line(folders, tmp_path: Path, one_error_line):
    gen, ref = folders
    empty = tmp_path / "empty"
    empty.mkdir()
    cache = write_synthetic_cache(tmp_path / "cache", TINY, n_train=2, n_heldout=4)
    out = tmp_path / "x"
    cases = [
        (("--generated", gen, "--teacher", "t.pt", "--out", out), "either"),
        (("--generated", gen, "--out", out), "both --generated"),
        (("--generated", gen, "--reference", empty, "--out", out), "no audio files"),
        (("--generated", tmp_path / "nope", "--reference", ref, "--out", out), "no such folder"),
        (("--generated", gen, "--reference", ref, "--preset", "huge", "--out", out), "unknown audio preset"),
        (("--teacher", tmp_path / "missing.pt", "--out", out), "--data"),
        (("--teacher", tmp_path / "missing.pt", "--data", cache, "--out", out), "no such checkpoint"),
        (("--teacher", tmp_path / "missing.pt", "--data", cache, "--steps", "8,x", "--out", out), "comma-separated"),
        (("--teacher", tmp_path / "missing.pt", "--data", cache, "-k", 1, "--out", out), "must be >= 2"),
        (("--out", out), "model mode needs"),
        (("--teacher", tmp_path / "missing.pt", "--data", cache, "--vocoder-gate", "-0.8,0.2", "--out", out),
         "--vocoder-gate needs --vocoder-ckpt"),
        (("--teacher", tmp_path / "missing.pt", "--data", cache, "--vocoder-ckpt", "v.pt", "--vocoder-gate", "-0.8",
          "--out", out), "--vocoder-gate must be THRESHOLD,KNEE"),
        (("--teacher", tmp_path / "missing.pt", "--data", cache, "--vocoder-ckpt", "v.pt", "--vocoder-gate", "0.5,3",
          "--out", out), "knee must be in (0, 2]"),
    ]
    for args, expected in cases:
        assert expected in one_error_line(invoke(*args)), args
    assert not out.exists()  # nothing written on refusal


def test_help_has_examples():
    result = invoke("--help")
    assert result.exit_code == 0
    assert "pdd-eval --teacher" in result.output and "--generated" in result.output
