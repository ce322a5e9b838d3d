"""End-to-end tests of a distillation run and `pdd-distill`: rounds and checkpoints, exact resume, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pdd.runtime.config import get_preset
from pdd.runtime.schedule import ScheduleConfig, grid
from pdd.training.cache import write_synthetic_cache
from pdd.training.checkpoint import CheckpointInfo, load_checkpoint, make_checkpoint_state, read_info, save_checkpoint
from pdd.training.cli_distill import app
from pdd.training.distill import distill, find_students, prepare_distill_run
from pdd.training.unet1d import UNet1D, unet_config

TINY = get_preset("tiny")
pytestmark = pytest.mark.usefixtures("one_torch_thread")
SETTINGS = dict(from_steps=4, to_steps=1, steps_per_round=6, batch_size=2, lr=1e-3, checkpoint_every=2)




@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A tiny 'teacher' checkpoint (random weights, non-zero output layer) that records its synthetic training cache."""
    root = tmp_path_factory.mktemp("teacher")
    cache = write_synthetic_cache(root / "cache", TINY, n_train=8, n_heldout=4)
    torch.manual_seed(0)
    config = unet_config("tiny", TINY)
    model = UNet1D(config)
    torch.nn.init.normal_(model.output_conv.weight, std=0.05)
    info = CheckpointInfo(kind="teacher", audio=TINY, model=config, lineage=[{"kind": "teacher", "data": str(cache)}],
                          train_step=100)
    return save_checkpoint(root / "checkpoint.pt", make_checkpoint_state(model, info))


def run(teacher: Path, out: Path, **kwargs):
    record = prepare_distill_run(out, teacher, None, SETTINGS, resume=kwargs.pop("resume", False))
    return distill(record, out, device="cpu", progress=False, console_print=False, **kwargs)


def test_rounds_write_one_student_checkpoint_each(teacher: Path, tmp_path: Path):
    result = run(teacher, tmp_path / "d")
    assert list(result.students) == [2, 1]  # 4 → 2 → 1
    assert not (tmp_path / "d" / "progress.pt").exists() and (tmp_path / "d" / "loss.png").is_file()
    for steps, path in result.students.items():
        state = load_checkpoint(path)
        info = read_info(path)
        assert info.kind == "student" and info.steps == steps and info.audio == TINY
        assert info.lineage[0]["kind"] == "teacher" and info.lineage[-1]["steps"] == steps
        assert info.lineage[-1]["teacher_steps"] == 2 * steps
        schedule = ScheduleConfig.from_dict(state["extra"]["schedule"])
        assert schedule == ScheduleConfig.student(steps) and schedule.times().tolist() == grid(steps).tolist()
        assert state["optimizer"] is None  # finished students carry weights only
    second = read_info(result.students[1])
    assert second.lineage[-1]["teacher"].endswith("student-2.pt")  # round 2's teacher is round 1's student
    assert [r["round"] for r in result.rounds] == [2, 1]


def test_resume_inside_a_round_reproduces_the_uninterrupted_run(teacher: Path, tmp_path: Path):
    whole = run(teacher, tmp_path / "whole")
    # Stop after 9 steps: round 2 (→1) at its step 3, whose last checkpoint is step 2 (as a kill -9 would leave it).
    run(teacher, tmp_path / "cut", stop_after=9)
    assert list(find_students(tmp_path / "cut")) == [2]
    progress = load_checkpoint(tmp_path / "cut" / "progress.pt")
    assert progress["extra"]["round"] == 1 and progress["extra"]["round_step"] == 2
    resumed = run(teacher, tmp_path / "cut", resume=True)
    a = load_checkpoint(whole.students[1])["model"]
    b = load_checkpoint(resumed.students[1])["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_runs_and_refuses_bad_input(teacher: Path, tmp_path: Path, one_error_line):
    out = tmp_path / "cli"
    ok = invoke("--teacher", teacher, "--from-steps", 2, "--to-steps", 1, "--steps-per-round", 2, "--batch-size", 2,
                "--out", out, "--no-progress", "--device", "cpu")
    assert ok.exit_code == 0, ok.output
    assert (out / "student-1.pt").is_file()

    assert "already holds files" in one_error_line(invoke("--teacher", teacher, "--out", out))
    assert "contradict" in one_error_line(invoke("--out", out, "--resume", "--force"))
    changed = one_error_line(invoke("--out", out, "--resume", "--lr", 0.5, "--teacher", tmp_path / "other.pt"))
    assert "cannot resume" in changed and "--lr 0.5" in changed and "--teacher" in changed and "run has" in changed
    assert "nothing to resume" in one_error_line(invoke("--out", tmp_path / "empty", "--resume"))
    assert "--teacher" in one_error_line(invoke("--out", tmp_path / "x"))
    assert "no such checkpoint" in one_error_line(invoke("--teacher", tmp_path / "nope.pt", "--out", tmp_path / "y"))
    assert "power of two" in one_error_line(invoke("--teacher", teacher, "--from-steps", 12, "--to-steps", 8,
                                                   "--out", tmp_path / "z"))
    assert "weighting" in one_error_line(invoke("--teacher", teacher, "--weighting", "snr", "--out", tmp_path / "w"))
    not_ckpt = tmp_path / "junk.pt"
    not_ckpt.write_text("junk")
    assert "not a readable pdd checkpoint" in one_error_line(invoke("--teacher", not_ckpt, "--out", tmp_path / "v"))
    # A 1-step student can only be distilled further from its own step count.
    assert "--from-steps 1" in one_error_line(invoke("--teacher", out / "student-1.pt", "--from-steps", 4,
                                                     "--to-steps", 2, "--out", tmp_path / "u"))
    # --force starts over, keeping nothing of the old run.
    forced = invoke("--teacher", teacher, "--from-steps", 2, "--to-steps", 1, "--steps-per-round", 1, "--batch-size", 2,
                    "--out", out, "--force", "--no-progress", "--device", "cpu")
    assert forced.exit_code == 0, forced.output


def test_help_has_an_example():
    result = invoke("--help")
    assert result.exit_code == 0 and "pdd-distill --teacher" in result.output
