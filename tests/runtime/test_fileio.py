"""Atomic writes and output-folder claiming: nothing a user made is lost or half-written."""

import stat

import pytest

from pdd.runtime.errors import AudioError, ConfigError, PddError
from pdd.runtime.fileio import atomic_write_text, claim_output_folder, ensure_writable_dir, write_json_atomic


def test_atomic_writes_are_readable_by_all_and_refuse_overwrite(tmp_path):
    path = write_json_atomic(tmp_path / "a.json", {"b": 1, "a": 2})
    assert path.read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    with pytest.raises(AudioError, match="already exists"):
        atomic_write_text(path, "x", overwrite=False)
    with pytest.raises(AudioError, match="does not exist"):
        atomic_write_text(tmp_path / "missing" / "a.txt", "x")
    assert not list(tmp_path.glob(".*.tmp"))


def test_claim_refuses_then_deletes_only_own_files(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "mine.log").write_text("x")
    (out / "notes.txt").write_text("the user's")
    with pytest.raises(ConfigError, match="already holds files; pass --force"):
        claim_output_folder(out, force=False, own_files=lambda d: [d / "mine.log"], hint="pass --force")
    claim_output_folder(out, force=True, own_files=lambda d: [d / "mine.log", d / "never-written.bin"], hint="")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="not a folder"):
        claim_output_folder(tmp_path / "file", force=True, own_files=lambda d: [], hint="")


def test_ensure_writable_dir_creates_or_names_the_reason(tmp_path):
    assert ensure_writable_dir(tmp_path / "a" / "b").is_dir()
    (tmp_path / "plain").write_text("")
    with pytest.raises(PddError, match="cannot write to"):
        ensure_writable_dir(tmp_path / "plain" / "sub")
