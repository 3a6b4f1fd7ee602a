"""CentredStart: guided sampling with an exact Gaussian prior whose mean is far from zero (as a climatology is in
per-channel normalised units) reproduces the exact (Kalman) posterior mean, where the plain start leaves a bias
that no step count removes.

The prior: a Matern 3/2 covariance (sd 0.2, 800 km) between the valid cells of a 12x16 grid of 2 degrees with a
coast, and a mean rising from -3 to 3 across it (|m| = 23, as a climatology normalised by one global mean/std);
20 observations of error 0.01 at cell centres, guided by MMPS's exact solve, Heun 24 steps. The sampler is affine
in its noise here, so a noise-free member is the ensemble's expectation (checked: the mean of an antithetic
pair), and its distance from the Kalman mean is the sampler's bias without Monte Carlo error.
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

LAT = np.linspace(10.0, 32.0, 12)
LON = np.linspace(140.0, 170.0, 16)
N_OBS, ERROR = 20, 0.01


@pytest.fixture(scope="module")
def problem():
    mask = np.ones((LAT.size, LON.size), dtype=bool)
    mask[:4, :5] = False
    covariance = xr.Dataset({"variance": 0.04, "length_scale": 800.0, "time_scale": np.inf, "nugget": 0.0004},
                            attrs={"model": "matern32"})
    gradient = np.broadcast_to(np.linspace(-3.0, 3.0, LON.size), mask.shape)[mask]
    cov = torch.from_numpy(covariance_matrix(covariance, LAT, LON, mask))
    prior = GaussianDenoiser(torch.from_numpy(gradient.copy()), cov, (1, *mask.shape),
                             mask=torch.from_numpy(mask)[None])
    truth = prior.sample(1, generator=torch.Generator().manual_seed(3))[0, 0].numpy()
    rng = np.random.default_rng(1)
    rows, cols = np.unravel_index(rng.choice(np.flatnonzero(mask), N_OBS, replace=False), mask.shape)
    y = torch.from_numpy(truth[rows, cols] + rng.normal(0.0, ERROR, N_OBS))
    operator = PointOperator(LAT, LON, lat=LAT[rows], lon=LON[cols], mask=mask)
    error_std = torch.full((N_OBS,), ERROR, dtype=torch.float64)
    mean, cov = prior.posterior(operator.to_sparse().to_dense(), y, torch.diag(error_std**2))
    valid = torch.from_numpy(mask).reshape(-1)
    return {"prior": prior, "guidance": MMPSGuidance(y, operator, error_std, method="exact"), "valid": valid,
            "mean": mean[valid], "sd": cov.diagonal().sqrt()}


def sample(problem, sampler, noise, steps=24):
    x = problem["guidance"].sample(sampler, problem["prior"], noise, EDMSchedule().sigmas(steps))
    return x.to(torch.float64).reshape(noise.shape[0], -1)[:, problem["valid"]]


def bias(problem, sampler, steps=24):
    """RMS distance of the noise-free member from the Kalman mean over RMS posterior sd."""
    expectation = sample(problem, sampler, torch.zeros(1, 1, LAT.size, LON.size, dtype=torch.float64), steps)[0]
    return float(torch.linalg.norm(expectation - problem["mean"]) / torch.linalg.norm(problem["sd"]))


def test_the_noise_free_member_is_the_ensemble_expectation(problem):
    noise = torch.randn(4, 1, LAT.size, LON.size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sampler = CentredStart(HeunSampler())
    pair = sample(problem, sampler, torch.cat([noise, -noise]))
    zero = sample(problem, sampler, torch.zeros(1, 1, LAT.size, LON.size, dtype=torch.float64))
    assert torch.allclose((pair[:4] + pair[4:]) / 2, zero.expand(4, -1), atol=1e-9)


def test_centred_start_removes_the_bias_of_the_plain_start(problem):
    plain = [bias(problem, HeunSampler(), steps) for steps in (24, 96)]
    centred = bias(problem, CentredStart(HeunSampler()))
    assert min(plain) > 0.05, plain  # the plain start's bias: |m| / sigma_max, not the discretisation
    assert abs(plain[0] - plain[1]) < 0.2 * plain[0], plain
    assert centred < 0.1 * min(plain), (centred, plain)


def test_centred_start_reproduces_the_kalman_posterior_as_the_pipelines_sample(problem):
    """float32, estimates clipped at 10, 400 members (Monte Carlo sd of the mean 0.05 posterior sd per cell)."""
    noise = torch.randn(400, 1, LAT.size, LON.size, generator=torch.Generator().manual_seed(2))
    x = sample(problem, CentredStart(ClipDenoised(HeunSampler(), 10.0)), noise)
    z = (x.mean(0) - problem["mean"]) / problem["sd"]
    uncertain = problem["sd"] > 0.02
    ratio = x.var(0)[uncertain] / problem["sd"][uncertain] ** 2
    assert float(torch.sqrt((z**2).mean())) < 0.065, z  # sqrt(1.1 / 400) = 0.052 from Monte Carlo alone
    assert 0.95 < float(ratio.mean()) < 1.2, ratio  # Heun 24 steps: about +10 % variance
    assert CentredStart(HeunSampler()).nfe(24) == HeunSampler().nfe(24) + 1
