"""The `trt` backend: native TensorRT 10 through its Python API and cuda-python, no onnxruntime in the loop.

Plans live in the bundle under `trt/<key>/<graph>.plan`, key = `bundle.plan_key(gpu, TensorRT version, precision)`, with
their metadata (sha256 of the plan, sha256 of the ONNX file it was built from, batch range) in the manifest's `trt.plans`
(written by `pdd-export --trt`) or in `trt/<key>/plans.json` (written here when a plan is built on first use). A plan
whose source hash differs from the bundle's current graph is stale and rebuilt, never loaded.

Per graph: the plan is deserialised once, device buffers for the prepared batch are allocated once, and a run is
async copies in → `execute_async_v3` → async copies out on one stream; optionally (`cuda_graph=True`) the enqueue is
captured once as a CUDA graph and replayed. Outputs kept on the device (`keep=`) need no
synchronisation, so a request (sampler → vocoder) synchronises once, when the waveform comes back.

Plans are built by `trt_build.build_plan`, the same builder `pdd-export --trt` uses (one set of flags per precision and
graph); TF32 stays on for the U-Net graphs (Ampere+), which is why `--verify` on TensorRT uses the looser tolerance
column (bundle.golden_tolerance).

`tensorrt` and `cuda-python` are imported lazily, here only; without them (or without a GPU) creating the backend raises
BackendUnavailable naming what to install.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pdd.runtime.backends import Backend
from pdd.runtime.backends.trt_build import TIMING_CACHE, BatchRange, build_plan
from pdd.runtime.bundle import Bundle, GraphSpec, plan_key, sha256_file
from pdd.runtime.errors import BackendUnavailable, BundleError, ConfigError
from pdd.runtime.fileio import atomic_write_bytes

INSTALL_HINT = "pip install 'pdd[trt]' (tensorrt>=10 and cuda-python from NVIDIA) on a machine with an NVIDIA GPU and driver"


def _import_libs() -> tuple[Any, Any]:
    """(tensorrt, cudart) or BackendUnavailable."""
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable(f"the trt backend needs TensorRT: {INSTALL_HINT}") from None
    except Exception as exc:  # the PyPI stub raises while trying to fetch the real wheel
        raise BackendUnavailable(f"TensorRT failed to import ({exc.__class__.__name__}); {INSTALL_HINT}") from None
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise BackendUnavailable(f"the trt backend needs cuda-python: {INSTALL_HINT}") from None
    if not hasattr(trt, "Runtime") or int(str(getattr(trt, "__version__", "0")).split(".")[0]) < 10:
        raise BackendUnavailable(f"the trt backend needs TensorRT 10 or newer (found {getattr(trt, '__version__', '?')}); {INSTALL_HINT}")
    return trt, cudart


def import_problem() -> str | None:
    """One line naming what to install when tensorrt / cuda-python do not import, else None."""
    try:
        _import_libs()
    except BackendUnavailable as exc:
        return str(exc)
    return None


class _Cuda:
    """The few cuda-python runtime calls we use, with errors turned into exceptions."""

    def __init__(self, cudart: Any) -> None:
        self.rt = cudart

    def call(self, result: Any) -> Any:
        err, *values = result if isinstance(result, tuple) else (result,)
        if err != self.rt.cudaError_t.cudaSuccess:
            name = getattr(err, "name", str(err))
            raise BackendUnavailable(f"CUDA call failed ({name}); check the NVIDIA driver and GPU")
        if not values:
            return None
        return values[0] if len(values) == 1 else tuple(values)

    def gpu_name(self) -> str:
        try:
            count = self.call(self.rt.cudaGetDeviceCount())
        except BackendUnavailable:
            count = 0
        if not count:
            raise BackendUnavailable(f"the trt backend found no CUDA GPU (is the NVIDIA driver installed?); {INSTALL_HINT}")
        props = self.call(self.rt.cudaGetDeviceProperties(0))
        name = props.name
        return name.decode(errors="replace").rstrip("\x00") if isinstance(name, bytes) else str(name)

    def malloc(self, nbytes: int) -> int:
        return int(self.call(self.rt.cudaMalloc(max(nbytes, 1))))

    def free(self, ptr: int) -> None:
        self.rt.cudaFree(ptr)

    def h2d(self, dst: int, array: np.ndarray, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.call(self.rt.cudaMemcpyAsync(dst, array.ctypes.data, array.nbytes, kind, stream))

    def d2h(self, array: np.ndarray, src: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.call(self.rt.cudaMemcpyAsync(array.ctypes.data, src, array.nbytes, kind, stream))

    def sync(self, stream: Any) -> None:
        self.call(self.rt.cudaStreamSynchronize(stream))

    def capture(self, stream: Any, enqueue: Any) -> Any:
        """Record what `enqueue()` puts on `stream` into an instantiated CUDA graph (cudaGraphExec_t)."""
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self.call(self.rt.cudaStreamBeginCapture(stream, mode))
        try:
            enqueue()
        finally:
            graph = self.call(self.rt.cudaStreamEndCapture(stream))
        try:
            return self.call(self.rt.cudaGraphInstantiate(graph, 0))
        finally:
            self.rt.cudaGraphDestroy(graph)

    def launch(self, graph_exec: Any, stream: Any) -> None:
        self.call(self.rt.cudaGraphLaunch(graph_exec, stream))

    def destroy(self, graph_exec: Any) -> None:
        self.rt.cudaGraphExecDestroy(graph_exec)


class DeviceTensor:
    """A device buffer this backend owns (an output kept with `keep=`): pointer, shape, dtype."""

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.ptr, self.shape, self.dtype = ptr, shape, np.dtype(dtype)


def current_key(bundle: Bundle) -> str:
    """The plan key for this machine: GPU name, TensorRT version, bundle precision."""
    trt, cudart = _import_libs()
    return plan_key(_Cuda(cudart).gpu_name(), trt.__version__, bundle.precision)


def find_plan(bundle: Bundle, key: str, graph: str, batch: int) -> Path | None:
    """The plan file for `graph` under `key` if it exists, is not stale, covers `batch` and matches its sha256."""
    plans = bundle.trt_plans(key)
    entry = ((plans or {}).get("graphs") or {}).get(graph)
    if not entry:
        return None
    source = bundle.file_sha256(bundle.graph(graph).file)
    if entry.get("source_sha256") != source:
        return None  # built from another version of the graph: stale
    span = entry.get("batch") or {}
    if not int(span.get("min", 1)) <= batch <= int(span.get("max", 0)):
        return None
    path = bundle.path / entry["file"]
    if not path.is_file() or sha256_file(path) != entry.get("sha256"):
        return None
    return path


def has_prebuilt_plans(bundle: Bundle, batch: int = 1) -> bool:
    """True when this machine has valid plans for the bundle's sampler (and vocoder): what `auto` needs to pick trt."""
    key = current_key(bundle)
    graphs = [g for g in ("sampler", "vocoder") if bundle.has_graph(g)] or ["denoiser"]
    return all(find_plan(bundle, key, graph, batch) is not None for graph in graphs)


