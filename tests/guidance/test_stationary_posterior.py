"""Guided sampling with an exact stationary Gaussian prior on a small regional grid with land reproduces the
Gaussian (optimal-interpolation) posterior: the check that tells a guidance failure from a prior failure.

The prior is the one OI uses (Matern 3/2 covariance in great-circle distance plus nugget, between the valid
cells of an 8x12 grid of 2 degrees, not periodic, with a coast and an island), in the scale of normalised data
(prior sd 0.2, a mean gradient across the grid); 16 observations at cell centres with error 0.01, as for a field
observed to 1 % of its global std. Measured (400 members): MMPS with ``cg_iterations`` = 16 (exact guided
denoiser) and Heun 24 steps: relative mean error 0.019, max |z| 0.13, posterior variance ratio 1.11 (0.92-1.23)
-- the excess is Heun's discretisation: 1.53 with 12 steps, 1.04 with 48, 1.02 with 96; the default settings
(``cg_iterations=1``, float32, clipping): relative mean error 0.067, max |z| 0.44, variance ratio 1.18.

With a prior mean far from zero (-3 to 3 across the grid, as a climatology in units of one global mean/std), the
sampler's plain start ``sigma_max eps`` biases the ensemble mean by 0.046 posterior sd (RMS) with the exact solve,
0.045 with 96 steps: :class:`~geodiff.diffusion.centred_start.CentredStart` removes it (3e-7).
"""

import numpy as np
import pytest
import torch
import xarray as xr

from geodiff.baselines.optimal_interpolation import covariance_matrix
from geodiff.diffusion.centred_start import CentredStart
from geodiff.diffusion.clipping import ClipDenoised
from geodiff.diffusion.gaussian import GaussianDenoiser
from geodiff.diffusion.samplers import HeunSampler
from geodiff.diffusion.schedules import EDMSchedule
from geodiff.guidance import MMPSGuidance
from geodiff.operators import PointOperator

LAT = np.linspace(20.0, 34.0, 8)
LON = np.linspace(140.0, 162.0, 12)
N_OBS, ERROR = 16, 0.01


def valid_cells() -> np.ndarray:
    """The grid's sea (True): land in one corner and an island."""
    valid = np.ones((LAT.size, LON.size), dtype=bool)
    valid[:3, :4] = False
    valid[5, 7] = False
    return valid


@pytest.fixture(scope="module")
def problem():
    return stationary_problem(torch.linspace(-1.0, 1.0, int(valid_cells().sum())))


@pytest.fixture(scope="module")
def far_problem():
    """The same with a prior mean far from zero: -3 to 3 across the grid (|m| = 16, as a climatology in units of
    one global mean/std)."""
    ramp = np.broadcast_to(np.linspace(-3.0, 3.0, LON.size), (LAT.size, LON.size))
    return stationary_problem(torch.from_numpy(ramp[valid_cells()]))


def stationary_problem(prior_mean: torch.Tensor) -> dict:
    """Prior ``N(prior_mean [P], Matern)``, its truth, the observations and the Kalman posterior."""
    valid = valid_cells()
    covariance = xr.Dataset({"variance": 0.04, "length_scale": 800.0, "time_scale": np.inf, "nugget": 0.002},
                            attrs={"model": "matern32"})
    prior = GaussianDenoiser(prior_mean, torch.from_numpy(covariance_matrix(covariance, LAT, LON, valid)),
                             (1, *valid.shape), mask=torch.from_numpy(valid)[None])
    truth = prior.sample(1, generator=torch.Generator().manual_seed(5))[0, 0].numpy()
    rng = np.random.default_rng(0)
    rows, cols = np.unravel_index(rng.choice(np.flatnonzero(valid), N_OBS, replace=False), valid.shape)
    y = torch.from_numpy(truth[rows, cols] + rng.normal(0.0, ERROR, N_OBS))
    operator = PointOperator(LAT, LON, lat=LAT[rows], lon=LON[cols], mask=valid)
    error_std = torch.full((N_OBS,), ERROR, dtype=torch.float64)
    mean, cov = prior.posterior(operator.to_sparse().to_dense(), y, torch.diag(error_std**2))
    return {"prior": prior, "operator": operator, "y": y, "error_std": error_std, "valid": torch.from_numpy(valid),
            "mean": mean, "sd": cov.diagonal().sqrt()}


