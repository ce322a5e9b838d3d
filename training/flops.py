"""FLOPs and parameters of a denoiser forward, measured by torch's own counter (torch.utils.flop_counter), so the
architecture ablation compares networks of equal compute (docs/ablations.md).

FLOPs count a multiply-add as 2 (torch's convention): convolutions, matrix products and attention; norms and activations
are not counted (they are a few percent for these networks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pdd.runtime.config import AudioConfig
from pdd.training.unet1d import count_parameters


@dataclass(frozen=True)
class ModelCost:
    parameters: int
    flops_per_clip: int  # one forward of one clip

    def describe(self) -> str:
        return f"{self.parameters / 1e6:.2f} M params, {self.flops_per_clip / 1e9:.3f} GFLOP per forward per clip"


def forward_flops(model: nn.Module, audio: AudioConfig, batch: int = 1) -> int:
    """FLOPs of one forward on a (batch, C·F, L) input of `audio`'s packed shape."""
    x = torch.zeros(batch, *audio.packed_shape)
    t = torch.full((batch,), 0.5)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x, t)
    return int(counter.get_total_flops())


def model_cost(model: nn.Module, audio: AudioConfig) -> ModelCost:
    was_training = model.training
    model.eval()
    try:
        return ModelCost(parameters=count_parameters(model), flops_per_clip=forward_flops(model, audio))
    finally:
        model.train(was_training)
