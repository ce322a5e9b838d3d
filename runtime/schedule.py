"""Diffusion math, the single source of truth (docs/architecture.md, "Diffusion math"): cosine schedule, grids,
v-parameterisation, DDIM, the distillation target, and `ScheduleConfig`, the one JSON object that says which schedule a
model samples with.

Every function is plain arithmetic with scalar or broadcast coefficients, so numpy arrays (runtime, export) and torch tensors
(training) pass through the same code. Transcendentals go through `_cos`/`_sin`/`_log`, which call the tensor's own method when
it has one (torch) and numpy otherwise — without importing torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from pdd.runtime.errors import ConfigError
from pdd.runtime.jsonconfig import JsonConfig

LOGSNR_MIN = -20.0
LOGSNR_MAX = 20.0


def _apply(name: str, t: Any) -> Any:
    if isinstance(t, (int, float)):
        return getattr(math, name)(t)
    method = getattr(t, name, None)
    if callable(method) and not isinstance(t, np.ndarray):
        return method()  # torch.Tensor.cos() etc.
    return getattr(np, name)(t)


def _cos(t: Any) -> Any:
    return _apply("cos", t)


def _sin(t: Any) -> Any:
    return _apply("sin", t)


def alpha_sigma(t: Any) -> tuple[Any, Any]:
    """Variance-preserving cosine schedule: α_t = cos(πt/2), σ_t = sin(πt/2); α² + σ² = 1, t ∈ [0, 1]."""
    angle = t * (math.pi / 2)
    return _cos(angle), _sin(angle)


def log_snr(t: Any) -> Any:
    """log(α²/σ²) = −2·log(tan(πt/2)), clipped to [LOGSNR_MIN, LOGSNR_MAX] so t = 0 and t = 1 stay finite."""
    if isinstance(t, (int, float)):
        tan = math.tan(t * math.pi / 2) if t < 1 else math.inf
        value = -2.0 * math.log(tan) if tan > 0 else math.inf
        return min(max(value, LOGSNR_MIN), LOGSNR_MAX)
    alpha, sigma = alpha_sigma(t)
    lo, hi = math.exp(LOGSNR_MIN / 2), math.exp(LOGSNR_MAX / 2)
    ratio = (alpha / (sigma + 1e-30)).clip(lo, hi)
    return 2.0 * _apply("log", ratio)


def snr_weight(t: Any, kind: str = "snr+1") -> Any:
    """Loss weight on the x̂-error: "snr+1" (≡ plain v-MSE), "truncated" = max(SNR, 1) (Salimans & Ho), or "snr"."""
    alpha, sigma = alpha_sigma(t)
    snr = alpha**2 / (sigma**2 + math.exp(-LOGSNR_MAX))
    if kind == "snr+1":
        return snr + 1.0
    if kind == "truncated":
        return snr.clip(min=1.0) if not isinstance(snr, (float, np.ndarray, np.generic)) else np.maximum(snr, 1.0)
    if kind == "snr":
        return snr
    raise ConfigError(f"unknown loss weighting {kind!r}; use snr+1, truncated or snr")


def grid(steps: int) -> np.ndarray:
    """Sampling times for an N-step sampler, from t_N = 1 down to t_0 = 0: [1, (N−1)/N, …, 1/N, 0] (float64, length N+1)."""
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    return np.arange(steps, -1, -1, dtype=np.float64) / steps


def grid_coefficients(steps: int) -> dict[str, np.ndarray]:
    """The grid with its α_i, σ_i (what a bundle manifest records and a fused sampler bakes in)."""
    t = grid(steps)
    alpha, sigma = alpha_sigma(t)
    sigma[-1] = 0.0  # exactly: the last step lands on clean data
    alpha[-1] = 1.0
    return {"t": t, "alpha": alpha, "sigma": sigma}


def v_target(x0: Any, eps: Any, alpha: Any, sigma: Any) -> Any:
    """v = α·ε − σ·x (what the network is trained to output)."""
    return alpha * eps - sigma * x0


def diffuse(x0: Any, eps: Any, alpha: Any, sigma: Any) -> Any:
    """z_t = α·x + σ·ε."""
    return alpha * x0 + sigma * eps


def x0_from_v(z: Any, v: Any, alpha: Any, sigma: Any) -> Any:
    """x̂ = α·z − σ·v̂."""
    return alpha * z - sigma * v


def eps_from_v(z: Any, v: Any, alpha: Any, sigma: Any) -> Any:
    """ε̂ = σ·z + α·v̂."""
    return sigma * z + alpha * v


def ddim_step(z_t: Any, v_hat: Any, t: Any, s: Any) -> Any:
    """Deterministic DDIM (η = 0) from time t to s < t given the model's v̂ at (z_t, t): z_s = α_s·x̂ + σ_s·ε̂."""
    alpha_t, sigma_t = alpha_sigma(t)
    alpha_s, sigma_s = alpha_sigma(s)
    x_hat = x0_from_v(z_t, v_hat, alpha_t, sigma_t)
    eps_hat = eps_from_v(z_t, v_hat, alpha_t, sigma_t)
    return alpha_s * x_hat + sigma_s * eps_hat


