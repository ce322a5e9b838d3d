"""Parity at export: onnxruntime runs each graph on the golden inputs and must reproduce PyTorch within a stated tolerance.

Error measure per graph: max |onnx − torch| relative to max |torch| (so one tolerance fits models of any output scale),
checked against the one tolerance table, `pdd.runtime.golden.GOLDEN_TOLERANCE`, that `pdd-run --verify` applies too; the
reasons for each row are in docs/architecture.md, "Tolerances".

The vocoder is also compared with the runtime's numpy Griffin-Lim (`pdd.runtime.griffinlim.griffin_lim`) with the same
tolerance: two implementations of one algorithm, tested against each other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx

from pdd.runtime.bundle import GOLDEN_TOLERANCE, golden_tolerance
from pdd.runtime.config import AudioConfig
from pdd.runtime.griffinlim import packed_to_audio
from pdd.runtime.silence import DEFAULT_GATE, SilenceGate

# One table for export and `pdd-run --verify`: the runtime's (relative to each reference's peak).
TOLERANCE = GOLDEN_TOLERANCE


@dataclass(frozen=True)
class Parity:
    """One comparison: which graph, at which precision, against what, and whether it passed."""

    graph: str
    precision: str
    reference: str  # "torch" or "numpy"
    max_abs: float
    reference_peak: float
    tolerance: float

    @property
    def relative(self) -> float:
        return self.max_abs / max(self.reference_peak, 1e-12)

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_abs)) and self.relative <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(relative=self.relative, passed=self.passed)
        return data

    def describe(self) -> str:
        return (
            f"{self.graph} ({self.precision}) vs {self.reference}: max abs error {self.max_abs:.3g} "
            f"= {self.relative:.3g} of peak {self.reference_peak:.3g} (tolerance {self.tolerance:g})"
        )


def compare(graph: str, precision: str, reference: str, got: np.ndarray, want: np.ndarray) -> Parity:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return Parity(graph, precision, reference, float("inf"), float(np.abs(want).max(initial=0.0)), _tolerance(graph, reference, precision))
    max_abs = float(np.abs(got - want).max(initial=0.0)) if np.all(np.isfinite(got)) else float("inf")
    return Parity(graph, precision, reference, max_abs, float(np.abs(want).max(initial=0.0)), _tolerance(graph, reference, precision))


def _tolerance(graph: str, reference: str, precision: str) -> float:
    # onnxruntime vs PyTorch and vs the numpy Griffin-Lim share the graph's row: both are float32 references.
    return golden_tolerance(graph, precision)


def ort_session(model: onnx.ModelProto | str, threads: int | None = None) -> Any:
    """An onnxruntime CPU session for a ModelProto (weights inline) or a file path (external data beside it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run_graph(model: onnx.ModelProto | str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort_session(model)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs)))


def numpy_vocoder(x0: np.ndarray, phase0: np.ndarray, audio: AudioConfig, gl_iters: int, gl_momentum: float,
                  gate: SilenceGate | None = DEFAULT_GATE) -> np.ndarray:
    """The runtime's CPU path from packed x̂0 to a waveform: unpack → denormalise → mel⁻¹ → Griffin-Lim."""
    return packed_to_audio(x0, audio, n_iter=gl_iters, momentum=gl_momentum, phase0=phase0, gate=gate)
