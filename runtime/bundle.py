"""Engine bundles: loading + verifying a bundle without torch (docs/architecture.md, "Engine bundles").

A bundle is a folder::

    manifest.json        the schema of pdd.runtime.manifest, format "pdd-engine/2"
    denoiser.onnx        (z_t, t) → v            one model call, for the host-loop mode
    sampler.onnx         (z_1) → x0              the whole N-step DDIM unrolled, one call per request
    vocoder.onnx         (x0, phase0) → waveform  unpack + denormalise + mel⁻¹ + Griffin-Lim
    <weights>.data       optional ONNX external data shared by denoiser and sampler
    golden.npz           inputs and reference outputs, keys "<graph>.<tensor>"
    trt/<key>/…          TensorRT plans (built per machine, never committed), key = plan_key(gpu, trt version, precision)

The manifest's schema, its checks and writing live in `pdd.runtime.manifest`, golden tensors and their tolerances in
`pdd.runtime.golden`, TensorRT plan keys and lookup in `pdd.runtime.plans`; this module loads and verifies a bundle with
them and re-exports their public names (`from pdd.runtime.bundle import X` keeps working).

`load_bundle` checks, in order: folder and manifest exist and parse, the format version, required keys, the audio preset
and its consistency with pack/graph shapes, the schedule against schedule.py, every sha256, and (unless
check_graphs=False) each graph's I/O names/dtypes/shapes against the ONNX file as onnxruntime sees it. Each failure is one
BundleError that says what to do.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pdd.runtime.config import AudioConfig
from pdd.runtime.errors import BundleError
from pdd.runtime.golden import GOLDEN_TOLERANCE, MAX_GOLDEN_ELEMENTS, VOCODER_GRAPHS, golden_tolerance, load_golden
from pdd.runtime.manifest import (  # noqa: F401  (the private checks are re-exported for tests)
    GRAPH_IO,
    GRAPH_NAMES,
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MAX_BUNDLE_FILES,
    MAX_GL_ITERS,
    MAX_MANIFEST_STEPS,
    MAX_TENSOR_DIM,
    MAX_TENSOR_RANK,
    ORT_DTYPES,
    PRECISIONS,
    READABLE_FORMATS,
    REEXPORT,
    REQUIRED_KEYS,
    SCHEDULE_TOLERANCE,
    VOCODER_CHOICES,
    GraphSpec,
    TensorSpec,
    _check_audio,
    _check_decode,
    _check_files,
    _check_graph_shapes,
    _check_limits,
    _check_paths,
    _check_schedule,
    _parse_graphs,
    pack_entry,
    referenced_files,
    schedule_config,
    schedule_entry,
    sha256_file,
    write_manifest,
)
from pdd.runtime.plans import plan_key, recorded_plans
from pdd.runtime.schedule import ScheduleConfig
from pdd.runtime.silence import DEFAULT_GATE, SilenceGate
from pdd.runtime.untrusted import MAX_JSON_BYTES, parse_json, printable, resolve_inside


@dataclass(frozen=True)
class Bundle:
    """A loaded, verified bundle. `hash` is the sha256 of manifest.json (which pins every file's hash)."""

    path: Path
    manifest: dict[str, Any]
    audio: AudioConfig
    schedule: dict[str, np.ndarray]  # the grid's t, alpha, sigma as float64 arrays
    graphs: dict[str, GraphSpec]
    hash: str
    schedule_config: ScheduleConfig  # which schedule, parameterisation and grid the model samples with

    @property
    def steps(self) -> int:
        """N: the grid the bundle's sampler runs (checked equal to the manifest's top-level "steps")."""
        return self.schedule_config.steps

    @property
    def name(self) -> str:
        return printable(self.manifest["name"], 200)  # printed by pdd-run --verify: no terminal escapes from a file

    @property
    def precision(self) -> str:
        return str(self.manifest["precision"])

    @property
    def chunks(self) -> int:
        return int(self.manifest["pack"]["chunks"])

    @property
    def packed_shape(self) -> tuple[int, int]:
        """(C·F, L) of one clip as the model sees it."""
        return self.audio.packed_shape

    @property
    def continuous_time(self) -> bool:
        return self.schedule_config.continuous

    def has_graph(self, name: str) -> bool:
        return name in self.graphs

    def graph(self, name: str) -> GraphSpec:
        if name not in self.graphs:
            have = ", ".join(sorted(self.graphs)) or "none"
            raise BundleError(f"bundle {self.name!r} has no {name} graph (it has: {have}); {REEXPORT} to include it")
        return self.graphs[name]

    def graph_path(self, name: str) -> Path:
        return resolve_inside(self.path, self.graph(name).file, f"{self.path}: manifest graphs.{name}.file", BundleError)

    def valid_loop_steps(self, limit: int = 1024) -> list[int]:
        """Step counts loop mode accepts: divisors of N (their grids t = k/M are subsets of the trained grid k/N).

        A bundle whose schedule says "continuous" (a teacher trained on continuous t) accepts any count; the list then
        runs 1..limit.
        """
        return self.schedule_config.valid_steps(limit)

    def golden_path(self) -> Path | None:
        name = self.manifest.get("golden")
        return resolve_inside(self.path, name, f"{self.path}: manifest golden", BundleError) if name else None

    def golden(self) -> dict[str, np.ndarray]:
        """The golden tensors, keyed "<graph>.<tensor>"; BundleError when the bundle has none."""
        path = self.golden_path()
        if path is None:
            raise BundleError(f"bundle {self.name!r} has no golden.npz to verify against; {REEXPORT}")
        return load_golden(path)

    def trt_root(self) -> Path:
        return self.path / "trt"

    def trt_plans(self, key: str) -> dict[str, Any] | None:
        """The PLANS dict for `key`: from the manifest's trt.plans, else from trt/<key>/plans.json; None if neither."""
        return recorded_plans(self.path, self.manifest, key)

    # -- decode (pdd-engine/2) ---------------------------------------------------------------------------------------
    @property
    def format(self) -> str:
        return str(self.manifest["format"])

    @property
    def decode(self) -> dict[str, Any]:
        return self.manifest.get("decode") or {}

    @property
    def gl_gate(self) -> SilenceGate | None:
        """Griffin-Lim's silence gate: the manifest's (v2), else the default for numpy decoding of a pdd-engine/1 bundle
        (its vocoder graph predates the gate and decodes the floor literally)."""
        if self.format != MANIFEST_FORMAT:
            return DEFAULT_GATE
        return SilenceGate.from_manifest(self.decode.get("silence_gate"))

    @property
    def neural(self) -> dict[str, Any] | None:
        """The learned vocoder's decode entry, or None when the bundle has none."""
        return self.decode.get("neural")

    @property
    def vocoders(self) -> tuple[str, ...]:
        """Vocoders this bundle can decode with: "neural" (if it ships one) and "gl" (always: numpy Griffin-Lim)."""
        return ("neural", "gl") if self.neural is not None else ("gl",)

    @property
    def default_vocoder(self) -> str:
        return str(self.decode.get("default_vocoder", "gl"))

    def file_sha256(self, relpath: str) -> str:
        return self.manifest["files"].get(relpath, "")


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------


def load_bundle(bundle_dir: str | os.PathLike[str], *, check_graphs: bool = True, check_hashes: bool = True) -> Bundle:
    """Read and verify a bundle; every failure is one BundleError that says what to do.

    `check_graphs` opens each ONNX file with onnxruntime (optimisations off, CPU) to compare its I/O with the
    manifest; a backend that opens the graphs anyway may pass False and call `check_graph_io` on its own sessions.
    """
    path = Path(bundle_dir)
    if not path.exists():
        raise BundleError(f"engine folder {path} does not exist; pass --engine with a folder made by `pdd-export`")
    if not path.is_dir():
        raise BundleError(f"{path} is not a folder; pass --engine with a folder made by `pdd-export`")
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(f"{path} has no {MANIFEST_NAME}: not an engine bundle; {REEXPORT}")
    if manifest_path.stat().st_size > MAX_JSON_BYTES:
        raise BundleError(f"{manifest_path} is over {MAX_JSON_BYTES} bytes: not a pdd manifest; {REEXPORT}")
    raw = manifest_path.read_bytes()
    manifest = parse_json(raw, str(manifest_path), BundleError)  # the manifest is untrusted: bad UTF-8, deep nesting
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path} is not a JSON object; {REEXPORT}")

    fmt = manifest.get("format")
    if fmt not in READABLE_FORMATS:
        raise BundleError(
            f"{path}: bundle format {str(fmt)[:40]!r} is not supported (this pdd reads {', '.join(READABLE_FORMATS)}); "
            f"{REEXPORT} from this version"
        )
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise BundleError(f"{manifest_path}: missing keys {', '.join(missing)}; {REEXPORT}")

    audio = _check_audio(manifest, path)
    schedule_cfg, schedule = _check_schedule(manifest, path)
    if manifest["precision"] not in PRECISIONS:
        raise BundleError(f"{path}: unknown precision {manifest['precision']!r}; {REEXPORT}")
    graphs = _parse_graphs(manifest, path)
    _check_graph_shapes(graphs, audio, path)
    _check_decode(manifest, graphs, path)
    _check_limits(graphs, path)
    _check_paths(manifest, graphs, path)
    if check_hashes:
        _check_files(manifest, path)

    bundle = Bundle(
        path=path, manifest=manifest, audio=audio, schedule=schedule, graphs=graphs,
        hash=hashlib.sha256(raw).hexdigest(), schedule_config=schedule_cfg,
    )
    if check_graphs:
        for name in bundle.graphs:
            check_graph_io(bundle, name, *_onnx_io(bundle, name))
    return bundle