def _write_plan_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


class _Engine:
    """One deserialised plan with its context and device buffers for a fixed batch."""

    def __init__(
        self, trt: Any, cuda: _Cuda, runtime: Any, plan: Path, spec: GraphSpec, batch: int, cuda_graph: bool = False
    ) -> None:
        self.cuda, self.spec, self.batch = cuda, spec, batch
        # CUDA graph of the enqueue, captured on the second run (TensorRT wants one plain run first) and replayed while the
        # bound addresses stay the same; re-captured when a chained input arrives from another address.
        self.cuda_graph = cuda_graph
        self.graph_exec: Any = None
        self.graph_addresses: dict[str, int] | None = None
        self.runs = 0
        self.engine = runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise BundleError(f"{plan}: TensorRT cannot deserialise this plan (built by another TensorRT?); delete it to rebuild")
        self.context = self.engine.create_execution_context()
        self.buffers: dict[str, DeviceTensor] = {}
        for tensor in spec.inputs + spec.outputs:
            shape = tensor.concrete(batch)
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(tensor.name)))
            ptr = cuda.malloc(int(np.prod(shape)) * dtype.itemsize)
            self.buffers[tensor.name] = DeviceTensor(ptr, shape, dtype)
            if tensor in spec.inputs:
                self.context.set_input_shape(tensor.name, shape)
            self.context.set_tensor_address(tensor.name, ptr)

    def run(self, inputs: Mapping[str, Any], keep: Sequence[str], stream: Any) -> dict[str, Any]:
        addresses = {}
        for name, value in inputs.items():
            target = self.buffers[name]
            if isinstance(value, DeviceTensor):
                addresses[name] = value.ptr  # chain without a copy
                continue
            array = np.ascontiguousarray(value, dtype=target.dtype)
            if array.shape != target.shape:
                raise ConfigError(f"{self.spec.name}.{name}: got shape {array.shape}, the plan is prepared for {target.shape}")
            addresses[name] = target.ptr
            self.cuda.h2d(target.ptr, array, stream)
        for name, ptr in addresses.items():
            self.context.set_tensor_address(name, ptr)
        self._enqueue(addresses, stream)
        out: dict[str, Any] = {}
        for tensor in self.spec.outputs:
            buffer = self.buffers[tensor.name]
            if tensor.name in keep:
                out[tensor.name] = buffer
            else:
                host = np.empty(buffer.shape, dtype=buffer.dtype)
                self.cuda.d2h(host, buffer.ptr, stream)
                out[tensor.name] = host
        return out

    def _execute(self, stream: Any) -> None:
        if not self.context.execute_async_v3(stream):
            raise BackendUnavailable(f"TensorRT failed to enqueue {self.spec.name}; see the TensorRT log")

    def _enqueue(self, addresses: dict[str, int], stream: Any) -> None:
        self.runs += 1
        if not self.cuda_graph or self.runs == 1:
            self._execute(stream)
            return
        if self.graph_exec is None or addresses != self.graph_addresses:
            self._drop_graph()
            try:
                self.graph_exec = self.cuda.capture(stream, lambda: self._execute(stream))
                self.graph_addresses = dict(addresses)
            except BackendUnavailable:
                print(f"warning: CUDA graph capture failed for {self.spec.name}; running it without", file=sys.stderr)
                self.cuda_graph = False
                self._execute(stream)
                return
        self.cuda.launch(self.graph_exec, stream)

    def _drop_graph(self) -> None:
        if self.graph_exec is not None:
            self.cuda.destroy(self.graph_exec)
            self.graph_exec = None

    def free(self) -> None:
        self._drop_graph()
        for buffer in self.buffers.values():
            self.cuda.free(buffer.ptr)
        self.buffers.clear()


