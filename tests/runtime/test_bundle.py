"""Bundle manifest: writing, loading, and one clear BundleError per kind of damage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pdd.runtime.schedule import ScheduleConfig
from pdd.runtime.bundle import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    TensorSpec,
    load_bundle,
    plan_key,
    referenced_files,
    schedule_entry,
    sha256_file,
    write_manifest,
)
from pdd.runtime.errors import BundleError
from pdd.runtime.schedule import grid_coefficients


def _edit_manifest(folder: Path, edit, *, rehash: bool = True) -> None:
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    edit(manifest)
    if rehash:
        write_manifest(folder, manifest)
    else:
        (folder / MANIFEST_NAME).write_text(json.dumps(manifest))


def test_tiny_bundle_loads_with_everything_checked(tiny_bundle_dir: Path) -> None:
    bundle = load_bundle(tiny_bundle_dir)
    assert bundle.name == "tiny-test"
    assert bundle.steps == 4 and bundle.precision == "fp32" and bundle.chunks == 3
    assert bundle.packed_shape == (96, 32)
    assert set(bundle.graphs) == {"denoiser", "sampler", "vocoder"}
    assert bundle.hash == sha256_file(tiny_bundle_dir / MANIFEST_NAME)
    np.testing.assert_allclose(bundle.schedule["alpha"], grid_coefficients(4)["alpha"])
    assert bundle.valid_loop_steps() == [1, 2, 4]
    assert bundle.graph("vocoder").extra == {"gl_iters": 4, "gl_momentum": 0.99}
    assert bundle.graph("denoiser").input("t").concrete(3) == (3,)
    golden = bundle.golden()
    assert {"sampler.z_1", "sampler.x0", "denoiser.v", "vocoder.waveform"} <= set(golden)


def test_write_manifest_hashes_every_referenced_file_atomically(tiny_bundle_dir: Path) -> None:
    manifest = json.loads((tiny_bundle_dir / MANIFEST_NAME).read_text())
    assert manifest["format"] == MANIFEST_FORMAT
    assert sorted(manifest["files"]) == sorted(
        ["denoiser.onnx", "sampler.onnx", "vocoder.onnx", "weights.data", "golden.npz"]
    )
    assert referenced_files(manifest) == ["denoiser.onnx", "sampler.onnx", "vocoder.onnx", "weights.data", "golden.npz"]
    for relpath, digest in manifest["files"].items():
        assert sha256_file(tiny_bundle_dir / relpath) == digest
    assert not [p for p in tiny_bundle_dir.iterdir() if p.name.startswith(".")]


def test_write_manifest_refuses_missing_files(tiny_bundle_copy: Path) -> None:
    manifest = json.loads((tiny_bundle_copy / MANIFEST_NAME).read_text())
    (tiny_bundle_copy / "golden.npz").unlink()
    with pytest.raises(BundleError, match="golden.npz does not exist"):
        write_manifest(tiny_bundle_copy, manifest)


def test_missing_folder_and_non_bundles(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="not a folder"):
        load_bundle(tmp_path / "file")
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(tmp_path)


def test_other_format_version_says_reexport(tiny_bundle_copy: Path) -> None:
    _edit_manifest(tiny_bundle_copy, lambda m: m.update(format="pdd-engine/3"), rehash=False)
    with pytest.raises(BundleError, match=r"format 'pdd-engine/3' is not supported.*pdd-export"):
        load_bundle(tiny_bundle_copy)


def test_missing_key(tiny_bundle_copy: Path) -> None:
    _edit_manifest(tiny_bundle_copy, lambda m: m.pop("schedule"), rehash=False)
    with pytest.raises(BundleError, match="missing keys schedule"):
        load_bundle(tiny_bundle_copy)


def test_hash_mismatch_and_missing_file(tiny_bundle_copy: Path) -> None:
    with open(tiny_bundle_copy / "weights.data", "r+b") as handle:
        handle.seek(10)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(BundleError, match=r"weights.data does not match its sha256.*re-export"):
        load_bundle(tiny_bundle_copy)
    (tiny_bundle_copy / "weights.data").unlink()
    with pytest.raises(BundleError, match="weights.data is missing"):
        load_bundle(tiny_bundle_copy)


def test_truncated_onnx_is_caught_by_hash(tiny_bundle_copy: Path) -> None:
    path = tiny_bundle_copy / "sampler.onnx"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(BundleError, match="sampler.onnx does not match its sha256"):
        load_bundle(tiny_bundle_copy)


def test_truncated_onnx_with_rewritten_hashes_is_caught_by_onnxruntime(tiny_bundle_copy: Path) -> None:
    path = tiny_bundle_copy / "sampler.onnx"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _edit_manifest(tiny_bundle_copy, lambda m: None)  # hashes now match the damaged file
    with pytest.raises(BundleError, match=r"sampler.onnx: onnxruntime cannot load it"):
        load_bundle(tiny_bundle_copy)


def test_schedule_from_another_runtime_is_refused(tiny_bundle_copy: Path) -> None:
    def shift(manifest: dict) -> None:
        manifest["schedule"]["alpha"][1] += 1e-3

    _edit_manifest(tiny_bundle_copy, shift)
    with pytest.raises(BundleError, match="schedule.alpha does not match"):
        load_bundle(tiny_bundle_copy)
    _edit_manifest(tiny_bundle_copy, lambda m: m.update(schedule=schedule_entry(ScheduleConfig.student(4)), steps=8))
    with pytest.raises(BundleError, match="disagree"):
        load_bundle(tiny_bundle_copy)


def test_audio_preset_problems(tiny_bundle_copy: Path) -> None:
    _edit_manifest(tiny_bundle_copy, lambda m: m["audio"].update(hop_length=0))
    with pytest.raises(BundleError, match="audio preset in the manifest is invalid"):
        load_bundle(tiny_bundle_copy)
    _edit_manifest(tiny_bundle_copy, lambda m: (m["audio"].update(hop_length=256), m["pack"].update(chunks=2)))
    with pytest.raises(BundleError, match="pack.chunks 2 disagrees"):
        load_bundle(tiny_bundle_copy)


def test_graph_shape_must_fit_the_preset(tiny_bundle_copy: Path) -> None:
    _edit_manifest(tiny_bundle_copy, lambda m: m["graphs"]["sampler"]["inputs"][0].update(shape=["batch", 95, 32]))
    with pytest.raises(BundleError, match=r"sampler.z_1 has shape \['batch', 95, 32\] but the audio preset 'tiny' needs"):
        load_bundle(tiny_bundle_copy)


def test_wrong_io_names_dtypes_and_fixed_batch(tiny_bundle_copy: Path, make_tiny_bundle) -> None:
    _edit_manifest(tiny_bundle_copy, lambda m: m["graphs"]["denoiser"]["outputs"][0].update(name="x"))
    with pytest.raises(BundleError, match="the runtime needs"):
        load_bundle(tiny_bundle_copy)
    _edit_manifest(tiny_bundle_copy, lambda m: m["graphs"]["denoiser"]["outputs"][0].update(name="v", dtype="float16"))
    with pytest.raises(BundleError, match="v is float32 in the graph but float16 in the manifest"):
        load_bundle(tiny_bundle_copy)

    # The export bug this guards against: a graph whose batch axis was fixed at 1 while the manifest says dynamic.
    fixed = make_tiny_bundle("fixed", fixed_batch=1)
    assert load_bundle(fixed).graph("sampler").input("z_1").shape == (1, 96, 32)

    def claim_dynamic(manifest: dict) -> None:
        for graph in manifest["graphs"].values():
            for tensor in graph["inputs"] + graph["outputs"]:
                tensor["shape"] = ["batch" if i == 0 else d for i, d in enumerate(tensor["shape"])]

    _edit_manifest(fixed, claim_dynamic)
    with pytest.raises(BundleError, match="dynamic axis fixed at export"):
        load_bundle(fixed)
    load_bundle(fixed, check_graphs=False)  # the backend re-checks on its own sessions


def test_unsupported_parameterisation_precision_and_graph_sets(tiny_bundle_copy: Path) -> None:
    _edit_manifest(tiny_bundle_copy, lambda m: m["schedule"].update(parameterization="eps"))
    with pytest.raises(BundleError, match="manifest schedule: .*parameterization must be one of v"):
        load_bundle(tiny_bundle_copy)
    _edit_manifest(tiny_bundle_copy, lambda m: (m["schedule"].update(parameterization="v"), m.update(parameterization="eps")))
    with pytest.raises(BundleError, match="parameterization 'eps' disagrees"):
        load_bundle(tiny_bundle_copy)
    _edit_manifest(tiny_bundle_copy, lambda m: m.update(parameterization="v", precision="int8"))
    with pytest.raises(BundleError, match="unknown precision"):
        load_bundle(tiny_bundle_copy)
    _edit_manifest(tiny_bundle_copy, lambda m: (m.update(precision="fp32"), m["graphs"].pop("sampler"), m["graphs"].pop("denoiser")))
    with pytest.raises(BundleError, match="neither a denoiser nor a sampler"):
        load_bundle(tiny_bundle_copy)


def test_bundle_without_vocoder_or_golden_loads(tiny_bundle_copy: Path) -> None:
    _edit_manifest(tiny_bundle_copy, lambda m: (m["graphs"].pop("vocoder"), m.update(golden=None)))
    bundle = load_bundle(tiny_bundle_copy)
    assert not bundle.has_graph("vocoder")
    with pytest.raises(BundleError, match="has no vocoder graph"):
        bundle.graph("vocoder")
    with pytest.raises(BundleError, match="no golden.npz"):
        bundle.golden()


def test_manifest_schedule_is_one_schedule_config(tiny_bundle_copy: Path) -> None:
    bundle = load_bundle(tiny_bundle_copy)
    assert bundle.schedule_config == ScheduleConfig.student(bundle.steps)
    assert {k: bundle.manifest["schedule"][k] for k in ScheduleConfig.student(1).to_dict()} == bundle.schedule_config.to_dict()


def test_older_manifest_schedule_takes_top_level_parameterisation_and_defaults(tiny_bundle_copy: Path) -> None:
    def engine1_schedule(m: dict) -> None:  # what pdd-engine/1 and early /2 exporters wrote
        for key in ("parameterization", "continuous", "teacher_steps"):
            m["schedule"].pop(key)
        m["parameterization"] = "v"

    _edit_manifest(tiny_bundle_copy, engine1_schedule)
    bundle = load_bundle(tiny_bundle_copy)
    assert bundle.schedule_config == ScheduleConfig.student(bundle.steps) and not bundle.continuous_time
    _edit_manifest(tiny_bundle_copy, lambda m: m["schedule"].update(continuous="yes"))
    with pytest.raises(BundleError, match="continuous must be true or false"):
        load_bundle(tiny_bundle_copy)
    _edit_manifest(tiny_bundle_copy, lambda m: m["schedule"].update(continuous=False, teacher_steps=10**12))
    with pytest.raises(BundleError, match="teacher_steps must be at most 1024"):
        load_bundle(tiny_bundle_copy)


def test_continuous_schedule_allows_any_loop_steps(tiny_bundle_copy: Path) -> None:
    _edit_manifest(tiny_bundle_copy, lambda m: m.update(schedule=schedule_entry(ScheduleConfig(steps=4, continuous=True))))
    bundle = load_bundle(tiny_bundle_copy)
    assert bundle.continuous_time and bundle.valid_loop_steps(limit=5) == [1, 2, 3, 4, 5]


def test_trt_plans_from_manifest_or_sidecar(tiny_bundle_copy: Path) -> None:
    key = plan_key("NVIDIA GeForce RTX 4090", "10.7.0.post1", "fp16")
    assert key == "NVIDIA_GeForce_RTX_4090-10.7.0.post1-fp16"
    with pytest.raises(BundleError, match="unknown precision"):
        plan_key("x", "10", "int4")
    bundle = load_bundle(tiny_bundle_copy)
    assert bundle.trt_plans(key) is None
    plans = {"gpu": "g", "trt_version": "10", "precision": "fp16", "graphs": {}}
    (tiny_bundle_copy / "trt" / key).mkdir(parents=True)
    (tiny_bundle_copy / "trt" / key / "plans.json").write_text(json.dumps(plans))
    assert bundle.trt_plans(key) == plans
    _edit_manifest(tiny_bundle_copy, lambda m: m.update(trt={"plans": {key: {**plans, "gpu": "from-manifest"}}}))
    assert load_bundle(tiny_bundle_copy).trt_plans(key)["gpu"] == "from-manifest"


def test_tensor_spec_validation() -> None:
    spec = TensorSpec.from_dict({"name": "z_1", "dtype": "float32", "shape": ["batch", 96, 32]}, "graphs.sampler.inputs")
    assert spec.concrete(2) == (2, 96, 32) and spec.to_dict()["shape"] == ["batch", 96, 32]
    with pytest.raises(BundleError, match="needs name, dtype and shape"):
        TensorSpec.from_dict({"name": "z_1"}, "graphs.sampler.inputs")
    with pytest.raises(BundleError, match="unknown dtype"):
        TensorSpec.from_dict({"name": "z_1", "dtype": "floaty", "shape": [1]}, "graphs.sampler.inputs")
    with pytest.raises(BundleError, match="shape entries"):
        TensorSpec.from_dict({"name": "z_1", "dtype": "float32", "shape": [1.5]}, "graphs.sampler.inputs")
