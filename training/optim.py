"""What the three training loops (teacher, student rounds, vocoder) share about optimisation: the learning-rate schedule
and the stop on a non-finite loss."""

from __future__ import annotations

import math

from pdd.runtime.errors import PddError


class NonFiniteLoss(PddError):
    """The loss or gradient became NaN/inf: the run stops and its last good checkpoint stays as it was."""


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine from 1 down to `min_ratio` at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(max(step - warmup, 0) / max(total - warmup, 1), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
