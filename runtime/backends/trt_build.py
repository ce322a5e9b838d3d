"""The one TensorRT plan builder: `pdd-export --trt` and the `trt` backend's build-on-first-use both call `build_plan`, so
a plan under a given key (`bundle.plan_key`: GPU, TensorRT version, precision) is the same plan whoever built it.

One set of builder settings per (precision, graph), `plan_settings`:

- networks are strongly typed where TensorRT supports it (≥ 9): the ONNX dtypes decide, so an fp16 export runs fp16 with
  the layers export kept fp32 intact; older TensorRT gets the FP16 builder flag for fp16 bundles, except on the vocoder;
- TF32 stays on (TensorRT's default on Ampere+) for the U-Net graphs, and is off for the vocoder: Griffin-Lim's momentum
  iterations amplify TF32's 10-bit mantissa in its DFT convolutions, the U-Net does not need it off;
- the vocoder graph is always fp32, whatever the bundle's precision (export builds it so);
- one workspace limit, one optimisation profile over the batch range, a timing cache beside the plans.

The caller imports `tensorrt` (each with its own install hint) and passes the module in; nothing here imports it, so this
module loads on any machine and its settings are tested without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

from pdd.runtime.bundle import REEXPORT
from pdd.runtime.errors import BundleError

WORKSPACE_BYTES = 4 << 30  # TensorRT's scratch limit per plan (also the onnxruntime TensorRT provider's)
TIMING_CACHE = "timing.cache"  # file name beside the plans: rebuilds on the same GPU skip the tactic search
FP32_ONLY_GRAPHS = ("vocoder",)  # Griffin-Lim: exported fp32 and built without TF32 or the FP16 flag


class TrtBuildError(BundleError):
    """TensorRT could not parse a graph or build a plan from it."""


class ProfileTensor(Protocol):
    """What the builder needs of a graph input (bundle.TensorSpec has it): its name and its shape at a batch size."""

    name: str

    def concrete(self, batch: int) -> tuple[int, ...]: ...


@dataclass(frozen=True)
class BatchRange:
    """The optimisation profile's batch sizes: a plan runs any batch from `min` to `max`, tuned for `opt`."""

    min: int
    opt: int
    max: int

    def to_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}


@dataclass(frozen=True)
class PlanSettings:
    """The builder flags of one plan, decided by `plan_settings` alone."""

    network_flags: int
    strongly_typed: bool
    fp16_flag: bool  # BuilderFlag.FP16: only where the network cannot be strongly typed
    tf32: bool
    workspace_bytes: int = WORKSPACE_BYTES


def network_flags(trt: Any) -> tuple[int, bool]:
    """(creation flags, strongly typed?) for this TensorRT: strongly typed where the flag exists (TensorRT ≥ 9)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is not None:
        return 1 << int(flag), True
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)  # TensorRT 8 needs it, 10 dropped it
    return (1 << int(explicit) if explicit is not None else 0), False


def plan_settings(trt: Any, precision: str, graph: str) -> PlanSettings:
    """The one set of builder settings for `graph` of a `precision` bundle on this TensorRT."""
    flags, strongly_typed = network_flags(trt)
    fp32_only = graph in FP32_ONLY_GRAPHS
    return PlanSettings(
        network_flags=flags,
        strongly_typed=strongly_typed,
        fp16_flag=precision == "fp16" and not strongly_typed and not fp32_only,
        tf32=not fp32_only,
    )


def build_plan(trt: Any, onnx_path: Path, graph: str, inputs: Sequence[ProfileTensor], *, precision: str,
               batch: BatchRange, timing_cache: Path | None = None) -> bytes:
    """One serialized plan for `graph` from its ONNX file (parsed from the file, so external weights beside it are found),
    with one optimisation profile over `batch`. Updates `timing_cache` when given. TrtBuildError when TensorRT refuses."""
    settings = plan_settings(trt, precision, graph)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(settings.network_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(_parser_error(parser.get_error(i)) for i in range(parser.num_errors))
        raise TrtBuildError(f"TensorRT cannot parse {onnx_path.name}: {errors or 'unknown parser error'}; {REEXPORT}")
    config = builder.create_builder_config()
    _apply_settings(trt, config, settings)
    profile = builder.create_optimization_profile()
    for tensor in inputs:
        profile.set_shape(tensor.name, tensor.concrete(batch.min), tensor.concrete(batch.opt), tensor.concrete(batch.max))
    config.add_optimization_profile(profile)
    cache_bytes = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(cache_bytes), False)  # False: refuse another device's cache
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TrtBuildError(f"TensorRT failed to build a plan for {onnx_path.name} (see the TensorRT log above)")
    if timing_cache is not None:
        from pdd.runtime.fileio import atomic_write_bytes

        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(serialized))


def _apply_settings(trt: Any, config: Any, settings: PlanSettings) -> None:
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    if settings.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if not settings.tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)


def _parser_error(error: Any) -> str:
    """IParserError → "node NAME (OP): description" (str() of it is only an object repr)."""
    desc = error.desc() if hasattr(error, "desc") else str(error)
    node = error.node_name() if hasattr(error, "node_name") else ""
    op = error.node_operator() if hasattr(error, "node_operator") else ""
    return f"node {node} ({op}): {desc}" if node or op else desc
