"""The exact Gaussian denoiser on masked, non-periodic grids, with the stationary covariance optimal
interpolation uses: closed-form checks and agreement with :func:`geodiff.baselines.optimal_interpolation`."""

import numpy as np
import pytest
import torch
import xarray as xr

from geodiff.baselines import optimal_interpolation
from geodiff.baselines.optimal_interpolation import covariance_matrix
from geodiff.diffusion.gaussian import GaussianDenoiser
from geodiff.errors import GridError
from geodiff.operators import PointOperator

LAT = np.linspace(20.0, 34.0, 8)
LON = np.linspace(140.0, 162.0, 12)  # regional: longitude is not periodic
COVARIANCE = xr.Dataset({"variance": 1.5, "length_scale": 600.0, "time_scale": np.inf, "nugget": 0.05},
                        attrs={"model": "matern32"})


def land_mask() -> np.ndarray:
    mask = np.ones((LAT.size, LON.size), dtype=bool)
    mask[:3, :4] = False  # a coast in one corner
    mask[5, 7] = False  # an island
    return mask


def masked_prior() -> GaussianDenoiser:
    mask = land_mask()
    cov = covariance_matrix(COVARIANCE, LAT, LON, mask)
    mean = np.linspace(-1.0, 1.0, int(mask.sum()))
    return GaussianDenoiser(torch.tensor(mean), torch.tensor(cov), (1, *mask.shape), mask=torch.tensor(mask)[None])


def test_covariance_matrix_is_the_stationary_model_between_valid_cells():
    mask = land_mask()
    cov = covariance_matrix(COVARIANCE, LAT, LON, mask)
    assert cov.shape == (mask.sum(), mask.sum())
    assert np.allclose(cov, cov.T) and np.linalg.eigvalsh(cov).min() > 0
    assert np.allclose(np.diag(cov), 1.55)
    # neighbours along a latitude circle: 2 degrees of longitude at 20 N
    d = 2 * 6371.0 * np.arcsin(np.cos(np.deg2rad(20.0)) * np.sin(np.deg2rad(1.0)))
    s = np.sqrt(3.0) * d / 600.0
    first_ocean_row = covariance_matrix(COVARIANCE, LAT[:1], LON[4:6])
    assert np.isclose(first_ocean_row[0, 1], 1.5 * (1 + s) * np.exp(-s))
    with pytest.raises(GridError, match=r"has shape \(8, 5\); expected \(lat, lon\) = \(8, 12\)"):
        covariance_matrix(COVARIANCE, LAT, LON, mask[:, :5])


@pytest.mark.parametrize("sigma", [0.01, 0.7, 50.0])
def test_masked_denoiser_is_the_closed_form_posterior_mean_and_zero_on_land(sigma):
    prior = masked_prior()
    mask = land_mask()
    x = torch.randn(3, 1, *mask.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = prior(x, sigma)
    s = prior.cov
    flat = x.reshape(3, -1)[:, mask.reshape(-1)]
    expected = prior.mean + (flat - prior.mean) @ torch.linalg.solve(s + sigma**2 * torch.eye(s.shape[0]), s)
    assert torch.allclose(out.reshape(3, -1)[:, mask.reshape(-1)], expected, atol=1e-10)
    assert torch.all(out[:, 0][:, ~torch.tensor(mask)] == 0)
    assert out.dtype == x.dtype


def test_masked_samples_have_the_prior_moments_and_nothing_on_land():
    prior = masked_prior()
    draws = prior.sample(4000, generator=torch.Generator().manual_seed(1)).reshape(4000, -1)
    valid = torch.tensor(land_mask().reshape(-1))
    assert torch.all(draws[:, ~valid] == 0)
    sample_cov = torch.cov(draws[:, valid].T)
    assert torch.allclose(draws[:, valid].mean(0), prior.mean, atol=0.1)
    assert (sample_cov - prior.cov).abs().max() < 0.12  # Monte Carlo: sd of a covariance entry ~ 1.55 * sqrt(2/4000)


def test_masked_posterior_is_optimal_interpolation():
    """Observations at cell centres: the Kalman update with the grid covariance is OI's analysis, mean and std."""
    prior = masked_prior()
    mask = land_mask()
    rows, cols = np.array([3, 4, 6, 7, 0, 5]), np.array([2, 9, 1, 11, 8, 5])
    assert mask[rows, cols].all()
    values, error = np.array([0.3, -1.2, 0.8, 2.0, -0.4, 1.1]), 0.1
    operator = PointOperator(LAT, LON, lat=LAT[rows], lon=LON[cols], mask=mask)
    mean, cov = prior.posterior(operator.to_sparse().to_dense(), torch.tensor(values), error**2 * torch.eye(6))
    background = np.zeros(mask.shape)
    background[mask] = prior.mean.numpy()
    grid = xr.DataArray(np.where(mask, 0.0, np.nan), dims=("lat", "lon"), coords={"lat": LAT, "lon": LON}, name="t")
    obs = xr.Dataset({"value": ("obs", values), "error_std": ("obs", np.full(6, error))},
                     coords={"lat": ("obs", LAT[rows]), "lon": ("obs", LON[cols])})
    oi = optimal_interpolation(obs, grid, background=grid.copy(data=background), covariance=COVARIANCE,
                               time_correlation=False)
    assert np.allclose(mean.reshape(mask.shape).numpy()[mask], oi.t.values[mask], atol=1e-5)
    assert np.allclose(cov.diagonal().sqrt().numpy(), oi.t_std.values[mask], atol=1e-5)
    assert torch.all(mean.reshape(mask.shape)[~torch.tensor(mask)] == 0)


def test_shapes_that_do_not_match_are_refused():
    mask = torch.tensor(land_mask())[None]
    with pytest.raises(GridError, match="valid cells of the mask"):
        GaussianDenoiser(torch.zeros(5), torch.eye(5), (1, *mask.shape[1:]), mask=mask)
    with pytest.raises(GridError, match="mask has shape"):
        GaussianDenoiser(torch.zeros(5), torch.eye(5), (1, 2, 3), mask=torch.ones(2, 3, dtype=torch.bool))
