"""The engine manifest: its schema, the tensor/graph specs, writing it, and every check `load_bundle` makes of it
(docs/architecture.md, "Engine bundles"). `pdd.runtime.bundle` loads a bundle with these; export writes with them.

Manifest schema (every key required unless marked optional)::

    format            "pdd-engine/2" (MANIFEST_FORMAT; "pdd-engine/1" still loads); another value → BundleError
    name              bundle name (str)
    audio             AudioConfig.to_dict() of the preset the model was trained on
    pack              {"chunks": C[, "order": "reshape"]}  must equal audio.pack_chunks / pack_order (absent = "snake")
    schedule          ScheduleConfig.to_dict() (pdd.runtime.schedule: kind, parameterization, steps N, continuous,
                      teacher_steps) plus "t", "alpha", "sigma" = grid_coefficients(N) as lists (checked to 1e-6).
                      "continuous": true when the denoiser was trained on continuous t (a teacher): loop mode then
                      accepts any step count; otherwise only counts whose grid is a subset of the trained grid (divisors
                      of N, see `Bundle.valid_loop_steps`). Older manifests lack parameterization/continuous/teacher_steps
                      here: they come from the top-level "parameterization" and the ScheduleConfig defaults.
    steps             N (== schedule.steps; kept at the top level for readers and tools that only want N)
    model             the U-Net config dict (opaque to the runtime; recorded for provenance)
    precision         "fp32" | "fp16" (of the ONNX weights; graph I/O dtypes are whatever the graph specs say)
    graphs            {"denoiser": GRAPH, "sampler": GRAPH, "vocoder": GRAPH}; at least one of denoiser/sampler;
                      vocoder optional (the runtime falls back to numpy Griffin-Lim). GRAPH =
                      {"file": "denoiser.onnx",
                       "inputs":  [{"name": "z_t", "dtype": "float32", "shape": ["batch", CF, L]},
                                   {"name": "t",   "dtype": "float32", "shape": ["batch"]}],
                       "outputs": [{"name": "v",   "dtype": "float32", "shape": ["batch", CF, L]}]}
                      shape entries are ints (fixed) or strings (a named dynamic axis: the ONNX graph must have a
                      symbolic dim there, so a batch accidentally fixed at export is caught at load).
                      Names per graph: denoiser (z_t, t) → v; sampler (z_1) → x0; vocoder (x0 (batch, CF, L),
                      phase0 (batch, n_freqs, frames)) → waveform (batch, samples); the vocoder GRAPH also carries
                      "gl_iters" (int) and "gl_momentum" (float) it was built with.
    external_data     file name of the shared external-data file, or null (name it "*.onnx.data": that is the pattern
                      pyproject's package-data ships for bundles under engines/)
    files             {relpath: sha256} of every file above (graphs, external data, golden) — filled by write_manifest
    golden            "golden.npz" or null (optional key)
    opset             ONNX opset (int)
    provenance        free-form dict (pdd version, data, teacher/student steps, evaluation figures)
    trt               optional {"plans": {key: PLANS}} for plans shipped/built by pdd-export --trt, where
                      PLANS = {"gpu": str, "trt_version": str, "precision": "fp32"|"fp16",
                               "graphs": {graph: {"file": "trt/<key>/<graph>.plan", "sha256": str,
                                                  "source_sha256": sha256 of the ONNX file it was built from,
                                                  "batch": {"min": int, "opt": int, "max": int}}}}
                      Plans are NOT in `files` (they are per machine); a runtime that builds a plan on first use writes
                      the same PLANS dict to trt/<key>/plans.json instead of touching the manifest. A plan whose
                      source_sha256 differs from the current graph's is stale and never loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from pdd.runtime.config import AudioConfig
from pdd.runtime.errors import BundleError, ConfigError
from pdd.runtime.fileio import atomic_write_text
from pdd.runtime.graphs import GRAPHS
from pdd.runtime.schedule import ScheduleConfig, grid_coefficients
from pdd.runtime.silence import DEFAULT_GATE, SilenceGate
from pdd.runtime.untrusted import (
    bounded_float,
    bounded_int,
    check_audio_bounds,
    onnx_external_locations,
    printable,
    resolve_inside,
)

MANIFEST_FORMAT = "pdd-engine/2"  # what this pdd writes
READABLE_FORMATS = ("pdd-engine/1", "pdd-engine/2")  # /1: Griffin-Lim only, no silence gate in its graph
MANIFEST_NAME = "manifest.json"
# Upper bounds on manifest numbers (a manifest is untrusted; pdd itself writes far smaller values).
MAX_MANIFEST_STEPS = 1024  # the finest DDIM grid pdd exports
MAX_GL_ITERS = 1000  # a graph's Griffin-Lim iterations (pdd writes 32)
MAX_TENSOR_RANK = 8
MAX_TENSOR_DIM = 1 << 24
MAX_BUNDLE_FILES = 256
GRAPH_NAMES = tuple(GRAPHS)  # ("denoiser", "sampler", "vocoder", "neural_vocoder", "neural_vocoder_wave")
VOCODER_CHOICES = ("neural", "gl")  # what decode.default_vocoder may name
PRECISIONS = ("fp32", "fp16")
REQUIRED_KEYS = (
    "format", "name", "audio", "pack", "schedule", "steps", "model", "precision", "graphs",
    "external_data", "files", "opset", "provenance",
)
# The I/O names the runtime feeds and reads, per graph (from the contracts in pdd.runtime.graphs).
GRAPH_IO = {name: (c.input_names, c.output_names) for name, c in GRAPHS.items()}
# ONNX Runtime's type strings ("tensor(float)") ↔ numpy dtype names used in the manifest.
ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
}
SCHEDULE_TOLERANCE = 1e-6
_HASH_CHUNK = 1 << 20

REEXPORT = "re-export the bundle with `pdd-export`"


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, numpy dtype name, shape with ints (fixed) or strings (named dynamic axes)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "TensorSpec":
        if not isinstance(data, dict) or not {"name", "dtype", "shape"} <= set(data):
            raise BundleError(f"manifest {where}: each tensor needs name, dtype and shape; {REEXPORT}")
        if not isinstance(data["name"], str) or not isinstance(data["dtype"], str) or not isinstance(data["shape"], list):
            raise BundleError(f"manifest {where}: a tensor's name and dtype must be text and its shape a list; {REEXPORT}")
        name = printable(data["name"], 40)
        shape = tuple(data["shape"][: MAX_TENSOR_RANK + 1])  # a longer shape is refused by rank below
        if len(data["shape"]) > MAX_TENSOR_RANK or not all(isinstance(d, (int, str)) and not isinstance(d, bool) for d in shape):
            raise BundleError(f"manifest {where}.{name}: shape entries must be at most {MAX_TENSOR_RANK} ints or axis names; {REEXPORT}")
        if data["dtype"] not in ORT_DTYPES.values():
            raise BundleError(f"manifest {where}.{name}: unknown dtype {printable(repr(data['dtype']), 40)}; {REEXPORT}")
        return cls(data["name"], data["dtype"], shape)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def concrete(self, batch: int) -> tuple[int, ...]:
        """The shape with every named (dynamic) axis set to `batch` (batch is the only dynamic axis pdd exports)."""
        return tuple(batch if isinstance(d, str) else d for d in self.shape)


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX graph of the bundle: its file, I/O specs, and graph-specific extras (e.g. the vocoder's gl_iters)."""

    name: str
    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    def input(self, name: str) -> TensorSpec:
        return _by_name(self.inputs, name, self.name)

    def output(self, name: str) -> TensorSpec:
        return _by_name(self.outputs, name, self.name)


