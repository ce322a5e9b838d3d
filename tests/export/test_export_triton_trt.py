"""Triton model repository (configs parsed with Triton's own model_config.proto schema) and the TensorRT plan step.

TensorRT cannot be installed on CI (its wheel downloads from NVIDIA's index), so here: the one-line error without it, the
plan keys, and a `gpu`-marked test that builds and runs real plans where TensorRT and a GPU exist.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pdd.export.bundle_writer import ExportOptions, export_bundle
from pdd.export.cli import app
from pdd.export.triton import Enum, TritonError, render, write_repository
from pdd.runtime.bundle import golden_tolerance, load_bundle, plan_key, sha256_file


def _model_config_schema():
    """Triton's ModelConfig message from tritonclient's generated model_config_pb2, loaded without importing the gRPC
    client (tritonclient.grpc's __init__ needs grpcio, which the schema does not)."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("tritonclient (the [dev] extra) is needed to validate Triton configs against Triton's schema")
    path = Path(list(spec.submodule_search_locations)[0]) / "grpc" / "model_config_pb2.py"
    module_spec = importlib.util.spec_from_file_location("pdd_test_triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def schema():
    return _model_config_schema()


def _parse(schema, path: Path):
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), schema.ModelConfig())


def test_repository_configs_parse_against_tritons_schema(student_bundle, tmp_path, schema) -> None:
    out, _ = student_bundle
    repo = tmp_path / "triton"
    names = write_repository(out, repo, max_batch=4)
    assert names == ["pdd_sampler", "pdd_vocoder", "pdd_generate"]
    bundle = load_bundle(out)
    cf, length = bundle.packed_shape

    sampler = _parse(schema, repo / "pdd_sampler" / "config.pbtxt")
    assert sampler.backend == "onnxruntime" and sampler.max_batch_size == 4
    assert [(i.name, list(i.dims)) for i in sampler.input] == [("z_1", [cf, length])]
    assert [(o.name, list(o.dims)) for o in sampler.output] == [("x0", [cf, length])]
    assert sampler.input[0].data_type == schema.TYPE_FP32
    assert sampler.HasField("dynamic_batching")
    # the sampler's external weights travel with it; the graph file is the bundle's own
    assert sha256_file(repo / "pdd_sampler" / "1" / "model.onnx") == sha256_file(out / "sampler.onnx")
    assert (repo / "pdd_sampler" / "1" / "weights.onnx.data").is_file()

    vocoder = _parse(schema, repo / "pdd_vocoder" / "config.pbtxt")
    assert [i.name for i in vocoder.input] == ["x0", "phase0"]
    assert list(vocoder.input[1].dims) == [bundle.audio.n_freqs, bundle.audio.frames]
    assert list(vocoder.output[0].dims) == [bundle.audio.clip_samples]

    ensemble = _parse(schema, repo / "pdd_generate" / "config.pbtxt")
    assert ensemble.platform == "ensemble" and (repo / "pdd_generate" / "1").is_dir()
    steps = ensemble.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["pdd_sampler", "pdd_vocoder"]
    assert dict(steps[0].output_map) == {"x0": "x0"} and dict(steps[1].input_map) == {"x0": "x0", "phase0": "phase0"}
    assert {i.name for i in ensemble.input} == {"z_1", "phase0"} and ensemble.output[0].name == "waveform"


def test_trt_model_config_uses_plans_and_cuda_graphs(student_bundle, tmp_path, schema) -> None:
    """With plans in the bundle (faked here: this machine has no TensorRT) the ensemble switches to the TensorRT models."""
    out, _ = student_bundle
    copy = tmp_path / "bundle"
    import shutil

    shutil.copytree(out, copy)
    key = plan_key("NVIDIA Test GPU", "10.0.0", "fp32")
    (copy / "trt" / key).mkdir(parents=True)
    graphs = {}
    for graph in ("sampler", "vocoder"):
        (copy / "trt" / key / f"{graph}.plan").write_bytes(b"plan bytes " + graph.encode())
        graphs[graph] = {"file": f"trt/{key}/{graph}.plan", "sha256": "0" * 64, "source_sha256": sha256_file(copy / f"{graph}.onnx"),
                         "batch": {"min": 1, "opt": 1, "max": 8}}
    (copy / "trt" / key / "plans.json").write_text(json.dumps({"gpu": "NVIDIA Test GPU", "trt_version": "10.0.0", "precision": "fp32", "graphs": graphs}))
    repo = tmp_path / "triton"
    names = write_repository(copy, repo, trt_key=key, max_batch=8)
    assert names == ["pdd_sampler", "pdd_sampler_trt", "pdd_vocoder", "pdd_vocoder_trt", "pdd_generate"]
    trt_config = _parse(schema, repo / "pdd_sampler_trt" / "config.pbtxt")
    assert trt_config.platform == "tensorrt_plan" and trt_config.optimization.cuda.graphs
    assert (repo / "pdd_sampler_trt" / "1" / "model.plan").read_bytes() == b"plan bytes sampler"
    ensemble = _parse(schema, repo / "pdd_generate" / "config.pbtxt")
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == ["pdd_sampler_trt", "pdd_vocoder_trt"]
    with pytest.raises(TritonError, match="batches up to 8"):
        write_repository(copy, tmp_path / "t2", trt_key=key, max_batch=16)
    with pytest.raises(TritonError, match="no TensorRT plans"):
        write_repository(copy, tmp_path / "t3", trt_key="other-key-fp32")