def _onnx_io(bundle: Bundle, name: str) -> tuple[list[Any], list[Any]]:
    """Open one graph with onnxruntime on the CPU, optimisations off (only the I/O metadata is wanted)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(bundle.graph_path(name)), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own (Fail, InvalidProtobuf, …) types
        raise BundleError(f"{bundle.graph_path(name)}: onnxruntime cannot load it ({_first_line(exc)}); {REEXPORT}") from None
    return session.get_inputs(), session.get_outputs()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def check_graph_io(bundle: Bundle, name: str, inputs: list[Any], outputs: list[Any]) -> None:
    """Compare onnxruntime NodeArgs (name, type, shape) of graph `name` with the manifest's specs."""
    spec = bundle.graph(name)
    where = bundle.graph_path(name)
    for kind, specs, args in (("inputs", spec.inputs, inputs), ("outputs", spec.outputs, outputs)):
        by_name = {arg.name: arg for arg in args}
        if set(by_name) != {s.name for s in specs}:
            raise BundleError(
                f"{where}: graph {kind} are {sorted(by_name)} but the manifest says {sorted(s.name for s in specs)}; {REEXPORT}"
            )
        for tensor in specs:
            arg = by_name[tensor.name]
            dtype = ORT_DTYPES.get(arg.type, arg.type)
            if dtype != tensor.dtype:
                raise BundleError(f"{where}: {tensor.name} is {dtype} in the graph but {tensor.dtype} in the manifest; {REEXPORT}")
            if not _shape_matches(tensor.shape, arg.shape):
                raise BundleError(
                    f"{where}: {tensor.name} has shape {list(arg.shape)} in the graph but {list(tensor.shape)} in the "
                    f"manifest (a dynamic axis fixed at export?); {REEXPORT}"
                )