def _by_name(specs: Iterable[TensorSpec], name: str, graph: str) -> TensorSpec:
    for spec in specs:
        if spec.name == name:
            return spec
    raise BundleError(f"graph {graph!r} has no tensor {name!r}; {REEXPORT}")



# ---------------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def referenced_files(manifest: dict[str, Any]) -> list[str]:
    """Relative paths of every file the manifest references (graphs, external data, golden), in a stable order."""
    names: list[str] = []
    graphs = manifest.get("graphs")
    for graph in GRAPH_NAMES:
        spec = graphs.get(graph) if isinstance(graphs, dict) else None
        if isinstance(spec, dict) and spec.get("file"):
            names.append(str(spec["file"]))
    if manifest.get("external_data"):
        names.append(str(manifest["external_data"]))
    neural = (manifest.get("decode") or {}).get("neural")
    if isinstance(neural, dict) and neural.get("external_data"):
        names.append(str(neural["external_data"]))  # the learned vocoder's weights, shared by its graphs
    if manifest.get("golden"):
        names.append(str(manifest["golden"]))
    return list(dict.fromkeys(names))


def pack_entry(audio: AudioConfig) -> dict[str, Any]:
    """The manifest's "pack" entry: {"chunks": C}, plus "order" when it is not the snake order (so snake bundles read as
    they always did)."""
    entry: dict[str, Any] = {"chunks": audio.pack_chunks}
    if audio.pack_order != "snake":
        entry["order"] = audio.pack_order
    return entry


