"""The ablation variants, one flag each (pdd-train --arch/--pack/--top-width/--weighting min-snr): shape round trip,
equal-FLOPs sizing, a tiny model learns, resume reproduces an uninterrupted run, and export with parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pdd.export.bundle_writer import ExportOptions, export_bundle
from pdd.runtime.bundle import load_bundle
from pdd.runtime.config import get_preset
from pdd.runtime.griffinlim import mel_to_audio
from pdd.runtime.pack import pack
from pdd.training import train as train_module
from pdd.training.cache import write_synthetic_cache
from pdd.training.checkpoint import CheckpointInfo, load_denoiser, make_checkpoint_state, read_info, save_checkpoint
from pdd.training.cli_train import app
from pdd.training.data import MelDataset
from pdd.training.diffusion import v_loss
from pdd.training.flops import model_cost
from pdd.training.models import build_denoiser, model_config, model_config_from_dict
from pdd.training.runfolder import read_log
from pdd.training.train import TrainConfig, prepare_run, train
from pdd.training.unet1d import UNetConfig
from pdd.training.unet2d import UNet2D, UNet2DConfig

TINY = get_preset("tiny")
FAST = dict(preset="tiny", batch_size=8, lr=2e-3, warmup_steps=5, ema_decay=0.9, preview_every=0, threads=1, log_every=1)
VARIANTS = {  # name → TrainConfig fields; the default (unet1d, snake) is covered by test_train.py
    "reshape": dict(pack="reshape"),
    "none": dict(pack="none"),
    "unet2d": dict(arch="unet2d", pack="none"),
    "wide-top-min-snr": dict(top_width=64, weighting="min-snr", min_snr_gamma=5.0),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return write_synthetic_cache(tmp_path_factory.mktemp("cache") / "tiny", TINY, n_train=16, n_heldout=4)


def variant_model(fields: dict, audio=TINY) -> tuple[torch.nn.Module, object, object]:
    packed = audio.with_pack_mode(fields.get("pack", "snake"))
    config = model_config(fields.get("arch", "unet1d"), "tiny", packed, top_channels=fields.get("top_width", 0))
    return build_denoiser(config), config, packed


@pytest.mark.parametrize("name", VARIANTS)
def test_shape_round_trip_and_config_json(name: str) -> None:
    model, config, audio = variant_model(VARIANTS[name])
    x = torch.randn(3, *audio.packed_shape)
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():  # the output layers start at zero: perturb so the check is not trivial
            param.add_(torch.randn_like(param) * 0.02)
        v = model(x, torch.rand(3))
    assert v.shape == x.shape and bool(v.abs().sum() > 0)
    assert model_config_from_dict(config.to_dict()) == config
    assert ("arch" in config.to_dict()) == (name == "unet2d")


def test_old_configs_load_as_unet1d_and_unknown_archs_are_refused() -> None:
    old = {k: v for k, v in model_config("unet1d", "tiny", TINY).to_dict().items()}
    assert "top_channels" not in old and "arch" not in old  # the default config serialises as before the variants
    assert isinstance(model_config_from_dict(old), UNetConfig)
    assert isinstance(model_config_from_dict(model_config("unet2d", "tiny", TINY.with_pack_mode("none")).to_dict()), UNet2DConfig)
    saved_2d = model_config("unet2d", "tiny", TINY.with_pack_mode("none")).to_dict()
    assert saved_2d["input_skip"] is True
    del saved_2d["input_skip"]  # a 2D config saved before the input skip existed: a network without it
    assert model_config_from_dict(saved_2d).input_skip is False
    assert not hasattr(UNet2D(model_config_from_dict(saved_2d)), "skip_gain")
    with pytest.raises(Exception, match="unknown model architecture"):
        model_config_from_dict({**old, "arch": "transformer"})
    with pytest.raises(Exception, match="--pack none"):
        model_config("unet2d", "tiny", TINY)


def test_unet2d_small_has_the_flops_of_unet1d_small() -> None:
    paper = get_preset("paper")
    one_d = model_cost(build_denoiser(model_config("unet1d", "small", paper)), paper)
    two_d = model_cost(UNet2D(model_config("unet2d", "small", paper.with_pack_mode("none"))), paper.with_pack_mode("none"))
    assert 0.9 < two_d.flops_per_clip / one_d.flops_per_clip < 1.1, (one_d.describe(), two_d.describe())
    assert one_d.parameters == pytest.approx(4.79e6, rel=0.01) and two_d.parameters == pytest.approx(0.67e6, rel=0.02)
    assert one_d.flops_per_clip == pytest.approx(0.255e9, rel=0.02)


def fixed_eval_loss(model: torch.nn.Module, cache: Path, audio) -> float:
    data = MelDataset(cache, audio=audio)
    x0 = torch.stack([data[i] for i in range(len(data))]).repeat(4, 1, 1)
    gen = torch.Generator().manual_seed(123)
    t = torch.rand(x0.shape[0], generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    with torch.no_grad():
        return v_loss(model.eval(), x0, t, noise).item()


@pytest.mark.parametrize("name", VARIANTS)
def test_tiny_variant_learns(name: str, cache: Path, tmp_path: Path, one_torch_thread) -> None:
    fields = VARIANTS[name]
    result = train(TrainConfig(data=str(cache), steps=60, checkpoint_every=60, **FAST, **fields), tmp_path / "run",
                   progress=False, console_print=False)
    untrained, _, audio = variant_model(fields)
    trained, info = load_denoiser(result.checkpoint)
    assert info.audio == audio and info.model == model_config_from_dict(info.model.to_dict())
    assert info.lineage[0]["arch"] == fields.get("arch", "unet1d") and info.lineage[0]["pack"] == audio.pack_mode
    torch.manual_seed(0)
    before, after = fixed_eval_loss(untrained, cache, audio), fixed_eval_loss(trained, cache, audio)
    assert after < 0.85 * before, (before, after)


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("name", VARIANTS)
def test_resume_reproduces_an_uninterrupted_run(name: str, cache: Path, tmp_path: Path, monkeypatch,
                                                one_torch_thread) -> None:
    config = TrainConfig(data=str(cache), steps=30, checkpoint_every=10, **FAST, **VARIANTS[name])
    train(config, tmp_path / "reference", progress=False, console_print=False)

    calls = {"n": 0}

    def dies_at_step_25(*args):
        calls["n"] += 1
        if calls["n"] == 25:
            raise Interrupted()
        return v_loss(*args)

    monkeypatch.setattr(train_module, "v_loss", dies_at_step_25)
    with pytest.raises(Interrupted):
        train(config, tmp_path / "killed", progress=False, console_print=False)
    assert read_info(tmp_path / "killed" / "checkpoint.pt").train_step == 20
    monkeypatch.setattr(train_module, "v_loss", v_loss)
    resumed = prepare_run(tmp_path / "killed", {}, resume=True)
    assert resumed == config
    train(resumed, tmp_path / "killed", resume=True, progress=False, console_print=False)

    def losses(run: str) -> dict[int, float]:
        return {e["step"]: e["loss"] for e in read_log(tmp_path / run / "log.jsonl") if "loss" in e}

    assert losses("killed") == losses("reference") and len(losses("reference")) == 30
    want, got = (torch.load(tmp_path / run / "checkpoint.pt", weights_only=True)["ema"] for run in ("reference", "killed"))
    assert all(torch.equal(want[k], got[k]) for k in want)


@pytest.mark.parametrize("name", ["reshape", "none", "unet2d"])
def test_variant_exports_with_parity_and_the_vocoder_unpacks_its_order(name: str, tmp_path: Path) -> None:
    model, config, audio = variant_model(VARIANTS[name])
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    ckpt = save_checkpoint(tmp_path / "student-2.pt", make_checkpoint_state(
        model, CheckpointInfo(kind="student", audio=audio, model=config, steps=2)))
    export_bundle(ExportOptions(ckpt=ckpt, steps=2, out=tmp_path / "engine", gl_iters=3))
    bundle = load_bundle(tmp_path / "engine")
    assert bundle.audio == audio and bundle.manifest["pack"] == ({"chunks": 3, "order": "reshape"} if name == "reshape"
                                                                 else {"chunks": 1})
    assert all(p["passed"] for p in bundle.manifest["provenance"]["parity"])  # denoiser, sampler, vocoder vs torch/numpy
    # The vocoder graph, fed a mel packed in this order, must decode the mel itself (not a permutation of it).
    from pdd.export.parity import run_graph  # noqa: PLC0415 — export helpers, only this test needs them

    mel = np.random.default_rng(0).uniform(-1, 0.5, (1, audio.n_mels, audio.frames)).astype(np.float32)
    phase0 = np.zeros((1, audio.n_freqs, audio.frames), np.float32)
    wave = run_graph(str(tmp_path / "engine" / "vocoder.onnx"), {"x0": pack(mel, audio.pack_chunks, audio.pack_order),
                                                                "phase0": phase0})["waveform"]
    want = mel_to_audio(mel, audio, n_iter=3, phase0=phase0, length=audio.clip_samples)
    assert np.abs(np.asarray(wave) - want).max() <= 1e-3 * np.abs(want).max()


def test_cli_variant_flags(cache: Path, tmp_path: Path, one_error_line) -> None:
    runner = CliRunner()
    base = ["--data", str(cache), "--preset", "tiny", "--steps", "2", "--batch-size", "4", "--preview-every", "0",
            "--no-progress", "--threads", "1"]
    line = one_error_line(runner.invoke(app, [*base, "--out", str(tmp_path / "a"), "--arch", "unet2d", "--pack", "snake"]))
    assert "--pack none" in line
    assert "top-width" in one_error_line(runner.invoke(app, [*base, "--out", str(tmp_path / "b"), "--arch", "unet2d",
                                                             "--top-width", "64"]))
    assert "arch" in one_error_line(runner.invoke(app, [*base, "--out", str(tmp_path / "c"), "--arch", "unet3d"]))
    assert "weighting" in one_error_line(runner.invoke(app, [*base, "--out", str(tmp_path / "d"), "--weighting", "x"]))
    assert "min-snr-gamma" in one_error_line(runner.invoke(app, [*base, "--out", str(tmp_path / "e"),
                                                                 "--min-snr-gamma", "0"]))
    done = runner.invoke(app, [*base, "--out", str(tmp_path / "f"), "--arch", "unet2d"])  # implies --pack none
    assert done.exit_code == 0, done.output
    info = read_info(tmp_path / "f" / "checkpoint.pt")
    assert isinstance(info.model, UNet2DConfig) and info.audio.pack_chunks == 1


def test_a_variant_teacher_distils_on_its_own_packing(cache: Path, tmp_path: Path, one_torch_thread) -> None:
    from pdd.training.cli_distill import app as distill_app  # noqa: PLC0415

    fields = VARIANTS["reshape"]
    teacher = train(TrainConfig(data=str(cache), steps=10, checkpoint_every=10, **FAST, **fields), tmp_path / "teacher",
                    progress=False, console_print=False)
    done = CliRunner().invoke(distill_app, ["--teacher", str(teacher.checkpoint), "--data", str(cache), "--from-steps", "4",
                                            "--to-steps", "2", "--steps-per-round", "3", "--batch-size", "4", "--threads", "1",
                                            "--no-progress", "--out", str(tmp_path / "distill")])
    assert done.exit_code == 0, done.output
    info = read_info(tmp_path / "distill" / "student-2.pt")
    assert info.kind == "student" and info.steps == 2 and info.audio.pack_order == "reshape"


def test_learned_vocoder_export_refuses_other_packings_in_one_line(tmp_path: Path) -> None:
    from pdd.export.bundle_writer import ExportError  # noqa: PLC0415

    model, config, audio = variant_model(VARIANTS["reshape"])
    ckpt = save_checkpoint(tmp_path / "student-2.pt", make_checkpoint_state(
        model, CheckpointInfo(kind="student", audio=audio, model=config, steps=2)))
    vocoder = tmp_path / "vocoder.pt"
    vocoder.write_bytes(b"not read: refused before")
    with pytest.raises(ExportError, match="packs 'reshape'; export it without --vocoder-ckpt") as caught:
        export_bundle(ExportOptions(ckpt=ckpt, steps=2, out=tmp_path / "engine", gl_iters=3, vocoder_ckpt=vocoder))
    assert "\n" not in str(caught.value) and not (tmp_path / "engine").exists()
