"""PyTorch modules → ONNX ModelProtos for the bundle's three graphs, fp16 conversion, and weights stored once on disk.

- `UnrolledSampler`: the whole N-step DDIM in PyTorch (`pdd.runtime.schedule.ddim_sample`) — the reference for the
  sampler graph's golden output.
- `unroll_sampler` (from `pdd.export.unroll`): the sampler graph, `ddim_sample` run on the exported denoiser graph's
  nodes: no Loop/If, weights stored once, no N-fold re-tracing.
- `export_graph`: the dynamo exporter with a named dynamic batch axis. The example input must have batch ≥ 2 — with batch 1
  the exporter silently specialises the axis to 1 (measured; docs/architecture.md, "Export").
- `to_fp16`: onnxruntime's float16 converter with GroupNorm (InstanceNormalization), Softmax and the time embedding's
  sinusoid kept in fp32 (fp16 variance sums overflow; 1000·t needs more than fp16's 11 bits), graph I/O kept fp32.
- `WeightStore` / `save_with_shared_weights`: writes large initializers into one external-data file keyed by content, so
  the denoiser and the sampler (which hold the same U-Net weights) point at the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import torch
from onnx import external_data_helper, numpy_helper
from torch import nn

from pdd.export.unroll import unroll_sampler  # noqa: F401 - the sampler graph is built here for bundle_writer
from pdd.runtime.graphs import GRAPHS
from pdd.runtime.schedule import ddim_sample, grid

OPSET = 18  # the dynamo exporter's native opset (17 only works through a down-conversion)
BATCH_AXIS = "batch"
EXAMPLE_BATCH = 2  # ≥ 2, or the exporter fixes the batch axis at 1
MAX_BATCH = 4096
VOCODER_FOLD_LIMIT = 16384  # elements a folded constant may have in the vocoder graphs: their DFT bases stay ops
EXTERNAL_THRESHOLD_BYTES = 1024  # smaller tensors stay inside the .onnx (biases, norms' scales)
DATA_ALIGNMENT = 64  # byte alignment of each tensor in the external-data file

# Ops run in fp32 inside an fp16 graph: normalisation statistics, softmax, and the sinusoidal time features.
FP16_KEEP_FP32_OPS = ("InstanceNormalization", "GroupNormalization", "LayerNormalization", "Softmax", "Cos", "Sin", "Range")


class UnrolledSampler(nn.Module):
    """(z_1 (B, C·F, L)) → x̂0: `pdd.runtime.schedule.ddim_sample` over this denoiser — the PyTorch reference the sampler
    graph is checked against."""

    def __init__(self, denoiser: nn.Module, steps: int) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.steps = int(steps)

    def forward(self, z_1: torch.Tensor) -> torch.Tensor:
        ones = torch.ones_like(z_1[:, 0, 0])  # (B,): the denoiser takes one t per batch item
        return ddim_sample(lambda z, t: self.denoiser(z, ones * t), z_1, grid(self.steps))


@contextlib.contextmanager
def quiet_exporter():
    """Silence the exporter's progress prints and known-harmless warnings (torchvision ops, axis renaming)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_graph(
    module: nn.Module,
    example_inputs: Sequence[torch.Tensor],
    graph: str,
    *,
    fold_limit: int | None = None,
) -> onnx.ModelProto:
    """Export `module` as bundle graph `graph` with the dynamo exporter at OPSET: input and output names from its contract
    (pdd.runtime.graphs.GRAPHS), axis 0 of every input named "batch" and dynamic.

    `fold_limit` caps constant folding (elements per folded tensor): the vocoder passes a small one so its DFT bases stay
    ops (Range → Cos/Sin) instead of megabytes of constants.
    """
    contract = GRAPHS[graph]
    if any(x.shape[0] < 2 for x in example_inputs):
        raise ValueError("export with an example batch >= 2, or the exporter fixes the batch axis at 1")
    batch = torch.export.Dim(BATCH_AXIS, min=1, max=MAX_BATCH)
    arg_names = _forward_arg_names(module, len(example_inputs))
    dynamic_shapes = {name: {0: batch} for name in arg_names}
    module = module.eval()
    with quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            module,
            tuple(example_inputs),
            dynamo=True,
            input_names=list(contract.input_names),
            output_names=list(contract.output_names),
            dynamic_shapes=dynamic_shapes,
            opset_version=OPSET,
            optimize=fold_limit is None,
            verbose=False,
        )
        if fold_limit is not None:
            import onnxscript.optimizer

            onnxscript.optimizer.optimize(program.model, output_size_limit=fold_limit)
        proto = program.model_proto
    _name_batch_axes(proto, contract.input_names, contract.output_names)
    return proto