def schedule_entry(schedule: ScheduleConfig) -> dict[str, Any]:
    """The manifest's "schedule" value: the ScheduleConfig itself plus its grid's coefficients (what export writes)."""
    coeffs = grid_coefficients(schedule.steps)
    entry: dict[str, Any] = schedule.to_dict()
    entry.update({key: [float(v) for v in coeffs[key]] for key in ("t", "alpha", "sigma")})
    return entry


def schedule_config(manifest: dict[str, Any], path: Path) -> ScheduleConfig:
    """The ScheduleConfig a manifest's "schedule" records; fields an older manifest lacks take the top-level
    "parameterization" and the defaults a pdd-engine/1 bundle was made with (a discrete-time student)."""
    sched = manifest["schedule"]
    fields = {key: sched[key] for key in ("kind", "steps", "parameterization", "continuous", "teacher_steps") if key in sched}
    fields.setdefault("parameterization", manifest.get("parameterization", "v"))
    fields.setdefault("continuous", False)
    try:
        config = ScheduleConfig(**fields)
    except ConfigError as exc:
        raise BundleError(f"{path}: manifest schedule: {printable(str(exc), 200)}; {REEXPORT}") from None
    if config.teacher_steps > MAX_MANIFEST_STEPS:
        raise BundleError(f"{path}: schedule.teacher_steps must be at most {MAX_MANIFEST_STEPS}; {REEXPORT}")
    top = manifest.get("parameterization", config.parameterization)
    if top != config.parameterization:
        raise BundleError(f"{path}: parameterization {printable(repr(top), 40)} disagrees with schedule.parameterization "
                          f"{config.parameterization!r}; {REEXPORT}")
    return config


