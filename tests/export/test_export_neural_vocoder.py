"""The learned vocoder in a bundle: export with parity, pdd-engine/2, `pdd-run --vocoder`, upgrading a pdd-engine/1
bundle, the torch-free runtime, the gate in the Griffin-Lim graph, and the bad inputs around them."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from pdd.export.cli import app as export_app
from pdd.export.vocoder import export_gl_vocoder
from pdd.runtime.bundle import MANIFEST_NAME, load_bundle, sha256_file
from pdd.runtime.cli_run import app as run_app
from pdd.runtime.config import get_preset
from pdd.runtime.griffinlim import initial_phase
from pdd.runtime.silence import SilenceGate
from pdd.training.vocoder import VOCODER_GATE

TINY = get_preset("tiny")
runner = CliRunner()


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("pdd-export: ")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]


def _tree_hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_bundle_with_a_learned_vocoder_is_engine_2_and_verifies(neural_bundle: Path) -> None:
    bundle = load_bundle(neural_bundle)
    assert bundle.format == "pdd-engine/2" and bundle.vocoders == ("neural", "gl") and bundle.default_vocoder == "neural"
    assert {"neural_vocoder", "neural_vocoder_wave"} <= set(bundle.graphs)
    assert bundle.neural["silence_gate"] == VOCODER_GATE.to_dict()
    assert bundle.neural["external_data"] in bundle.manifest["files"]
    parity = {(p["graph"], p["reference"]): p for p in bundle.manifest["provenance"]["parity"]}
    assert parity[("neural_vocoder", "torch")]["passed"] and parity[("neural_vocoder_wave", "numpy")]["passed"]
    result = runner.invoke(run_app, ["--engine", str(neural_bundle), "--verify", "--backend", "ort", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "neural_vocoder.spectrum" in result.output and "neural_vocoder_wave.waveform" in result.output


def test_pdd_run_decodes_with_either_vocoder_and_records_which(neural_bundle: Path, tmp_path: Path) -> None:
    for choice, expected in (("auto", "neural"), ("neural", "neural"), ("gl", "gl")):
        out = tmp_path / choice
        result = runner.invoke(run_app, ["--engine", str(neural_bundle), "-n", "2", "--out", str(out), "--vocoder", choice])
        assert result.exit_code == 0, result.output
        meta = json.loads((out / "pdd-0-0.json").read_text())
        assert meta["vocoder"] == expected, meta
        assert (meta["gl_iters"] is None) == (expected == "neural")
    neural = json.loads((tmp_path / "neural" / "pdd-0-0.json").read_text())
    assert neural["vocoder_impl"] == "graph" and neural["silence_gate"] == VOCODER_GATE.to_dict()
    assert (tmp_path / "auto" / "pdd-0-0.wav").read_bytes() == (tmp_path / "neural" / "pdd-0-0.wav").read_bytes()
    assert (tmp_path / "gl" / "pdd-0-0.wav").read_bytes() != (tmp_path / "neural" / "pdd-0-0.wav").read_bytes()


def test_runtime_decodes_with_the_learned_vocoder_with_torch_blocked(neural_bundle: Path, tmp_path: Path) -> None:
    probe = (
        "import sys, json; sys.modules['torch'] = None\n"
        "from pdd.runtime.generate import RunOptions, generate\n"
        "r = generate(RunOptions(engine=sys.argv[1], n=1, out=sys.argv[2]))\n"
        "print(json.dumps([r[0].meta['vocoder'], sorted(k for k, v in sys.modules.items() if v is not None and k.split('.')[0] in ('torch', 'onnx'))]))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe, str(neural_bundle), str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == ["neural", []]


def _as_engine_1(bundle_dir: Path) -> None:
    """Rewrite a bundle's manifest as pdd-engine/1 (Griffin-Lim only, no decode entry), as the first wave wrote them."""
    manifest = json.loads((bundle_dir / MANIFEST_NAME).read_text())
    manifest["format"] = "pdd-engine/1"
    manifest.pop("decode")
    for name in ("neural_vocoder", "neural_vocoder_wave"):
        manifest["graphs"].pop(name, None)
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("neural_vocoder")}
    for name in ("neural_vocoder.onnx", "neural_vocoder_wave.onnx", "neural_vocoder.onnx.data"):
        (bundle_dir / name).unlink(missing_ok=True)
    (bundle_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))


