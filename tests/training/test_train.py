"""Teacher training on a tiny synthetic cache: learning, exact resume after kill -9, NaN stop, run-folder safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pdd.runtime.config import get_preset
from pdd.training import train as train_module
from pdd.training.cache import write_synthetic_cache
from pdd.training.checkpoint import CheckpointError, load_checkpoint, load_denoiser, read_info
from pdd.training.cli_train import app
from pdd.training.data import MelDataset
from pdd.training.diffusion import v_loss
from pdd.training.repro import step_seed
from pdd.training.runfolder import read_log
from pdd.training.optim import NonFiniteLoss, lr_factor
from pdd.training.train import TrainConfig, prepare_run, train
from pdd.training.unet1d import UNet1D, unet_config

TINY = get_preset("tiny")
FAST = dict(preset="tiny", batch_size=8, lr=2e-3, warmup_steps=5, ema_decay=0.9, preview_every=0, threads=1, log_every=1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return write_synthetic_cache(tmp_path_factory.mktemp("cache") / "tiny", TINY, n_train=16, n_heldout=4)


def fixed_eval_loss(model: torch.nn.Module, cache: Path) -> float:
    """v-loss over the whole train split at fixed (t, noise) draws: a noise-free yardstick for 'it learned'."""
    data = MelDataset(cache)
    x0 = torch.stack([data[i] for i in range(len(data))]).repeat(4, 1, 1)
    gen = torch.Generator().manual_seed(123)
    t = torch.rand(x0.shape[0], generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    with torch.no_grad():
        return v_loss(model.eval(), x0, t, noise).item()


def test_lr_schedule_warms_up_then_decays_to_the_floor() -> None:
    assert lr_factor(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(10, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100, 0.1) == pytest.approx(0.55)
    assert lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)


def test_step_seeds_differ_by_step_and_rank() -> None:
    seeds = {step_seed(0, s, r) for s in range(50) for r in range(4)}
    assert len(seeds) == 200 and all(0 <= s < 2**63 for s in seeds)


def test_tiny_model_learns_in_100_steps(cache: Path, tmp_path: Path) -> None:
    config = TrainConfig(data=str(cache), steps=100, checkpoint_every=50, keep_every=50, **FAST)
    result = train(config, tmp_path / "run", progress=False, console_print=False)
    milestones = sorted((tmp_path / "run" / "checkpoints").iterdir())
    assert [p.name for p in milestones] == ["step-0000050.pt", "step-0000100.pt"]
    assert [read_info(p).train_step for p in milestones] == [50, 100]
    assert result.step == 100 and result.checkpoint.is_file()
    untrained = UNet1D(unet_config("tiny", TINY))
    state = load_checkpoint(result.checkpoint)
    trained = UNet1D(unet_config("tiny", TINY))
    trained.load_state_dict(state["model"])
    before, after = fixed_eval_loss(untrained, cache), fixed_eval_loss(trained, cache)
    assert after < 0.85 * before, (before, after)
    logged = [e for e in read_log(result.log) if "loss" in e]
    assert [e["step"] for e in logged] == list(range(1, 101))
    first, last = logged[:20], logged[-20:]
    assert sum(e["loss"] for e in last) < sum(e["loss"] for e in first)
    assert (tmp_path / "run" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    model, info = load_denoiser(result.checkpoint)
    assert info.kind == "teacher" and info.train_step == 100 and info.audio == TINY and info.steps is None
    assert info.lineage[0]["kind"] == "teacher" and info.lineage[0]["train_clips"] == 16


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(cache: Path, tmp_path: Path, monkeypatch) -> None:
    calls = {"n": 0}

    def poisoned(model, x0, t, noise, *weighting):
        calls["n"] += 1
        loss = v_loss(model, x0, t, noise, *weighting)
        return loss * float("nan") if calls["n"] == 27 else loss

    monkeypatch.setattr(train_module, "v_loss", poisoned)
    config = TrainConfig(data=str(cache), steps=60, checkpoint_every=10, **FAST)
    with pytest.raises(NonFiniteLoss, match=r"loss became nan at step 27.*step 20\) is kept"):
        train(config, tmp_path / "run", progress=False, console_print=False)
    assert read_info(tmp_path / "run" / "checkpoint.pt").train_step == 20
    assert read_log(tmp_path / "run" / "log.jsonl")[-1]["event"] == "stopped"


def cli_args(cache: Path, out: Path, steps: int, **extra: object) -> list[str]:
    args = ["--data", str(cache), "--out", str(out), "--steps", str(steps), "--no-progress"]
    for key, value in {**FAST, **extra}.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "pdd.training.cli_train", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def losses(run: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in read_log(run / "log.jsonl") if "loss" in e}


def test_kill_9_then_resume_reproduces_the_uninterrupted_run(cache: Path, tmp_path: Path) -> None:
    steps, every = 120, 20
    reference = tmp_path / "reference"
    done = run_cli(cli_args(cache, reference, steps, checkpoint_every=every))
    assert done.returncode == 0, done.stderr

    killed = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "pdd.training.cli_train",
                             *cli_args(cache, killed, steps, checkpoint_every=every)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and max(losses(killed), default=0) < 50:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reached = max(losses(killed))
    assert 50 <= reached < steps, "the run must be killed part-way"
    checkpoint_step = read_info(killed / "checkpoint.pt").train_step
    assert checkpoint_step % every == 0 and checkpoint_step < reached

    resumed = run_cli(["--out", str(killed), "--resume", "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr
    want, got = losses(reference), losses(killed)
    assert sorted(got) == list(range(1, steps + 1))
    assert got == want  # bit-for-bit on CPU with a fixed seed
    assert read_info(killed / "checkpoint.pt").train_step == steps
    ref_state, res_state = load_checkpoint(reference / "checkpoint.pt"), load_checkpoint(killed / "checkpoint.pt")
    for name, value in ref_state["ema"].items():
        assert torch.equal(value, res_state["ema"][name]), name


def test_existing_run_folder_needs_resume_or_force(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    runner = CliRunner()
    refused = runner.invoke(app, cli_args(cache, out, 4, checkpoint_every=2))
    assert refused.exit_code == 2
    assert "already holds files; pass --resume" in refused.output
    forced = runner.invoke(app, [*cli_args(cache, out, 4, checkpoint_every=2), "--force"])
    assert forced.exit_code == 2 and "did not write (notes.txt)" in forced.output  # --force never deletes a user's file
    (out / "notes.txt").rename(tmp_path / "notes.txt")
    first = runner.invoke(app, cli_args(cache, out, 4, checkpoint_every=2))
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, [*cli_args(cache, out, 4, checkpoint_every=2), "--force"])
    assert again.exit_code == 0, again.output  # force replaces the run's own files
    (out / "checkpoints").mkdir(exist_ok=True)
    (out / "checkpoints" / "step-0000002.pt").write_text("the user's, named like a milestone")
    lookalike = runner.invoke(app, [*cli_args(cache, out, 4, checkpoint_every=2), "--force"])
    assert lookalike.exit_code == 2 and "checkpoints/step-0000002.pt" in lookalike.output
    assert (out / "checkpoints" / "step-0000002.pt").read_text() == "the user's, named like a milestone"


def test_resume_refuses_other_settings_and_other_models(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = TrainConfig(data=str(cache), steps=4, checkpoint_every=2, **FAST)
    train(config, out, progress=False, console_print=False)
    with pytest.raises(Exception, match=r"cannot resume .* --preset 'small' \(run has 'tiny'\)"):
        prepare_run(out, {"preset": "small"}, resume=True)
    more = prepare_run(out, {"steps": 6}, resume=True)  # a longer run is a legal change
    assert more.steps == 6 and more.preset == "tiny"
    # A checkpoint whose model config differs from what this run would build is refused, naming the difference.
    with pytest.raises(CheckpointError, match="holds model 'tiny'"):
        train(TrainConfig(**{**config.to_dict(), "preset": "small", "steps": 6}), out, resume=True,
              progress=False, console_print=False)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        prepare_run(tmp_path / "empty", {}, resume=True)


def test_cli_errors_are_one_line(cache: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    for args, message in [
        (["--out", str(tmp_path / "a")], "--data CACHE is required"),
        (["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "b")], "error:"),
        (["--data", str(cache), "--out", str(tmp_path / "c"), "--preset", "huge"], "unknown model preset 'huge'"),
        (["--data", str(cache), "--out", str(tmp_path / "d"), "--precision", "fp16", "--device", "cpu"], "fp16 needs"),
        (["--data", str(cache), "--out", str(tmp_path / "e"), "--checkpoint-every", "15", "--log-every", "10"],
         "multiple of log-every"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_help_has_an_example() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0 and "pdd-train --data" in result.output and "--resume" in result.output


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cuda_trains_and_resumes(cache: Path, tmp_path: Path, precision: str) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    settings = {**FAST, "threads": None}
    config = TrainConfig(data=str(cache), steps=20, checkpoint_every=10, precision=precision, device="cuda", **settings)
    result = train(config, tmp_path / "run", progress=False, console_print=False)
    assert result.last_loss is not None and result.last_loss == result.last_loss  # finite, not NaN
    longer = prepare_run(tmp_path / "run", {"steps": 30}, resume=True)
    assert train(longer, tmp_path / "run", resume=True, progress=False, console_print=False).step == 30
    model, _ = load_denoiser(result.checkpoint, device="cuda")
    assert next(model.parameters()).is_cuda
