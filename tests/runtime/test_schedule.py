"""Schedule math pinned with literal values; DDIM with a perfect denoiser is exact; the distillation target is Alg. 2's."""

import math

import numpy as np
import pytest

from pdd.runtime import schedule as S
from pdd.runtime.errors import ConfigError


def test_eight_step_grid_and_coefficients_are_pinned():
    c = S.grid_coefficients(8)
    assert c["t"].tolist() == [1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0]
    expected_alpha = [0.0, 0.19509032, 0.38268343, 0.55557023, 0.70710678, 0.83146961, 0.92387953, 0.98078528, 1.0]
    assert np.allclose(c["alpha"], expected_alpha, atol=1e-8)
    assert np.allclose(c["sigma"], expected_alpha[::-1], atol=1e-8)
    assert c["sigma"][-1] == 0.0 and c["alpha"][-1] == 1.0


def test_grid_rejects_bad_counts():
    for bad in (0, -3, 2.5):
        with pytest.raises(ConfigError):
            S.grid(bad)


def test_variance_preserving_and_log_snr():
    t = np.linspace(0, 1, 11)
    alpha, sigma = S.alpha_sigma(t)
    assert np.allclose(alpha**2 + sigma**2, 1.0)
    assert S.log_snr(0.5) == pytest.approx(0.0, abs=1e-12)
    assert S.log_snr(0.0) == S.LOGSNR_MAX and S.log_snr(1.0) == S.LOGSNR_MIN
    arr = S.log_snr(np.array([0.0, 0.5, 1.0]))
    assert arr[0] == pytest.approx(S.LOGSNR_MAX) and arr[1] == pytest.approx(0.0, abs=1e-9) and arr[2] == pytest.approx(S.LOGSNR_MIN)
    assert S.log_snr(0.25) == pytest.approx(-2 * math.log(math.tan(math.pi / 8)))


def test_weights():
    assert S.snr_weight(0.5, "snr+1") == pytest.approx(2.0)
    assert S.snr_weight(np.array([0.9]), "truncated")[0] == pytest.approx(1.0)
    assert S.snr_weight(np.array([0.1]), "truncated")[0] == pytest.approx(1 / math.tan(math.pi * 0.05) ** 2)
    with pytest.raises(ConfigError):
        S.snr_weight(0.5, "bogus")


def test_v_conversions_are_consistent():
    rng = np.random.default_rng(0)
    x0, eps = rng.normal(size=(2, 3, 5))
    alpha, sigma = S.alpha_sigma(0.3)
    z = S.diffuse(x0, eps, alpha, sigma)
    v = S.v_target(x0, eps, alpha, sigma)
    assert np.allclose(S.x0_from_v(z, v, alpha, sigma), x0)
    assert np.allclose(S.eps_from_v(z, v, alpha, sigma), eps)


def _perfect_denoiser(x0):
    def denoise(z, t):
        alpha, sigma = S.alpha_sigma(t)
        eps = (z - alpha * x0) / sigma
        return S.v_target(x0, eps, alpha, sigma)

    return denoise


@pytest.mark.parametrize("steps", [1, 2, 8, 64])
def test_ddim_with_perfect_denoiser_is_exact(steps):
    rng = np.random.default_rng(steps)
    x0 = rng.normal(size=(4, 6))
    z1 = rng.normal(size=(4, 6))
    assert np.allclose(S.ddim_sample(_perfect_denoiser(x0), z1, S.grid(steps)), x0, atol=1e-9)


@pytest.mark.parametrize("t,s", [(0.9, 0.4), (0.5, 0.0), (0.3, 0.1)])
def test_ddim_step_from_any_t(t, s):
    rng = np.random.default_rng(0)
    x0, eps = rng.normal(size=(2, 8))
    alpha, sigma = S.alpha_sigma(t)
    z_t = S.diffuse(x0, eps, alpha, sigma)
    z_s = S.ddim_step(z_t, _perfect_denoiser(x0)(z_t, t), t, s)
    alpha_s, sigma_s = S.alpha_sigma(s)
    assert np.allclose(z_s, alpha_s * x0 + sigma_s * eps)
    a, b = S.ddim_coefficients(t, s)
    assert np.allclose(a * z_t + b * _perfect_denoiser(x0)(z_t, t), z_s)


def _imperfect_teacher(z, t):
    return np.tanh(z) * (1.0 + t) - 0.3 * t  # any smooth function: the target must match it, not the truth