def write_manifest(bundle_dir: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Fill `files` with the sha256 of every referenced file, set `format`, and write manifest.json atomically.

    Raises BundleError when a referenced file is missing. Returns the manifest path.
    """
    bundle_dir = Path(bundle_dir)
    manifest = dict(manifest)
    manifest["format"] = MANIFEST_FORMAT
    # A manifest without a decode entry decodes with Griffin-Lim behind the default silence gate.
    manifest.setdefault("decode", {"silence_gate": DEFAULT_GATE.to_dict(), "default_vocoder": "gl"})
    files: dict[str, str] = {}
    for relpath in referenced_files(manifest):
        path = bundle_dir / relpath
        if not path.is_file():
            raise BundleError(f"cannot write manifest: {path} does not exist")
        files[relpath] = sha256_file(path)
    manifest["files"] = files
    target = bundle_dir / MANIFEST_NAME
    text = json.dumps(manifest, indent=2, sort_keys=True, default=_json_default) + "\n"
    return atomic_write_text(target, text)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# ---------------------------------------------------------------------------------------------------------------------
# Checks (called by pdd.runtime.bundle.load_bundle, in this order after the format and required keys)
# ---------------------------------------------------------------------------------------------------------------------


def _check_audio(manifest: dict[str, Any], path: Path) -> AudioConfig:
    check_audio_bounds(manifest["audio"], f"{path}: manifest audio", BundleError)
    try:
        audio = AudioConfig.from_dict(dict(manifest["audio"]))
    except (ConfigError, TypeError) as exc:
        raise BundleError(f"{path}: audio preset in the manifest is invalid ({printable(exc, 300)}); {REEXPORT}") from None
    if not isinstance(manifest.get("pack"), dict):
        raise BundleError(f"{path}: manifest pack must be an object holding its chunks ({audio.pack_chunks}); {REEXPORT}")
    chunks = (manifest.get("pack") or {}).get("chunks")
    if chunks != audio.pack_chunks:
        raise BundleError(f"{path}: pack.chunks {chunks} disagrees with the audio preset ({audio.pack_chunks}); {REEXPORT}")
    order = (manifest.get("pack") or {}).get("order", "snake")  # absent: the snake order every bundle had before
    if order != audio.pack_order:
        raise BundleError(f"{path}: pack.order {printable(repr(order), 40)} disagrees with the audio preset "
                          f"({audio.pack_order}); {REEXPORT}")
    return audio


def _check_schedule(manifest: dict[str, Any], path: Path) -> tuple[ScheduleConfig, dict[str, np.ndarray]]:
    """The manifest's ScheduleConfig and its grid's t/alpha/sigma, checked against this runtime's cosine grid."""
    sched = manifest["schedule"]
    steps = manifest["steps"]
    if not isinstance(sched, dict) or sched.get("kind") != "cosine":
        raise BundleError(f"{path}: only the cosine schedule is supported; {REEXPORT}")
    bounded_int(steps, f"{path}: manifest steps", 1, MAX_MANIFEST_STEPS, BundleError)  # before any grid is allocated
    if not isinstance(steps, int) or steps < 1 or sched.get("steps") != steps:
        raise BundleError(f"{path}: steps ({steps!r}) and schedule.steps ({sched.get('steps')!r}) disagree; {REEXPORT}")
    expected = grid_coefficients(steps)
    arrays: dict[str, np.ndarray] = {}
    for key in ("t", "alpha", "sigma"):
        try:
            values = np.asarray(sched[key], dtype=np.float64)
        except (KeyError, TypeError, ValueError, OverflowError):
            raise BundleError(f"{path}: schedule.{key} is missing or not a list of numbers; {REEXPORT}") from None
        if values.shape != expected[key].shape or not np.allclose(values, expected[key], atol=SCHEDULE_TOLERANCE, rtol=0):
            raise BundleError(
                f"{path}: schedule.{key} does not match this runtime's cosine grid for {steps} steps "
                f"(made by another pdd version?); {REEXPORT}"
            )
        arrays[key] = values
    return schedule_config(manifest, path), arrays


def _parse_graphs(manifest: dict[str, Any], path: Path) -> dict[str, GraphSpec]:
    raw = manifest["graphs"]
    if not isinstance(raw, dict):
        raise BundleError(f"{path}: manifest 'graphs' must be an object; {REEXPORT}")
    unknown = set(raw) - set(GRAPH_NAMES)
    if unknown:
        raise BundleError(f"{path}: unknown graphs {', '.join(sorted(unknown))} (this pdd knows {', '.join(GRAPH_NAMES)}); {REEXPORT}")
    if not ({"denoiser", "sampler"} & set(raw)):
        raise BundleError(f"{path}: bundle has neither a denoiser nor a sampler graph; {REEXPORT}")
    graphs: dict[str, GraphSpec] = {}
    for name in GRAPH_NAMES:
        if name not in raw:
            continue
        entry = raw[name]
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise BundleError(f"{path}: graphs.{name} needs a 'file'; {REEXPORT}")
        if not all(isinstance(entry.get(kind, []), list) for kind in ("inputs", "outputs")):
            raise BundleError(f"{path}: graphs.{name}.inputs and .outputs must be lists of tensors; {REEXPORT}")
        inputs = tuple(TensorSpec.from_dict(t, f"graphs.{name}.inputs") for t in entry.get("inputs", []))
        outputs = tuple(TensorSpec.from_dict(t, f"graphs.{name}.outputs") for t in entry.get("outputs", []))
        want_in, want_out = GRAPH_IO[name]
        have_in, have_out = tuple(t.name for t in inputs), tuple(t.name for t in outputs)
        if set(have_in) != set(want_in) or set(have_out) != set(want_out):
            raise BundleError(
                f"{path}: graph {name} has I/O {have_in} → {have_out}, the runtime needs {want_in} → {want_out}; {REEXPORT}"
            )
        extra = {k: v for k, v in entry.items() if k not in {"file", "inputs", "outputs"}}
        graphs[name] = GraphSpec(name, entry["file"], inputs, outputs, extra)
    if "vocoder" in graphs:
        extra = graphs["vocoder"].extra
        if not isinstance(extra.get("gl_iters"), int) or not isinstance(extra.get("gl_momentum"), (int, float)):
            raise BundleError(f"{path}: graphs.vocoder needs integer gl_iters and numeric gl_momentum; {REEXPORT}")
    return graphs


def _fixed(dim: int | str) -> int | None:
    return dim if isinstance(dim, int) else None


def _check_graph_shapes(graphs: dict[str, GraphSpec], audio: AudioConfig, path: Path) -> None:
    """The manifest's fixed dims must be the preset's: (CF, L) for mel tensors, n_freqs/frames for phase, samples out."""
    for graph in graphs.values():
        for spec in graph.inputs + graph.outputs:
            want = GRAPHS[graph.name].tensor(spec.name).shape(audio)
            got = [_fixed(d) for d in spec.shape]
            if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want)):
                raise BundleError(
                    f"{path}: {graph.name}.{spec.name} has shape {list(spec.shape)} but the audio preset "
                    f"{audio.name!r} needs {['batch' if w is None else w for w in want]}; {REEXPORT}"
                )


