"""MMPS and SDA on the linear-Gaussian problem.

MMPS with the exact denoiser (so the exact Tweedie covariance ``sigma^2 dx0/dx``) and ``cg_iterations >= N``
is **exact**: its guided denoiser is ``E[x0 | x_sigma, y]`` to round-off, and a converged sampler reproduces the
Kalman posterior. SDA's diagonal covariance is an **approximation**.

Measured (2000 members, Heun 32 steps, float32; seeds 0-2): MMPS relative mean error 0.025-0.030, max |z| of
the mean 0.055-0.068 posterior sd, variance ratio 1.02-1.03 (per cell 0.92-1.12; the unguided Heun 32 run on the
prior alone has ratio 1.03, so this is sampler + Monte Carlo error). SDA (gamma 1e-2, 1000 members, DDPM 100
steps): relative mean error 0.055, variance ratio 0.86 (0.69-0.99); with ``limit_overshoot=False`` 0.24 and 0.78
(0.60-0.92).
"""

import pytest
import torch

from geodiff.diffusion.samplers import DDPMSampler, HeunSampler
from geodiff.diffusion.schedules import EDMSchedule
from geodiff.errors import ConfigError
from geodiff.guidance import MMPSGuidance, SDAGuidance
from geodiff.guidance.mmps import conjugate_gradient, preferred_method


def exact_guided_mean(problem, x, sigma):
    """``E[x0 | x, y]`` in closed form: Gaussian conditioning on ``x`` then on ``y``."""
    s = problem.prior.cov
    eye = torch.eye(s.shape[0], dtype=torch.float64)
    gain = torch.linalg.solve(s + sigma**2 * eye, s).T  # S (S + sigma^2)^-1
    flat = x.reshape(x.shape[0], -1)
    x0 = problem.prior.mean + (flat - problem.prior.mean) @ gain.T
    v = sigma**2 * gain  # Cov[x0 | x]
    a, r = problem.matrix, torch.diag(problem.error_std**2)
    k = torch.linalg.solve(a @ v @ a.T + r, a @ v).T
    return x0 + (problem.y - x0 @ a.T) @ k.T


@pytest.mark.parametrize("sigma", [0.05, 1.0, 30.0])
def test_mmps_denoiser_is_the_exact_posterior_mean(point_problem, sigma):
    x = point_problem.prior.sample(3, generator=torch.Generator().manual_seed(1))
    x = x + sigma * torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    guided = MMPSGuidance(point_problem.y, point_problem.operator, point_problem.error_std, cg_iterations=6)
    out = guided.wrap(point_problem.prior)(x, sigma).reshape(3, -1)
    expected = exact_guided_mean(point_problem, x, sigma)
    assert torch.allclose(out, expected, rtol=0, atol=1e-8 * max(1.0, float(expected.abs().max())))


@pytest.mark.parametrize("sigma", [0.05, 1.0, 30.0])
def test_exact_method_is_the_exact_posterior_mean_without_a_backward_pass(point_problem, sigma):
    x = point_problem.prior.sample(3, generator=torch.Generator().manual_seed(1))
    x = x + sigma * torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    guided = MMPSGuidance(point_problem.y, point_problem.operator, point_problem.error_std, method="exact")
    with torch.no_grad():  # as samplers run: the exact solve needs no autograd
        out = guided.wrap(point_problem.prior)(x, sigma).reshape(3, -1)
    expected = exact_guided_mean(point_problem, x, sigma)
    assert torch.allclose(out, expected, rtol=0, atol=1e-8 * max(1.0, float(expected.abs().max())))
    through_network = MMPSGuidance(point_problem.y, point_problem.operator, point_problem.error_std, method="exact",
                                   network_jacobian=True)  # the last product by one VJP: the same for this prior
    assert torch.allclose(through_network.wrap(point_problem.prior)(x, sigma).reshape(3, -1), expected,
                          rtol=0, atol=1e-8 * max(1.0, float(expected.abs().max())))