def ddim_coefficients(t: Any, s: Any) -> tuple[Any, Any]:
    """(a, b) with z_s = a·z_t + b·v̂: the DDIM step folded into two coefficients (what fused graphs bake in). Floats in,
    floats out; tensors (per-example times) in, tensors out. α_0 = 1 and σ_0 = 0 exactly, so a step to s = 0 is x̂."""
    alpha_t, sigma_t = alpha_sigma(t)
    alpha_s, sigma_s = alpha_sigma(s)
    return alpha_s * alpha_t + sigma_s * sigma_t, sigma_s * alpha_t - alpha_s * sigma_t


def _time(t: Any) -> Any:
    """A grid entry as a Python float (numpy scalars would turn `a·z` on a torch tensor into a numpy array); a tensor
    of per-example times stays a tensor."""
    return float(t) if isinstance(t, (int, float, np.number)) else t


def ddim_sample(denoise: Callable[[Any, Any], Any], z: Any, times: Sequence[Any]) -> Any:
    """Deterministic DDIM (η = 0) from z at times[0] down the decreasing grid `times`, with `denoise(z, t) -> v̂`.

    The sampler takes its grid (as k-diffusion's samplers take their sigmas): `grid(N)` for N-step sampling (it ends at
    t = 0, so the result is x̂0), or a teacher's two distillation steps [t, t − ½/N, t − 1/N] (then z at t − 1/N).
    Grid entries reach `denoise` as Python floats, or as they are when they are tensors of per-example times.

    The loop exists once, here: the runtime's loop mode, the PyTorch reference, distillation's teacher and export's
    unrolled sampler graph all call it. It only computes `coefficient * value` and `value + value`, so numpy arrays, torch
    tensors and export's symbolic graph values pass through it alike.
    """
    steps = [_time(t) for t in times]
    if len(steps) < 2:
        raise ConfigError(f"a DDIM grid needs at least two times, got {len(steps)}")
    for t, s in zip(steps[:-1], steps[1:]):
        a, b = ddim_coefficients(t, s)
        z = a * z + b * denoise(z, t)
    return z


def distill_target(z_t: Any, z_t2: Any, t: Any, t2: Any) -> Any:
    """Progressive-distillation target x̃ (Salimans & Ho 2022, Alg. 2) for a student step t → t″ = t2.

    x̃ = (z_t″ − (σ_t″/σ_t)·z_t) / (α_t″ − (σ_t″/σ_t)·α_t): the x̂ with which one DDIM step from z_t lands exactly on the
    teacher's two-step result z_t″. At t″ = 0 (σ = 0) it reduces to z_t″ itself, the teacher's final x̂.
    """
    alpha_t, sigma_t = alpha_sigma(t)
    alpha_2, sigma_2 = alpha_sigma(t2)
    ratio = sigma_2 / sigma_t
    return (z_t2 - ratio * z_t) / (alpha_2 - ratio * alpha_t)