def _shape_matches(manifest_shape: tuple[int | str, ...], graph_shape: Any) -> bool:
    """Ints must agree exactly; a named (str) manifest axis needs a symbolic (str/None) dim in the graph."""
    if graph_shape is None or len(graph_shape) != len(manifest_shape):
        return False
    for want, got in zip(manifest_shape, graph_shape):
        if isinstance(want, int):
            if got != want:
                return False
        elif isinstance(got, int):
            return False
    return True


def finite_or_error(array: np.ndarray, what: str) -> np.ndarray:
    if not np.all(np.isfinite(array)):
        raise BundleError(f"{what} produced NaN/inf values; {REEXPORT} (an fp16 overflow?) or try --backend ort")
    return array


__all__ = [
    "MANIFEST_FORMAT", "MANIFEST_NAME", "GRAPH_NAMES", "GRAPH_IO", "Bundle", "GraphSpec", "TensorSpec", "load_bundle",
    "write_manifest", "schedule_entry", "schedule_config", "ScheduleConfig", "sha256_file", "referenced_files", "plan_key", "check_graph_io", "golden_tolerance", "GOLDEN_TOLERANCE",
    # re-exported from pdd.runtime.manifest / golden / plans, where they live
    "READABLE_FORMATS", "REQUIRED_KEYS", "PRECISIONS", "VOCODER_CHOICES", "ORT_DTYPES", "REEXPORT", "SCHEDULE_TOLERANCE",
    "MAX_MANIFEST_STEPS", "MAX_GL_ITERS", "MAX_TENSOR_RANK", "MAX_TENSOR_DIM", "MAX_BUNDLE_FILES", "MAX_GOLDEN_ELEMENTS",
    "VOCODER_GRAPHS", "pack_entry", "load_golden", "recorded_plans", "finite_or_error",
]
