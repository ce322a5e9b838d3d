"""TensorRT plans for a bundle (`pdd-export --trt`), built with the `tensorrt` Python API on the GPU that will run them.

Plans live under `trt/<key>/` with key = `pdd.runtime.bundle.plan_key(gpu, trt version, precision)`, and the manifest's
`trt.plans[key]` records each plan's sha256 and the sha256 of the ONNX file it came from, so the runtime never loads a plan
built for another GPU, TensorRT version, precision or graph. Networks are strongly typed where TensorRT supports it (types
come from the ONNX graph: an fp16 export runs fp16 with its fp32 islands intact); older TensorRT gets the FP16 builder flag.
One optimisation profile spans batch 1..max_batch (opt = the most common request, 1); a timing cache in the same folder
makes rebuilds fast.

`tensorrt` and the CUDA bindings are imported lazily: without them (or without a GPU) `preflight` raises one
BackendUnavailable line naming what is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from pdd.runtime.bundle import plan_key, sha256_file
from pdd.runtime.errors import BackendUnavailable, PddError

WORKSPACE_BYTES = 2 << 30
TIMING_CACHE = "timing.cache"


class TrtBuildError(PddError):
    """TensorRT could not parse or build a graph."""


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
    """Build one plan per graph in `protos_on_disk` (ONNX files already in `bundle_dir`); returns (key, PLANS dict)."""
    trt, gpu, key = preflight(precision)
    folder = bundle_dir / "trt" / key
    folder.mkdir(parents=True, exist_ok=True)
    logger = trt.Logger(trt.Logger.WARNING)
    graphs: dict[str, Any] = {}
    for name in protos_on_disk:
        onnx_file = bundle_dir / manifest["graphs"][name]["file"]
        plan_file = folder / f"{name}.plan"
        batch = {"min": 1, "opt": 1, "max": int(max_batch)}
        plan = build_plan(
            trt, logger, onnx_file, manifest["graphs"][name]["inputs"], batch, precision, folder / TIMING_CACHE,
            allow_tf32=name != "vocoder",
        )
        plan_file.write_bytes(plan)
        graphs[name] = {
            "file": plan_file.relative_to(bundle_dir).as_posix(),
            "sha256": sha256_file(plan_file),
            "source_sha256": sha256_file(onnx_file),
            "batch": batch,
        }
    plans = {"gpu": gpu, "trt_version": trt.__version__, "precision": precision, "graphs": graphs}
    return key, plans


def network_flags(trt: Any) -> tuple[int, bool]:
    """(creation flags, strongly typed?) for this TensorRT: strongly typed where the flag exists (TensorRT ≥ 9)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is not None:
        return 1 << int(flag), True
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)  # TensorRT 8 needs it, 10 dropped it
    return (1 << int(explicit) if explicit is not None else 0), False


def build_plan(
    trt: Any,
    logger: Any,
    onnx_file: Path,
    inputs: list[dict[str, Any]],
    batch: dict[str, int],
    precision: str,
    cache_file: Path,
    allow_tf32: bool = True,
) -> bytes:
    """One serialized plan. `allow_tf32=False` for the vocoder: Griffin-Lim's momentum iterations amplify TF32's 10-bit
    mantissa in its DFT convolutions, and the U-Net does not need it off."""
    flags, strongly_typed = network_flags(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_file)):  # from the file, so external weights beside it are found
        errors = "; ".join(_parser_error(parser.get_error(i)) for i in range(parser.num_errors))
        raise TrtBuildError(f"TensorRT cannot parse {onnx_file.name}: {errors or 'unknown parser error'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if precision == "fp16" and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    if not allow_tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    for spec in inputs:
        dims = [d for d in spec["shape"][1:]]
        profile.set_shape(
            spec["name"], (batch["min"], *dims), (batch["opt"], *dims), (batch["max"], *dims)
        )
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
    config.set_timing_cache(cache, False)  # False: refuse a cache from another device or TensorRT version
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TrtBuildError(f"TensorRT failed to build a plan for {onnx_file.name} (see the TensorRT log above)")
    cache_file.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(serialized))


def _parser_error(error: Any) -> str:
    """IParserError → "node NAME (OP): description" (str() of it is only an object repr)."""
    desc = error.desc() if hasattr(error, "desc") else str(error)
    node = error.node_name() if hasattr(error, "node_name") else ""
    op = error.node_operator() if hasattr(error, "node_operator") else ""
    return f"node {node} ({op}): {desc}" if node or op else desc