# -- the schedule as one config object ----------------------------------------------------------------------------------

TEACHER_STEPS = 1024  # the finest grid a teacher is sampled on: distillation starts from it, fidelity is measured against it
SCHEDULE_KINDS = ("cosine",)
PARAMETERIZATIONS = ("v",)


@dataclass(frozen=True)
class ScheduleConfig(JsonConfig):
    """Which schedule a model samples with, as one JSON object (diffusers keeps a scheduler's config beside the model).

    `steps` is N, the grid t = k/N the model runs on; `continuous` says it was trained on continuous t (a teacher), so any
    step count up to `teacher_steps` is on its grid, while a distilled student only ever saw t = k/N and runs N or a divisor.
    """

    config_kind: ClassVar[str] = "schedule config"

    kind: str = "cosine"
    parameterization: str = "v"
    steps: int = TEACHER_STEPS
    continuous: bool = True
    teacher_steps: int = TEACHER_STEPS

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        problems = []
        if self.kind not in SCHEDULE_KINDS:
            problems.append(f"kind must be one of {', '.join(SCHEDULE_KINDS)}, got {self.kind!r}")
        if self.parameterization not in PARAMETERIZATIONS:
            problems.append(f"parameterization must be one of {', '.join(PARAMETERIZATIONS)}, got {self.parameterization!r}")
        if not _positive_int(self.teacher_steps):
            problems.append(f"teacher_steps must be a positive integer, got {self.teacher_steps!r}")
        elif not _positive_int(self.steps) or self.steps > self.teacher_steps:
            problems.append(f"steps must be an integer from 1 to {self.teacher_steps}, got {self.steps!r}")
        if not isinstance(self.continuous, bool):
            problems.append(f"continuous must be true or false, got {self.continuous!r}")
        if problems:
            raise ConfigError(f"invalid {self.config_kind}: " + "; ".join(problems))

    @classmethod
    def teacher(cls) -> "ScheduleConfig":
        """A teacher: trained on continuous t, sampled on the TEACHER_STEPS grid or any coarser one."""
        return cls(steps=TEACHER_STEPS, continuous=True)

    @classmethod
    def student(cls, steps: int) -> "ScheduleConfig":
        """A distilled N-step student: only the times k/N exist for it."""
        return cls(steps=steps, continuous=False)

    def times(self) -> np.ndarray:
        """The sampling grid [1, (N−1)/N, …, 0] this schedule runs."""
        return grid(self.steps)

    def allows(self, steps: int) -> bool:
        """Whether `steps` lands only on times the model was trained on: any count for a continuous model (up to the
        teacher grid), a divisor of N otherwise (its grid k/M is a subset of k/N)."""
        if not _positive_int(steps):
            return False
        return steps <= self.teacher_steps if self.continuous else self.steps % steps == 0

    def valid_steps(self, limit: int | None = None) -> list[int]:
        """Every step count `allows`, ascending, at most `limit` (a teacher allows up to a thousand and more)."""
        top = self.teacher_steps if self.continuous else self.steps
        top = top if limit is None else min(top, limit)
        return [m for m in range(1, top + 1) if self.allows(m)]

    def steps_problem(self, steps: int) -> str | None:
        """Why a host loop of `steps` steps would leave the times this model was trained on (one line), or None.
        The one step-count rule: `pdd-run`, `pdd-bench`, `pdd-serve` and `Engine` all ask here."""
        if not _positive_int(steps):
            return f"--steps must be >= 1, got {steps}"
        if self.allows(steps):
            return None
        if self.continuous:
            return f"--steps {steps} is finer than this model's finest grid; it runs 1 to {self.teacher_steps} steps"
        valid = ", ".join(str(m) for m in self.valid_steps())
        return (
            f"--steps {steps} is not on this bundle's {self.steps}-step grid; loop mode runs {valid} "
            f"(divisors of {self.steps}, whose times the model was trained on)"
        )


def _positive_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1
