"""TensorRT plans for a bundle (`pdd-export --trt`), built with the `tensorrt` Python API on the GPU that will run them.

Plans live under `trt/<key>/` with key = `pdd.runtime.plans.plan_key(gpu, trt version, precision)`, and the manifest's
`trt.plans[key]` records each plan's sha256 and the sha256 of the ONNX file it came from, so the runtime never loads a plan
built for another GPU, TensorRT version, precision or graph. The plans come from `pdd.runtime.backends.trt_build`, the
builder the `trt` backend uses for plans it builds on first use, so both build the same plan under one key (its module
docstring has the flags). One optimisation profile spans batch 1..max_batch (opt = the most common request, 1); a timing
cache in the same folder makes rebuilds fast.

`tensorrt` and the CUDA bindings are imported lazily: without them (or without a GPU) `preflight` raises one
BackendUnavailable line naming what is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from pdd.runtime.backends.trt_build import TIMING_CACHE, BatchRange, build_plan
from pdd.runtime.bundle import TensorSpec, plan_key, sha256_file
from pdd.runtime.errors import BackendUnavailable

def import_tensorrt() -> Any:
    try:
        import tensorrt  # noqa: PLC0415 - optional, GPU machines only
    except ImportError:
        raise BackendUnavailable(
            "--trt needs TensorRT: `pip install tensorrt` (it installs from NVIDIA's package index) on a machine with an "
            "NVIDIA GPU, or leave out --trt"
        ) from None
    return tensorrt


def gpu_name() -> str:
    """Name of CUDA device 0 via cuda-python, torch or nvidia-smi, whichever is present; BackendUnavailable if none is."""
    name = _gpu_from_cuda_python() or _gpu_from_torch() or _gpu_from_nvidia_smi()
    if not name:
        raise BackendUnavailable("--trt needs an NVIDIA GPU with a working driver, and none is visible here; leave out --trt")
    return name


def _gpu_from_cuda_python() -> str | None:
    try:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # type: ignore[no-redef]
    except ImportError:
        return None
    try:
        err, count = cudart.cudaGetDeviceCount()
        if int(err) != 0 or count < 1:
            return None
        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) != 0:
            return None
        raw = props.name
        return (raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)).strip("\x00 ")
    except Exception:  # a broken driver install reports through many exception types
        return None


def _gpu_from_torch() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        return None


def _gpu_from_nvidia_smi() -> str | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        result = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    return lines[0] if result.returncode == 0 and lines else None


def preflight(precision: str) -> tuple[Any, str, str]:
    """(tensorrt module, GPU name, plan key) — or BackendUnavailable before any export work is done."""
    trt = import_tensorrt()
    gpu = gpu_name()
    return trt, gpu, plan_key(gpu, trt.__version__, precision)


def build_plans(
    bundle_dir: Path, manifest: dict[str, Any], protos_on_disk: list[str], precision: str, max_batch: int = 8
) -> tuple[str, dict[str, Any]]:
    """Build one plan per graph in `protos_on_disk` (ONNX files already in `bundle_dir`) with the runtime's own builder;
    returns (key, PLANS dict)."""
    trt, gpu, key = preflight(precision)
    folder = bundle_dir / "trt" / key
    folder.mkdir(parents=True, exist_ok=True)
    batch = BatchRange(min=1, opt=1, max=int(max_batch))  # opt 1: the most common request
    graphs: dict[str, Any] = {}
    for name in protos_on_disk:
        entry = manifest["graphs"][name]
        onnx_file = bundle_dir / entry["file"]
        plan_file = folder / f"{name}.plan"
        inputs = [TensorSpec.from_dict(tensor, f"graphs.{name}.inputs") for tensor in entry["inputs"]]
        plan_file.write_bytes(build_plan(trt, onnx_file, name, inputs, precision=precision, batch=batch,
                                         timing_cache=folder / TIMING_CACHE))
        graphs[name] = {
            "file": plan_file.relative_to(bundle_dir).as_posix(),
            "sha256": sha256_file(plan_file),
            "source_sha256": sha256_file(onnx_file),
            "batch": batch.to_dict(),
        }
    plans = {"gpu": gpu, "trt_version": trt.__version__, "precision": precision, "graphs": graphs}
    return key, plans