def _check_decode(manifest: dict[str, Any], graphs: dict[str, GraphSpec], path: Path) -> None:
    """`decode` (pdd-engine/2): the Griffin-Lim silence gate, the default vocoder, and the learned vocoder's entry.

    decode = {"silence_gate": {"threshold": float, "knee": float} | null,   Griffin-Lim's gate (numpy and graph alike)
              "default_vocoder": "neural" | "gl",
              "neural": {"graph": "neural_vocoder", "wave_graph": "neural_vocoder_wave" | null,
                         "silence_gate": {...} | null, ...provenance}           optional; requires its graph(s)}
    """
    if manifest.get("format") != MANIFEST_FORMAT:
        if "decode" in manifest or {"neural_vocoder", "neural_vocoder_wave"} & set(graphs):
            raise BundleError(f"{path}: a {manifest.get('format')} manifest cannot hold a learned vocoder; {REEXPORT}")
        return
    decode = manifest.get("decode")
    if not isinstance(decode, dict):
        raise BundleError(f"{path}: manifest needs a 'decode' object (pdd-engine/2); {REEXPORT}")
    try:
        SilenceGate.from_manifest(decode.get("silence_gate"))
    except (ConfigError, TypeError) as exc:
        raise BundleError(f"{path}: decode.silence_gate is invalid ({exc}); {REEXPORT}") from None
    neural = decode.get("neural")
    if neural is not None:
        if not isinstance(neural, dict) or neural.get("graph") != "neural_vocoder" or "neural_vocoder" not in graphs:
            raise BundleError(f"{path}: decode.neural must name the bundle's neural_vocoder graph; {REEXPORT}")
        wave = neural.get("wave_graph")
        if wave is not None and (wave != "neural_vocoder_wave" or wave not in graphs):
            raise BundleError(f"{path}: decode.neural.wave_graph names no graph of the bundle; {REEXPORT}")
        try:
            SilenceGate.from_manifest(neural.get("silence_gate"))
        except (ConfigError, TypeError) as exc:
            raise BundleError(f"{path}: decode.neural.silence_gate is invalid ({exc}); {REEXPORT}") from None
    elif {"neural_vocoder", "neural_vocoder_wave"} & set(graphs):
        raise BundleError(f"{path}: the bundle has neural vocoder graphs but no decode.neural entry; {REEXPORT}")
    default = decode.get("default_vocoder")
    if default not in VOCODER_CHOICES or (default == "neural" and neural is None):
        raise BundleError(f"{path}: decode.default_vocoder must be 'gl' or (with a learned vocoder) 'neural'; {REEXPORT}")


def _check_limits(graphs: dict[str, GraphSpec], path: Path) -> None:
    """Upper bounds on what the manifest makes the runtime allocate or loop over (beyond the audio preset's sizes)."""
    for graph in graphs.values():
        for spec in graph.inputs + graph.outputs:
            where = f"{path}: manifest graphs.{graph.name}.{printable(spec.name, 40)}"
            bounded_int(len(spec.shape), f"{where} rank", 0, MAX_TENSOR_RANK, BundleError)
            for dim in spec.shape:
                if isinstance(dim, int):
                    bounded_int(dim, f"{where} dimension", 0, MAX_TENSOR_DIM, BundleError)
        if "gl_iters" in graph.extra:  # named for the manifest: --gl-iters is the user's own option
            bounded_int(graph.extra["gl_iters"], f"{path}: manifest graphs.{graph.name}.gl_iters", 0, MAX_GL_ITERS,
                        BundleError)
        if "gl_momentum" in graph.extra:
            bounded_float(graph.extra["gl_momentum"], f"{path}: manifest graphs.{graph.name}.gl_momentum", 0.0, 0.999999,
                          BundleError)