def test_repository_is_not_overwritten_without_force(student_bundle, tmp_path) -> None:
    out, _ = student_bundle
    repo = tmp_path / "triton"
    repo.mkdir()
    (repo / "mine.txt").write_text("keep")
    with pytest.raises(TritonError, match="already exists"):
        write_repository(out, repo)
    assert (repo / "mine.txt").read_text() == "keep"
    write_repository(out, repo, force=True)
    assert not (repo / "mine.txt").exists() and (repo / "pdd_generate" / "config.pbtxt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["triton"]  # no temp folders left


def test_render_text_format_quotes_strings_and_leaves_enums_bare(schema) -> None:
    from google.protobuf import text_format

    text = render({"name": 'we"ird', "max_batch_size": 2, "instance_group": [{"kind": Enum("KIND_GPU"), "count": 1}],
                   "optimization": {"cuda": {"graphs": True}}})
    parsed = text_format.Parse(text, schema.ModelConfig())
    assert parsed.name == 'we"ird' and parsed.instance_group[0].kind == schema.ModelInstanceGroup.KIND_GPU
    assert parsed.optimization.cuda.graphs is True


def _tensorrt_available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


@pytest.mark.skipif(_tensorrt_available(), reason="TensorRT is installed here; the gpu-marked test covers it")
def test_trt_without_tensorrt_is_one_line_before_any_work(tiny_checkpoints, tmp_path) -> None:
    result = CliRunner().invoke(app, ["--ckpt", str(tiny_checkpoints["student"]), "--steps", "2", "--out", str(tmp_path / "e"), "--trt"])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "TensorRT" in errors[0] and "pip install tensorrt" in errors[0]
    assert "exporting" not in result.output  # refused before the export started
    assert not (tmp_path / "e").exists()


def test_plan_keys_separate_gpus_versions_and_precisions() -> None:
    keys = {plan_key(g, v, p) for g in ("NVIDIA H200", "Orin") for v in ("10.7.0", "10.8.0") for p in ("fp32", "fp16")}
    assert len(keys) == 8 and "NVIDIA_H200-10.7.0-fp16" in keys


@pytest.mark.gpu
def test_trt_plans_build_run_and_match_the_golden(tiny_checkpoints, tmp_path) -> None:
    """Where TensorRT and a GPU exist: --trt builds keyed plans, and the sampler plan reproduces the golden x0."""
    try:
        import tensorrt as trt
        import torch
    except ImportError as exc:
        pytest.skip(f"needs tensorrt and torch: {exc}")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU visible to torch")
    out = tmp_path / "tiny-trt"
    report = export_bundle(ExportOptions(ckpt=tiny_checkpoints["student"], steps=2, out=out, gl_iters=3, trt=True, trt_max_batch=4))
    bundle = load_bundle(out)
    plans = bundle.trt_plans(report.trt_key)
    assert plans and set(plans["graphs"]) == {"denoiser", "sampler", "vocoder"} and plans["trt_version"] == trt.__version__
    for graph, entry in plans["graphs"].items():
        assert sha256_file(out / entry["file"]) == entry["sha256"]
        assert entry["source_sha256"] == bundle.manifest["files"][f"{graph}.onnx"]
    golden = bundle.golden()
    for graph, inputs, output in (("sampler", ("z_1",), "x0"), ("vocoder", ("x0", "phase0"), "waveform")):
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine((out / plans["graphs"][graph]["file"]).read_bytes())
        context = engine.create_execution_context()
        feeds = {name: torch.from_numpy(golden[f"{graph}.{name}"]).cuda().contiguous() for name in inputs}
        for name, tensor in feeds.items():
            context.set_input_shape(name, tuple(tensor.shape))
            context.set_tensor_address(name, tensor.data_ptr())
        result = torch.empty(tuple(context.get_tensor_shape(output)), device="cuda", dtype=torch.float32)
        context.set_tensor_address(output, result.data_ptr())
        stream = torch.cuda.current_stream()
        assert context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        want = golden[f"{graph}.{output}"]
        err = float(np.abs(result.cpu().numpy() - want).max() / np.abs(want).max())
        print(f"TensorRT {graph}: max abs error {err:.3g} of peak")
        assert err <= golden_tolerance(graph, "fp32", tensorrt=True), graph


def test_cli_writes_the_bundle_then_the_triton_repository(student_bundle, tmp_path, monkeypatch, schema) -> None:
    """The CLI's plumbing after a successful export (the export itself is the session fixture's, patched in)."""
    from pdd.export import bundle_writer

    out, report = student_bundle
    seen = {}

    def fake_export(options, progress=None):
        seen["options"] = options
        return report

    monkeypatch.setattr(bundle_writer, "export_bundle", fake_export)
    repo = tmp_path / "repo"
    result = CliRunner().invoke(app, ["--ckpt", "x.pt", "--steps", "2", "--out", str(out), "--triton", str(repo),
                                      "--trt-max-batch", "4", "--precision", "fp16", "--gl-iters", "7"])
    assert result.exit_code == 0, result.output
    options = seen["options"]
    assert (options.steps, options.precision, options.gl_iters, options.trt_max_batch) == (2, "fp16", 7, 4)
    assert "wrote Triton repository" in result.output and "parity (onnxruntime):" in result.output
    assert "weights.onnx.data" in result.output
    assert _parse(schema, repo / "pdd_sampler" / "config.pbtxt").max_batch_size == 4
