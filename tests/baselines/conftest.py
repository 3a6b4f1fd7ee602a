"""Synthetic fields for the baseline tests: Gaussian-process draws on a lat/lon grid with a known covariance."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from geodiff.covariance import great_circle_km
from geodiff.baselines.optimal_interpolation import correlation


def gp_draws(lat, lon, *, model="matern32", length_scale=600.0, variance=1.0, nugget=0.0, n=1, seed=0):
    """``n`` independent draws [n, lat, lon] from the stationary covariance model (great-circle distance)."""
    lat2, lon2 = np.meshgrid(lat, lon, indexing="ij")
    pts_lat, pts_lon = lat2.ravel(), lon2.ravel()
    dist = great_circle_km(pts_lat[:, None], pts_lon[:, None], pts_lat[None, :], pts_lon[None, :])
    cov = variance * correlation(model, dist / length_scale) + (nugget + 1e-9) * np.eye(dist.shape[0])
    chol = np.linalg.cholesky(cov)
    rng = np.random.default_rng(seed)
    return (chol @ rng.normal(size=(dist.shape[0], n))).T.reshape(n, lat.size, lon.size)


def monthly(n, start="2000-01-16"):
    return np.datetime64(start, "ns") + np.arange(n) * np.timedelta64(30, "D")


def obs_table(values, lat, lon, *, error_std=0.0, time=None, depth=None, variable="t"):
    values = np.asarray(values, dtype=float)
    n = values.size
    coords = {"lat": ("obs", np.asarray(lat, float)), "lon": ("obs", np.asarray(lon, float)),
              "variable": ("obs", np.full(n, variable))}
    if time is not None:
        coords["time"] = ("obs", np.asarray(time))
    if depth is not None:
        coords["depth"] = ("obs", np.asarray(depth, float))
    return xr.Dataset({"value": ("obs", values), "error_std": ("obs", np.full(n, float(error_std)))}, coords=coords)


@pytest.fixture
def small_grid():
    lat = np.arange(0.0, 24.0, 2.0)
    lon = np.arange(0.0, 32.0, 2.0)
    return lat, lon


@pytest.fixture
def gp():
    return gp_draws


@pytest.fixture
def make_obs():
    return obs_table


@pytest.fixture
def months():
    return monthly