def _check_paths(manifest: dict[str, Any], graphs: dict[str, GraphSpec], path: Path) -> None:
    """Every file the manifest names — graphs, external data, golden, `files` keys, TensorRT plans, and the external
    data each ONNX graph names inside itself — must lie inside the bundle folder after symlinks, and the ONNX external
    data must be a file the manifest hashes. Runs whether or not hashes are checked: a backend opens these paths."""
    files = manifest["files"]
    if not isinstance(files, dict) or len(files) > MAX_BUNDLE_FILES:
        raise BundleError(f"{path}: manifest 'files' must map at most {MAX_BUNDLE_FILES} paths to sha256; {REEXPORT}")
    named = [("manifest files entry", name) for name in files]
    named += [(f"manifest graphs.{g.name}.file", g.file) for g in graphs.values()]
    named += [(f"manifest {key}", manifest[key]) for key in ("external_data", "golden") if manifest.get(key)]
    trt = manifest.get("trt") or {}
    plans_by_key = trt.get("plans") if isinstance(trt, dict) else None
    if not isinstance(plans_by_key or {}, dict):
        raise BundleError(f"{path}: manifest trt.plans must be an object; {REEXPORT}")
    for plans in (plans_by_key or {}).values():
        named += [("manifest trt plan file", entry.get("file")) for entry in plan_entries(plans)]
    for what, name in named:
        resolve_inside(path, name, f"{path}: {what}", BundleError)
    hashed = {resolve_inside(path, name, f"{path}: manifest files entry", BundleError) for name in files}
    for graph in graphs.values():
        _check_external_data(path, graph, hashed)


def _check_external_data(path: Path, graph: GraphSpec, hashed: set[Path]) -> None:
    """onnxruntime reads a graph's external data relative to the graph's own folder, not the bundle's: resolve each
    location exactly so, keep it inside the bundle, and require that very file to be hashed. Otherwise a graph moved
    into a subfolder beside other weights runs those weights under a manifest byte-identical to the honest one."""
    graph_file = resolve_inside(path, graph.file, f"{path}: manifest graphs.{graph.name}.file", BundleError)
    for location in _external_locations(path, graph):
        if not isinstance(location, str) or not location or os.path.isabs(location) or "\x00" in location:
            raise BundleError(f"{path}: {printable(graph.file)} names external data {printable(repr(location), 80)}, "
                              f"not a relative path inside the bundle; {REEXPORT}")
        target = resolve_inside(path, os.path.relpath(graph_file.parent / location, Path(path).resolve()),
                                f"{path}: {printable(graph.file)} external data", BundleError)
        if target not in hashed:
            shown = target.relative_to(Path(path).resolve()).as_posix()
            raise BundleError(f"{path}: {printable(graph.file)} reads external data {printable(shown)!r} (resolved "
                              f"from its own folder, as onnxruntime does) that the manifest does not hash; {REEXPORT}")


def plan_entries(plans: Any) -> list[dict[str, Any]]:
    graphs = plans.get("graphs") if isinstance(plans, dict) else None
    if not isinstance(graphs, dict) or not all(isinstance(e, dict) for e in graphs.values()):
        raise BundleError("manifest trt plans must map graphs to {file, sha256, …}; rebuild the plans")
    return list(graphs.values())


def _external_locations(path: Path, graph: GraphSpec) -> list[str]:
    file = resolve_inside(path, graph.file, f"{path}: manifest graphs.{graph.name}.file", BundleError)
    if not file.is_file():
        return []  # the hash check (or onnxruntime) says it is missing
    try:
        return onnx_external_locations(file.read_bytes())
    except ValueError as exc:
        raise BundleError(f"{path}: {graph.file} has an unreadable external-data entry ({exc}); {REEXPORT}") from None


def _check_files(manifest: dict[str, Any], path: Path) -> None:
    files = manifest["files"]
    if not isinstance(files, dict):
        raise BundleError(f"{path}: manifest 'files' must map paths to sha256; {REEXPORT}")
    for relpath in referenced_files(manifest):
        if relpath not in files:
            raise BundleError(f"{path}: {relpath} has no sha256 in the manifest; {REEXPORT}")
    for relpath, digest in files.items():
        file = resolve_inside(path, relpath, f"{path}: manifest files entry", BundleError)
        if not file.is_file():
            raise BundleError(f"{path}: {relpath} is missing; the bundle is incomplete — {REEXPORT} or copy it again")
        if sha256_file(file) != digest:
            raise BundleError(
                f"{path}: {relpath} does not match its sha256 in the manifest (corrupt, truncated or edited); "
                f"{REEXPORT} or copy it again"
            )


__all__ = [
    "MANIFEST_FORMAT", "READABLE_FORMATS", "MANIFEST_NAME", "GRAPH_NAMES", "GRAPH_IO", "PRECISIONS", "REQUIRED_KEYS",
    "ORT_DTYPES", "REEXPORT", "TensorSpec", "GraphSpec", "sha256_file", "referenced_files", "pack_entry",
    "schedule_entry", "schedule_config", "write_manifest", "plan_entries",
]
