"""Exponential moving average of model weights: what gets sampled, distilled and exported."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module inside DistributedDataParallel (or anything else with `.module`)."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


class EMA:
    """A frozen copy of the model whose weights track the trained ones: w ← d·w + (1 − d)·w_model.

    The decay warms up as min(decay, (1 + n) / (10 + n)) over the first updates, so early averages are not dominated by the
    random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(unwrap(model)).eval().requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        source = unwrap(model).state_dict()
        for name, value in self.model.state_dict().items():
            new = source[name].detach()
            if value.dtype.is_floating_point:
                value.lerp_(new.to(value.dtype), 1.0 - decay)
            else:
                value.copy_(new)
        self.updates += 1

    def weights(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def meta(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates}

    def load(self, weights: dict[str, torch.Tensor], meta: dict[str, Any] | None) -> None:
        self.model.load_state_dict(weights)
        if meta:
            self.decay = float(meta["decay"])
            self.updates = int(meta["updates"])
