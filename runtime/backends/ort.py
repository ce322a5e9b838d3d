"""The `ort` backend: ONNX Runtime with the best provider present (TensorRT EP → CUDA EP → CPU).

Session options are set deliberately rather than left to defaults:

- graph optimisation ORT_ENABLE_ALL (constant folding + layout/fusion passes; our graphs are static);
- intra-op threads = physical cores (`physical_cores()`), inter-op 1, sequential execution: the graphs are chains;
- CPU memory arena and memory-pattern planning on: each session serves one fixed batch shape, so ORT reuses one plan.

On the GPU every tensor goes through IOBinding into buffers allocated once per session, so a graph's output can feed the
next graph without a host round trip (`keep=`), and CUDA graphs (`enable_cuda_graph`, TensorRT EP `trt_cuda_graph_enable`)
are switched on because shapes are fixed per session; when a graph cannot be captured (nodes ORT places on the CPU) the
session is reopened without it. The TensorRT EP keeps its engine and timing caches in the bundle's `trt/ort-ep-<precision>/`
folder, or under ~/.cache/pdd when the bundle folder is read-only (an installed package).
ORT synchronises its stream at the end of every run, so a request costs one sync per graph (the native `trt` backend: one).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pdd.runtime.backends import Backend, physical_cores
from pdd.runtime.backends.trt_build import WORKSPACE_BYTES as TRT_WORKSPACE_BYTES
from pdd.runtime.bundle import REEXPORT, Bundle, GraphSpec, check_graph_io
from pdd.runtime.errors import BackendUnavailable, BundleError, ConfigError

TRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
GPU_EPS = (TRT_EP, CUDA_EP)


def user_cache_dir() -> Path:
    """$PDD_CACHE, else $XDG_CACHE_HOME/pdd, else ~/.cache/pdd."""
    if os.environ.get("PDD_CACHE"):
        return Path(os.environ["PDD_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pdd"


def writable_cache(bundle: Bundle, subdir: str) -> Path:
    """bundle/trt/<subdir> when the bundle folder is writable, else the user cache keyed by the bundle hash."""
    preferred = bundle.trt_root() / subdir
    try:
        preferred.mkdir(parents=True, exist_ok=True)
        if os.access(preferred, os.W_OK):
            return preferred
    except OSError:
        pass
    fallback = user_cache_dir() / "trt" / f"{bundle.name}-{bundle.hash[:16]}" / subdir
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def choose_providers(available: Sequence[str], device: str) -> list[str]:
    """Provider names in preference order for `device` ("auto", "cpu", "cuda"), from what this onnxruntime lists."""
    if device == "cpu":
        return [CPU_EP]
    gpu = [p for p in GPU_EPS if p in available]
    if device == "cuda" and not gpu:
        raise BackendUnavailable(
            "this onnxruntime has no CUDA provider; install onnxruntime-gpu: pip install 'pdd[gpu]' (and uninstall onnxruntime)"
        )
    return gpu + [CPU_EP]


class OrtBackend(Backend):
    """onnxruntime sessions, one per graph, opened for one fixed batch size."""

    name = "ort"
    OPTIONS = ("threads", "cuda_graph", "providers", "iobinding")

    def __init__(
        self,
        bundle: Bundle,
        *,
        device: str = "auto",
        threads: int | None = None,
        cuda_graph: bool = True,
        providers: Sequence[str] | None = None,
        iobinding: bool | None = None,
    ) -> None:
        super().__init__(bundle)
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable("the ort backend needs onnxruntime: pip install 'pdd[cpu]' (or 'pdd[gpu]')") from None
        self._ort = ort
        ort.set_default_logger_severity(3)  # a missing CUDA/TensorRT library is reported by us, once, not as a log wall
        self.requested_device = device
        self.providers = list(providers) if providers else choose_providers(ort.get_available_providers(), device)
        self.threads = threads or physical_cores()
        self.cuda_graph = cuda_graph
        self.iobinding = iobinding  # None: on the GPU only (tests force it on the CPU to exercise the bound path)
        self.device = "cuda" if any(p in GPU_EPS for p in self.providers) else "cpu"
        self.batch: int | None = None
        self._sessions: dict[str, _Session] = {}

    # -- setup ----------------------------------------------------------------------------------------------------
    def session_options(self) -> Any:
        ort = self._ort
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.enable_cpu_mem_arena = True
        options.enable_mem_pattern = True
        options.log_severity_level = 3
        # After a call, spinning intra-op threads keep the cores busy while numpy decodes (Griffin-Lim): on a 2-core
        # CPU that cost 1.18× per request [1.14, 1.23], measured side by side. The GPU paths don't wait on these threads.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return options

    def provider_options(self, spec: GraphSpec, batch: int, cuda_graph: bool) -> list[tuple[str, dict[str, Any]]]:
        chosen: list[tuple[str, dict[str, Any]]] = []
        for provider in self.providers:
            if provider == TRT_EP:
                cache = str(writable_cache(self.bundle, f"ort-ep-{self.bundle.precision}"))
                # One optimisation profile covering batch 1..B, so a partial last batch never triggers a rebuild.
                shapes = {
                    edge: ",".join(f"{t.name}:{'x'.join(str(d) for d in t.concrete(n))}" for t in spec.inputs)
                    for edge, n in (("min", 1), ("opt", batch), ("max", batch))
                }
                chosen.append((TRT_EP, {
                    "device_id": 0,
                    # Off even for fp16 bundles: the EP builds weakly typed networks, where this flag lets TensorRT demote
                    # the GroupNorm/softmax layers export kept in fp32 (fp16 GroupNorm overflows). The fp16 ONNX weights
                    # still apply; the native `trt` backend builds strongly typed plans for full fp16 speed.
                    "trt_fp16_enable": False,
                    "trt_max_workspace_size": TRT_WORKSPACE_BYTES,
                    "trt_engine_cache_enable": True,
                    "trt_engine_cache_path": cache,
                    "trt_timing_cache_enable": True,
                    "trt_timing_cache_path": cache,
                    "trt_profile_min_shapes": shapes["min"],
                    "trt_profile_opt_shapes": shapes["opt"],
                    "trt_profile_max_shapes": shapes["max"],
                    "trt_cuda_graph_enable": cuda_graph,
                }))
            elif provider == CUDA_EP:
                chosen.append((CUDA_EP, {
                    "device_id": 0,
                    # Fixed shapes: search conv algorithms once per session, keep the best.
                    "cudnn_conv_algo_search": "EXHAUSTIVE",
                    "arena_extend_strategy": "kSameAsRequested",
                    "do_copy_in_default_stream": True,
                    "enable_cuda_graph": cuda_graph,
                }))
            else:
                chosen.append((provider, {}))
        return chosen

    def prepare(self, graphs: Sequence[str], batch: int) -> None:
        if batch < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch}")
        if batch != self.batch:
            if self.device == "cuda" or self.iobinding:
                self._sessions.clear()  # bound buffers (and CUDA graphs) are sized for one batch; plain CPU sessions are not
            self.batch = batch
        for graph in graphs:
            if graph not in self._sessions:
                self._sessions[graph] = self._open(self.bundle.graph(graph), batch)

    def _open(self, spec: GraphSpec, batch: int) -> "_Session":
        path = self.bundle.path / spec.file
        use_graph = self.cuda_graph and self.device == "cuda"
        try:
            session = self._create(path, spec, batch, use_graph)
        except Exception as exc:
            if not use_graph:
                raise self._load_error(path, exc) from None
            use_graph = False  # e.g. "not all nodes on the CUDA EP": capture is impossible for this graph
            try:
                session = self._create(path, spec, batch, False)
            except Exception as retry_exc:
                raise self._load_error(path, retry_exc) from None
        check_graph_io(self.bundle, spec.name, session.get_inputs(), session.get_outputs())
        used = session.get_providers()
        # Providers that failed to start for this graph (e.g. the TensorRT EP without TensorRT libraries) are dropped for
        # the next graphs: no repeated load attempts and log noise.
        self.providers = [p for p in self.providers if p in used or p == CPU_EP]
        if not any(p in GPU_EPS for p in used):
            if self.requested_device == "cuda":
                raise BackendUnavailable(
                    "onnxruntime could not start its CUDA provider (no GPU visible, or the CUDA 12 / cuDNN 9 libraries are "
                    "missing); install them or run with --device cpu"
                )
            self.device = "cpu"
        bind = self.device == "cuda" if self.iobinding is None else self.iobinding
        if bind:
            return _BoundSession(
                self._ort, session, spec, batch, self.device, use_graph and self.device == "cuda",
                reopen=lambda: self._create(path, spec, batch, False),
            )
        return _CpuSession(session, spec)

    def _create(self, path: Path, spec: GraphSpec, batch: int, cuda_graph: bool) -> Any:
        providers = self.provider_options(spec, batch, cuda_graph)
        try:
            with warnings.catch_warnings():
                # "Specified provider ... is not in available provider names": we check session.get_providers() below.
                warnings.filterwarnings("ignore", message="Specified provider", category=UserWarning)
                return self._ort.InferenceSession(
                    str(path), self.session_options(), providers=[p for p, _ in providers],
                    provider_options=[o for _, o in providers],
                )
        except Exception as exc:
            if any(p in GPU_EPS for p, _ in providers) and not cuda_graph and self.requested_device == "auto":
                # A GPU provider that lists itself but cannot start (onnxruntime-gpu on a machine without CUDA): use the CPU.
                print("warning: onnxruntime's GPU providers failed to start; running on the CPU", file=sys.stderr)
                self.providers, self.device = [CPU_EP], "cpu"
                return self._ort.InferenceSession(str(path), self.session_options(), providers=[CPU_EP])
            raise exc

    @staticmethod
    def _load_error(path: Path, exc: BaseException) -> BundleError:
        lines = str(exc).strip().splitlines()
        reason = lines[-1] if lines else type(exc).__name__
        return BundleError(f"{path}: onnxruntime cannot load it ({reason}); {REEXPORT}")

    # -- running --------------------------------------------------------------------------------------------------
    def run(self, graph: str, inputs: Mapping[str, Any], keep: Sequence[str] = ()) -> dict[str, Any]:
        if graph not in self._sessions:
            raise ConfigError(f"graph {graph!r} was not prepared; call prepare([{graph!r}], batch) first")
        return self._sessions[graph].run(inputs, keep)

    @property
    def uses_tensorrt(self) -> bool:  # type: ignore[override]
        return any(TRT_EP in s.providers for s in self._sessions.values())

    def to_host(self, value: Any) -> np.ndarray:
        if isinstance(value, np.ndarray):
            return value
        return value.numpy()

    def describe(self) -> str:
        used = sorted({p for s in self._sessions.values() for p in s.providers}) or self.providers
        short = "+".join(p.replace("ExecutionProvider", "") for p in used)
        return f"onnxruntime {self._ort.__version__} ({short}, {self.threads} threads)"

    def close(self) -> None:
        self._sessions.clear()


class _Session:
    providers: list[str]

    def run(self, inputs: Mapping[str, Any], keep: Sequence[str]) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError


def _as_input(spec: GraphSpec, name: str, value: Any) -> np.ndarray:
    try:
        tensor = spec.input(name)
    except BundleError:
        raise ConfigError(f"graph {spec.name!r} has no input {name!r}") from None
    return np.ascontiguousarray(value, dtype=tensor.np_dtype)


class _CpuSession(_Session):
    """Plain `session.run`: on the CPU, IOBinding adds nothing (ORT reads numpy memory directly)."""

    def __init__(self, session: Any, spec: GraphSpec) -> None:
        self.session, self.spec = session, spec
        self.providers = session.get_providers()
        self.output_names = [o.name for o in spec.outputs]

    def run(self, inputs: Mapping[str, Any], keep: Sequence[str]) -> dict[str, Any]:
        feeds = {name: _as_input(self.spec, name, value) for name, value in inputs.items()}
        values = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, values))


class _BoundSession(_Session):
    """IOBinding into buffers allocated once on `device` ("cuda"; "cpu" in tests): host inputs are copied in place,
    device values from another session are bound directly, outputs stay in their buffers until read."""

    def __init__(
        self, ort: Any, session: Any, spec: GraphSpec, batch: int, device: str, cuda_graph: bool, reopen: Any
    ) -> None:
        self.ort, self.session, self.spec, self.batch, self.device = ort, session, spec, batch, device
        self.cuda_graph, self.reopen = cuda_graph, reopen
        self.providers = session.get_providers()
        self._bind()

    def _buffer(self, tensor: Any) -> Any:
        return self.ort.OrtValue.ortvalue_from_shape_and_type(
            list(tensor.concrete(self.batch)), tensor.np_dtype.type, self.device, 0
        )

    def _bind(self) -> None:
        self.inputs = {t.name: self._buffer(t) for t in self.spec.inputs}
        self.outputs = {t.name: self._buffer(t) for t in self.spec.outputs}
        self.binding = self.session.io_binding()
        for name, value in self.inputs.items():
            self.binding.bind_ortvalue_input(name, value)
        for name, value in self.outputs.items():
            self.binding.bind_ortvalue_output(name, value)

    def run(self, inputs: Mapping[str, Any], keep: Sequence[str]) -> dict[str, Any]:
        for name, value in inputs.items():
            if isinstance(value, self.ort.OrtValue):
                # A persistent output buffer of another session: its address never changes, so CUDA graphs stay valid.
                self.binding.bind_ortvalue_input(name, value)
                continue
            array = _as_input(self.spec, name, value)
            want = tuple(self.inputs[name].shape())
            if array.shape != want:
                raise ConfigError(f"{self.spec.name}.{name}: got shape {array.shape}, the session is fixed at {want}")
            self.binding.bind_ortvalue_input(name, self.inputs[name])
            self.inputs[name].update_inplace(array)
        try:
            self.session.run_with_iobinding(self.binding)
        except Exception:
            if not self.cuda_graph:
                raise
            # Capture failed at the first run: reopen without CUDA graphs and retry once.
            print(f"warning: CUDA graph capture failed for {self.spec.name}; running it without", file=sys.stderr)
            self.session, self.cuda_graph = self.reopen(), False
            self._bind()
            return self.run(inputs, keep)
        # Host copies of outputs not kept: a fresh array each time (the buffer is reused by the next run).
        return {name: value if name in keep else value.numpy().copy() for name, value in self.outputs.items()}
