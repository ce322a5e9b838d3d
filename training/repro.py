"""Reproducible randomness: per-step seeds, the data order of every rank, and the global RNG states a checkpoint keeps, so
that a resumed run repeats an uninterrupted one exactly on CPU."""

from __future__ import annotations

import random
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from pdd.training.device import Dist


def step_seed(seed: int, step: int, rank: int) -> int:
    """A well-mixed 63-bit seed for (run seed, step, rank)."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class BatchPlan:
    """Which clips rank r trains on at step k: an endless stream of per-epoch DistributedSampler orders, cut into batches."""

    def __init__(self, size: int, per_rank_batch: int, world: Dist, seed: int) -> None:
        self.size = size
        self.batch = per_rank_batch
        self.sampler = DistributedSampler(range(size), num_replicas=world.world, rank=world.rank, shuffle=True, seed=seed)
        self.per_epoch = len(self.sampler)
        self._epochs: dict[int, list[int]] = {}

    def _epoch(self, epoch: int) -> list[int]:
        if epoch not in self._epochs:
            self.sampler.set_epoch(epoch)
            self._epochs = {e: v for e, v in self._epochs.items() if e >= epoch - 1}  # keep memory flat
            self._epochs[epoch] = list(self.sampler)
        return self._epochs[epoch]

    def indices(self, step: int) -> list[int]:
        start = step * self.batch
        return [self._epoch(p // self.per_epoch)[p % self.per_epoch] for p in range(start, start + self.batch)]

    def epoch_of(self, step: int) -> float:
        return step * self.batch / self.per_epoch


def rng_states(device_kind: str) -> dict[str, Any]:
    """Global RNG states (torch, CUDA, numpy, python) in weights_only-loadable form."""
    np_state = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(_flatten_python_state(random.getstate())),
    }
    if device_kind == "cuda":
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _flatten_python_state(state: tuple) -> Iterator[Any]:
    version, internal, gauss = state
    yield version
    yield list(internal)
    yield gauss


def restore_rng_states(states: dict[str, Any] | None, device_kind: str) -> None:
    if not states:
        return
    torch.set_rng_state(states["torch"])
    kind, keys, *rest = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if device_kind == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])
