"""`pdd-export` end to end on a tiny checkpoint: graphs, shared weights, golden, manifest, parity, and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from pdd.export import parity as parity_module
from pdd.export.bundle_writer import ExportError, ExportOptions, export_bundle
from pdd.export.cli import app
from pdd.export.parity import ort_session
from pdd.runtime.bundle import MANIFEST_FORMAT, golden_tolerance, load_bundle, sha256_file
from pdd.runtime.schedule import ddim_sample, grid

GL_ITERS = 3  # as the student_bundle fixture (conftest.py)



@pytest.fixture(scope="module")
def teacher_fp16_bundle(tiny_checkpoints, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("engines") / "teacher-3-fp16"
    report = export_bundle(ExportOptions(ckpt=tiny_checkpoints["teacher"], steps=3, out=out, gl_iters=1, precision="fp16"))
    return out, report


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# -- the bundle -----------------------------------------------------------------------------------------------------------


def test_bundle_loads_in_the_runtime_and_has_every_file(student_bundle) -> None:
    out, report = student_bundle
    bundle = load_bundle(out)  # hashes, schedule, graph I/O against the ONNX files
    assert bundle.manifest["format"] == MANIFEST_FORMAT
    assert set(bundle.graphs) == {"denoiser", "sampler", "vocoder"}
    assert bundle.steps == 2 and bundle.precision == "fp32" and not bundle.continuous_time
    assert bundle.graph("vocoder").extra == {"gl_iters": GL_ITERS, "gl_momentum": 0.99}
    assert bundle.manifest["opset"] >= 17
    assert bundle.manifest["model"]["name"] == "tiny" and bundle.manifest["audio"]["name"] == "tiny"
    for relpath, digest in bundle.manifest["files"].items():
        assert sha256_file(out / relpath) == digest
    assert set(report.files) == {"denoiser.onnx", "sampler.onnx", "vocoder.onnx", "weights.onnx.data", "golden.npz", "manifest.json"}
    assert _leftovers(out.parent) == []
    assert (out / "manifest.json").stat().st_mode & 0o044  # readable by others, not mkstemp's 0600


def test_provenance_records_checkpoint_parity_and_evaluation(student_bundle, tiny_checkpoints) -> None:
    out, _ = student_bundle
    provenance = json.loads((out / "manifest.json").read_text())["provenance"]
    assert provenance["checkpoint"]["sha256"] == sha256_file(tiny_checkpoints["student"])
    assert provenance["checkpoint"]["kind"] == "student" and provenance["checkpoint"]["steps"] == 2
    assert provenance["evaluation"] == {"fd_mel": 12.5, "steps": 2}
    graphs = {(p["graph"], p["reference"]) for p in provenance["parity"]}
    assert graphs == {("denoiser", "torch"), ("sampler", "torch"), ("vocoder", "torch"), ("vocoder", "numpy")}
    assert all(p["passed"] for p in provenance["parity"])


def test_weights_are_stored_once_and_shared(student_bundle, tiny_checkpoints) -> None:
    out, _ = student_bundle
    n_params = sum(p.numel() for p in torch.load(tiny_checkpoints["student"], weights_only=True)["model"].values())
    data_size = (out / "weights.onnx.data").stat().st_size
    assert data_size < 4 * n_params * 1.05  # once, not once per graph or per unrolled step
    locations = {}
    for graph in ("denoiser", "sampler"):
        proto = onnx.load(str(out / f"{graph}.onnx"), load_external_data=False)
        external = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        assert external, graph
        locations[graph] = {
            tuple(sorted((e.key, e.value) for e in t.external_data)) for t in external
        }
        assert (out / f"{graph}.onnx").stat().st_size < 300_000  # graph only (exporter debug metadata stripped)
    assert locations["denoiser"] <= locations["sampler"]  # the sampler reads the denoiser's very bytes


def test_sampler_is_straight_line_with_a_dynamic_batch(student_bundle) -> None:
    out, _ = student_bundle
    proto = onnx.load(str(out / "sampler.onnx"), load_external_data=False)
    assert not {n.op_type for n in proto.graph.node} & {"Loop", "If", "Scan"}
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_sampler_graph_equals_ddim_over_the_denoiser_graph(student_bundle) -> None:
    """One fused call == the runtime's loop (denoiser per step + DDIM coefficients), at a batch the export never saw."""
    out, _ = student_bundle
    sampler, denoiser = ort_session(str(out / "sampler.onnx")), ort_session(str(out / "denoiser.onnx"))
    z = np.random.default_rng(9).standard_normal((3, 96, 32)).astype(np.float32)
    fused = sampler.run(["x0"], {"z_1": z})[0]
    z = ddim_sample(lambda z, t: denoiser.run(["v"], {"z_t": z, "t": np.full(3, t, np.float32)})[0], z, grid(2))
    assert fused.shape == (3, 96, 32)
    np.testing.assert_allclose(fused, z, atol=1e-4, rtol=0)


