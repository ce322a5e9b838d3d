"""The learned vocoder's graphs for a bundle: packed x̂0 → STFT frames (CPU), or → waveform with the iSTFT in-graph (GPU).

`neural_vocoder`       (x0 (B, C·F, L)) → spectrum (B, frames, n_freqs, 2)   the runtime finishes with numpy irfft + overlap-add,
                                                                              the cheapest inverse on a CPU
`neural_vocoder_wave`  (x0 (B, C·F, L)) → waveform (B, samples)             the same plus the inverse STFT as a ConvTranspose1d
                                                                              with DFT bases built in-graph (as the Griffin-Lim
                                                                              graph does), so TensorRT runs the decode in one launch

Both unpack with the Griffin-Lim graph's `unpack` and apply the silence gate inside `MelVocoder` (pdd.runtime.silence), so
numpy, ONNX and PyTorch share one arithmetic. Parity: each graph against PyTorch, and the spectrum graph + the runtime's
numpy inverse against the PyTorch waveform.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from pdd.runtime.config import AudioConfig
from pdd.runtime.graphs import GRAPHS
from pdd.runtime.neural_vocoder import spectrum_to_audio
from pdd.runtime.silence import SilenceGate
from pdd.export.errors import ExportError
from pdd.export.graphs import VOCODER_FOLD_LIMIT, EXAMPLE_BATCH, WeightStore, assert_batch_is_dynamic, export_graph, io_specs, save_with_shared_weights
from pdd.export.parity import Parity, compare, run_graph
from pdd.export.vocoder import GriffinLimVocoder
from pdd.training.vocoder import MelVocoder, VocoderInfo, parameter_count

SPECTRUM_GRAPH = "neural_vocoder"
WAVE_GRAPH = "neural_vocoder_wave"
WEIGHTS_FILE = "neural_vocoder.onnx.data"  # both graphs' weights, stored once


class NeuralVocoderGraph(nn.Module):
    """(x0 packed) → (B, frames, n_freqs, 2) STFT frames."""

    def __init__(self, vocoder: MelVocoder) -> None:
        super().__init__()
        self.vocoder = vocoder
        self.dsp = GriffinLimVocoder(vocoder.audio, n_iter=0, gate=None)  # its unpack and conv-iSTFT, no Griffin-Lim

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        return self.vocoder.spectrum(self.dsp.unpack(x0))


class NeuralVocoderWaveGraph(NeuralVocoderGraph):
    """(x0 packed) → (B, samples): the spectrum graph plus the Griffin-Lim graph's ConvTranspose inverse STFT."""

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        spectrum = super().forward(x0)
        _, synthesis, env_kernel = self.dsp.bases()
        real, imag = spectrum[..., 0].transpose(1, 2), spectrum[..., 1].transpose(1, 2)  # (B, n_freqs, frames)
        return self.dsp.istft(real, imag, synthesis, self.dsp.inverse_envelope(env_kernel))


def golden_outputs(vocoder: MelVocoder, x0: np.ndarray) -> dict[str, np.ndarray]:
    """PyTorch outputs of both graphs for golden.npz, keyed "<graph>.<tensor>"."""
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(x0, dtype=np.float32))
        spectrum = NeuralVocoderGraph(vocoder).eval()(x).numpy()
        wave = NeuralVocoderWaveGraph(vocoder).eval()(x).numpy()
    return {f"{SPECTRUM_GRAPH}.x0": x0.astype(np.float32), f"{SPECTRUM_GRAPH}.spectrum": spectrum,
            f"{WAVE_GRAPH}.x0": x0.astype(np.float32), f"{WAVE_GRAPH}.waveform": wave}


def runtime_decode(spectrum: np.ndarray, audio: AudioConfig) -> np.ndarray:
    """What the runtime does after the spectrum graph (checked against the in-graph inverse at export)."""
    return spectrum_to_audio(spectrum, audio)


