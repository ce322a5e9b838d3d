"""The symbolic prior → one ONNX graph, `prior_step`: (token (B,), position (1,), keys, values) → (logits (B, vocab),
keys, values), the cached one-token step of `training/prior.py` with static cache shapes (layers, B, heads, context,
head width) and a dynamic batch on axis 1 of the caches. Parity: the graph run over a token sequence by the runtime's own
loop reproduces the PyTorch step's logits (`check_prior_parity`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from pdd.export.graphs import OPSET, quiet_exporter
from pdd.training.prior import EventPrior

PRIOR_INPUTS = ("token", "position", "keys", "values")
PRIOR_OUTPUTS = ("logits", "keys_out", "values_out")
PARITY_TOKENS = 48
PRIOR_TOLERANCE = 1e-4  # max |Δ logit| relative to the logits' peak, over PARITY_TOKENS steps (float32 both sides)


class PriorStep(nn.Module):
    def __init__(self, model: EventPrior) -> None:
        super().__init__()
        self.model = model

    def forward(self, token: torch.Tensor, position: torch.Tensor, keys: torch.Tensor, values: torch.Tensor):
        return self.model.step(token, position, keys, values)


def export_prior(model: EventPrior) -> onnx.ModelProto:
    """The prior_step graph of `model` (exported with an example batch of 2 so the batch axis stays dynamic)."""
    model = model.eval()
    keys, values = model.empty_cache(2)
    example = (torch.tensor([1, 1]), torch.tensor([0]), keys, values)
    batch = torch.export.Dim("batch", min=1, max=4096)
    shapes = {"token": {0: batch}, "position": None, "keys": {1: batch}, "values": {1: batch}}
    with quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(PriorStep(model), example, dynamo=True, input_names=list(PRIOR_INPUTS),
                                    output_names=list(PRIOR_OUTPUTS), dynamic_shapes=shapes, opset_version=OPSET,
                                    optimize=True, verbose=False)  # fmt: skip
    return program.model_proto


def check_prior_parity(model: EventPrior, proto: onnx.ModelProto, seed: int = 0) -> dict[str, Any]:
    """Feed the same random tokens through the graph (onnxruntime) and `model.step`; the worst logit error relative to
    the logits' peak. Raises ValueError above PRIOR_TOLERANCE."""
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, model.config.vocab, size=(2, min(PARITY_TOKENS, model.config.context)))
    keys, values = (t.numpy() for t in model.empty_cache(2))
    torch_keys, torch_values = model.empty_cache(2)
    worst, peak = 0.0, 0.0
    with torch.no_grad():
        for position in range(tokens.shape[1]):
            feed = {"token": tokens[:, position].astype(np.int64), "position": np.asarray([position], dtype=np.int64),
                    "keys": keys, "values": values}  # fmt: skip
            logits, keys, values = session.run(list(PRIOR_OUTPUTS), feed)
            want, torch_keys, torch_values = model.step(torch.from_numpy(feed["token"]), torch.tensor([position]),
                                                        torch_keys, torch_values)  # fmt: skip
            worst = max(worst, float(np.max(np.abs(logits - want.numpy()))))
            peak = max(peak, float(np.max(np.abs(want.numpy()))))
    relative = worst / max(peak, 1e-12)
    if relative > PRIOR_TOLERANCE:
        raise ValueError(f"prior_step graph differs from PyTorch by {relative:.2e} of peak (tolerance {PRIOR_TOLERANCE:g})")
    return {"graph": "prior_step", "max_abs": worst, "relative": relative, "tokens": int(tokens.shape[1])}


def save_prior_graph(model: EventPrior, path: str | Path) -> dict[str, Any]:
    """Export, check parity, save (one self-contained .onnx: the prior is a few MB); returns the parity record."""
    proto = export_prior(model)
    parity = check_prior_parity(model, proto)
    onnx.save(proto, str(path))
    return parity