def test_golden_tensors_reproduce_in_onnxruntime(student_bundle) -> None:
    out, _ = student_bundle
    golden = dict(np.load(out / "golden.npz"))
    io = {"denoiser": (("z_t", "t"), "v"), "sampler": (("z_1",), "x0"), "vocoder": (("x0", "phase0"), "waveform")}
    for graph, (inputs, output) in io.items():
        feeds = {name: golden[f"{graph}.{name}"] for name in inputs}
        got = ort_session(str(out / f"{graph}.onnx")).run([output], feeds)[0]
        want = golden[f"{graph}.{output}"]
        assert got.shape == want.shape and want.shape[0] == (1 if graph == "vocoder" else 2)
        assert np.abs(got - want).max() <= golden_tolerance(graph, "fp32") * np.abs(want).max(), graph


def test_teacher_exports_any_step_count_and_fp16_parity_is_reported(teacher_fp16_bundle) -> None:
    out, report = teacher_fp16_bundle
    bundle = load_bundle(out)
    assert bundle.steps == 3 and bundle.continuous_time and bundle.precision == "fp16"
    by_key = {(p.graph, p.precision, p.reference): p for p in report.parity}
    for graph in ("denoiser", "sampler"):
        assert by_key[(graph, "fp32", "torch")].passed and by_key[(graph, "fp16", "torch")].passed
        # fp16 is measurably less exact than fp32, and still close
        assert by_key[(graph, "fp16", "torch")].max_abs > by_key[(graph, "fp32", "torch")].max_abs
    proto = onnx.load(str(out / "denoiser.onnx"), load_external_data=False)
    dtypes = {t.data_type for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
    assert dtypes == {onnx.TensorProto.FLOAT16}
    assert bundle.graph("denoiser").input("z_t").dtype == "float32"  # I/O stays fp32
    # GroupNorm lowers to InstanceNormalization and attention to Softmax: both must compute in fp32
    producer = {name: node for node in proto.graph.node for name in node.output}
    kept = [n for n in proto.graph.node if n.op_type in ("InstanceNormalization", "Softmax")]
    assert {n.op_type for n in kept} == {"InstanceNormalization", "Softmax"}
    for node in kept:
        cast = producer[node.input[0]]
        assert cast.op_type == "Cast" and cast.attribute[0].i == onnx.TensorProto.FLOAT, node.name
    vocoder = onnx.load(str(out / "vocoder.onnx"))
    assert not any(t.data_type == onnx.TensorProto.FLOAT16 for t in vocoder.graph.initializer)  # vocoder stays fp32


def test_many_teacher_steps_give_a_loop_only_bundle(tiny_checkpoints, tmp_path, monkeypatch) -> None:
    """Above MAX_UNROLLED_STEPS (64; lowered here to keep the test fast) there is no fused sampler: the runtime loops."""
    from pdd.export import bundle_writer

    monkeypatch.setattr(bundle_writer, "MAX_UNROLLED_STEPS", 1)
    report = export_bundle(ExportOptions(ckpt=tiny_checkpoints["teacher"], steps=2, out=tmp_path / "loop", gl_iters=1))
    bundle = load_bundle(tmp_path / "loop")
    assert set(bundle.graphs) == {"denoiser", "vocoder"} and not (tmp_path / "loop" / "sampler.onnx").exists()
    assert "no fused sampler" in report.notes[0]
    assert not any(key.startswith("sampler.") for key in bundle.golden())


# -- bad input: one line, exit 2, nothing left behind -------------------------------------------------------------------


def _run(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def _assert_one_line_error(code: int, output: str, *fragments: str) -> None:
    assert code == 2, output
    lines = [line for line in output.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in output, output
    for fragment in fragments:
        assert fragment in lines[0], output


def test_cli_refuses_a_file_that_is_not_our_checkpoint(tmp_path) -> None:
    junk = tmp_path / "model.pt"
    torch.save({"state_dict": {}}, junk)
    code, output = _run("--ckpt", str(junk), "--steps", "2", "--out", str(tmp_path / "e"))
    _assert_one_line_error(code, output, "not a pdd checkpoint")
    (tmp_path / "text.pt").write_text("hello")
    code, output = _run("--ckpt", str(tmp_path / "text.pt"), "--steps", "2", "--out", str(tmp_path / "e"))
    _assert_one_line_error(code, output, "not a readable pdd checkpoint")
    assert not (tmp_path / "e").exists() and _leftovers(tmp_path) == []


def test_cli_refuses_step_counts_the_checkpoint_cannot_sample(tiny_checkpoints, tmp_path) -> None:
    code, output = _run("--ckpt", str(tiny_checkpoints["student"]), "--steps", "4", "--out", str(tmp_path / "e"))
    _assert_one_line_error(code, output, "2-step student", "--steps 2")
    code, output = _run("--ckpt", str(tiny_checkpoints["teacher"]), "--steps", "2048", "--out", str(tmp_path / "e"))
    _assert_one_line_error(code, output, "teacher", "at most 1024")
    code, output = _run("--ckpt", str(tiny_checkpoints["teacher"]), "--steps", "0", "--out", str(tmp_path / "e"))
    _assert_one_line_error(code, output, "positive")
    assert not (tmp_path / "e").exists() and _leftovers(tmp_path) == []


def test_cli_refuses_to_overwrite_without_force(student_bundle, tiny_checkpoints) -> None:
    out, _ = student_bundle
    before = sha256_file(out / "manifest.json")
    code, output = _run("--ckpt", str(tiny_checkpoints["student"]), "--steps", "2", "--out", str(out))
    _assert_one_line_error(code, output, "already exists", "--force")
    assert sha256_file(out / "manifest.json") == before


def test_cli_refuses_bad_options(tiny_checkpoints, tmp_path) -> None:
    ckpt = str(tiny_checkpoints["student"])
    code, output = _run("--ckpt", ckpt, "--steps", "2", "--out", str(tmp_path / "e"), "--precision", "int8")
    _assert_one_line_error(code, output, "--precision")
    code, output = _run("--ckpt", ckpt, "--steps", "2", "--out", str(tmp_path / "e"), "--eval-json", str(tmp_path / "no.json"))
    _assert_one_line_error(code, output, "--eval-json")
    (tmp_path / "bad.json").write_text("{not json")
    code, output = _run("--ckpt", ckpt, "--steps", "2", "--out", str(tmp_path / "e"), "--eval-json", str(tmp_path / "bad.json"))
    _assert_one_line_error(code, output, "not a readable JSON")
    (tmp_path / "repo").mkdir()
    code, output = _run("--ckpt", ckpt, "--steps", "2", "--out", str(tmp_path / "e"), "--triton", str(tmp_path / "repo"))
    _assert_one_line_error(code, output, "already exists", "--force")
    code, output = _run("--ckpt", ckpt, "--steps", "128", "--out", str(tmp_path / "e"), "--triton", str(tmp_path / "t"))
    _assert_one_line_error(code, output, "--triton", "64 steps")
    assert not (tmp_path / "e").exists()


def test_failed_parity_is_one_line_and_leaves_nothing(tiny_checkpoints, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(parity_module.TOLERANCE, ("denoiser", "fp32"), 0.0)
    code, output = _run("--ckpt", str(tiny_checkpoints["student"]), "--steps", "2", "--out", str(tmp_path / "e"), "--gl-iters", "1")
    _assert_one_line_error(code, output, "parity check failed", "denoiser")
    assert not (tmp_path / "e").exists() and _leftovers(tmp_path) == []


def test_failed_parity_with_force_keeps_the_old_bundle(student_bundle, tiny_checkpoints, monkeypatch) -> None:
    out, _ = student_bundle
    before = sha256_file(out / "manifest.json")
    monkeypatch.setitem(parity_module.TOLERANCE, ("denoiser", "fp32"), 0.0)
    with pytest.raises(ExportError, match="parity"):
        export_bundle(ExportOptions(ckpt=tiny_checkpoints["student"], steps=2, out=out, force=True, gl_iters=GL_ITERS))
    assert sha256_file(out / "manifest.json") == before and _leftovers(out.parent) == []


def test_cli_help_has_an_example() -> None:
    code, output = _run("--help")
    assert code == 0 and "pdd-export --ckpt" in output and "--steps 8" in output


def test_sigterm_mid_export_leaves_nothing_behind(tiny_checkpoints, tmp_path) -> None:
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "e"
    cmd = [sys.executable, "-c", "from pdd.export.cli import main; main()",
           "--ckpt", str(tiny_checkpoints["student"]), "--steps", "2", "--out", str(out), "--gl-iters", "2"]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not _leftovers(tmp_path) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _leftovers(tmp_path), "the export never created its temp folder"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130 and "error: interrupted" in stderr and "Traceback" not in stderr
    assert not out.exists() and _leftovers(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_small_model_on_the_paper_preset_fits_the_size_budget(tmp_path, precision) -> None:
    """The shipped configuration (U-Net "small", audio "paper", 8 steps, 32 Griffin-Lim iterations) with random weights:
    parity passes and the bundle stays inside the ~25 MB the default bundle may take in git."""
    from pdd.runtime.config import get_preset
    from pdd.training.checkpoint import CheckpointInfo, make_checkpoint_state, save_checkpoint
    from pdd.training.unet1d import UNet1D, unet_config

    audio = get_preset("paper")
    config = unet_config("small", audio)
    torch.manual_seed(0)
    model = UNet1D(config)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    ckpt = save_checkpoint(tmp_path / "student-8.pt", make_checkpoint_state(model, CheckpointInfo("student", audio, config, 8)))
    report = export_bundle(ExportOptions(ckpt=ckpt, steps=8, out=tmp_path / "small-8", precision=precision))
    assert all(p.passed for p in report.parity)
    assert sum(report.files.values()) < 25 * 2**20
    load_bundle(tmp_path / "small-8")
