"""The fused sampler graph, built from the exported denoiser graph by running `schedule.ddim_sample` on symbolic values.

`ddim_sample` computes only `coefficient * z` and `z + z`; here z is a `_Value` (a tensor name in the graph being built)
whose operators append Mul/Add nodes, and the denoiser call appends a copy of the denoiser graph's nodes. So the sampler
graph is the runtime's DDIM loop written out N times, by the very loop the runtime and PyTorch run — no second copy of
the update to drift. The copies read the same initializers: weights stored once, no N-fold re-tracing of the network.

Needs onnx and numpy only (no torch), so the runtime tests build their tiny bundle's sampler with it too.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from pdd.runtime.graphs import GRAPHS
from pdd.runtime.schedule import ddim_sample, grid

# The I/O names of both graphs come from their contracts (pdd.runtime.graphs).
(Z_T, T), V = GRAPHS["denoiser"].input_names, GRAPHS["denoiser"].output
(Z_1,), X0 = GRAPHS["sampler"].input_names, GRAPHS["sampler"].output


class _GraphBuilder:
    """Nodes of the sampler graph in order, named per DDIM step ("step{i}/…")."""

    def __init__(self, denoiser: onnx.GraphProto) -> None:
        self.denoiser = denoiser
        self.shared = {init.name for init in denoiser.initializer} | {""}
        self.nodes: list[onnx.NodeProto] = [
            helper.make_node("Shape", [Z_1], ["sampler/batch"], name="sampler/batch", start=0, end=1)
        ]
        self.step = 0
        self.ops_in_step = 0

    def _name(self, what: str) -> str:
        self.ops_in_step += 1
        return f"step{self.step}/{what}{self.ops_in_step}"

    def _constant(self, name: str, value: float, shape: tuple[int, ...] = ()) -> str:
        tensor = numpy_helper.from_array(np.full(shape, value, dtype=np.float32), name)
        self.nodes.append(helper.make_node("Constant", [], [name], name=name, value=tensor))
        return name

    def scale(self, value: "_Value", coefficient: float) -> "_Value":
        name = self._name("mul")
        factor = self._constant(f"{name}_coefficient", float(coefficient))
        self.nodes.append(helper.make_node("Mul", [value.name, factor], [name], name=name))
        return _Value(self, name)

    def add(self, left: "_Value", right: "_Value") -> "_Value":
        name = f"step{self.step}/z_next"
        self.nodes.append(helper.make_node("Add", [left.name, right.name], [name], name=f"step{self.step}/ddim"))
        self.step, self.ops_in_step = self.step + 1, 0  # the update's Add closes a DDIM step
        return _Value(self, name)

    def denoise(self, z: "_Value", t: float) -> "_Value":
        """The denoiser's nodes, renamed into this step, fed z and t expanded to the batch as a (batch,) input."""
        prefix = f"step{self.step}/"
        t_value = self._constant(f"{prefix}t_value", float(t), (1,))
        t_name = f"{prefix}t"
        self.nodes.append(helper.make_node("Expand", [t_value, "sampler/batch"], [t_name], name=t_name))
        rename = {Z_T: z.name, T: t_name}
        for index, node in enumerate(self.denoiser.node):
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.name = prefix + (node.name or f"node{index}")
            copy.input[:] = [rename.get(x, x if x in self.shared else prefix + x) for x in node.input]
            copy.output[:] = [x if x == "" else prefix + x for x in node.output]
            self.nodes.append(copy)
        return _Value(self, prefix + V)


class _Value:
    """A tensor of the graph being built; the two operators `ddim_sample` uses append nodes."""

    def __init__(self, builder: _GraphBuilder, name: str) -> None:
        self.builder, self.name = builder, name

    def __rmul__(self, coefficient: float) -> "_Value":
        return self.builder.scale(self, coefficient)

    def __add__(self, other: "_Value") -> "_Value":
        return self.builder.add(self, other)


def check_denoiser_graph(graph: onnx.GraphProto) -> None:
    """Refuse what cannot be unrolled: control flow, or I/O other than (z_t, t) → v."""
    if any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for node in graph.node for attr in node.attribute):
        raise RuntimeError("the denoiser graph has control-flow subgraphs; the sampler must be straight-line")
    inputs = {value.name for value in graph.input}
    outputs = [value.name for value in graph.output]
    if inputs != {Z_T, T} or outputs != [V]:
        raise RuntimeError(f"expected a denoiser graph ({Z_T}, {T}) → {V}, got {sorted(inputs)} → {outputs}")


def unroll_sampler(denoiser: onnx.ModelProto, steps: int) -> onnx.ModelProto:
    """(z_1) → x0: `ddim_sample` over `grid(steps)` written out as one straight-line graph, with the DDIM coefficients
    as constants and every step reading the denoiser's own initializers."""
    graph = denoiser.graph
    check_denoiser_graph(graph)
    builder = _GraphBuilder(graph)
    ddim_sample(builder.denoise, _Value(builder, Z_1), grid(steps))
    builder.nodes[-1].output[0] = X0  # the last step's update (ddim_sample ends every step with its addition)
    inputs = {value.name: value for value in graph.input}
    z_in = onnx.ValueInfoProto()
    z_in.CopyFrom(inputs[Z_T])
    z_in.name = Z_1
    x0_out = onnx.ValueInfoProto()
    x0_out.CopyFrom(graph.output[0])
    x0_out.name = X0
    sampler = helper.make_graph(builder.nodes, "sampler", [z_in], [x0_out], initializer=list(graph.initializer))
    model = helper.make_model(sampler, opset_imports=list(denoiser.opset_import), ir_version=denoiser.ir_version)
    model.functions.extend(denoiser.functions)
    return model