@pytest.mark.parametrize("t,n", [(1.0, 8), (0.5, 8), (0.125, 8), (0.75, 4)])
def test_distill_target_reproduces_two_teacher_steps(t, n):
    rng = np.random.default_rng(1)
    z_t = rng.normal(size=(3, 7))
    t_mid, t_end = t - 0.5 / n, t - 1.0 / n
    z_mid = S.ddim_step(z_t, _imperfect_teacher(z_t, t), t, t_mid)
    z_end = S.ddim_step(z_mid, _imperfect_teacher(z_mid, t_mid), t_mid, t_end)
    x_tilde = S.distill_target(z_t, z_end, t, t_end)
    # One DDIM step from z_t that predicts x̃ lands exactly on the teacher's two-step result.
    alpha_t, sigma_t = S.alpha_sigma(t)
    alpha_e, sigma_e = S.alpha_sigma(t_end)
    eps_tilde = (z_t - alpha_t * x_tilde) / sigma_t
    assert np.allclose(alpha_e * x_tilde + sigma_e * eps_tilde, z_end, atol=1e-9)
    # Swapping t' and t'' changes the answer (guards against mixing up the two teacher times).
    swapped = S.distill_target(z_t, z_end, t, t_mid)
    assert not np.allclose(swapped, x_tilde)


def test_distill_target_at_last_interval_is_teacher_x0():
    z_t = np.random.default_rng(2).normal(size=(5,))
    z_end = np.random.default_rng(3).normal(size=(5,))  # at t'' = 0, z_0 is the teacher's x̂
    assert np.allclose(S.distill_target(z_t, z_end, 0.125, 0.0), z_end)


def test_same_functions_accept_torch_tensors():
    torch = pytest.importorskip("torch")
    t = torch.tensor([0.2, 0.7], dtype=torch.float64, requires_grad=True)
    alpha, sigma = S.alpha_sigma(t)
    assert isinstance(alpha, torch.Tensor)
    np_alpha, _ = S.alpha_sigma(np.array([0.2, 0.7]))
    assert np.allclose(alpha.detach().numpy(), np_alpha)
    S.log_snr(t).sum().backward()
    assert t.grad is not None
    w = S.snr_weight(torch.tensor([0.9]), "truncated")
    assert isinstance(w, torch.Tensor) and float(w) == pytest.approx(1.0)


def test_ddim_sample_takes_any_decreasing_grid():
    """The teacher's two distillation steps are one call on [t, t − ½/N, t − 1/N]: the same as two explicit DDIM steps."""
    rng = np.random.default_rng(2)
    z_t = rng.normal(size=(3, 7))
    t, n = 0.75, 4
    z_mid = S.ddim_step(z_t, _imperfect_teacher(z_t, t), t, t - 0.5 / n)
    z_end = S.ddim_step(z_mid, _imperfect_teacher(z_mid, t - 0.5 / n), t - 0.5 / n, t - 1.0 / n)
    np.testing.assert_allclose(S.ddim_sample(_imperfect_teacher, z_t, [t, t - 0.5 / n, t - 1.0 / n]), z_end, atol=1e-12)
    seen = []
    S.ddim_sample(lambda z, t: seen.append(type(t)) or z, z_t, S.grid(2))
    assert seen == [float, float]  # numpy scalars reach the denoiser as Python floats
    with pytest.raises(ConfigError, match="at least two times"):
        S.ddim_sample(_imperfect_teacher, z_t, [1.0])


def test_schedule_config_round_trips_and_says_which_step_counts_exist():
    assert S.TEACHER_STEPS == 1024
    teacher, student = S.ScheduleConfig.teacher(), S.ScheduleConfig.student(8)
    assert S.ScheduleConfig.from_json(student.to_json()) == student
    assert student.to_dict() == {"kind": "cosine", "parameterization": "v", "steps": 8, "continuous": False,
                                 "teacher_steps": 1024}
    assert student.times().tolist() == S.grid(8).tolist()
    assert [n for n in range(1, 10) if student.allows(n)] == [1, 2, 4, 8]
    assert teacher.allows(3) and teacher.allows(1024) and not teacher.allows(1025) and not teacher.allows(0)


@pytest.mark.parametrize("fields,message", [
    ({"kind": "linear"}, "kind"), ({"parameterization": "eps"}, "parameterization"), ({"steps": 0}, "steps"),
    ({"steps": 2048}, "steps"), ({"continuous": "yes"}, "continuous"), ({"teacher_steps": -1}, "teacher_steps"),
    ({"sigma_max": 80}, "unknown schedule config fields: sigma_max"),
])
def test_schedule_config_refuses_what_the_runtime_cannot_sample(fields, message):
    with pytest.raises(ConfigError, match=message):
        S.ScheduleConfig.from_dict({**S.ScheduleConfig.student(4).to_dict(), **fields})
