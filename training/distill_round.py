"""One round of progressive distillation (Salimans & Ho 2022, Algorithm 2): its settings (`DistillConfig`), the math of
one example (the teacher's two DDIM steps, the target x̃, the weighted loss) and the training steps of a round.
`pdd.training.distill` runs the rounds; docs/architecture.md, "Diffusion math", says why each choice was made.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from pdd.runtime.errors import ConfigError
from pdd.runtime.jsonconfig import JsonConfig
from pdd.runtime.schedule import (TEACHER_STEPS, alpha_sigma, ddim_sample, ddim_step, diffuse, distill_target,
                                  snr_weight, x0_from_v)
from pdd.training.ema import EMA
from pdd.training.optim import NonFiniteLoss

WEIGHTINGS = ("truncated", "snr+1")


@dataclass(frozen=True)
class DistillConfig(JsonConfig):
    """Hyper-parameters of a distillation run; saved in every student checkpoint."""

    config_kind: ClassVar[str] = "distillation config"

    from_steps: int = TEACHER_STEPS
    to_steps: int = 8
    steps_per_round: int = 300  # paper (GPU): ~50k per round at batch 128
    batch_size: int = 16
    lr: float = 1e-4
    weighting: str = "truncated"  # max(SNR, 1); "snr+1" ≡ v-MSE
    ema_decay: float = 0.0  # 0: no EMA (the paper's choice for distillation)
    grad_clip: float = 1.0  # 0 disables
    checkpoint_every: int = 100  # in-round resume points (steps)
    seed: int = 0
    # A note-conditioned teacher's targets use classifier-free guidance at this scale (1: the conditional model as it
    # is); the student learns the guided result in one pass, so guidance is baked in and costs nothing at run time.
    guidance: float = 1.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        problems = []
        if not isinstance(self.from_steps, int) or not isinstance(self.to_steps, int) or self.to_steps < 1:
            problems.append("from/to steps must be positive integers")
        elif self.from_steps <= self.to_steps or self.from_steps % self.to_steps or not _power_of_two(
            self.from_steps // self.to_steps
        ):
            problems.append(
                f"from-steps ({self.from_steps}) must be to-steps ({self.to_steps}) times a power of two ≥ 2"
            )
        if self.steps_per_round < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            problems.append("steps per round, batch size and checkpoint interval must be >= 1")
        if self.batch_size > 4096 or (isinstance(self.from_steps, int) and self.from_steps > 1024):
            problems.append("batch size must be <= 4096 and from-steps <= 1024 (counts that allocate up front)")
        if not self.lr > 0 or not math.isfinite(self.lr):
            problems.append("learning rate must be positive")
        if self.weighting not in WEIGHTINGS:
            problems.append(f"weighting must be one of {', '.join(WEIGHTINGS)}")
        if not 0.0 <= self.ema_decay < 1.0:
            problems.append("ema decay must be in [0, 1)")
        if self.grad_clip < 0:
            problems.append("grad clip must be >= 0")
        if not 0.0 <= self.guidance <= 20.0:
            problems.append("guidance must be in 0..20")
        if problems:
            raise ConfigError("invalid distillation settings: " + "; ".join(problems))

    def rounds(self) -> list[int]:
        """Student step counts in order: from_steps/2, from_steps/4, …, to_steps."""
        counts, n = [], self.from_steps
        while n > self.to_steps:
            n //= 2
            counts.append(n)
        return counts


def _power_of_two(n: int) -> bool:
    return n >= 2 and n & (n - 1) == 0


# -- the math of one example -------------------------------------------------------------------------------------------

def _times(index: torch.Tensor, halves: int) -> torch.Tensor:
    """t = index / halves as a (B, 1, 1) float64→float32 tensor computed from integers, so the grid ends exactly at 0."""
    return (index.to(torch.float64) / halves).to(torch.float32).view(-1, 1, 1)


def teacher_two_steps(teacher: nn.Module, z_t: torch.Tensor, index: torch.Tensor, steps: int) -> torch.Tensor:
    """The teacher's two DDIM steps t → t − 0.5/N → t − 1/N (t = index/N, index in 1..N) from z_t; returns z_t″: one
    `ddim_sample` over that three-point grid, per example."""
    times = [_times(2 * index - k, 2 * steps) for k in range(3)]  # t, t − ½/N, t − 1/N on the grid of 2N steps
    return ddim_sample(lambda z, t: teacher(z, t.view(-1)), z_t, times)


@torch.no_grad()
def distillation_targets(teacher: nn.Module, z_t: torch.Tensor, index: torch.Tensor, steps: int) -> torch.Tensor:
    """x̃ for a student step t → t − 1/N: the x̂ whose one DDIM step from z_t lands on the teacher's two-step result."""
    z_end = teacher_two_steps(teacher, z_t, index, steps)
    return distill_target(z_t, z_end, _times(index, steps), _times(index - 1, steps))


def student_x0(student: nn.Module, z_t: torch.Tensor, index: torch.Tensor, steps: int) -> torch.Tensor:
    """The student's x̂_θ(z_t) at t = index/N (from its v̂)."""
    t = _times(index, steps)
    alpha, sigma = alpha_sigma(t)
    return x0_from_v(z_t, student(z_t, t.view(-1)), alpha, sigma)