class TrtBackend(Backend):
    """Native TensorRT: plans keyed per GPU/TensorRT/precision, built on first use when `build` is allowed."""

    name = "trt"
    device = "cuda"
    uses_tensorrt = True
    OPTIONS = ("build", "cuda_graph")

    def __init__(self, bundle: Bundle, *, build: bool = True, cuda_graph: bool | None = None) -> None:
        super().__init__(bundle)
        self.trt, cudart = _import_libs()
        self.cuda = _Cuda(cudart)
        self.gpu = self.cuda.gpu_name()
        self.key = plan_key(self.gpu, self.trt.__version__, bundle.precision)
        self.build = build
        # Opt-in (None: PDD_TRT_CUDA_GRAPH=1): replay each plan's enqueue as a CUDA graph. Off by default until it has been
        # measured on real hardware; TensorRT's own enqueue is already light for straight-line plans.
        self.cuda_graph = os.environ.get("PDD_TRT_CUDA_GRAPH") == "1" if cuda_graph is None else cuda_graph
        self.logger = self.trt.Logger(self.trt.Logger.WARNING)
        self.runtime = self.trt.Runtime(self.logger)
        self.stream = self.cuda.call(cudart.cudaStreamCreate())
        self.batch: int | None = None
        self._engines: dict[str, _Engine] = {}

    def plan_dir(self) -> Path:
        from pdd.runtime.backends.ort import writable_cache

        return writable_cache(self.bundle, self.key)

    def prepare(self, graphs: Sequence[str], batch: int) -> None:
        if batch < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch}")
        if batch != self.batch:
            self.close_engines()
            self.batch = batch
        for graph in graphs:
            if graph not in self._engines:
                self._engines[graph] = _Engine(
                    self.trt, self.cuda, self.runtime, self._plan(graph, batch), self.bundle.graph(graph), batch,
                    cuda_graph=self.cuda_graph,
                )

    def _plan(self, graph: str, batch: int) -> Path:
        found = find_plan(self.bundle, self.key, graph, batch)
        if found is not None:
            return found
        folder = self.plan_dir()
        sidecar = folder / "plans.json"
        try:
            local = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        except (OSError, json.JSONDecodeError):
            local = {}
        entry = (local.get("graphs") or {}).get(graph)
        plan = folder / f"{graph}.plan"
        source = self.bundle.file_sha256(self.bundle.graph(graph).file)
        if entry and entry.get("source_sha256") == source and entry.get("batch", {}).get("max", 0) >= batch and plan.is_file() \
                and sha256_file(plan) == entry.get("sha256"):
            return plan
        if not self.build:
            raise BundleError(f"no TensorRT plan for {graph} on {self.key}; run `pdd-export --trt` or allow building")
        print(f"building the TensorRT plan for {graph} ({self.key}, batch ≤ {batch}); this takes a while once", flush=True)
        spec = self.bundle.graph(graph)
        span = BatchRange(1, batch, batch)  # exactly the prepared batch: the fastest plan for it
        data = build_plan(self.trt, self.bundle.path / spec.file, graph, spec.inputs, precision=self.bundle.precision,
                          batch=span, timing_cache=folder / TIMING_CACHE)
        _write_plan_file(plan, data)
        local = {"gpu": self.gpu, "trt_version": self.trt.__version__, "precision": self.bundle.precision,
                 "graphs": {**(local.get("graphs") or {}), graph: {
                     "file": os.path.relpath(plan, self.bundle.path) if folder.is_relative_to(self.bundle.path) else str(plan),
                     "sha256": sha256_file(plan), "source_sha256": source, "batch": span.to_dict()}}}
        _write_plan_file(sidecar, (json.dumps(local, indent=2, sort_keys=True) + "\n").encode())
        return plan

    def run(self, graph: str, inputs: Mapping[str, Any], keep: Sequence[str] = ()) -> dict[str, Any]:
        if graph not in self._engines:
            raise ConfigError(f"graph {graph!r} was not prepared; call prepare([{graph!r}], batch) first")
        out = self._engines[graph].run(inputs, keep, self.stream)
        if any(isinstance(v, np.ndarray) for v in out.values()):
            self.cuda.sync(self.stream)  # the one synchronisation of a request: host outputs must be complete
        return out

    def to_host(self, value: Any) -> np.ndarray:
        if isinstance(value, DeviceTensor):
            host = np.empty(value.shape, dtype=value.dtype)
            self.cuda.d2h(host, value.ptr, self.stream)
            self.cuda.sync(self.stream)
            return host
        return np.asarray(value)

    def describe(self) -> str:
        return f"TensorRT {self.trt.__version__} on {self.gpu} ({self.bundle.precision})"

    def close_engines(self) -> None:
        for engine in self._engines.values():
            engine.free()
        self._engines.clear()

    def close(self) -> None:
        self.close_engines()
