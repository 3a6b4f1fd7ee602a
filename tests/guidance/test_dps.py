"""DPS on the linear-Gaussian problem: an **approximate** posterior sampler (it treats ``x0_hat`` as exact).

Measured (1000 members, float32): ``convention="score"`` with DDPM on 100 EDM steps: relative mean error
0.04 (seeds 0-1), variance ratio 0.86-0.88 (0.65-1.0 per cell); with ``limit_overshoot=False`` (DPS's raw step)
0.31-0.32 and 0.71-0.78 (0.48-0.96 per cell; under-dispersed). ``convention="chung"`` (scale 1)
with DDPM on 250 VP steps: relative mean error 0.32, variance ratio 0.81 (0.53-1.07); scale 3 over-shoots
(variance up to 6x in some cells).
"""

import math

import pytest
import torch

from geodiff.diffusion.samplers import DDPMSampler, HeunSampler
from geodiff.diffusion.schedules import EDMSchedule, VPSchedule
from geodiff.errors import ConfigError
from geodiff.guidance import DPSChungSampler, DPSGuidance


def test_score_convention_is_the_likelihood_gradient_through_the_denoiser(point_problem):
    """``x0_hat - sigma^2 J^T A^T R^-1 (A x0_hat - y)`` with the exact Jacobian ``J = S (S + sigma^2)^-1``."""
    sigma = 0.8
    prior, a = point_problem.prior, point_problem.matrix
    x = torch.randn(3, 1, 6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    guided = DPSGuidance(point_problem.y, point_problem.operator, point_problem.error_std,
                         limit_overshoot=False).wrap(prior)(x, sigma)
    jacobian = torch.linalg.solve(prior.cov + sigma**2 * torch.eye(48, dtype=torch.float64), prior.cov).T
    x0 = prior(x, sigma).reshape(3, -1)
    residual = (x0 @ a.T - point_problem.y) / point_problem.error_std**2
    expected = x0 - sigma**2 * residual @ a @ jacobian
    assert torch.allclose(guided.reshape(3, -1), expected, atol=1e-10)


def test_chung_convention_matches_dps_algorithm_in_vp_coordinates(point_problem):
    """Step for step, geodiff's DDPM + Chung step equals Chung et al.'s Algorithm 1 written in VP coordinates
    ``z = sqrt(abar) x``: ``z_next = DDPM(z) - zeta * grad_z ||y - A x0_hat||``."""
    prior, zeta = point_problem.prior, 0.5
    sigmas = VPSchedule().sigmas(40)
    noise = torch.randn(4, 1, 6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    guidance = DPSGuidance(point_problem.y, point_problem.operator, point_problem.error_std, convention="chung",
                           scale=zeta)
    ours = guidance.sample(DDPMSampler(), prior, noise, sigmas, generator=torch.Generator().manual_seed(2))

    generator = torch.Generator().manual_seed(2)
    levels = sigmas.tolist()
    z = noise * levels[0] / math.sqrt(1 + levels[0] ** 2)
    for s, s_next in zip(levels[:-1], levels[1:]):
        a, a_next = 1 / math.sqrt(1 + s**2), 1 / math.sqrt(1 + s_next**2)
        z_in = z.detach().requires_grad_(True)
        x0 = prior(z_in / a, s)
        norm = (point_problem.y - point_problem.operator(x0)).pow(2).sum(1).sqrt().sum()
        (grad,) = torch.autograd.grad(norm, z_in)
        x0 = x0.detach()
        if s_next > 0:
            sv, sv_next = s * a, s_next * a_next
            tau = 1 - (a / a_next * sv_next / sv) ** 2
            eps = torch.randn(z.shape, dtype=z.dtype, generator=generator)
            z_next = a_next * x0 + sv_next * math.sqrt(1 - tau) / sv * (z - a * x0) + sv_next * math.sqrt(tau) * eps
        else:
            z_next = x0
        z = z_next - zeta * grad
    assert torch.allclose(ours, z, atol=1e-8)


@pytest.mark.parametrize(
    ("convention", "sampler", "sigmas"),
    [("score", DDPMSampler(), EDMSchedule().sigmas(100)), ("chung", DDPMSampler(), VPSchedule().sigmas(250))],
)
def test_dps_is_approximate_but_moves_the_mean_towards_the_posterior(point_problem, convention, sampler, sigmas):
    guidance = DPSGuidance(point_problem.y, point_problem.operator, point_problem.error_std, convention=convention)
    errors = point_problem.errors(point_problem.sample(guidance, sampler, sigmas, members=1000))
    assert errors["relative_mean_error"] < 0.5, errors  # measured 0.31 (score), 0.32 (chung)
    assert 0.5 < errors["variance_ratio_mean"] < 1.2, errors  # measured 0.71-0.81


def test_chung_step_works_with_two_evaluations_per_step(point_problem):
    """Heun evaluates the denoiser twice per step; the step finds the gradient of the step's first evaluation."""
    guidance = DPSGuidance(point_problem.y, point_problem.operator, point_problem.error_std, convention="chung",
                           scale=0.2)
    x = point_problem.sample(guidance, HeunSampler(), EDMSchedule().sigmas(16), members=8)
    assert torch.isfinite(x).all()


def test_chung_is_a_recording_denoiser_and_a_sampler_wrapper(point_problem):
    guidance = DPSGuidance(point_problem.y, point_problem.operator, point_problem.error_std, convention="chung")
    x = torch.randn(2, 1, 6, 8, dtype=torch.float64)
    assert torch.equal(guidance.wrap(point_problem.prior)(x, 1.0), point_problem.prior(x, 1.0))  # x0_hat unchanged
    assert isinstance(guidance.wrap_sampler(DDPMSampler()), DPSChungSampler)
    score = DPSGuidance(point_problem.y, point_problem.operator, point_problem.error_std)
    assert score.wrap_sampler(sampler := DDPMSampler()) is sampler


def test_chung_step_needs_the_denoiser_wrapper(point_problem):
    guidance = DPSGuidance(point_problem.y, point_problem.operator, point_problem.error_std, convention="chung")
    x = torch.zeros(1, 1, 6, 8)
    with pytest.raises(ConfigError, match="wrapper"):
        guidance.wrap_sampler(DDPMSampler()).step(point_problem.prior, x, 0, 1.0, 0.5, {}, cond=None, generator=None)


def test_dps_rejects_bad_settings(point_problem):
    with pytest.raises(ConfigError, match="convention"):
        DPSGuidance(point_problem.y, point_problem.operator, point_problem.error_std, convention="zeta")
    with pytest.raises(ConfigError, match="scale"):
        DPSGuidance(point_problem.y, point_problem.operator, point_problem.error_std, scale=-1.0)
