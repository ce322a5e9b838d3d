"""`pdd-run` end to end on the tiny bundle, and its bad inputs: one `error:` line, exit 2, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from pdd.runtime.bundle import MANIFEST_NAME, load_bundle, write_manifest
from pdd.runtime.cli_run import app
from pdd.runtime.errors import BundleError
from pdd.runtime.engine import default_engine_dir
from tests.support.cli import error_line

runner = CliRunner()


def pdd_run(*args: object) -> "object":
    return runner.invoke(app, [str(a) for a in args])


def test_help_has_a_real_example() -> None:
    result = pdd_run("--help")
    assert result.exit_code == 0
    assert "pdd-run -n 4 --seed 7" in result.output and "--verify" in result.output


@pytest.mark.parametrize("mode", ["sampler", "loop"])
def test_generates_wavs_of_the_right_length_and_rate_with_sidecars(tiny_bundle_dir: Path, tmp_path: Path, mode: str) -> None:
    out = tmp_path / "out"
    result = pdd_run("--engine", tiny_bundle_dir, "-n", 3, "--batch-size", 2, "--seed", 11, "--mode", mode, "--out", out)
    assert result.exit_code == 0, result.output
    bundle = load_bundle(tiny_bundle_dir)
    for i in range(3):
        info = sf.info(str(out / f"pdd-11-{i}.wav"))
        assert (info.samplerate, info.frames, info.channels) == (16000, bundle.audio.clip_samples, 1)
        meta = json.loads((out / f"pdd-11-{i}.json").read_text())
        assert meta["engine"] == {"name": "tiny-test", "manifest_sha256": bundle.hash, "path": str(tiny_bundle_dir),
                                  "precision": "fp32"}
        assert (meta["seed"], meta["index"], meta["steps"], meta["mode"], meta["backend"]) == (11, i, 4, mode, "ort")
        assert meta["timings_ms"]["generate"] > 0 and meta["timings_ms"]["setup"] > 0 and meta["batch_size"] == 2
    assert sorted(p.name for p in out.iterdir()) == sorted(f"pdd-11-{i}.{ext}" for i in range(3) for ext in ("wav", "json"))
    assert "wrote 3 clip(s)" in result.output


def test_seed_reproduces_and_modes_agree(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    def audio(folder: str, *extra: object, seed: int = 0) -> np.ndarray:
        result = pdd_run("--engine", tiny_bundle_dir, "-n", 2, "--seed", seed, "--float", "--out", tmp_path / folder, *extra)
        assert result.exit_code == 0, result.output
        return np.stack([sf.read(str(tmp_path / folder / f"pdd-{seed}-{i}.wav"))[0] for i in range(2)])

    first = audio("a")
    np.testing.assert_array_equal(first, audio("b"))
    np.testing.assert_allclose(audio("c", "--mode", "loop", "--batch-size", 1), first, atol=1e-4)
    assert not np.allclose(audio("d", seed=1), first)


def test_seamless_joins_consecutive_clips_with_a_crossfade(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    clip = load_bundle(tiny_bundle_dir).audio.clip_samples
    singles = tmp_path / "singles"
    assert pdd_run("--engine", tiny_bundle_dir, "-n", 3, "--float", "--out", singles).exit_code == 0
    joined = tmp_path / "joined"
    result = pdd_run("--engine", tiny_bundle_dir, "-n", 1, "--seamless", 3, "--crossfade", 0.1, "--float", "-b", 2, "--out", joined)
    assert result.exit_code == 0, result.output
    wave, rate = sf.read(str(joined / "pdd-0-0.wav"), dtype="float32")
    overlap = int(0.1 * rate)
    assert wave.shape == (3 * clip - 2 * overlap,)
    parts = [sf.read(str(singles / f"pdd-0-{i}.wav"), dtype="float32")[0] for i in range(3)]
    np.testing.assert_allclose(wave[: clip - overlap], parts[0][: clip - overlap], atol=1e-5)  # clip 0 untouched
    np.testing.assert_allclose(wave[clip: 2 * clip - 2 * overlap], parts[1][overlap: clip - overlap], atol=1e-5)
    meta = json.loads((joined / "pdd-0-0.json").read_text())
    assert (meta["clips"], meta["crossfade_s"]) == (3, 0.1)
    error_line(pdd_run("--engine", tiny_bundle_dir, "--seamless", 0, "--out", tmp_path / "x"), "--seamless must be >= 1")
    result = pdd_run("--engine", tiny_bundle_dir, "--seamless", 2, "--crossfade", 5, "--out", tmp_path / "x")
    error_line(result, "--crossfade must be in [0, 0.76)")


def test_crossfade_is_equal_power() -> None:
    from pdd.runtime.engine import crossfade_join

    ones = np.ones(100, dtype=np.float32)
    joined = crossfade_join([ones, ones], 20)
    assert joined.shape == (180,)
    middle = joined[80:100]
    assert middle.max() <= np.sqrt(2) + 1e-6 and middle.min() >= 1.0 - 1e-6  # cos + sin of a quarter turn
    np.testing.assert_array_equal(crossfade_join([ones, ones], 0), np.ones(200, dtype=np.float32))


def test_flac_plot_and_overwrite(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    assert pdd_run("--engine", tiny_bundle_dir, "-n", 1, "--format", "flac", "--plot", "--out", out).exit_code == 0
    assert sf.info(str(out / "pdd-0-0.flac")).format == "FLAC"
    assert (out / "pdd-0-0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = pdd_run("--engine", tiny_bundle_dir, "-n", 1, "--format", "flac", "--out", out)
    error_line(again, "pdd-0-0.flac already exists", "--overwrite")
    assert pdd_run("--engine", tiny_bundle_dir, "-n", 1, "--format", "flac", "--out", out, "--overwrite").exit_code == 0


def test_plot_without_matplotlib(tiny_bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    error_line(pdd_run("--engine", tiny_bundle_dir, "--plot", "--out", tmp_path), "--plot needs matplotlib")


def test_verify_prints_max_errors(tiny_bundle_dir: Path) -> None:
    result = pdd_run("--engine", tiny_bundle_dir, "--verify", "--backend", "ort")
    assert result.exit_code == 0, result.output
    assert "sampler.x0" in result.output and "max abs error" in result.output and "FAIL" not in result.output


def test_verify_fails_on_a_wrong_golden(tiny_bundle_copy: Path) -> None:
    golden = dict(np.load(tiny_bundle_copy / "golden.npz"))
    golden["sampler.x0"] = golden["sampler.x0"] + 0.5
    np.savez(tiny_bundle_copy / "golden.npz", **golden)
    write_manifest(tiny_bundle_copy, json.loads((tiny_bundle_copy / MANIFEST_NAME).read_text()))
    result = pdd_run("--engine", tiny_bundle_copy, "--verify")
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "FAIL" in result.output and "error: golden check failed for 1 output(s), worst sampler.x0" in result.output


# -- bad input ----------------------------------------------------------------------------------------------------------


def test_missing_engine_folder(tmp_path: Path) -> None:
    error_line(pdd_run("--engine", tmp_path / "nope", "--out", tmp_path), "does not exist")


def test_manifest_of_another_format_version(tiny_bundle_copy: Path, tmp_path: Path) -> None:
    manifest = json.loads((tiny_bundle_copy / MANIFEST_NAME).read_text())
    manifest["format"] = "pdd-engine/0"
    (tiny_bundle_copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    error_line(pdd_run("--engine", tiny_bundle_copy, "--out", tmp_path / "o"), "'pdd-engine/0' is not supported")


def test_truncated_onnx(tiny_bundle_copy: Path, tmp_path: Path) -> None:
    path = tiny_bundle_copy / "denoiser.onnx"
    path.write_bytes(path.read_bytes()[:100])
    error_line(pdd_run("--engine", tiny_bundle_copy, "--out", tmp_path / "o"), "denoiser.onnx does not match its sha256")
    write_manifest(tiny_bundle_copy, json.loads((tiny_bundle_copy / MANIFEST_NAME).read_text()))
    result = pdd_run("--engine", tiny_bundle_copy, "--mode", "loop", "--out", tmp_path / "o")
    error_line(result, "denoiser.onnx: onnxruntime cannot load it", "pdd-export")


def test_hash_mismatch(tiny_bundle_copy: Path, tmp_path: Path) -> None:
    with open(tiny_bundle_copy / "golden.npz", "ab") as handle:
        handle.write(b"extra")
    error_line(pdd_run("--engine", tiny_bundle_copy, "--out", tmp_path / "o"), "golden.npz does not match its sha256")


def test_mode_auto_runs_the_loop_for_other_step_counts(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    for steps, mode in ((2, "loop"), (4, "sampler")):
        out = tmp_path / str(steps)
        result = pdd_run("--engine", tiny_bundle_dir, "-n", 1, "--mode", "auto", "--steps", steps, "--out", out)
        assert result.exit_code == 0, result.output
        meta = json.loads((out / "pdd-0-0.json").read_text())
        assert (meta["mode"], meta["steps"]) == (mode, steps)


def test_steps_not_in_the_grid(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    result = pdd_run("--engine", tiny_bundle_dir, "--mode", "loop", "--steps", 3, "--out", tmp_path / "o")
    error_line(result, "--steps 3 is not on this bundle's 4-step grid", "1, 2, 4")
    result = pdd_run("--engine", tiny_bundle_dir, "--steps", 2, "--out", tmp_path / "o")
    error_line(result, "runs exactly 4 steps; use --mode loop")
    error_line(pdd_run("--engine", tiny_bundle_dir, "--steps", 0, "--out", tmp_path / "o"), "--steps must be >= 1")
    assert not list((tmp_path / "o").glob("*.wav"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-n", 0), "-n must be >= 1"),
        (("-n", -2), "-n must be >= 1"),
        (("--batch-size", 0), "--batch-size must be >= 1"),
        (("--format", "mp3"), "unknown --format 'mp3'"),
        (("--mode", "fast"), "unknown mode 'fast'"),
        (("--vocoder", "hifigan"), "unknown vocoder 'hifigan'"),
        (("--backend", "onnx"), "unknown backend 'onnx'"),
        (("--device", "tpu"), "unknown device 'tpu'"),
        (("--seed", -1), "--seed must be >= 0"),
    ],
)
def test_bad_arguments(tiny_bundle_dir: Path, tmp_path: Path, args: tuple, message: str) -> None:
    error_line(pdd_run("--engine", tiny_bundle_dir, "--out", tmp_path / "o", *args), message)


def test_unwritable_out(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    error_line(pdd_run("--engine", tiny_bundle_dir, "--out", blocker / "sub"), "cannot use --out", "a file is in the way")
    error_line(pdd_run("--engine", tiny_bundle_dir, "--out", blocker), "cannot use --out")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        error_line(pdd_run("--engine", tiny_bundle_dir, "--out", locked), "cannot write to --out")


def test_existing_file_without_overwrite_is_kept(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "pdd-0-2.json").write_text("mine")
    error_line(pdd_run("--engine", tiny_bundle_dir, "-n", 3, "--out", out), "pdd-0-2.json already exists")
    assert (out / "pdd-0-2.json").read_text() == "mine"
    assert not list(out.glob("*.wav"))  # checked before any work


def test_backend_not_installed(tiny_bundle_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    result = pdd_run("--engine", tiny_bundle_dir, "--backend", "trt", "--out", tmp_path / "o")
    error_line(result, "needs TensorRT", "pip install 'pdd[trt]'")
    error_line(pdd_run("--engine", tiny_bundle_dir, "--verify", "--backend", "trt"), "needs TensorRT")


def test_cuda_device_without_a_gpu_onnxruntime(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    if "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers():
        pytest.skip("onnxruntime-gpu is installed")
    result = pdd_run("--engine", tiny_bundle_dir, "--device", "cuda", "--out", tmp_path / "o")
    error_line(result, "install onnxruntime-gpu")


def test_default_engine_lookup(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    with pytest.raises(BundleError, match="ships no default engine yet"):
        default_engine_dir(tmp_path)
    (tmp_path / "DEFAULT").write_text("small-8\n")
    assert default_engine_dir(tmp_path) == tmp_path / "small-8"
    (tmp_path / "DEFAULT").write_text("../elsewhere")
    with pytest.raises(BundleError, match="must name one bundle folder"):
        default_engine_dir(tmp_path)
    (tmp_path / "DEFAULT").unlink()
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / MANIFEST_NAME).write_text("{}")
    assert default_engine_dir(tmp_path) == tmp_path / "default"


def test_without_engine_uses_the_shipped_default_or_says_there_is_none(tmp_path: Path) -> None:
    result = pdd_run("-n", 1, "--out", tmp_path / "o")
    try:
        shipped = default_engine_dir()
    except BundleError:
        error_line(result, "ships no default engine yet", "--engine")
    else:
        assert result.exit_code == 0, result.output
        assert json.loads((tmp_path / "o" / "pdd-0-0.json").read_text())["engine"]["path"] == str(shipped)


def test_console_script_cold_run(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    """The installed entry point in a fresh interpreter (what users run)."""
    result = subprocess.run(
        [sys.executable, "-c", "from pdd.runtime.cli_run import main; main()", "--engine", str(tiny_bundle_dir),
         "-n", "2", "-b", "1", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 2 clip(s)" in result.stdout and "Traceback" not in result.stderr


EXPORT_TINY = r"""
import sys
from pathlib import Path
import torch
from pdd.export.bundle_writer import ExportOptions, export_bundle
from pdd.runtime.config import get_preset
from pdd.training.checkpoint import CheckpointInfo, make_checkpoint_state, save_checkpoint
from pdd.training.unet1d import UNet1D, unet_config

