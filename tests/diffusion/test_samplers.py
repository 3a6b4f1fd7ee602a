"""Every sampler on an exact Gaussian denoiser reproduces the target mean and covariance."""

import math

import pytest
import torch

from geodiff import registry
from geodiff.diffusion.gaussian import GaussianDenoiser
from geodiff.diffusion.samplers import (
    DDIMSampler,
    DDPMSampler,
    DPMSolverPP2MSampler,
    EulerSampler,
    HeunSampler,
    StepInfo,
)
from geodiff.diffusion.schedules import EDMSchedule, VPSchedule
from geodiff.errors import ConfigError

SHAPE = (1, 3, 4)  # 12-dimensional Gaussian field
MEMBERS = 4000


def smooth_gaussian():
    """A Gaussian with non-zero mean and a smooth (squared-exponential) covariance on a 3x4 grid."""
    yy, xx = torch.meshgrid(torch.arange(3.0), torch.arange(4.0), indexing="ij")
    points = torch.stack([yy.flatten(), xx.flatten()], dim=1)
    distance2 = torch.cdist(points, points) ** 2
    cov = 0.8 * torch.exp(-distance2 / (2 * 1.5**2)) + 0.05 * torch.eye(12)
    mean = torch.linspace(-1.0, 2.0, 12)
    return GaussianDenoiser(mean, cov, SHAPE)


CASES = [
    ("ddpm_vp_1000", DDPMSampler(), VPSchedule().sigmas(1000)),
    ("ddim_eta0_vp_100", DDIMSampler(eta=0.0), VPSchedule().sigmas(100)),
    ("ddim_eta1_vp_250", DDIMSampler(eta=1.0), VPSchedule().sigmas(250)),
    ("euler_edm_200", EulerSampler(), EDMSchedule().sigmas(200)),
    ("heun_edm_32", HeunSampler(), EDMSchedule().sigmas(32)),
    ("heun_churn_edm_64", HeunSampler(churn=20.0), EDMSchedule().sigmas(64)),
    ("dpmpp_2m_edm_40", DPMSolverPP2MSampler(), EDMSchedule().sigmas(40)),
]


@pytest.mark.parametrize(("name", "sampler", "sigmas"), CASES, ids=[c[0] for c in CASES])
def test_sampler_reproduces_gaussian_moments(name, sampler, sigmas):
    oracle = smooth_gaussian()
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(MEMBERS, *SHAPE, dtype=torch.float64, generator=generator)
    x = sampler(oracle, noise, sigmas, generator=generator).reshape(MEMBERS, -1)
    mean_error = (x.mean(0) - oracle.mean).abs() / oracle.cov.diagonal().sqrt()
    # standard error of a sample mean is 1/sqrt(n) standard deviations: allow 4.5 of them (12 dims)
    assert mean_error.max() < 4.5 / math.sqrt(MEMBERS), name
    cov = torch.cov(x.T)
    relative = torch.linalg.matrix_norm(cov - oracle.cov) / torch.linalg.matrix_norm(oracle.cov)
    # sampling error of a covariance with n=4000 in 12 dims is about sqrt(2*12/n) ~ 0.08 relative
    assert relative < 0.1, (name, float(relative))


def exact_ode_map(oracle, x_t, s0):
    """For a Gaussian the probability-flow ODE is linear: each eigen-coordinate c of x - m scales as
    sqrt(lam + sigma^2), so x0 = m + U sqrt(lam / (lam + s0^2)) U^T (x_T - m)."""
    coords = (x_t.reshape(x_t.shape[0], -1) - oracle.mean) @ oracle.eigenvectors
    scale = (oracle.eigenvalues / (oracle.eigenvalues + s0**2)).sqrt()
    return oracle.mean + (coords * scale) @ oracle.eigenvectors.T


@pytest.mark.parametrize(("sampler", "order"), [(HeunSampler(), 2), (DPMSolverPP2MSampler(), 2), (EulerSampler(), 1)])
def test_deterministic_samplers_converge_to_exact_ode_map_at_their_order(sampler, order):
    """Doubling the steps divides the error by 2**order (measured: Heun 4.3, DPM-Solver++(2M) 4.5, Euler 2.0)."""
    oracle = smooth_gaussian()
    noise = torch.randn(16, *SHAPE, dtype=torch.float64)
    errors = []
    for steps in (64, 128):
        sigmas = EDMSchedule(sigma_min=1e-6).sigmas(steps)
        exact = exact_ode_map(oracle, noise * float(sigmas[0]), float(sigmas[0]))
        errors.append((sampler(oracle, noise, sigmas).reshape(16, -1) - exact).abs().max().item())
    ratio = errors[0] / errors[1]
    assert 0.85 * 2**order < ratio < 1.3 * 2**order, errors
    if order == 2:
        assert errors[1] < 3e-3


def test_ddim_eta1_equals_ddpm_step_for_step():
    oracle = smooth_gaussian()
    sigmas = VPSchedule().sigmas(50)
    noise = torch.randn(5, *SHAPE, dtype=torch.float64)
    a = DDPMSampler()(oracle, noise, sigmas, generator=torch.Generator().manual_seed(3))
    b = DDIMSampler(eta=1.0)(oracle, noise, sigmas, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_euler_equals_ddim_eta0():
    oracle = smooth_gaussian()
    sigmas = EDMSchedule().sigmas(10)
    noise = torch.randn(5, *SHAPE, dtype=torch.float64)
    torch.testing.assert_close(EulerSampler()(oracle, noise, sigmas), DDIMSampler()(oracle, noise, sigmas))


def test_same_generator_seed_gives_identical_samples():
    oracle = smooth_gaussian()
    sigmas = EDMSchedule().sigmas(12)
    noise = torch.randn(3, *SHAPE)
    first = HeunSampler(churn=10)(oracle, noise, sigmas, generator=torch.Generator().manual_seed(7))
    second = HeunSampler(churn=10)(oracle, noise, sigmas, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, second)


def test_callback_and_hook_see_every_step_and_nfe_is_counted():
    oracle = smooth_gaussian()
    calls = []

    def counting(x, sigma, cond=None):
        calls.append(sigma)
        return oracle(x, sigma, cond)

    seen: list[StepInfo] = []
    hooked = []

    def hook(x_next, *, x, x0_hat, sigma, sigma_next, generator):
        hooked.append((sigma, sigma_next))
        return x_next

    for sampler in (HeunSampler(), DPMSolverPP2MSampler(), DDPMSampler()):
        calls.clear(), seen.clear(), hooked.clear()
        sigmas = EDMSchedule().sigmas(7)
        sampler(counting, torch.randn(2, *SHAPE), sigmas, callback=seen.append, hook=hook)
        assert len(calls) == sampler.nfe(7)
        assert [info.step for info in seen] == list(range(7))
        assert hooked == list(zip(sigmas.tolist()[:-1], sigmas.tolist()[1:]))


def test_bad_sigmas_are_rejected():
    oracle = smooth_gaussian()
    with pytest.raises(ConfigError, match="decreasing"):
        EulerSampler()(oracle, torch.randn(1, *SHAPE), torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ConfigError, match="eta"):
        DDIMSampler(eta=-1)


def test_every_builtin_sampler_is_registered():
    for name in registry.available("sampler"):
        cls = registry.get("sampler", name)
        assert registry.name_of("sampler", cls) == name
