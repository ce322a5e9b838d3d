"""Tests for progressive distillation: the target is the teacher's two-step result, and a round fits the student to it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pdd.runtime.config import get_preset
from pdd.runtime.errors import ConfigError
from pdd.runtime.schedule import alpha_sigma, ddim_step
from pdd.training.distill_round import (
    DistillConfig,
    distillation_loss,
    distillation_targets,
    frozen,
    new_student,
    one_step_error,
    round_optimizer,
    teacher_two_steps,
    train_steps,
)
from pdd.training.unet1d import UNet1D, unet_config

AUDIO = get_preset("tiny")
pytestmark = pytest.mark.usefixtures("one_torch_thread")




def tiny_teacher(seed: int = 0) -> UNet1D:
    """A tiny U-Net whose zero-initialised output layer is randomised, so it is a non-trivial (if untrained) denoiser."""
    torch.manual_seed(seed)
    model = UNet1D(unet_config("tiny", AUDIO))
    torch.nn.init.normal_(model.output_conv.weight, std=0.05)
    torch.nn.init.normal_(model.output_conv.bias, std=0.05)
    return frozen(model)


def batch(n: int = 4, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((n, *AUDIO.packed_shape), generator=g) * 2 - 1).float()


@pytest.mark.parametrize("steps,i", [(4, 4), (4, 2), (4, 1), (1, 1)])
def test_distillation_target_equals_teacher_two_step_result(steps, i):
    teacher = tiny_teacher()
    x = batch()
    index = torch.full((x.shape[0],), i, dtype=torch.long)
    t, t_mid, t_end = i / steps, (i - 0.5) / steps, (i - 1) / steps
    alpha, sigma = alpha_sigma(t)
    z_t = alpha * x + sigma * torch.randn_like(x)

    # The teacher's two DDIM steps, written out here with scalar times (checks t′ and t″ are not swapped).
    with torch.no_grad():
        tt = lambda value: torch.full((x.shape[0],), value)  # noqa: E731
        z_mid = ddim_step(z_t, teacher(z_t, tt(t)), t, t_mid)
        z_end = ddim_step(z_mid, teacher(z_mid, tt(t_mid)), t_mid, t_end)
        torch.testing.assert_close(teacher_two_steps(teacher, z_t, index, steps), z_end, rtol=1e-5, atol=1e-5)

        target = distillation_targets(teacher, z_t, index, steps)
        two_steps = teacher_two_steps(teacher, z_t, index, steps)
    # One DDIM step from z_t whose x̂ is the target lands on the teacher's two-step result.
    alpha_end, sigma_end = alpha_sigma(t_end)
    eps_from_target = (z_t - alpha * target) / sigma
    one_step = alpha_end * target + sigma_end * eps_from_target
    torch.testing.assert_close(one_step, z_end, rtol=1e-4, atol=1e-4)
    if i == 1:  # final interval: the target is the teacher's x̂ itself, exactly
        torch.testing.assert_close(target, two_steps, rtol=0, atol=0)


def test_one_round_lowers_student_one_step_error_vs_teacher_two_steps():
    torch.manual_seed(0)
    teacher = tiny_teacher(seed=3)
    student = new_student(teacher)
    steps = 2
    config = DistillConfig(from_steps=4, to_steps=2, steps_per_round=60, batch_size=8, lr=3e-3, seed=0)
    data = batch(8, seed=5)
    probe = data
    before = one_step_error(student, teacher, probe, steps)
    generator = torch.Generator().manual_seed(0)

    def batches(step: int) -> torch.Tensor:
        return data[torch.randint(0, data.shape[0], (config.batch_size,), generator=generator)]

    optimizer, scheduler = round_optimizer(student, config)
    losses = train_steps(student, teacher, optimizer, scheduler, batches, steps, config, seed_for_step=lambda s: s)
    after = one_step_error(student.eval(), teacher, probe, steps)
    assert len(losses) == 60 and all(math.isfinite(v) for v in losses)
    # Measured: 0.0182 → 0.00038 (with the U-Net's input skip). A wrong target (e.g. the teacher's single step) leaves the
    # student near its start, the teacher itself, whose one-step error is `before`.
    assert after < 0.1 * before, (before, after)
    assert scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)  # annealed linearly to zero


def test_loss_weighting_flag_changes_the_loss():
    teacher = tiny_teacher()
    student = new_student(teacher)
    torch.nn.init.normal_(student.output_conv.weight, std=0.1)  # make the student differ from the teacher
    x = batch()
    losses = {}
    for kind in ("truncated", "snr+1"):
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            losses[kind] = float(distillation_loss(student, teacher, x, 4, kind, g))
    # SNR + 1 ≥ max(SNR, 1) everywhere, with equality nowhere on the grid except where SNR = 0 (t = 1)
    assert losses["snr+1"] > losses["truncated"] > 0


def test_distill_config_rounds_and_validation():
    assert DistillConfig(from_steps=1024, to_steps=8).rounds() == [512, 256, 128, 64, 32, 16, 8]
    assert DistillConfig(from_steps=8, to_steps=1).rounds() == [4, 2, 1]
    for bad in (dict(from_steps=8, to_steps=8), dict(from_steps=12, to_steps=4), dict(from_steps=1000, to_steps=8),
                dict(weighting="snr"), dict(lr=0.0), dict(steps_per_round=0)):
        with pytest.raises(ConfigError):
            DistillConfig(**bad)
    assert DistillConfig.from_dict(DistillConfig().to_dict()) == DistillConfig()


def test_a_nan_loss_stops_before_the_weights_change():
    from pdd.training.optim import NonFiniteLoss

    teacher = tiny_teacher()
    student = new_student(teacher)
    config = DistillConfig(from_steps=4, to_steps=2, steps_per_round=3, batch_size=2)
    optimizer, scheduler = round_optimizer(student, config)
    before = [p.detach().clone() for p in student.parameters()]
    poisoned = batch(2)
    poisoned[0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLoss, match="became nan"):
        train_steps(student, teacher, optimizer, scheduler, lambda step: poisoned, 2, config)
    assert all(torch.equal(a, b) for a, b in zip(before, student.parameters()))
    assert np.isfinite(sum(float(p.detach().sum()) for p in student.parameters()))