def ensemble_errors(problem, guidance, sampler, steps, members, dtype):
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(members, 1, LAT.size, LON.size, generator=generator, dtype=dtype)
    x = guidance.sample(sampler, problem["prior"], noise, EDMSchedule().sigmas(steps), generator=generator)
    x = x.to(torch.float64).reshape(members, -1)[:, problem["valid"].reshape(-1)]
    target, sd = problem["mean"][problem["valid"].reshape(-1)], problem["sd"]
    uncertain = sd > 0.02  # cells the observations leave uncertain
    ratio = x.var(0)[uncertain] / sd[uncertain] ** 2
    return {"relative_mean_error": float(torch.linalg.norm(x.mean(0) - target)
                                         / torch.linalg.norm(problem["prior"].mean - target)),
            "max_z": float(((x.mean(0) - target).abs() / sd).max()),
            "variance_ratio": float(ratio.mean()), "variance_ratio_min": float(ratio.min()),
            "variance_ratio_max": float(ratio.max())}


def test_converged_mmps_reproduces_the_oi_posterior_mean_and_spread(problem):
    """cg_iterations >= N makes the guided denoiser exact; Heun 48 steps; 300 members (Monte Carlo sd of the
    mean 0.058 posterior sd per cell, of a variance ratio about 0.08)."""
    guidance = MMPSGuidance(problem["y"], problem["operator"], problem["error_std"], cg_iterations=N_OBS)
    errors = ensemble_errors(problem, guidance, HeunSampler(), 48, 300, torch.float64)
    assert errors["relative_mean_error"] < 0.05, errors
    assert errors["max_z"] < 0.3, errors
    assert 0.92 < errors["variance_ratio"] < 1.12, errors
    assert 0.7 < errors["variance_ratio_min"] and errors["variance_ratio_max"] < 1.4, errors


def test_default_mmps_settings_stay_close_to_the_oi_posterior(problem):
    """reconstruct's settings: cg_iterations 1, Heun 24 steps, float32, estimates clipped at 10."""
    guidance = MMPSGuidance(problem["y"].float(), problem["operator"], problem["error_std"].float())
    errors = ensemble_errors(problem, guidance, ClipDenoised(HeunSampler(), 10.0), 24, 300, torch.float32)
    assert errors["relative_mean_error"] < 0.12, errors
    assert errors["max_z"] < 0.7, errors
    assert 0.95 < errors["variance_ratio"] < 1.35, errors


def exact_guidance(problem, dtype=torch.float64):
    return MMPSGuidance(problem["y"].to(dtype), problem["operator"], problem["error_std"].to(dtype), method="exact")


def noise_free_bias(problem, sampler, steps: int = 24) -> float:
    """RMS distance of a noise-free member from the Kalman mean over RMS posterior sd: the sampler is affine in its
    noise with the exact solve, so this member is the ensemble's expectation, without Monte Carlo error."""
    zero = torch.zeros(1, 1, LAT.size, LON.size, dtype=torch.float64)
    x = exact_guidance(problem).sample(sampler, problem["prior"], zero, EDMSchedule().sigmas(steps))
    valid = problem["valid"].reshape(-1)
    error = x.reshape(-1)[valid] - problem["mean"][valid]
    return float(torch.linalg.norm(error) / torch.linalg.norm(problem["sd"]))


def test_the_noise_free_member_is_the_ensemble_expectation(far_problem):
    noise = torch.randn(4, 1, LAT.size, LON.size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sampler, sigmas = CentredStart(HeunSampler()), EDMSchedule().sigmas(24)
    pair = exact_guidance(far_problem).sample(sampler, far_problem["prior"], torch.cat([noise, -noise]), sigmas)
    zero = exact_guidance(far_problem).sample(sampler, far_problem["prior"], torch.zeros_like(noise[:1]), sigmas)
    assert torch.allclose((pair[:4] + pair[4:]) / 2, zero.expand(4, -1, -1, -1), atol=1e-9)


def test_centred_start_removes_the_bias_of_the_plain_start(far_problem):
    """The plain start ``sigma_max eps`` leaves ``|m| / sigma_max`` along the mean, whatever the step count."""
    plain = [noise_free_bias(far_problem, HeunSampler(), steps) for steps in (24, 96)]
    centred = noise_free_bias(far_problem, CentredStart(HeunSampler()))
    assert min(plain) > 0.03 and abs(plain[0] - plain[1]) < 0.2 * plain[0], plain
    assert centred < 1e-4, (centred, plain)


def test_exact_solve_with_centred_start_reproduces_the_oi_posterior_as_the_pipelines_sample(far_problem):
    """float32, estimates clipped at 10, Heun 24 steps, 300 members (max |z| 0.17; 0.21 with the plain start)."""
    sampler = CentredStart(ClipDenoised(HeunSampler(), 10.0))
    errors = ensemble_errors(far_problem, exact_guidance(far_problem, torch.float32), sampler, 24, 300, torch.float32)
    assert errors["relative_mean_error"] < 0.05, errors
    assert errors["max_z"] < 0.2, errors
    assert 0.95 < errors["variance_ratio"] < 1.2, errors  # Heun 24 steps: about +10 %
    assert sampler.nfe(24) == HeunSampler().nfe(24) + 1
