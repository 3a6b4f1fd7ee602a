"""Stationary covariance models between cells of a lat/lon grid (numpy only).

The one place where the correlation functions (exponential, Matern 3/2 and 5/2, Gaussian), great-circle distances
and the semivariogram fit are written: optimal interpolation (:mod:`geodiff.baselines.optimal_interpolation`) fits
and uses them, and the Gaussian part of a hybrid prior (:mod:`geodiff.training.hybrid_prior`,
:mod:`geodiff.diffusion.gaussian_prior`) is fitted and built from them.

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

__all__ = ["MODELS", "EARTH_RADIUS_KM", "correlation", "great_circle_km", "stationary_covariance", "time_lag",
           "temporal_correlation", "empirical_variograms", "fit_variograms"]

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


def time_lag(t1: np.ndarray, t2: np.ndarray, period: float | None) -> np.ndarray:
    """``|t1 - t2|`` in days, folded onto ``[0, period / 2]`` for a periodic (climatological) time axis."""
    lag = np.abs(t1 - t2)
    if period:
        lag = np.mod(lag, period)
        lag = np.minimum(lag, period - lag)
    return lag


def temporal_correlation(lag: np.ndarray, time_scale: float) -> np.ndarray:
    """``exp(-lag / time_scale)`` (1 for an infinite time scale)."""
    if not np.isfinite(time_scale):
        return np.ones_like(lag, dtype=np.float64)
    return np.exp(-lag / time_scale)


def empirical_variograms(values: np.ndarray, lat: np.ndarray, lon: np.ndarray, times: np.ndarray, *,
                      max_distance_km: float, n_bins: int, n_anchors: int, period: float | None,
                      rng: np.random.Generator) -> tuple[list[tuple[float, ...]], list[tuple[float, ...]]]:
    """Spatial and temporal empirical semivariograms [(lag, gamma, count)] of values [T, P]."""
    n_time, n_cells = values.shape
    anchors = rng.choice(n_cells, size=min(n_anchors, n_cells), replace=False)
    edges = np.linspace(0.0, max_distance_km, n_bins + 1)
    sums = np.zeros(n_bins)
    dsum = np.zeros(n_bins)
    counts = np.zeros(n_bins)
    for block in np.array_split(anchors, max(1, anchors.size // 64)):
        dist = great_circle_km(lat[block, None], lon[block, None], lat[None, :], lon[None, :])
        a_idx, p_idx = np.nonzero((dist > 1e-6) & (dist <= max_distance_km))
        if a_idx.size == 0:
            continue
        d = dist[a_idx, p_idx]
        gamma = 0.5 * np.mean((values[:, block[a_idx]] - values[:, p_idx]) ** 2, axis=0)
        b = np.minimum(np.searchsorted(edges, d, side="right") - 1, n_bins - 1)
        np.add.at(sums, b, gamma * n_time)
        np.add.at(dsum, b, d * n_time)
        np.add.at(counts, b, n_time)
    spatial = [(dsum[i] / counts[i], sums[i] / counts[i], counts[i]) for i in range(n_bins) if counts[i] > 0]
    temporal: dict[float, list[float]] = {}
    for i in range(n_time):
        for j in range(i + 1, n_time):
            lag = float(np.round(time_lag(times[i], times[j], period), 3))
            gamma = 0.5 * float(np.mean((values[i] - values[j]) ** 2))
            acc = temporal.setdefault(lag, [0.0, 0.0])
            acc[0] += gamma * n_cells
            acc[1] += n_cells
    temporal_list = [(lag, s / c, c) for lag, (s, c) in sorted(temporal.items()) if lag > 0]
    return spatial, temporal_list


def fit_variograms(spatial: list[tuple[float, ...]], temporal: list[tuple[float, ...]], model: str, variance0: float,
                   max_distance_km: float) -> dict[str, float]:
    """Weighted least-squares fit (Cressie weights) of ``model`` to empirical semivariograms from
    :func:`empirical_variograms`: ``variance``, ``length_scale`` (km), ``nugget`` and ``time_scale`` (days)."""
    from scipy import optimize

    d_s = np.array([s[0] for s in spatial])
    g_s = np.array([s[1] for s in spatial])
    n_s = np.array([s[2] for s in spatial])
    d_t = np.array([s[0] for s in temporal])
    g_t = np.array([s[1] for s in temporal])
    n_t = np.array([s[2] for s in temporal])
    fit_time = d_t.size > 0
    v0 = max(variance0, 1e-12)

    def unpack(theta):
        var, length, nugget = np.exp(theta[0]), np.exp(theta[1]), np.exp(theta[2])
        tau = np.exp(theta[3]) if fit_time else np.inf
        return var, length, nugget, tau

    def residuals(theta):
        var, length, nugget, tau = unpack(theta)
        model_s = nugget + var * (1.0 - correlation(model, d_s / length))
        res = [np.sqrt(n_s) * (g_s / model_s - 1.0)]
        if fit_time:
            model_t = nugget + var * (1.0 - temporal_correlation(d_t, tau))
            res.append(np.sqrt(n_t) * (g_t / model_t - 1.0))
        return np.concatenate(res)

    x0 = [np.log(0.9 * v0), np.log(max_distance_km / 6.0), np.log(0.05 * v0)]
    lower = [np.log(1e-6 * v0), np.log(1.0), np.log(1e-9 * v0)]
    upper = [np.log(20.0 * v0), np.log(20.0 * max_distance_km), np.log(20.0 * v0)]
    if fit_time:
        x0.append(np.log(max(float(np.median(d_t)), 1.0)))
        lower.append(np.log(1e-2))
        upper.append(np.log(1e6))
    sol = optimize.least_squares(residuals, np.array(x0), bounds=(np.array(lower), np.array(upper)), method="trf")
    var, length, nugget, tau = unpack(sol.x)
    return {"variance": float(var), "length_scale": float(length), "nugget": float(nugget), "time_scale": float(tau)}
