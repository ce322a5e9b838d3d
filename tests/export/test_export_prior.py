"""The prior's step graph: exported with a dynamic batch, its logits match PyTorch's step within the stated tolerance,
and the runtime's PriorGraph samples the same notes from it as the PyTorch prior from the same seed."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from pdd.export.prior import PRIOR_TOLERANCE, check_prior_parity, export_prior, save_prior_graph
from pdd.runtime.errors import BundleError
from pdd.runtime.prior_graph import PriorGraph
from pdd.runtime.prior_sampler import PriorSettings
from pdd.training.prior import EventPrior, prior_config
from pdd.training.prior_torch import sample_with_torch


@pytest.fixture(scope="module")
def tiny_prior():
    torch.manual_seed(0)
    return EventPrior(prior_config("tiny")).eval()


@pytest.fixture(scope="module")
def tiny_graph(tiny_prior):
    return export_prior(tiny_prior)  # exported once: the export is most of these tests' time


def test_prior_graph_matches_pytorch_and_samples_the_same_notes(tiny_prior, tmp_path):
    parity = save_prior_graph(tiny_prior, tmp_path / "prior_step.onnx")
    assert parity["relative"] <= PRIOR_TOLERANCE
    graph = PriorGraph(tmp_path / "prior_step.onnx", threads=1)
    assert graph.cache_shape == tiny_prior.config.cache_shape
    settings = PriorSettings(temperature=1.0, top_p=0.95, bpm=120)
    ticks = settings.ticks_for(2.0)
    from pdd.runtime.prior_sampler import sample_events

    from_graph = sample_events(graph.step(), graph.cache_shape, 3, ticks, settings, np.random.default_rng(7))
    from_torch = sample_with_torch(tiny_prior, 3, ticks, settings, np.random.default_rng(7))
    assert [a.tolist() for a in from_graph] == [b.tolist() for b in from_torch]
    notes = graph.notes(2, 2.0, settings, np.random.default_rng(1))
    assert len(notes) == 2 and all(n["offset"].max() <= 2.0 for n in notes if n.size)


def test_a_broken_or_foreign_graph_is_one_bundle_error(tiny_prior, tiny_graph, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(BundleError, match="cannot be loaded"):
        PriorGraph(bad)
    proto = onnx.ModelProto()
    proto.CopyFrom(tiny_graph)
    proto.graph.input[0].name = "tok"
    for node in proto.graph.node:
        node.input[:] = ["tok" if name == "token" else name for name in node.input]
    onnx.save(proto, str(tmp_path / "foreign.onnx"))
    with pytest.raises(BundleError, match="not a prior_step graph"):
        PriorGraph(tmp_path / "foreign.onnx")
    assert check_prior_parity(tiny_prior, tiny_graph)["tokens"] > 0
