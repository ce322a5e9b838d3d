"""A full disk (a small tmpfs, mounted when the tests run as root) and signals mid-write: one `error:` line in plain words,
nothing half-written, the previous result intact, stale temps of a killed writer cleaned on the next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import torch

from pdd.export.cli import app as export_app
from pdd.runtime.cli_run import app as run_app
from pdd.training.checkpoint import load_checkpoint
from pdd.training.cli_data import app as data_app
from pdd.training.cli_train import app as train_app

from hostile_checks import Guard, error_line, invoke

FAST = ["--preset", "tiny", "--batch-size", "4", "--warmup-steps", "1", "--preview-every", "0", "--threads", "1",
        "--no-progress", "--log-every", "1"]


def leftovers(folder: Path) -> list[str]:
    """Temp files or folders of ours anywhere below `folder`."""
    return [str(p) for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MB tmpfs at tmp_path/disk (root only; skipped with the reason otherwise), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("a full disk needs a tmpfs mount, which needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or mounted.returncode})")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path, leave_bytes: int) -> None:
    """Fill the tmpfs until only about `leave_bytes` are free."""
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    with open(disk / "filler", "wb") as handle:
        handle.write(b"\0" * max(free - leave_bytes, 0))


def test_pdd_run_on_a_full_disk(bundle: Path, small_disk: Path) -> None:
    out = small_disk / "out"
    out.mkdir()
    fill(small_disk, 16 << 10)  # room for the sidecars, not for 4 clips of audio
    guard = Guard(small_disk)
    line = error_line(invoke(run_app, "--engine", bundle, "--out", out, "-n", 4))
    assert "the disk is full" in line and "nothing was changed" in line
    assert leftovers(small_disk) == []
    for wav in out.glob("*.wav"):  # clips written before the disk filled are whole
        assert wav.stat().st_size > 44
    guard.unchanged(owned=["out/"])


def test_prepare_on_a_full_disk_leaves_no_half_cache(tmp_path: Path, small_disk: Path) -> None:
    import soundfile as sf

    from pdd.runtime.config import get_preset
    from pdd.training.cache import synthetic_piece

    music = tmp_path / "music"
    music.mkdir()
    tiny = get_preset("tiny")
    for seed in range(3):
        sf.write(str(music / f"{seed}.flac"), synthetic_piece(tiny, 30.0, seed=seed), tiny.sample_rate)
    fill(small_disk, 64 << 10)
    guard = Guard(tmp_path)
    line = error_line(invoke(data_app, "prepare", music, "--out", small_disk / "cache", "--preset", "tiny"))
    assert "the disk is full" in line
    assert not (small_disk / "cache" / "index.json").exists() and leftovers(small_disk) == []
    guard.unchanged(owned=["disk/cache/"])


def test_train_resume_on_a_full_disk_keeps_the_last_checkpoint(cache: Path, small_disk: Path,
                                                               one_torch_thread: None) -> None:
    out = small_disk / "run"
    first = invoke(train_app, "--data", cache, "--out", out, "--steps", 2, *FAST)
    assert first.exit_code == 0, first.output
    before = load_checkpoint(out / "checkpoint.pt")["info"]["train_step"]
    fill(small_disk, 8 << 10)
    line = error_line(invoke(train_app, "--data", cache, "--out", out, "--steps", 4, "--resume", *FAST))
    assert "the disk is full" in line
    assert load_checkpoint(out / "checkpoint.pt")["info"]["train_step"] == before
    assert leftovers(small_disk) == []


def test_export_on_a_full_disk_leaves_nothing(teacher_master: Path, small_disk: Path, one_torch_thread: None) -> None:
    fill(small_disk, 64 << 10)
    guard = Guard(small_disk)
    line = error_line(invoke(export_app, "--ckpt", teacher_master, "--steps", 2, "--out", small_disk / "engine",
                             "--gl-iters", 2))
    assert "disk is full" in line
    assert not (small_disk / "engine").exists() and leftovers(small_disk) == []
    guard.unchanged()


def test_stale_temps_of_a_killed_writer_are_cleaned_and_nothing_else(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("the user's")
    code = ("import os, signal; from pdd.runtime.fileio import AtomicFile; "
            f"f = AtomicFile({str(out / 'pdd-0-0.wav')!r}); f.write(b'half'); f.handle.flush(); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    assert len(leftovers(out)) == 1
    result = invoke(run_app, "--engine", bundle, "--out", out, "-n", 1)
    assert result.exit_code == 0, result.output
    assert leftovers(out) == [] and (out / "mine.txt").read_text() == "the user's"


def test_sigint_during_training_is_one_line_and_a_whole_checkpoint(cache: Path, tmp_path: Path) -> None:
    """SIGINT whenever it lands (inside torch.save included): exit 130, `error: interrupted`, no torn file, no temp."""
    out = tmp_path / "run"
    args = ["--data", str(cache), "--out", str(out), "--steps", "100000", "--checkpoint-every", "1", *FAST]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-m", "pdd.training.cli_train", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    time.sleep(0.3)  # checkpoints are written every step: the signal lands in or near a save
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error")]
    assert errors == ["error: interrupted"], stderr
    assert load_checkpoint(out / "checkpoint.pt")["info"]["train_step"] >= 1
    assert leftovers(out) == []
    torch.load(out / "checkpoint.pt", weights_only=True)  # a complete zip, not a torn one
