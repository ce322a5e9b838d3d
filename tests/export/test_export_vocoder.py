"""The Griffin-Lim vocoder graph against the runtime's numpy path (two implementations of one algorithm, tested
against each other).

Tolerances, as max |graph − numpy| over the reference waveform's peak: 1e-5 with 0–1 iterations (no amplification yet),
2e-3 up to 8 iterations, and the export's own tolerance (pdd.export.parity.TOLERANCE, 1e-2) at the shipped 32, where
momentum-0.99 Griffin-Lim has amplified float32 rounding to ~1e-3.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from pdd.export.graphs import export_graph, strip_metadata
from pdd.export.parity import TOLERANCE, numpy_vocoder, run_graph
from pdd.export.vocoder import GriffinLimVocoder
from pdd.runtime.config import get_preset
from pdd.runtime.griffinlim import initial_phase

FEW_ITERS_TOLERANCE = 2e-3
EXPORT_TOLERANCE = TOLERANCE[("vocoder", "fp32")]


def _inputs(audio, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A plausible packed mel (smooth in time, mostly quiet, some loud bins) and a seeded random phase."""
    rng = np.random.default_rng(seed)
    x0 = np.clip(rng.normal(-0.3, 0.4, (batch, *audio.packed_shape)), -1.0, 1.0).astype(np.float32)
    phase0 = initial_phase((batch, audio.n_freqs, audio.frames), seed=seed + 1)
    return x0, phase0


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize("n_iter", [0, 1, 8])
def test_torch_vocoder_matches_numpy_griffin_lim(n_iter: int) -> None:
    audio = get_preset("tiny")
    x0, phase0 = _inputs(audio, batch=2)
    with torch.no_grad():
        got = GriffinLimVocoder(audio, n_iter=n_iter)(torch.from_numpy(x0), torch.from_numpy(phase0)).numpy()
    want = numpy_vocoder(x0, phase0, audio, n_iter, 0.99)
    assert got.shape == want.shape == (2, audio.clip_samples)
    limit = 1e-5 if n_iter <= 1 else FEW_ITERS_TOLERANCE
    assert _relative_error(got, want) <= limit


def test_momentum_zero_is_classic_griffin_lim() -> None:
    audio = get_preset("tiny")
    x0, phase0 = _inputs(audio, batch=1, seed=3)
    with torch.no_grad():
        got = GriffinLimVocoder(audio, n_iter=4, momentum=0.0)(torch.from_numpy(x0), torch.from_numpy(phase0)).numpy()
    assert _relative_error(got, numpy_vocoder(x0, phase0, audio, 4, 0.0)) <= FEW_ITERS_TOLERANCE


def test_bad_settings_are_refused() -> None:
    audio = get_preset("tiny")
    with pytest.raises(ValueError, match="iterations"):
        GriffinLimVocoder(audio, n_iter=-1)
    with pytest.raises(ValueError, match="momentum"):
        GriffinLimVocoder(audio, momentum=1.0)


@pytest.fixture(scope="module")
def tiny_vocoder_graph() -> onnx.ModelProto:
    audio = get_preset("tiny")
    module = GriffinLimVocoder(audio, n_iter=6)
    example = (torch.zeros(2, *audio.packed_shape), torch.zeros(2, audio.n_freqs, audio.frames))
    return strip_metadata(export_graph(module, example, "vocoder", fold_limit=16384))


def test_onnx_vocoder_matches_numpy_at_another_batch_size(tiny_vocoder_graph: onnx.ModelProto) -> None:
    audio = get_preset("tiny")
    x0, phase0 = _inputs(audio, batch=3, seed=5)  # exported with batch 2: the axis must be dynamic
    got = run_graph(tiny_vocoder_graph, {"x0": x0, "phase0": phase0})["waveform"]
    want = numpy_vocoder(x0, phase0, audio, 6, 0.99)
    assert got.shape == (3, audio.clip_samples)
    assert _relative_error(got, want) <= FEW_ITERS_TOLERANCE


def test_onnx_vocoder_builds_dft_bases_in_graph(tiny_vocoder_graph: onnx.ModelProto) -> None:
    audio = get_preset("tiny")
    ops = {node.op_type for node in tiny_vocoder_graph.graph.node}
    assert {"Conv", "ConvTranspose", "Cos", "Sin"} <= ops
    assert not ops & {"DFT", "STFT", "Loop", "If"}  # TensorRT parses no DFT; straight-line graph
    largest = max(int(np.prod(t.dims)) for t in tiny_vocoder_graph.graph.initializer)
    assert largest < audio.n_freqs * audio.n_fft  # no basis stored as a constant
    assert largest == audio.n_freqs * audio.n_mels  # the biggest constant is the mel pseudo-inverse


@pytest.mark.slow
def test_paper_preset_vocoder_graph_parity_and_size(tmp_path) -> None:
    """Paper preset, 32 iterations: the shipped configuration (≈ 0.6 MB graph; bases as constants would be ~34 MB)."""
    audio = get_preset("paper")
    module = GriffinLimVocoder(audio, n_iter=32)
    example = (torch.zeros(2, *audio.packed_shape), torch.zeros(2, audio.n_freqs, audio.frames))
    proto = strip_metadata(export_graph(module, example, "vocoder", fold_limit=16384))
    path = tmp_path / "vocoder.onnx"
    onnx.save_model(proto, str(path))
    assert path.stat().st_size < 1_000_000
    x0, phase0 = _inputs(audio, batch=2, seed=7)
    got = run_graph(str(path), {"x0": x0, "phase0": phase0})["waveform"]
    assert _relative_error(got, numpy_vocoder(x0, phase0, audio, 32, 0.99)) <= EXPORT_TOLERANCE
