"""Atomic writes and output-folder claiming: nothing a user made is lost or half-written."""

import errno
import json
import os
import stat
import subprocess
import sys

import pytest

from pdd.runtime.errors import AudioError, ConfigError, PddError
from pdd.runtime.fileio import (
    LEDGER_NAME,
    AtomicFile,
    append_line,
    atomic_write_text,
    claim_output_folder,
    describe_os_error,
    ensure_writable_dir,
    remove_stale_temps,
    write_json_atomic,
)


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
    claim_output_folder(out, force=False, own_files=lambda d: [], hint="")  # a new folder: created, with a ledger
    mine = atomic_write_text(out / "mine.log", "x")
    (out / "sub").mkdir()
    nested = atomic_write_text(out / "sub" / "step-1.wav", "y")
    own = lambda d: [d / "mine.log", d / "sub" / "step-1.wav", d / "never-written.bin"]  # noqa: E731
    with pytest.raises(ConfigError, match="already holds files; pass --force"):
        claim_output_folder(out, force=False, own_files=own, hint="pass --force")
    claim_output_folder(out, force=True, own_files=own, hint="")
    assert not mine.exists() and not nested.exists()
    assert sorted(p.name for p in out.iterdir()) == [LEDGER_NAME, "sub"]
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="not a folder"):
        claim_output_folder(tmp_path / "file", force=True, own_files=lambda d: [], hint="")


@pytest.mark.parametrize("plant", ["user file", "lookalike", "edited", "symlink"])
def test_force_refuses_a_folder_holding_anything_it_did_not_write(tmp_path, plant):
    out = tmp_path / "run"
    claim_output_folder(out, force=False, own_files=lambda d: [], hint="")
    ours = atomic_write_text(out / "log.jsonl", "ours\n")
    if plant == "user file":
        (out / "notes.txt").write_text("the user's")
    elif plant == "lookalike":  # the name pattern of our own files, but the user put it there
        (out / "step-9.pt").write_text("the user's")
    elif plant == "edited":
        with ours.open("a") as handle:
            handle.write("the user's line\n")
    else:
        (out / "link.pt").symlink_to(tmp_path / "elsewhere.pt")
    before = {p: p.read_bytes() for p in out.iterdir() if p.is_file() and not p.is_symlink()}
    own = lambda d: [d / "log.jsonl", d / "step-9.pt", d / "link.pt", d / "notes.txt"]  # noqa: E731
    with pytest.raises(ConfigError, match="did not write"):
        claim_output_folder(out, force=True, own_files=own, hint="")
    assert {p: p.read_bytes() for p in before} == before  # nothing deleted


def test_append_line_keeps_the_ledger_in_step(tmp_path):
    out = tmp_path / "run"
    claim_output_folder(out, force=False, own_files=lambda d: [], hint="")
    append_line(out / "log.jsonl", '{"step": 1}')
    append_line(out / "log.jsonl", '{"step": 2}')
    assert (out / "log.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n'
    claim_output_folder(out, force=True, own_files=lambda d: [d / "log.jsonl"], hint="")
    assert not (out / "log.jsonl").exists()


def test_a_ledger_naming_outside_files_vouches_for_nothing(tmp_path):
    out = tmp_path / "run"
    claim_output_folder(out, force=False, own_files=lambda d: [], hint="")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    info = victim.stat()
    (out / LEDGER_NAME).write_text(json.dumps({"format": "pdd-owned/1", "files": {
        "../victim.txt": [info.st_ino, info.st_size, info.st_mtime_ns]}}))
    claim_output_folder(out, force=True, own_files=lambda d: [d / ".." / "victim.txt"], hint="")
    assert victim.read_text() == "keep me"


def test_temp_files_never_follow_a_planted_symlink_and_stale_ones_go(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    folder = tmp_path / "out"
    folder.mkdir()
    for name in (".a.txt.tmp", ".a.txt.pdd-1.x.tmp"):  # the old predictable name and a guess at ours
        (folder / name).symlink_to(outside)
    atomic_write_text(folder / "a.txt", "new")
    assert outside.read_text() == "precious" and (folder / "a.txt").read_text() == "new"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = folder / f".b.wav.pdd-{int(dead.stdout)}.abc123.tmp"
    stale.write_bytes(b"half a file")
    live = folder / f".c.wav.pdd-{os.getpid()}.abc123.tmp"
    live.write_bytes(b"being written")
    assert remove_stale_temps(folder) == [stale]
    assert live.exists() and (folder / ".a.txt.pdd-1.x.tmp").is_symlink()  # not ours: a symlink is never deleted


def test_no_clobber_write_refuses_a_file_that_appeared(tmp_path):
    target = tmp_path / "a.wav"
    writer = AtomicFile(target, overwrite=False)
    writer.write(b"ours")
    target.write_text("someone else's")
    with pytest.raises(AudioError, match="already exists"):
        writer.commit()
    assert target.read_text() == "someone else's" and not list(tmp_path.glob(".*.tmp"))


def test_os_errors_in_plain_words():
    assert describe_os_error(OSError(errno.ENOSPC, "No space left on device", "/x/y")) == "the disk is full (/x/y)"
    assert describe_os_error(PermissionError(errno.EACCES, "Permission denied")) == "permission denied"


def test_ensure_writable_dir_creates_or_names_the_reason(tmp_path):
    assert ensure_writable_dir(tmp_path / "a" / "b").is_dir()
    (tmp_path / "plain").write_text("")
    with pytest.raises(PddError, match="cannot write to"):
        ensure_writable_dir(tmp_path / "plain" / "sub")
