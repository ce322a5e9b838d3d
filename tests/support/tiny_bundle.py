"""The tiny engine bundle every runtime, serve and hostile test runs on: hand-made ONNX graphs, without torch.

The graphs follow the bundle contract (names, dtypes, dynamic batch, shared external weights) with arithmetic simple
enough to check in numpy:

- denoiser: v = W1·z_t + t·W2 (elementwise; W1, W2 of shape (C·F, L) in a shared external-data file);
- sampler: the same denoiser unrolled over the N-step DDIM grid by export's own `unroll_sampler` (torch-free);
- vocoder: a stand-in (x0 tiled to the clip length, times 0.1, plus 0·mean(phase0)) — export tests the real Griffin-Lim
  graph; the runtime only needs the right I/O.

`build_tiny_bundle(folder, **options)` writes one; `reference_*` compute what its graphs compute.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pdd.runtime.bundle import MANIFEST_FORMAT, schedule_entry, write_manifest
from pdd.runtime.config import get_preset
from pdd.runtime.schedule import ScheduleConfig, ddim_sample, grid

TINY_STEPS = 4
WEIGHTS_FILE = "weights.data"


def tiny_weights(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1234)
    w1 = (0.3 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    w2 = (0.2 * rng.standard_normal(shape)).astype(np.float32)
    return w1, w2


def reference_denoiser(z: np.ndarray, t: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    return (z * w1 + np.asarray(t, dtype=np.float32).reshape(-1, 1, 1) * w2).astype(np.float32)


def reference_sampler(z1: np.ndarray, steps: int, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    return ddim_sample(lambda z, t: z * w1 + t * w2, z1.astype(np.float64), grid(steps)).astype(np.float32)


def reference_vocoder(x0: np.ndarray, samples: int) -> np.ndarray:
    flat = x0.reshape(x0.shape[0], -1)
    reps = -(-samples // flat.shape[1])
    return (np.tile(flat, (1, reps))[:, :samples] * np.float32(0.1)).astype(np.float32)


def _build_graphs(folder: Path, steps: int, fixed_batch: int | None, opset: int) -> dict[str, Any]:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import set_external_data

    audio = get_preset("tiny")
    cf, length = audio.packed_shape
    batch: Any = fixed_batch if fixed_batch is not None else "batch"
    w1, w2 = tiny_weights((cf, length))

    # One external-data file, both graphs point at the same offsets: the weights are stored once.
    blob = w1.tobytes() + w2.tobytes()
    (folder / WEIGHTS_FILE).write_bytes(blob)

    def weights() -> list[Any]:
        tensors = []
        for name, array, offset in (("W1", w1, 0), ("W2", w2, w1.nbytes)):
            tensor = numpy_helper.from_array(array, name)
            set_external_data(tensor, location=WEIGHTS_FILE, offset=offset, length=array.nbytes)
            tensor.ClearField("raw_data")
            tensor.data_location = TensorProto.EXTERNAL
            tensors.append(tensor)
        return tensors

    def const(name: str, value: Any, shape: tuple[int, ...] = ()) -> Any:
        return numpy_helper.from_array(np.asarray(value, dtype=np.float32).reshape(shape), name)

    def info(name: str, shape: list[Any]) -> Any:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    def save(graph: Any, name: str) -> None:
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="pdd-tests")
        model.ir_version = 8
        onnx.save(model, str(folder / name))

    # denoiser: v = z_t·W1 + reshape(t, (-1, 1, 1))·W2
    denoiser = helper.make_graph(
        [
            helper.make_node("Reshape", ["t", "t_shape"], ["t3"]),
            helper.make_node("Mul", ["z_t", "W1"], ["zw"]),
            helper.make_node("Mul", ["t3", "W2"], ["tw"]),
            helper.make_node("Add", ["zw", "tw"], ["v"]),
        ],
        "denoiser",
        [info("z_t", [batch, cf, length]), info("t", [batch])],
        [info("v", [batch, cf, length])],
        initializer=weights() + [numpy_helper.from_array(np.array([-1, 1, 1], dtype=np.int64), "t_shape")],
    )
    save(denoiser, "denoiser.onnx")

    # sampler: the denoiser unrolled N times by export's own builder, every step reading the same W1/W2.
    from pdd.export.unroll import unroll_sampler

    onnx.save(unroll_sampler(onnx.load(str(folder / "denoiser.onnx"), load_external_data=False), steps),
              str(folder / "sampler.onnx"))

    # vocoder stand-in: tile x0 to the clip length; phase0 enters as 0·mean so it stays a real input.
    samples = audio.clip_samples
    reps = -(-samples // (cf * length))
    vocoder = helper.make_graph(
        [
            helper.make_node("Reshape", ["x0", "flat_shape"], ["flat"]),
            helper.make_node("Tile", ["flat", "reps"], ["tiled"]),
            helper.make_node("Slice", ["tiled", "starts", "ends", "axes"], ["cut"]),
            helper.make_node("Mul", ["cut", "gain"], ["scaled"]),
            helper.make_node("ReduceMean", ["phase0"], ["pmean"], axes=[1, 2], keepdims=0),
            helper.make_node("Unsqueeze", ["pmean", "unsq_axes"], ["pcol"]),
            helper.make_node("Mul", ["pcol", "zero"], ["pzero"]),
            helper.make_node("Add", ["scaled", "pzero"], ["waveform"]),
        ],
        "vocoder",
        [info("x0", [batch, cf, length]), info("phase0", [batch, audio.n_freqs, audio.frames])],
        [info("waveform", [batch, samples])],
        initializer=[
            numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "flat_shape"),
            numpy_helper.from_array(np.array([1, reps], dtype=np.int64), "reps"),
            numpy_helper.from_array(np.array([0], dtype=np.int64), "starts"),
            numpy_helper.from_array(np.array([samples], dtype=np.int64), "ends"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axes"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "unsq_axes"),
            const("gain", 0.1),
            const("zero", 0.0),
        ],
    )
    save(vocoder, "vocoder.onnx")
    return {"w1": w1, "w2": w2}


def _tensor(name: str, shape: list[Any]) -> dict[str, Any]:
    return {"name": name, "dtype": "float32", "shape": shape}


def tiny_manifest(steps: int, *, name: str = "tiny-test", gl_iters: int = 4) -> dict[str, Any]:
    audio = get_preset("tiny")
    cf, length = audio.packed_shape
    return {
        "format": MANIFEST_FORMAT,
        "name": name,
        "audio": audio.to_dict(),
        "pack": {"chunks": audio.pack_chunks},
        "schedule": schedule_entry(ScheduleConfig.student(steps)),
        "steps": steps,
        "model": {"kind": "test-linear", "channels": cf},
        "precision": "fp32",
        "graphs": {
            "denoiser": {"file": "denoiser.onnx", "inputs": [_tensor("z_t", ["batch", cf, length]), _tensor("t", ["batch"])],
                         "outputs": [_tensor("v", ["batch", cf, length])]},
            "sampler": {"file": "sampler.onnx", "inputs": [_tensor("z_1", ["batch", cf, length])],
                        "outputs": [_tensor("x0", ["batch", cf, length])]},
            "vocoder": {"file": "vocoder.onnx",
                        "inputs": [_tensor("x0", ["batch", cf, length]), _tensor("phase0", ["batch", audio.n_freqs, audio.frames])],
                        "outputs": [_tensor("waveform", ["batch", audio.clip_samples])],
                        "gl_iters": gl_iters, "gl_momentum": 0.99},
        },
        "external_data": WEIGHTS_FILE,
        "files": {},
        "golden": "golden.npz",
        "opset": 17,
        "provenance": {"made_by": "tests/support/tiny_bundle.py", "torch": None},
    }


def build_tiny_bundle(folder: Path, *, steps: int = TINY_STEPS, fixed_batch: int | None = None, golden_batch: int = 2) -> Path:
    """Write a complete tiny bundle into `folder` (created) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = _build_graphs(folder, steps, fixed_batch, opset=17)
    audio = get_preset("tiny")
    rng = np.random.default_rng(99)
    shape = (golden_batch, *audio.packed_shape)
    z1 = rng.standard_normal(shape, dtype=np.float32)
    z_t = rng.standard_normal(shape, dtype=np.float32)
    t = rng.uniform(0.1, 1.0, golden_batch).astype(np.float32)
    x0 = reference_sampler(z1, steps, weights["w1"], weights["w2"])
    phase0 = np.zeros((golden_batch, audio.n_freqs, audio.frames), dtype=np.float32)
    np.savez(
        folder / "golden.npz",
        **{
            "sampler.z_1": z1, "sampler.x0": x0,
            "denoiser.z_t": z_t, "denoiser.t": t, "denoiser.v": reference_denoiser(z_t, t, weights["w1"], weights["w2"]),
            "vocoder.x0": x0, "vocoder.phase0": phase0, "vocoder.waveform": reference_vocoder(x0, audio.clip_samples),
        },
    )
    manifest = tiny_manifest(steps)
    if fixed_batch is not None:
        for graph in manifest["graphs"].values():
            for tensor in graph["inputs"] + graph["outputs"]:
                tensor["shape"] = [fixed_batch if d == "batch" else d for d in tensor["shape"]]
    write_manifest(folder, manifest)
    return folder
