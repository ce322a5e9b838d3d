"""Inference backends behind one interface: `ort` (onnxruntime: TensorRT EP → CUDA EP → CPU) and `trt` (native
TensorRT + cuda-python). `auto` picks the fastest one present (docs/architecture.md, "Runtime").

Interface (`Backend`):

- `prepare(graphs, batch)`: open the named graphs for a fixed batch size (sessions/plans, buffers allocated once).
- `run(graph, inputs, keep=())`: named tensors in, named tensors out. Inputs are numpy arrays or *device values* this
  backend returned earlier; outputs are numpy arrays, except the names in `keep`, which stay on the device (the
  device-resident variant: e.g. the sampler's x0 goes straight into the vocoder without a host round trip). A device value
  is valid until the next `run` of the same graph.
- `to_host(value)`: a device value (or array) as a numpy array.
- `device`: "cpu" or "cuda"; `describe()`: one line for sidecars and logs.

Neither backend module imports a GPU library at import time: onnxruntime is imported when an `ort` backend is created,
TensorRT and cuda-python only inside the `trt` backend.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from pdd.runtime.errors import BackendUnavailable, ConfigError

if TYPE_CHECKING:
    from pdd.runtime.bundle import Bundle

BACKENDS = ("auto", "ort", "trt")
DEVICES = ("auto", "cpu", "cuda")


class Backend(ABC):
    """One way of running a bundle's graphs. Subclasses: OrtBackend, TrtBackend."""

    name: str = ""
    device: str = "cpu"
    uses_tensorrt: bool = False  # TensorRT (native or the ORT EP) runs the graphs: fp32 may mean TF32 (looser golden check)

    def __init__(self, bundle: "Bundle") -> None:
        self.bundle = bundle

    @abstractmethod
    def prepare(self, graphs: Sequence[str], batch: int) -> None:
        """Open `graphs` for batch size `batch` (idempotent; a new batch size re-prepares)."""

    @abstractmethod
    def run(self, graph: str, inputs: Mapping[str, Any], keep: Sequence[str] = ()) -> dict[str, Any]:
        """Run one graph; outputs named in `keep` stay device values, the others come back as numpy arrays."""

    def to_host(self, value: Any) -> np.ndarray:
        return np.asarray(value)

    @abstractmethod
    def describe(self) -> str:
        """One line: library, version, provider/device."""

    def close(self) -> None:
        """Release sessions and device memory."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads counted once); PDD_THREADS overrides.

    Read from /sys topology for the CPUs in our affinity mask; os.cpu_count() where that is unavailable. ONNX Runtime's
    intra-op pool is fastest at one thread per physical core (SMT siblings share the FMA units).
    """
    env = os.environ.get("PDD_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ConfigError(f"PDD_THREADS must be an integer, got {env!r}") from None
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topo.joinpath("physical_package_id").read_text().strip(), topo.joinpath("core_id").read_text().strip()))
        except OSError:
            return max(1, len(cpus))
    return max(1, len(cores))


def backend_problem(name: str) -> str | None:
    """Why backend `name` cannot be created here (one line naming what to install), or None if its imports work.

    This only checks the Python packages; a missing GPU or driver is reported when the backend is created.
    """
    if name == "ort":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "the ort backend needs onnxruntime: pip install 'pdd[cpu]' (or 'pdd[gpu]' for onnxruntime-gpu)"
        return None
    if name == "trt":
        from pdd.runtime.backends.trt import import_problem

        return import_problem()
    raise ConfigError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")


def create_backend(name: str, bundle: "Bundle", *, device: str = "auto", **options: Any) -> Backend:
    """The backend `name` ("auto", "ort", "trt") for `bundle`; BackendUnavailable with what to install when absent.

    `auto` is the fastest present: native TensorRT when tensorrt + cuda-python import, a GPU is visible and the bundle
    already has a plan for this GPU/TensorRT/precision (no surprise multi-minute builds); otherwise onnxruntime with its
    best provider (TensorRT EP → CUDA EP → CPU). `device` ("auto", "cpu", "cuda") restricts where the ort backend runs.
    """
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; choose one of: {', '.join(DEVICES)}")
    if name == "auto":
        if device != "cpu" and backend_problem("trt") is None:
            from pdd.runtime.backends.trt import TrtBackend, has_prebuilt_plans

            try:
                if has_prebuilt_plans(bundle):
                    return TrtBackend(bundle, **{k: v for k, v in options.items() if k in TrtBackend.OPTIONS})
            except BackendUnavailable:
                pass  # no GPU or driver: fall through to onnxruntime
        name = "ort"
    problem = backend_problem(name)
    if problem:
        raise BackendUnavailable(problem)
    if name == "ort":
        from pdd.runtime.backends.ort import OrtBackend

        return OrtBackend(bundle, device=device, **{k: v for k, v in options.items() if k in OrtBackend.OPTIONS})
    if device == "cpu":
        raise ConfigError("the trt backend runs on the GPU only; use --backend ort for the CPU")
    from pdd.runtime.backends.trt import TrtBackend

    return TrtBackend(bundle, **{k: v for k, v in options.items() if k in TrtBackend.OPTIONS})


__all__ = ["Backend", "BACKENDS", "DEVICES", "create_backend", "backend_problem", "physical_cores"]