def _forward_arg_names(module: nn.Module, count: int) -> list[str]:
    import inspect

    params = [p for p in inspect.signature(module.forward).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return [p.name for p in params[:count]]


def _name_batch_axes(proto: onnx.ModelProto, input_names: Sequence[str], output_names: Sequence[str]) -> None:
    """Make axis 0 of every graph input/output the symbolic "batch" (the exporter may name outputs' axes otherwise)."""
    for value in list(proto.graph.input) + list(proto.graph.output):
        if value.name in input_names or value.name in output_names:
            dims = value.type.tensor_type.shape.dim
            if dims and not dims[0].HasField("dim_value"):
                dims[0].dim_param = BATCH_AXIS


def assert_batch_is_dynamic(proto: onnx.ModelProto) -> None:
    """Refuse a graph whose batch axis was fixed at export (the dynamo exporter does that silently for batch-1 examples)."""
    for value in list(proto.graph.input) + list(proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        if not dims or dims[0].HasField("dim_value"):
            raise RuntimeError(f"graph {proto.graph.name!r}: tensor {value.name!r} has a fixed batch axis after export")


def graph_op_types(proto: onnx.ModelProto) -> set[str]:
    return {node.op_type for node in proto.graph.node}


def io_specs(proto: onnx.ModelProto) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The manifest's input/output specs (name, numpy dtype, shape with "batch" for symbolic dims) read from the graph."""

    def spec(value: onnx.ValueInfoProto) -> dict[str, Any]:
        tensor = value.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
        shape: list[int | str] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or BATCH_AXIS) for d in tensor.shape.dim]
        return {"name": value.name, "dtype": dtype, "shape": shape}

    return [spec(v) for v in proto.graph.input], [spec(v) for v in proto.graph.output]


# ---------------------------------------------------------------------------------------------------------------------
# fp16


def to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 weights and activations, fp32 I/O; normalisation, softmax and the time sinusoid (with what feeds it) stay fp32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    keep = set(FP16_KEEP_FP32_OPS)
    blocked_nodes = _ancestors_of(proto, {"Cos", "Sin"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_float_to_float16(
            proto, keep_io_types=True, op_block_list=sorted(keep), node_block_list=sorted(blocked_nodes)
        )


def _ancestors_of(proto: onnx.ModelProto, op_types: set[str]) -> set[str]:
    """Names of the nodes that compute (transitively) the inputs of nodes of `op_types`: the time-embedding path."""
    producer = {out: node for node in proto.graph.node for out in node.output}
    seen: set[str] = set()
    stack = [node for node in proto.graph.node if node.op_type in op_types]
    while stack:
        node = stack.pop()
        if node.name in seen:
            continue
        seen.add(node.name)
        stack.extend(producer[name] for name in node.input if name in producer)
    return {name for name in seen if name}


# ---------------------------------------------------------------------------------------------------------------------
# External data shared between graphs


@dataclass
class WeightStore:
    """One external-data file; identical tensors (by dtype, shape and bytes) are written once and referenced by offset."""

    path: Path
    offsets: dict[str, tuple[int, int]] = field(default_factory=dict)
    size: int = 0

    def __post_init__(self) -> None:
        self.path.write_bytes(b"")

    def place(self, data: bytes, key: str) -> tuple[int, int]:
        if key in self.offsets:
            return self.offsets[key]
        offset = -(-self.size // DATA_ALIGNMENT) * DATA_ALIGNMENT
        with open(self.path, "r+b") as handle:
            handle.seek(offset)
            handle.write(data)
        self.size = offset + len(data)
        self.offsets[key] = (offset, len(data))
        return offset, len(data)


def strip_metadata(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the exporter's per-node debug metadata (stack traces, FX nodes) and intermediate value_info: ~85% of a small
    graph's bytes, needed by no runtime (onnxruntime and TensorRT infer intermediate shapes themselves)."""
    proto = _copy(proto)
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del proto.graph.value_info[:]
    return proto


def save_with_shared_weights(proto: onnx.ModelProto, path: Path, store: WeightStore) -> dict[str, int]:
    """Save `proto` to `path`, moving initializers ≥ EXTERNAL_THRESHOLD_BYTES into `store` (deduplicated by content).

    Returns {"external": n tensors referenced, "new_bytes": bytes this graph added to the store}.
    """
    proto = strip_metadata(proto)
    before = store.size
    count = 0
    for tensor in _all_initializers(proto):
        if tensor.data_type == onnx.TensorProto.STRING:
            continue
        data = numpy_helper.to_array(tensor)
        raw = np.ascontiguousarray(data).tobytes()
        if len(raw) < EXTERNAL_THRESHOLD_BYTES:
            continue
        key = f"{tensor.data_type}:{data.shape}:{hashlib.sha256(raw).hexdigest()}"
        offset, length = store.place(raw, key)
        _clear_payload(tensor)
        tensor.raw_data = raw  # set_external_data insists on a raw payload, which is then dropped
        external_data_helper.set_external_data(tensor, location=store.path.name, offset=offset, length=length)
        tensor.data_location = onnx.TensorProto.EXTERNAL
        tensor.ClearField("raw_data")
        count += 1
    onnx.save_model(proto, str(path))
    return {"external": count, "new_bytes": store.size - before}


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def _all_initializers(proto: onnx.ModelProto) -> list[onnx.TensorProto]:
    """The main graph's initializers (the exporter emits no subgraphs here, and Constant nodes only hold small tensors)."""
    return list(proto.graph.initializer)


def _clear_payload(tensor: onnx.TensorProto) -> None:
    for name in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"):
        tensor.ClearField(name)
    del tensor.external_data[:]


def file_size(path: str | os.PathLike[str]) -> int:
    return Path(path).stat().st_size
