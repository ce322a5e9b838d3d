"""The exported symbolic prior in onnxruntime: a `prior_step` graph as `runtime/prior_sampler.py`'s step function, and
notes for clips from it (torch-free).

The graph's cache shape is read from its own input (layers, batch, heads, context, head width), so a bundle cannot
claim one shape and hold another; sizes are bounded before any buffer is allocated.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from pdd.runtime.errors import BundleError
from pdd.runtime.prior_sampler import PriorSettings, StepFn, events_to_notes, sample_events

INPUTS = ("token", "position", "keys", "values")
OUTPUTS = ("logits", "keys_out", "values_out")
MAX_CACHE_ELEMENTS = 64 << 20  # per batch item: far above any prior pdd trains (small: 4·4·256·48 = 196 k)


class PriorGraph:
    """A `prior_step` ONNX graph in an onnxruntime session."""

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None, providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            raise BundleError(f"{path}: the prior graph cannot be loaded ({str(exc).splitlines()[0][:160]})") from None
        names = tuple(i.name for i in self.session.get_inputs())
        if names != INPUTS or tuple(o.name for o in self.session.get_outputs()) != OUTPUTS:
            raise BundleError(f"{path}: not a prior_step graph (inputs {names})")
        shape = self.session.get_inputs()[2].shape
        if len(shape) != 5 or not all(isinstance(d, int) and d > 0 for d in (shape[0], *shape[2:])):
            raise BundleError(f"{path}: the prior's cache must be (layers, batch, heads, context, width), got {shape}")
        layers, _, heads, context, width = shape
        if layers * heads * context * width > MAX_CACHE_ELEMENTS:
            raise BundleError(f"{path}: the prior's cache of {layers}×{heads}×{context}×{width} is beyond bounds")
        self.cache_shape: tuple[int, int, int, int] = (layers, heads, context, width)

    def step(self) -> StepFn:
        run = self.session.run

        def step(tokens: np.ndarray, position: np.ndarray, keys: np.ndarray, values: np.ndarray) -> Any:
            return run(list(OUTPUTS), {"token": tokens, "position": position, "keys": keys, "values": values})

        return step

    def notes(self, batch: int, seconds: float, settings: PriorSettings, rng: np.random.Generator) -> list[np.ndarray]:
        """NOTE_DTYPE notes of `batch` clips of `seconds` each."""
        sequences = sample_events(self.step(), self.cache_shape, batch, settings.ticks_for(seconds), settings, rng)
        return [events_to_notes(tokens, settings.bpm, seconds) for tokens in sequences]
