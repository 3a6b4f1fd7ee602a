"""Stationary covariance models between cells of a lat/lon grid (numpy only).

The one place where the correlation functions (exponential, Matern 3/2 and 5/2, Gaussian) and great-circle
distances are written: optimal interpolation (:mod:`geodiff.baselines.optimal_interpolation`) fits and uses them,
and the Gaussian part of a hybrid prior (:mod:`geodiff.diffusion.gaussian_prior`) is built from them.

Example
-------
>>> import numpy as np
>>> from geodiff.covariance import correlation, great_circle_km, stationary_covariance
>>> correlation("exponential", np.array([0.0, 1.0])).round(4).tolist()
[1.0, 0.3679]
>>> round(float(great_circle_km(0.0, 0.0, 0.0, 1.0)), 1)  # one degree along the equator
111.2
>>> stationary_covariance("exponential", 2.0, 500.0, 0.5, [0.0], [0.0, 1.0, 2.0], [[True, False, True]]).round(3).tolist()
[[2.5, 1.282], [1.282, 2.5]]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from geodiff.errors import ConfigError, GridError

__all__ = ["MODELS", "EARTH_RADIUS_KM", "correlation", "great_circle_km", "stationary_covariance"]

MODELS = ("exponential", "matern32", "matern52", "gaussian")
EARTH_RADIUS_KM = 6371.0


def correlation(model: str, r: np.ndarray) -> np.ndarray:
    """Correlation ``rho(r)`` at scaled distance ``r = d / length_scale`` (``rho(0) = 1``)."""
    r = np.abs(np.asarray(r, dtype=np.float64))
    if model == "exponential":
        return np.exp(-r)
    if model == "matern32":
        s = np.sqrt(3.0) * r
        return (1.0 + s) * np.exp(-s)
    if model == "matern52":
        s = np.sqrt(5.0) * r
        return (1.0 + s + s * s / 3.0) * np.exp(-s)
    if model == "gaussian":
        return np.exp(-0.5 * r * r)
    raise ConfigError(f"covariance model {model!r} is unknown; expected one of {MODELS}")


def great_circle_km(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> np.ndarray:
    """Haversine distance in km between (broadcast) points given in degrees."""
    p1, p2 = np.deg2rad(lat1), np.deg2rad(lat2)
    dphi = p2 - p1
    dlam = np.deg2rad(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlam / 2) ** 2
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def stationary_covariance(model: str, variance: float, length_scale: float, nugget: float, lat: Any, lon: Any,
                          mask: Any = None) -> np.ndarray:
    """``variance * rho(d / length_scale) + nugget * [d = 0]`` between the valid cells (``mask`` True, row-major) of
    the grid ``lat [H] x lon [W]`` (degrees; ``mask`` bool ``[H, W]``, default all): float64 ``[P, P]``; ``d`` in km."""
    lat = np.asarray(lat, dtype=np.float64).reshape(-1)
    lon = np.asarray(lon, dtype=np.float64).reshape(-1)
    keep = np.ones((lat.size, lon.size), bool) if mask is None else np.asarray(mask, dtype=bool)
    if keep.shape != (lat.size, lon.size):
        raise GridError(f"mask has shape {keep.shape}; expected (lat, lon) = {(lat.size, lon.size)}")
    if not (variance >= 0 and length_scale > 0 and nugget >= 0):
        raise ConfigError(f"need variance >= 0, length_scale > 0, nugget >= 0; got {variance}, {length_scale}, "
                          f"{nugget}")
    lat2, lon2 = np.meshgrid(lat, lon, indexing="ij")
    cell_lat, cell_lon = lat2[keep], lon2[keep]
    distance = great_circle_km(cell_lat[:, None], cell_lon[:, None], cell_lat[None, :], cell_lon[None, :])
    return variance * correlation(model, distance / length_scale) + nugget * (distance < 1e-3)
