"""`pdd-export --from-bundle` never loses a learned vocoder silently: rebuilding a bundle's back end in place keeps the
vocoder it ships byte for byte (its checkpoint is often nowhere: a shipped engine carries none) unless --drop-vocoder
says to drop it; and a golden.npz of the wrong shapes is one error line, not a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from pdd.export.cli import app as export_app
from pdd.runtime.bundle import MANIFEST_NAME, load_bundle, sha256_file, write_manifest
from pdd.runtime.cli_run import app as run_app

runner = CliRunner()
NEURAL_FILES = ("neural_vocoder.onnx", "neural_vocoder_wave.onnx")


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and sum(line.startswith("error") for line in lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[-1]


def _neural_digests(bundle: Path) -> dict[str, str]:
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    names = [manifest["graphs"][g]["file"] for g in ("neural_vocoder", "neural_vocoder_wave") if g in manifest["graphs"]]
    names.append(manifest["decode"]["neural"]["external_data"])
    return {name: sha256_file(bundle / name) for name in names}


def test_rebuilding_in_place_keeps_the_learned_vocoder(neural_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "engine"
    shutil.copytree(neural_bundle, bundle)
    before, neural_before = load_bundle(bundle), _neural_digests(bundle)
    result = runner.invoke(export_app, ["--from-bundle", str(bundle), "--out", str(bundle), "--force"])
    assert result.exit_code == 0, result.output
    after = load_bundle(bundle)
    assert after.vocoders == ("neural", "gl") and after.default_vocoder == before.default_vocoder == "neural"
    assert after.neural == before.neural and _neural_digests(bundle) == neural_before
    assert {k for k in after.golden() if k.startswith("neural_vocoder")} == \
        {k for k in before.golden() if k.startswith("neural_vocoder")} != set()
    result = runner.invoke(run_app, ["--engine", str(bundle), "--verify", "--backend", "ort", "--device", "cpu"])
    assert result.exit_code == 0, result.output


def test_drop_vocoder_drops_it_deliberately(neural_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "engine"
    shutil.copytree(neural_bundle, bundle)
    result = runner.invoke(export_app, ["--from-bundle", str(bundle), "--out", str(bundle), "--force", "--drop-vocoder"])
    assert result.exit_code == 0, result.output
    after = load_bundle(bundle)
    assert after.vocoders == ("gl",) and after.default_vocoder == "gl"
    assert not any((bundle / name).exists() for name in NEURAL_FILES)
    assert not any(k.startswith("neural_vocoder") for k in after.golden())


def test_drop_vocoder_misuse_is_one_error_line(neural_bundle: Path, student_bundle, make_vocoder_checkpoint,
                                               tmp_path: Path) -> None:
    vocoder = make_vocoder_checkpoint(tmp_path / "vocoder.pt")
    cases = [
        (["--from-bundle", str(neural_bundle), "--out", str(tmp_path / "a"), "--drop-vocoder", "--vocoder-ckpt",
          str(vocoder)], "pass one of them"),
        (["--from-bundle", str(student_bundle[0]), "--out", str(tmp_path / "b"), "--drop-vocoder"], "no learned vocoder"),
        (["--ckpt", str(vocoder), "--steps", "2", "--out", str(tmp_path / "c"), "--drop-vocoder"], "--from-bundle"),
    ]
    for args, fragment in cases:
        assert fragment in _one_error_line(runner.invoke(export_app, args))
        assert not (tmp_path / args[args.index("--out") + 1]).exists()


def test_golden_of_the_wrong_shapes_is_one_error_on_rebuild(student_bundle, tmp_path: Path) -> None:
    bundle = tmp_path / "engine"
    shutil.copytree(student_bundle[0], bundle)
    with np.load(bundle / "golden.npz") as data:
        arrays = {key: data[key] for key in data.files}
    arrays["vocoder.x0"] = arrays["vocoder.x0"][:, :5, :7]
    np.savez(bundle / "golden.npz", **arrays)
    write_manifest(bundle, json.loads((bundle / MANIFEST_NAME).read_text()))
    line = _one_error_line(runner.invoke(export_app, ["--from-bundle", str(bundle), "--out", str(tmp_path / "v2")]))
    assert "golden.npz vocoder.x0" in line and "the graph takes" in line
    assert not (tmp_path / "v2").exists()


def test_a_knee_of_1e_300_is_refused_naming_the_gate(student_bundle, make_vocoder_checkpoint, tmp_path: Path) -> None:
    vocoder = make_vocoder_checkpoint(tmp_path / "vocoder.pt")
    line = _one_error_line(runner.invoke(export_app, [
        "--from-bundle", str(student_bundle[0]), "--vocoder-ckpt", str(vocoder), "--vocoder-gate", "-0.8,1e-300",
        "--out", str(tmp_path / "v2")]))
    assert "--vocoder-gate" in line and "knee" in line and "at least 0.001" in line
    bundle = tmp_path / "engine"
    shutil.copytree(student_bundle[0], bundle)
    manifest = json.loads((bundle / MANIFEST_NAME).read_text())
    manifest["decode"]["silence_gate"]["knee"] = 1e-300
    (bundle / MANIFEST_NAME).write_text(json.dumps(manifest))
    line = _one_error_line(runner.invoke(run_app, ["--engine", str(bundle), "-n", "1", "--out", str(tmp_path / "o")]))
    assert "decode.silence_gate" in line and "knee" in line
