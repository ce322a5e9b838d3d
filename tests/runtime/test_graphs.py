"""The graph contracts (pdd.runtime.graphs) describe the shipped engines exactly: names, dtypes and shapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdd.runtime.bundle import GRAPH_IO, GRAPH_NAMES, load_bundle
from pdd.runtime.graphs import GRAPHS

ENGINES = Path(__file__).resolve().parents[2] / "engines"


def test_manifest_tables_derive_from_the_contracts() -> None:
    assert GRAPH_NAMES == ("denoiser", "sampler", "vocoder", "neural_vocoder", "neural_vocoder_wave")
    assert GRAPH_IO["denoiser"] == (("z_t", "t"), ("v",))
    assert GRAPH_IO["vocoder"] == (("x0", "phase0"), ("waveform",))
    assert GRAPHS["neural_vocoder"].output == "spectrum"


@pytest.mark.parametrize("engine", ["small-piano", "small-piano-fp16"])
def test_contracts_match_the_shipped_engines(engine: str) -> None:
    bundle = load_bundle(ENGINES / engine, check_graphs=False, check_hashes=False)
    for name, spec in bundle.graphs.items():
        contract = GRAPHS[name]
        assert tuple(t.name for t in spec.inputs) == contract.input_names
        assert tuple(t.name for t in spec.outputs) == contract.output_names
        for tensor in spec.inputs + spec.outputs:
            want = contract.tensor(tensor.name)
            assert tensor.dtype == want.dtype
            assert [None if isinstance(d, str) else d for d in tensor.shape] == want.shape(bundle.audio)