def export_graphs(vocoder: MelVocoder, golden: dict[str, np.ndarray], *, with_wave: bool = True
                  ) -> tuple[dict[str, onnx.ModelProto], list[Parity]]:
    """ONNX protos of the spectrum graph (and the in-graph-iSTFT variant), each checked against PyTorch on the golden
    inputs; the spectrum graph plus the runtime's numpy inverse is also checked against the PyTorch waveform.
    Raises ExportError naming every failed check."""

    audio = vocoder.audio
    example = torch.zeros(EXAMPLE_BATCH, *audio.packed_shape)
    modules = {SPECTRUM_GRAPH: NeuralVocoderGraph(vocoder).eval()}
    if with_wave:
        modules[WAVE_GRAPH] = NeuralVocoderWaveGraph(vocoder).eval()
    protos: dict[str, onnx.ModelProto] = {}
    checks: list[Parity] = []
    for name, module in modules.items():
        proto = export_graph(module, (example,), name, fold_limit=VOCODER_FOLD_LIMIT)
        proto.graph.name = name
        assert_batch_is_dynamic(proto)
        (x0,), output = GRAPHS[name].input_names, GRAPHS[name].output
        got = run_graph(proto, {x0: golden[f"{name}.{x0}"]})[output]
        checks.append(compare(name, "fp32", "torch", got, golden[f"{name}.{output}"]))
        if name == SPECTRUM_GRAPH:
            checks.append(compare(WAVE_GRAPH if with_wave else name, "fp32", "numpy",
                                  runtime_decode(got, audio), golden[f"{WAVE_GRAPH}.waveform"]))
        protos[name] = proto
    failed = [p for p in checks if not p.passed]
    if failed:
        raise ExportError("neural vocoder parity check failed: " + "; ".join(p.describe() for p in failed))
    return protos, checks


def decode_entry(info: VocoderInfo, vocoder: MelVocoder, checkpoint: Path, sha256: str, with_wave: bool) -> dict[str, Any]:
    """The manifest's `decode.neural` value."""
    return {
        "graph": SPECTRUM_GRAPH,
        "wave_graph": WAVE_GRAPH if with_wave else None,
        "silence_gate": None if info.gate is None else info.gate.to_dict(),
        "config": info.config.to_dict(),
        "params": parameter_count(vocoder),
        "checkpoint": {"file": checkpoint.name, "sha256": sha256},
        "training": dict(info.training),
    }


@dataclass
class NeuralParts:
    """Everything a bundle gets from a vocoder checkpoint: graphs, golden tensors (whole batch), parity, decode entry."""

    protos: dict[str, onnx.ModelProto]
    golden: dict[str, np.ndarray]
    parity: list[Parity]
    decode: dict[str, Any]
    graphs: dict[str, Any] = field(default_factory=dict)  # manifest graph entries, filled by `write_parts`


def build_parts(vocoder_ckpt: Path, audio: AudioConfig, x0: np.ndarray, *, with_wave: bool = True,
                gate: SilenceGate | None = None) -> NeuralParts:
    """Load the checkpoint (refused if made for another audio preset), export and check its graphs on golden `x0`.

    `gate` replaces the silence gate the vocoder was trained with (baked into its graphs and recorded in the manifest);
    None keeps the checkpoint's."""
    from pdd.runtime.bundle import sha256_file
    from pdd.training.vocoder_train import load_vocoder

    vocoder, info = load_vocoder(vocoder_ckpt, audio)
    if gate is not None:
        vocoder.gate = info.gate = gate
    golden = golden_outputs(vocoder, x0)
    protos, parity = export_graphs(vocoder, golden, with_wave=with_wave)
    if not with_wave:  # the PyTorch waveform served as the numpy decode's reference only
        golden = {k: v for k, v in golden.items() if not k.startswith(f"{WAVE_GRAPH}.")}
    decode = decode_entry(info, vocoder, Path(vocoder_ckpt), sha256_file(vocoder_ckpt), with_wave)
    decode["external_data"] = WEIGHTS_FILE
    return NeuralParts(protos, golden, parity, decode)


def write_parts(parts: NeuralParts, folder: Path) -> None:
    """Save the graphs (weights once, in WEIGHTS_FILE) and fill `parts.graphs` with their manifest entries."""
    store = WeightStore(folder / WEIGHTS_FILE)
    for name, proto in parts.protos.items():
        save_with_shared_weights(proto, folder / f"{name}.onnx", store)
        inputs, outputs = io_specs(proto)
        parts.graphs[name] = {"file": f"{name}.onnx", "inputs": inputs, "outputs": outputs}


def golden_to_store(golden: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The first item only, and the spectrum in float16 (3.1 MB → 1.6 MB per item at n_fft 2048): its rounding, at most
    2⁻¹¹ of a value, stays under half the verify tolerance of 1e-3 of the peak."""
    stored = {}
    for key, value in golden.items():
        if key.startswith((f"{SPECTRUM_GRAPH}.", f"{WAVE_GRAPH}.")):
            value = value[:1]
            stored[key] = value.astype(np.float16) if key == f"{SPECTRUM_GRAPH}.spectrum" else value
    return stored


__all__ = ["NeuralParts", "build_parts", "write_parts", "golden_to_store", "WEIGHTS_FILE", "NeuralVocoderGraph", "NeuralVocoderWaveGraph", "golden_outputs", "export_graphs", "runtime_decode", "decode_entry",
           "SPECTRUM_GRAPH", "WAVE_GRAPH"]
