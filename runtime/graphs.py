"""The I/O contract of each graph a bundle may carry: tensor names, dtypes, and shapes with named axes in terms of the
AudioConfig (docs/architecture.md, "Engine bundles"). The one home of these: the manifest checks (`GRAPH_IO`, the shape
check in pdd.runtime.manifest) and export's parity runs derive from it.

Axis names: "batch" is the one dynamic axis; the others are AudioConfig attributes (`packed_channels` and
`packed_length` are the two entries of `audio.packed_shape`) or literal ints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from pdd.runtime.config import AudioConfig

BATCH = "batch"
Axis = Union[str, int]


@dataclass(frozen=True)
class TensorContract:
    """One input or output: its name, the dtype pdd exports it with, and its axes (see the module docstring)."""

    name: str
    axes: tuple[Axis, ...]
    dtype: str = "float32"

    def shape(self, audio: AudioConfig) -> list[int | None]:
        """The shape for `audio`, None where the axis is dynamic (batch)."""
        return [_size(axis, audio) for axis in self.axes]


@dataclass(frozen=True)
class GraphContract:
    name: str
    inputs: tuple[TensorContract, ...]
    outputs: tuple[TensorContract, ...]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    @property
    def output(self) -> str:
        """The name of the graph's one output."""
        (only,) = self.output_names
        return only

    def tensor(self, name: str) -> TensorContract:
        for spec in self.inputs + self.outputs:
            if spec.name == name:
                return spec
        raise KeyError(f"graph {self.name} has no tensor {name!r}")


def _size(axis: Axis, audio: AudioConfig) -> int | None:
    if isinstance(axis, int):
        return axis
    if axis == BATCH:
        return None
    if axis == "packed_channels":
        return audio.packed_shape[0]
    if axis == "packed_length":
        return audio.packed_shape[1]
    return int(getattr(audio, axis))


_MEL = (BATCH, "packed_channels", "packed_length")  # a packed clip (C·F, L), as the model sees it

GRAPHS: dict[str, GraphContract] = {
    contract.name: contract
    for contract in (
        GraphContract("denoiser", (TensorContract("z_t", _MEL), TensorContract("t", (BATCH,))), (TensorContract("v", _MEL),)),
        GraphContract("sampler", (TensorContract("z_1", _MEL),), (TensorContract("x0", _MEL),)),
        GraphContract(
            "vocoder",
            (TensorContract("x0", _MEL), TensorContract("phase0", (BATCH, "n_freqs", "frames"))),
            (TensorContract("waveform", (BATCH, "clip_samples")),),
        ),
        GraphContract(
            "neural_vocoder", (TensorContract("x0", _MEL),), (TensorContract("spectrum", (BATCH, "frames", "n_freqs", 2)),)
        ),
        GraphContract("neural_vocoder_wave", (TensorContract("x0", _MEL),), (TensorContract("waveform", (BATCH, "clip_samples")),)),
    )
}

__all__ = ["BATCH", "GRAPHS", "GraphContract", "TensorContract"]