def test_exact_method_takes_one_noise_level_per_member(point_problem):
    x = torch.randn(2, 1, 6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    guided = MMPSGuidance(point_problem.y, point_problem.operator, point_problem.error_std, method="exact")
    both = guided.wrap(point_problem.prior)(x, torch.tensor([0.3, 4.0])).reshape(2, -1)
    assert torch.allclose(both[0], exact_guided_mean(point_problem, x[:1], 0.3)[0], atol=1e-9)
    assert torch.allclose(both[1], exact_guided_mean(point_problem, x[1:], 4.0)[0], atol=1e-9)


def test_exact_method_refuses_a_denoiser_without_a_spectrum(point_problem):
    guided = MMPSGuidance(point_problem.y, point_problem.operator, point_problem.error_std, method="exact")
    with pytest.raises(ConfigError, match="gaussian_spectrum"):
        guided.wrap(lambda x, sigma, cond=None: x)
    assert preferred_method(point_problem.prior) == "exact" and preferred_method(lambda x: x) == "cg"


def test_mmps_cg_error_falls_with_iterations(point_problem):
    x = point_problem.prior.sample(4, generator=torch.Generator().manual_seed(3)) + torch.randn(4, 1, 6, 8).double()
    expected = exact_guided_mean(point_problem, x, 1.0)
    errors = []
    for iterations in (1, 2, 6):
        g = MMPSGuidance(point_problem.y, point_problem.operator, point_problem.error_std, cg_iterations=iterations)
        errors.append(float((g.wrap(point_problem.prior)(x, 1.0).reshape(4, -1) - expected).abs().max()))
    assert errors[2] < 1e-9 and errors[0] >= errors[1] >= errors[2], errors


def test_mmps_ensemble_matches_kalman_posterior(point_problem):
    """Exact method: tolerances are Monte Carlo (2000 members) + Heun discretisation error."""
    guidance = MMPSGuidance(point_problem.y, point_problem.operator, point_problem.error_std, cg_iterations=6)
    x = point_problem.sample(guidance, HeunSampler(), EDMSchedule().sigmas(32), members=2000)
    errors = point_problem.errors(x)
    assert errors["relative_mean_error"] < 0.08, errors
    assert errors["max_z"] < 0.15, errors  # 1/sqrt(2000) = 0.022 sd per cell
    assert 0.95 < errors["variance_ratio_mean"] < 1.08, errors
    assert 0.85 < errors["variance_ratio_min"] and errors["variance_ratio_max"] < 1.2, errors


def test_exact_method_ensemble_matches_kalman_posterior(point_problem):
    """As the CG test above, with the exact solve (float32 fields, as the pipelines sample)."""
    guidance = MMPSGuidance(point_problem.y, point_problem.operator, point_problem.error_std, method="exact")
    x = point_problem.sample(guidance, HeunSampler(), EDMSchedule().sigmas(32), members=2000)
    errors = point_problem.errors(x)
    assert errors["relative_mean_error"] < 0.08, errors
    assert errors["max_z"] < 0.15, errors
    assert 0.95 < errors["variance_ratio_mean"] < 1.08, errors
    assert 0.85 < errors["variance_ratio_min"] and errors["variance_ratio_max"] < 1.2, errors


def test_sda_diagonal_is_approximate_but_moves_the_mean_to_the_posterior(point_problem):
    guidance = SDAGuidance(point_problem.y, point_problem.operator, point_problem.error_std)
    x = point_problem.sample(guidance, DDPMSampler(), EDMSchedule().sigmas(100), members=1000)
    errors = point_problem.errors(x)
    assert errors["relative_mean_error"] < 0.4, errors  # measured 0.24
    assert 0.6 < errors["variance_ratio_mean"] < 1.1, errors  # measured 0.78: under-dispersed


def test_mmps_works_with_a_plain_linear_callable(point_problem):
    """Operators without ``adjoint``/``gram_diagonal`` are handled with autograd (same result)."""
    x = torch.randn(2, 1, 6, 8, dtype=torch.float64)
    a = point_problem.matrix
    plain = lambda field: field.reshape(field.shape[0], -1) @ a.T.to(field.dtype)  # noqa: E731
    for method in ("cg", "diagonal"):
        own = MMPSGuidance(point_problem.y, point_problem.operator, point_problem.error_std, method=method)
        other = MMPSGuidance(point_problem.y, plain, point_problem.error_std, method=method)
        assert torch.allclose(own.wrap(point_problem.prior)(x, 0.7), other.wrap(point_problem.prior)(x, 0.7))


def test_conjugate_gradient_solves_batched_spd_systems():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(5, 5, dtype=torch.float64, generator=g)
    m = q @ q.T + 5 * torch.eye(5, dtype=torch.float64)
    b = torch.randn(3, 5, dtype=torch.float64, generator=g)
    u = conjugate_gradient(lambda v: v @ m, b, 5)
    assert torch.allclose(u @ m, b, atol=1e-10)


def test_mmps_rejects_bad_settings(point_problem):
    args = (point_problem.y, point_problem.operator, point_problem.error_std)
    with pytest.raises(ConfigError, match="method"):
        MMPSGuidance(*args, method="gmres")
    with pytest.raises(ConfigError, match="cg_iterations"):
        MMPSGuidance(*args, cg_iterations=0)
    with pytest.raises(ConfigError, match="gamma"):
        MMPSGuidance(*args, gamma=0.0)