def test_engine_1_bundles_still_run_and_upgrade_in_place(student_bundle, make_vocoder_checkpoint, tmp_path: Path) -> None:
    import shutil

    old = tmp_path / "old"
    shutil.copytree(student_bundle[0], old)
    _as_engine_1(old)
    bundle = load_bundle(old)
    assert bundle.format == "pdd-engine/1" and bundle.vocoders == ("gl",)
    result = runner.invoke(run_app, ["--engine", str(old), "-n", "1", "--out", str(tmp_path / "o1")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "o1" / "pdd-0-0.json").read_text())["vocoder"] == "gl"
    assert "no learned vocoder" in _one_error_line(runner.invoke(
        run_app, ["--engine", str(old), "-n", "1", "--out", str(tmp_path / "o2"), "--vocoder", "neural"]))
    assert not (tmp_path / "o2").exists() or not any((tmp_path / "o2").iterdir())

    vocoder = make_vocoder_checkpoint(tmp_path / "vocoder.pt")
    result = runner.invoke(export_app, ["--from-bundle", str(old), "--vocoder-ckpt", str(vocoder), "--out", str(old), "--force",
                                        "--vocoder-gate", "-0.8,0.2"])
    assert result.exit_code == 0, result.output
    upgraded = load_bundle(old)
    assert upgraded.format == "pdd-engine/2" and upgraded.default_vocoder == "neural"
    assert upgraded.neural["silence_gate"] == {"threshold": -0.8, "knee": 0.2}  # the override, baked in and recorded
    for graph in ("denoiser", "sampler"):  # the U-Net side is copied byte for byte
        assert sha256_file(old / f"{graph}.onnx") == sha256_file(student_bundle[0] / f"{graph}.onnx")
    assert upgraded.manifest["provenance"]["back_end"]["from_format"] == "pdd-engine/1"
    result = runner.invoke(run_app, ["--engine", str(old), "--verify", "--backend", "ort", "--device", "cpu"])
    assert result.exit_code == 0, result.output


def test_griffin_lim_graph_gates_like_numpy() -> None:
    """Inputs spread over the gate's ramp: the graph and numpy agree, and without the gate both would differ."""
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1.0, -0.3, (1, *TINY.packed_shape)).astype(np.float32)  # mostly on the ramp or below it
    phase = initial_phase((1, TINY.n_freqs, TINY.frames), seed=1)
    gate = SilenceGate(-0.7, 0.3)
    _, gated, checks = export_gl_vocoder(TINY, x0, phase, n_iter=2, momentum=0.99, gate=gate)
    assert all(p.passed for p in checks) and {p.reference for p in checks} == {"torch", "numpy"}
    _, literal, _ = export_gl_vocoder(TINY, x0, phase, n_iter=2, momentum=0.99, gate=None)
    assert np.abs(gated - literal).max() > 0.1 * np.abs(literal).max()


def test_bad_vocoder_inputs_are_one_line_and_write_nothing(student_bundle, tiny_checkpoints, make_vocoder_checkpoint,
                                                           tmp_path: Path) -> None:
    paper = make_vocoder_checkpoint(tmp_path / "paper-vocoder.pt", preset="paper")
    before = _tree_hashes(student_bundle[0])
    cases = [
        (["--ckpt", str(tiny_checkpoints["student"]), "--steps", "2", "--out", str(tmp_path / "a"), "--vocoder-ckpt",
          str(paper)], "audio preset 'paper'"),
        (["--ckpt", str(tiny_checkpoints["student"]), "--steps", "2", "--out", str(tmp_path / "b"), "--vocoder-ckpt",
          str(tiny_checkpoints["teacher"])], "not a vocoder checkpoint"),
        (["--from-bundle", str(student_bundle[0]), "--vocoder-ckpt", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "c")],
         "no such file"),
        (["--from-bundle", str(student_bundle[0]), "--out", str(student_bundle[0])], "already exists"),
        (["--from-bundle", str(student_bundle[0]), "--steps", "2", "--out", str(tmp_path / "d")], "only the back end"),
        (["--out", str(tmp_path / "e")], "--ckpt and --steps"),
        (["--from-bundle", str(student_bundle[0]), "--out", str(tmp_path / "f"), "--vocoder-ckpt", str(paper),
          "--vocoder-gate", "nan,0.1"], "--vocoder-gate must be THRESHOLD,KNEE"),
        (["--from-bundle", str(student_bundle[0]), "--out", str(tmp_path / "g"), "--vocoder-gate", "-0.8,0.2"],
         "pass --vocoder-ckpt too"),
    ]
    for args, fragment in cases:
        assert fragment in _one_error_line(runner.invoke(export_app, args)), args
    assert not any((tmp_path / name).exists() for name in "abcdefg")
    assert _tree_hashes(student_bundle[0]) == before


def test_corrupted_neural_graph_is_refused(neural_bundle: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(neural_bundle, broken)
    (broken / "neural_vocoder.onnx").write_bytes(b"not onnx")
    line = _one_error_line(runner.invoke(run_app, ["--engine", str(broken), "-n", "1", "--out", str(tmp_path / "o")]))
    assert "neural_vocoder.onnx" in line
    assert not (tmp_path / "o" / "pdd-0-0.wav").exists()