root = Path(sys.argv[1])
audio = get_preset("tiny")
config = unet_config("tiny", audio)
torch.manual_seed(0)
model = UNet1D(config)
with torch.no_grad():
    for param in model.parameters():
        param.add_(torch.randn_like(param) * 0.02)  # the U-Net zero-initialises its output layers
info = CheckpointInfo(kind="student", audio=audio, model=config, steps=2, lineage=[{"test": "runtime"}])
ckpt = save_checkpoint(root / "student-2.pt", make_checkpoint_state(model, info))
export_bundle(ExportOptions(ckpt=ckpt, steps=2, out=root / "tiny-2", gl_iters=4))
"""


@pytest.mark.slow
def test_a_real_exported_bundle_runs_end_to_end(tmp_path: Path) -> None:
    """pdd-export (in a separate process: torch stays out of this one) → pdd-run --verify and both modes."""
    import importlib.util

    if not all(importlib.util.find_spec(m) for m in ("torch", "onnx", "pdd.export.bundle_writer")):
        pytest.skip("needs the [export] extra (torch, onnx)")
    made = subprocess.run([sys.executable, "-c", EXPORT_TINY, str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stderr
    engine = tmp_path / "tiny-2"
    result = pdd_run("--engine", engine, "--verify")
    assert result.exit_code == 0 and "FAIL" not in result.output, result.output
    waves = {}
    for mode in ("sampler", "loop"):
        result = pdd_run("--engine", engine, "-n", 2, "--mode", mode, "--float", "--out", tmp_path / mode)
        assert result.exit_code == 0, result.output
        waves[mode], rate = sf.read(str(tmp_path / mode / "pdd-0-1.wav"), dtype="float32")
        assert rate == 16000 and waves[mode].shape == (load_bundle(engine).audio.clip_samples,)
    # Fast Griffin-Lim (momentum 0.99) amplifies the modes' ~1e-7 x̂0 difference; export's vocoder tolerance bounds it.
    peak = np.abs(waves["sampler"]).max()
    assert np.abs(waves["sampler"] - waves["loop"]).max() <= 2e-3 * max(peak, 1.0)


def test_peak_guard_scales_only_clips_that_would_clip() -> None:
    from pdd.runtime.audio import PEAK_CEILING, peak_guard

    quiet = np.array([0.5, -0.9], dtype=np.float32)
    same, gain = peak_guard(quiet)
    assert gain == 0.0 and np.array_equal(same, quiet)
    loud = np.array([0.5, -2.0], dtype=np.float32)
    scaled, gain = peak_guard(loud)
    assert np.abs(scaled).max() == pytest.approx(PEAK_CEILING)
    assert gain == pytest.approx(20 * np.log10(PEAK_CEILING / 2.0))
