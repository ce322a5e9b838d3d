"""torchrun/DDP on CPU: two gloo processes train together, log once, and end with identical weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pdd.runtime.config import get_preset
from pdd.training.cache import write_synthetic_cache
from pdd.training.checkpoint import load_denoiser
from pdd.training.runfolder import read_log

ARGS = ["--preset", "tiny", "--steps", "20", "--batch-size", "8", "--log-every", "5", "--checkpoint-every", "10",
        "--preview-every", "0", "--no-progress"]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "pdd.training.cli_train", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return write_synthetic_cache(tmp_path_factory.mktemp("cache") / "tiny", get_preset("tiny"), n_train=16, n_heldout=4)


def test_two_cpu_processes_train_and_agree_on_weights(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = torchrun("--data", str(cache), "--out", str(out), *ARGS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("pdd-train: done") == 1  # rank 0 speaks, rank 1 stays quiet
    log = read_log(out / "log.jsonl")
    assert [e["step"] for e in log if "loss" in e] == [5, 10, 15, 20]  # one line per step, not one per rank
    check = [e for e in log if e.get("event") == "ddp_check"]
    assert len(check) == 1 and check[0]["agree"] and len(check[0]["checksums"]) == 2
    model, info = load_denoiser(out / "checkpoint.pt")
    assert info.train_step == 20 and info.kind == "teacher"

    # Rank 0 decides about the folder and every rank stops with its one-line answer.
    again = torchrun("--data", str(cache), "--out", str(out), *ARGS)
    assert again.returncode != 0
    # Both ranks answer; their lines may interleave on the shared stderr, so count the messages, not the lines.
    assert again.stderr.count("error: ") == 2
    assert again.stderr.count("already holds files; pass --resume") == 2
