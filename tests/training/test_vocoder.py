"""The learned vocoder: front-end contract, inverse-STFT contract, silence gate in torch, a tiny model that learns, resume,
and the run folder's bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from pdd.runtime.config import get_preset
from pdd.runtime.mel import log_mel
from pdd.runtime.neural_vocoder import spectrum_to_audio
from pdd.runtime.silence import SilenceGate, gated_floor, silence_gain
from pdd.training.cache import synthetic_piece
from pdd.training.cli_vocoder import app
from pdd.training.vocoder import VOCODER_GATE, LogMel, MelVocoder, VocoderConfig, expected_params, parameter_count, spectrum_to_wave
from pdd.training.vocoder_train import SegmentStream, load_vocoder, train_vocoder

TINY = get_preset("tiny")
runner = CliRunner()


def test_torch_front_end_is_the_runtime_log_mel() -> None:
    """The vocoder's mel loss and the model's inputs are the same front end: torch LogMel == runtime log_mel."""
    for preset in ("tiny", "paper"):
        audio = get_preset(preset)
        wave = synthetic_piece(audio, 2.0, seed=3)
        got = LogMel(audio)(torch.from_numpy(wave)).numpy()
        np.testing.assert_allclose(got, log_mel(wave, audio), atol=2e-5)


def test_training_inverse_stft_is_the_runtime_inverse() -> None:
    torch.manual_seed(0)
    model = MelVocoder(TINY, VocoderConfig(name="t", dim=16, intermediate=32, layers=1)).eval()
    mel = torch.from_numpy(log_mel(synthetic_piece(TINY, 1.0), TINY))[None]
    with torch.no_grad():
        spectrum = model(mel)
        wave = spectrum_to_wave(spectrum, TINY).numpy()
    assert spectrum.shape == (1, mel.shape[-1], TINY.n_freqs, 2)
    np.testing.assert_allclose(spectrum_to_audio(spectrum.numpy(), TINY), wave, atol=1e-6)


def test_gate_arithmetic_is_the_same_in_torch_and_numpy() -> None:
    x = np.linspace(-1.2, 1.0, 221, dtype=np.float32)
    gate = SilenceGate(threshold=-0.8, knee=0.2)
    np.testing.assert_allclose(silence_gain(torch.from_numpy(x), gate).numpy(), silence_gain(x, gate), atol=0)
    np.testing.assert_allclose(gated_floor(torch.from_numpy(x), gate).numpy(), gated_floor(x, gate), atol=1e-7)


def test_parameter_count_formula_matches_the_model() -> None:
    for config in (VocoderConfig(), VocoderConfig(name="t", dim=16, intermediate=32, layers=1, kernel=3)):
        assert parameter_count(MelVocoder(get_preset("paper"), config)) == expected_params(get_preset("paper"), config)
    assert expected_params(get_preset("paper"), VocoderConfig()) == 3139842  # the shipped size: 3.1 M


def _chord_folder(root: Path, files: int = 2, seconds: float = 6.0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        sf.write(root / f"piece-{i}.wav", synthetic_piece(TINY, seconds, seed=i), TINY.sample_rate, subtype="FLOAT")
    return root


def _train(out: Path, data: Path, steps: int, **extra) -> Path:
    given = dict(data=str(data), audio_preset="tiny", preset="tiny", steps=steps, batch_size=4, segment_frames=16,
                 warmup=10, checkpoint_every=20, preview_every=1000, log_every=10, lr=2e-3, **extra)
    return train_vocoder(out, given, threads=1, progress=False, log=lambda _: None)


def _losses(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.usefixtures("one_torch_thread")
def test_tiny_vocoder_learns_a_synthetic_chord(tmp_path: Path) -> None:
    data = _chord_folder(tmp_path / "audio")
    ckpt = _train(tmp_path / "run", data, steps=100)
    log = _losses(tmp_path / "run")
    first, last = log[0], log[-1]
    assert last["step"] == 100
    assert last["mel"] < 0.5 * first["mel"] and last["logmag"] < 0.85 * first["logmag"], (first, last)
    model, info = load_vocoder(ckpt, TINY)
    assert info.gate == VOCODER_GATE and info.training["files"] == 2
    # The trained vocoder's audio re-analyses closer to its input mel than an untrained one's does.
    mel = log_mel(synthetic_piece(TINY, 3.0, seed=9), TINY)
    with torch.no_grad():
        trained = model.waveform(torch.from_numpy(mel)[None])[0].numpy()
        untrained = MelVocoder(TINY, info.config, info.gate).eval().waveform(torch.from_numpy(mel)[None])[0].numpy()
    err = lambda wave: float(np.abs(log_mel(wave, TINY)[:, : mel.shape[1] - 1] - mel[:, :-1]).mean())  # noqa: E731
    assert err(trained) < 0.6 * err(untrained)
    assert (tmp_path / "run" / "previews" / "step-100.wav").is_file()


@pytest.mark.usefixtures("one_torch_thread")
def test_resume_reproduces_an_uninterrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _chord_folder(tmp_path / "audio", files=1, seconds=4.0)
    whole = load_vocoder(_train(tmp_path / "whole", data, steps=40))[0].state_dict()
    original = SegmentStream.batch

    def killed_at_25(self, step, size):  # an interrupt after the step-20 checkpoint, mid-way to the next
        if step == 25:
            raise KeyboardInterrupt
        return original(self, step, size)

    monkeypatch.setattr(SegmentStream, "batch", killed_at_25)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "split", data, steps=40)
    monkeypatch.setattr(SegmentStream, "batch", original)
    resumed = train_vocoder(tmp_path / "split", {}, resume=True, threads=1, progress=False, log=lambda _: None)
    for key, value in load_vocoder(resumed)[0].state_dict().items():
        torch.testing.assert_close(value, whole[key], rtol=0, atol=1e-6)
    assert [e["step"] for e in _losses(tmp_path / "split")] == [10, 20, 30, 40]


@pytest.mark.usefixtures("one_torch_thread")
def test_force_starts_over_but_never_deletes_a_users_file(tmp_path: Path, one_error_line) -> None:
    data = _chord_folder(tmp_path / "audio", files=1, seconds=2.0)
    _train(tmp_path / "run", data, steps=2)
    restarted = _train_force(tmp_path / "run", data)
    assert [e["step"] for e in _losses(tmp_path / "run")] == [3] and restarted.is_file()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    args = ["train", "--out", str(tmp_path / "run"), "--data", str(data), "--force", "--audio-preset", "tiny"]
    assert "notes.txt" in one_error_line(runner.invoke(app, args))
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine" and (tmp_path / "run" / "vocoder.pt").is_file()


def _train_force(out: Path, data: Path) -> Path:
    given = dict(data=str(data), audio_preset="tiny", preset="tiny", steps=3, batch_size=2, segment_frames=16,
                 checkpoint_every=3, preview_every=1000, log_every=3)
    return train_vocoder(out, given, force=True, threads=1, progress=False, log=lambda _: None)


def test_cli_bad_inputs_are_one_error_line(tmp_path: Path, one_error_line) -> None:
    data = _chord_folder(tmp_path / "audio", files=1, seconds=2.0)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep me")
    cases = [
        (["train", "--out", str(tmp_path / "r")], "--data"),
        (["train", "--out", str(tmp_path / "r"), "--data", str(tmp_path / "nope")], "no such folder"),
        (["train", "--out", str(tmp_path / "r"), "--data", str(tmp_path / "busy")], "holds no audio"),
        (["train", "--out", str(tmp_path / "r"), "--data", str(data), "--preset", "huge"], "unknown vocoder preset"),
        (["train", "--out", str(tmp_path / "r"), "--data", str(data), "--lr", "nan"], "--lr"),
        (["train", "--out", str(tmp_path / "r"), "--data", str(data), "--steps", "0"], "--steps"),
        (["train", "--out", str(tmp_path / "busy"), "--data", str(data)], "already holds files"),
        (["train", "--out", str(tmp_path / "r"), "--resume"], "nothing to resume"),
        (["train", "--out", str(tmp_path / "r"), "--resume", "--force"], "contradict"),
    ]
    for args, fragment in cases:
        assert fragment in one_error_line(runner.invoke(app, args)), args
    assert (tmp_path / "busy" / "mine.txt").read_text() == "keep me"


def test_denoiser_checkpoint_is_not_a_vocoder(tmp_path: Path) -> None:
    from pdd.training.checkpoint import CheckpointError, CheckpointInfo, make_checkpoint_state, save_checkpoint
    from pdd.training.unet1d import UNet1D, unet_config

    config = unet_config("tiny", TINY)
    path = save_checkpoint(tmp_path / "t.pt", make_checkpoint_state(UNet1D(config), CheckpointInfo("teacher", TINY, config)))
    with pytest.raises(CheckpointError, match="not a vocoder checkpoint"):
        load_vocoder(path)