def distillation_loss(
    student: nn.Module, teacher: nn.Module, x0: torch.Tensor, steps: int, weighting: str = "truncated",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One batch of Algorithm 2: t on the student's N-step grid, noise, teacher target, weighted x̂-MSE (a scalar)."""
    batch = x0.shape[0]
    index = torch.randint(1, steps + 1, (batch,), generator=generator).to(x0.device)
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    t = _times(index, steps)
    alpha, sigma = alpha_sigma(t)
    z_t = diffuse(x0, eps, alpha, sigma)
    target = distillation_targets(teacher, z_t, index, steps)
    prediction = student_x0(student, z_t, index, steps)
    weight = snr_weight(t.view(-1), weighting)
    per_example = ((prediction - target) ** 2).mean(dim=tuple(range(1, x0.ndim)))
    return (weight * per_example).mean()


# -- one round -----------------------------------------------------------------------------------------------------------

def new_student(teacher: nn.Module) -> nn.Module:
    """A trainable copy of the teacher (the student's initialisation)."""
    student = copy.deepcopy(teacher)
    for p in student.parameters():
        p.requires_grad_(True)
    student.train()
    return student


def frozen(model: nn.Module) -> nn.Module:
    """The teacher of a round: evaluation mode, no gradients."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def round_optimizer(student: nn.Module, config: DistillConfig) -> tuple[torch.optim.Optimizer, Any]:
    """Adam with the learning rate annealed linearly from `lr` to zero over the round (Salimans & Ho)."""
    optimizer = torch.optim.Adam(student.parameters(), lr=config.lr)
    total = config.steps_per_round
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / total))
    return optimizer, scheduler


def conditioned(model: nn.Module, cond: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """`model` with its condition bound: what the distillation math calls as model(z, t)."""
    return lambda z, t: model(z, t, cond)


def guided(model: nn.Module, cond: torch.Tensor, null: torch.Tensor, scale: float) -> Callable[..., torch.Tensor]:
    """Classifier-free guidance: v̂ = v̂(null) + scale · (v̂(cond) − v̂(null)); scale 1 is the conditional model alone."""
    if scale == 1.0:
        return conditioned(model, cond)

    def velocity(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v_null = model(z, t, null)
        return v_null + scale * (model(z, t, cond) - v_null)

    return velocity


def train_steps(
    student: nn.Module, teacher: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
    batches: Callable[[int], torch.Tensor], steps: int, config: DistillConfig, *, first_step: int = 0,
    last_step: int | None = None, ema: EMA | None = None, seed_for_step: Callable[[int], int] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Run steps first_step+1 … last_step (default: the whole round) of round `steps`; returns the losses.

    `batches(step)` gives that step's (B, C·F, L) float32 batch of training clips, or (clips, condition, null condition)
    for a conditioned teacher (the targets then use `config.guidance`). With `seed_for_step`, every random draw of
    a step (t, noise, dropout, data shifts) comes from generators seeded by it, so a resumed round repeats an uninterrupted
    one exactly on CPU. `on_step(step, loss)` runs after each update (progress, logging, checkpoints). A NaN/inf loss raises
    NonFiniteLoss before the weights are touched.
    """
    last_step = config.steps_per_round if last_step is None else last_step
    losses = []
    generator = None
    for step in range(first_step + 1, last_step + 1):
        if seed_for_step is not None:
            seed = seed_for_step(step)
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
        batch = batches(step)
        if isinstance(batch, tuple):
            x0, cond, null = batch
            loss = distillation_loss(conditioned(student, cond), guided(teacher, cond, null, config.guidance), x0, steps,
                                     config.weighting, generator)  # fmt: skip
        else:
            loss = distillation_loss(student, teacher, batch, steps, config.weighting, generator)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLoss(f"distillation loss became {value} at step {step} of round {steps}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(student.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update(student)
        losses.append(value)
        if on_step is not None:
            on_step(step, value)
    return losses


@torch.no_grad()
def one_step_error(student: nn.Module, teacher: nn.Module, x0: torch.Tensor, steps: int, seed: int = 0,
                   intervals: list[int] | None = None) -> float:
    """Mean over grid intervals (all, or the given indices i in 1..N) of ‖student one-step z_t″ − teacher two-step z_t″‖²
    from fixed noise: what a round should drive down. The tests use it; each round logs it before and after."""
    generator = torch.Generator().manual_seed(seed)
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    errors = []
    for i in intervals if intervals is not None else range(1, steps + 1):
        index = torch.full((x0.shape[0],), i, dtype=torch.long, device=x0.device)
        t, t_end = _times(index, steps), _times(index - 1, steps)
        alpha, sigma = alpha_sigma(t)
        z_t = diffuse(x0, eps, alpha, sigma)
        teacher_end = teacher_two_steps(teacher, z_t, index, steps)
        student_end = ddim_step(z_t, student(z_t, t.view(-1)), t, t_end)
        errors.append(float(((student_end - teacher_end) ** 2).mean()))
    return sum(errors) / len(errors)
