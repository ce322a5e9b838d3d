"""The runtime's token loop (runtime/prior_sampler.py) driven by the PyTorch prior: the same loop the exported graph runs,
so samples from a checkpoint and from its bundle agree."""

from __future__ import annotations

import numpy as np
import torch

from pdd.runtime.prior_sampler import PriorSettings, sample_events
from pdd.training.prior import EventPrior


def torch_step(model: EventPrior):
    """The step function of `sample_events` over `model.step` (numpy in, numpy out, no gradients)."""

    def step(tokens: np.ndarray, position: np.ndarray, keys: np.ndarray, values: np.ndarray):
        with torch.no_grad():
            logits, k, v = model.step(torch.from_numpy(tokens), torch.from_numpy(position), torch.from_numpy(keys),
                                      torch.from_numpy(values))  # fmt: skip
        return logits.numpy(), k.numpy(), v.numpy()

    return step


def sample_with_torch(model: EventPrior, batch: int, ticks: int, settings: PriorSettings,
                      rng: np.random.Generator) -> list[np.ndarray]:  # fmt: skip
    return sample_events(torch_step(model.eval()), model.config.cache_shape, batch, ticks, settings, rng)
