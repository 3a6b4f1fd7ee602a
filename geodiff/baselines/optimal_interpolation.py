"""Optimal interpolation (simple kriging / Gaussian-process regression) level by level, with posterior std.

Model, per depth level, for the anomaly ``a = x - background`` at horizontal position ``s`` and time ``t``::

    cov(a(s, t), a(s', t')) = variance * rho(d(s, s') / length_scale) * exp(-|t - t'| / time_scale)
                              + nugget * [s = s' and t = t']

with ``d`` the great-circle distance (km, Earth radius 6371 km), ``rho`` one of ``exponential``, ``matern32``
(default), ``matern52``, ``gaussian`` (Rasmussen & Williams' parameterisation), ``|t - t'|`` in days (taken modulo
``time_period_days`` for climatological years). The nugget is the variance of cell-scale structure: it is part of
the truth at a cell, so the posterior std of an unobserved cell includes it. Observations add their own
``error_std**2`` (uncorrelated). Levels are independent (no vertical covariance); an observation is used at the
level equal to its depth.

:func:`fit_covariance` estimates ``variance``, ``length_scale``, ``time_scale`` and ``nugget`` per level from
training anomalies: empirical semivariograms in distance (pairs at equal times, ``n_anchors`` random anchor cells
against every cell within ``max_distance_km``) and in time lag (same cell), fitted jointly by weighted least
squares with Cressie's weights ``n_pairs / gamma_model^2`` (scipy.optimize.least_squares, log parameters).

:func:`optimal_interpolation` returns the posterior mean and the posterior standard deviation per cell (Gaussian,
so it can be scored with :func:`geodiff.metrics.crps_gaussian`). The background defaults to
:func:`geodiff.baselines.climatology` of the training data; the covariance defaults to the one fitted to the
training anomalies from that same kind of background (the zonal mean when the target lies outside the training
data, as in a geographic hold-out). The solve is dense per level (Cholesky of the ``n_obs x n_obs`` matrix), so
``max_obs`` observations per level at most: time ``O(n_obs^3 + cells n_obs^2)`` with the std, memory
``O(n_obs^2)``.

With ``neighbours=k`` the analysis is **local**, as in operational OI: every cell is analysed from its ``k`` nearest
observations on its level (a :class:`scipy.spatial.cKDTree` on unit vectors, so across the date line and the
poles), one ``k x k`` solve per cell: time ``O(n_obs log n_obs + cells k^3)``, memory ``O(n_obs + k^2)`` per cell
of a block, no ``max_obs`` limit. It is the exact analysis when ``k >= n_obs`` and approaches it as ``k`` grows
past the number of observations within a few length scales (``benchmarks/scaling.py`` measures the gap).

Example
-------
>>> import numpy as np, xarray as xr
>>> from geodiff.baselines import optimal_interpolation
>>> grid = xr.DataArray(np.zeros((5, 5)), dims=("lat", "lon"), name="t",
...                     coords={"lat": np.arange(5.0), "lon": np.arange(5.0)})
>>> cov = xr.Dataset({"variance": 1.0, "length_scale": 300.0, "time_scale": np.inf, "nugget": 0.0})
>>> obs = xr.Dataset({"value": ("obs", [1.0]), "error_std": ("obs", [0.1])},
...                  coords={"lat": ("obs", [2.0]), "lon": ("obs", [2.0])})
>>> oi = optimal_interpolation(obs, grid, background=grid, covariance=cov)
>>> round(float(oi.t.sel(lat=2, lon=2)), 3), round(float(oi.t_std.sel(lat=2, lon=2)), 3)
(0.99, 0.1)
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import xarray as xr
from scipy import linalg
from scipy.spatial import cKDTree

from geodiff.baselines._common import (
    CANONICAL,
    GridIndex,
    estimate_outputs,
    as_4d,
    locate,
    ocean_of,
    output_dataset,
    read_observations,
    select_field,
    to_days,
)
from geodiff.baselines.climatology import climatology_values
from geodiff.covariance import (
    MODELS,
    correlation,
    empirical_variograms,
    fit_variograms,
    great_circle_km,
    stationary_covariance,
    temporal_correlation,
    time_lag,
)
from geodiff.errors import ConfigError, GridError, ObservationError
from geodiff.grid import channel_layout, point_stencil

__all__ = ["MODELS", "correlation", "covariance_matrix", "fit_covariance", "optimal_interpolation"]

def fit_covariance(
    anomalies: xr.DataArray | xr.Dataset,
    *,
    model: str = "matern32",
    variable: str | None = None,
    max_distance_km: float = 4000.0,
    n_bins: int = 20,
    n_anchors: int = 400,
    time_period_days: float | None = None,
    seed: int = 0,
) -> xr.Dataset:
    """Fit the stationary covariance model per depth level to training anomalies ``(time, [depth], lat, lon)``.

    Returns an xr.Dataset with ``variance`` and ``nugget`` (units squared), ``length_scale`` (km), ``time_scale``
    (days; ``inf`` with a single time step), ``n_cells``, along ``depth`` when the input has it. Deterministic in
    ``seed`` (the anchor cells are drawn at random). Cells that are NaN at any time are left out.

    Example
    -------
    >>> import numpy as np, xarray as xr
    >>> from geodiff.baselines.optimal_interpolation import fit_covariance
    >>> rng = np.random.default_rng(0)
    >>> a = xr.DataArray(rng.normal(size=(4, 10, 12)), dims=("time", "lat", "lon"), name="t",
    ...                  coords={"time": np.arange(4) * np.timedelta64(30, "D") + np.datetime64("2000-01-01"),
    ...                          "lat": np.arange(10.0) * 2, "lon": np.arange(12.0) * 2})
    >>> cov = fit_covariance(a, model="exponential")
    >>> sorted(cov.data_vars)
    ['length_scale', 'n_cells', 'nugget', 'time_scale', 'variance']
    """
    if model not in MODELS:
        raise ConfigError(f"covariance model {model!r} is unknown; expected one of {MODELS}")
    if not max_distance_km > 0 or n_bins < 3 or n_anchors < 2:
        raise ConfigError("max_distance_km must be > 0, n_bins >= 3 and n_anchors >= 2")
    if time_period_days is not None and not time_period_days > 0:
        raise ConfigError(f"time_period_days must be None or > 0, got {time_period_days}")
    field = select_field(anomalies, variable, "anomalies")
    values = as_4d(np.asarray(field.values, dtype=np.float64), field)
    times = to_days(field.time.values, "anomalies") if "time" in field.dims else np.zeros(1)
    lat2, lon2 = np.meshgrid(field.lat.values.astype(float), field.lon.values.astype(float), indexing="ij")
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(values.shape[1]):
        level = values[:, k].reshape(values.shape[0], -1)
        valid = np.all(np.isfinite(level), axis=0)
        if valid.sum() < 10:
            raise GridError(f"anomalies of {field.name!r} have {int(valid.sum())} complete cells at depth index {k}; "
                            "at least 10 are needed to fit a covariance")
        sub = level[:, valid]
        spatial, temporal = empirical_variograms(
            sub, lat2.ravel()[valid], lon2.ravel()[valid], times, max_distance_km=max_distance_km,
            n_bins=n_bins, n_anchors=n_anchors, period=time_period_days, rng=rng)
        if len(spatial) < 3:
            raise GridError(f"too few cell pairs within {max_distance_km} km at depth index {k} to fit a covariance")
        params = fit_variograms(spatial, temporal, model, float(np.var(sub)), max_distance_km)
        params["n_cells"] = int(valid.sum())
        rows.append(params)
    units = field.attrs.get("units", "")
    attrs = {
        "variance": {"long_name": "variance of the correlated anomaly", "units": f"({units})^2" if units else ""},
        "nugget": {"long_name": "variance of cell-scale (uncorrelated) anomaly",
                   "units": f"({units})^2" if units else ""},
        "length_scale": {"long_name": "horizontal length scale", "units": "km"},
        "time_scale": {"long_name": "e-folding time scale", "units": "days"},
        "n_cells": {"long_name": "cells used in the fit"},
    }
    has_depth = "depth" in field.dims
    data = {}
    for name in ("variance", "length_scale", "time_scale", "nugget", "n_cells"):
        column = np.array([row[name] for row in rows])
        data[name] = (("depth",), column, attrs[name]) if has_depth else ((), column[0], attrs[name])
    coords = {"depth": field.depth} if has_depth else {}
    return xr.Dataset(data, coords=coords, attrs={
        "model": model, "time_period_days": float(time_period_days) if time_period_days else 0.0,
        "method": "weighted least-squares fit of empirical semivariograms in distance and time lag (Cressie weights)",
        "max_distance_km": float(max_distance_km), "seed": int(seed),
    })


def _level_params(covariance: xr.Dataset, depth: float | None, k: int) -> dict[str, float]:
    names = ("variance", "length_scale", "time_scale", "nugget")
    for name in names:
        if name not in covariance:
            raise ConfigError(f"covariance has no variable {name!r}; expected {names}")
    if "depth" in covariance.dims:
        if depth is None:
            if covariance.sizes["depth"] != 1:
                raise GridError("the covariance has several depth levels but the target has none")
            sel = covariance.isel(depth=0)
        else:
            levels = np.asarray(covariance.depth.values, dtype=float)
            i = int(np.argmin(np.abs(levels - depth)))
            if abs(levels[i] - depth) > 0.01:
                raise GridError(f"the covariance has no level at depth {depth} m (levels {levels.tolist()})")
            sel = covariance.isel(depth=i)
    else:
        sel = covariance
    params = {name: float(sel[name]) for name in names}
    if not (params["variance"] > 0 and params["length_scale"] > 0 and params["nugget"] >= 0
            and params["time_scale"] > 0):
        raise ConfigError(f"covariance parameters at depth index {k} are invalid: {params}")
    return params


def covariance_matrix(covariance: xr.Dataset, lat: Any, lon: Any, mask: Any = None, *,
                      depth: float | None = None) -> np.ndarray:
    """The prior covariance optimal interpolation uses between the cells of a ``(lat, lon)`` grid, float64 ``[P, P]``.

    ``variance * rho(d / length_scale) + nugget * [d = 0]`` with ``d`` the great-circle distance between cell
    centres (km), the parameters of ``covariance`` (:func:`fit_covariance`) at level ``depth``. ``lat [H]``,
    ``lon [W]`` in degrees; ``mask`` bool ``[H, W]`` (True = valid) keeps ``P`` cells in row-major order (all
    ``H * W`` without a mask). This is the covariance of one time step (no time correlation), so a Gaussian
    prior with it (:class:`geodiff.diffusion.gaussian.GaussianDenoiser`) has the posterior OI computes with
    ``time_correlation=False``.

    Example
    -------
    >>> import numpy as np, xarray as xr
    >>> from geodiff.baselines.optimal_interpolation import covariance_matrix
    >>> cov = xr.Dataset({"variance": 2.0, "length_scale": 500.0, "time_scale": np.inf, "nugget": 0.5})
    >>> covariance_matrix(cov, [0.0], [0.0, 1.0, 2.0], mask=[[True, False, True]]).round(3).tolist()
    [[2.5, 1.639], [1.639, 2.5]]
    """
    params = _level_params(covariance, depth, 0)
    return stationary_covariance(str(covariance.attrs.get("model", "matern32")), params["variance"],
                                 params["length_scale"], params["nugget"], lat, lon, mask)


def _unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Points on the unit sphere ``[N, 3]`` of ``lat``, ``lon`` (degrees): chord order = great-circle order."""
    phi, lam = np.deg2rad(lat), np.deg2rad(lon)
    return np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], axis=-1)


def _local_analysis(p: dict[str, float], model: str, o_lat: np.ndarray, o_lon: np.ndarray, o_t: np.ndarray,
                    innovation: np.ndarray, error_var: np.ndarray, c_lat: np.ndarray, c_lon: np.ndarray,
                    c_times: np.ndarray, tau: float, period: float | None, neighbours: int,
                    block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Local OI of one level: increment and posterior variance ``[P, T]`` at cells ``c_lat, c_lon [P]`` and times
    ``c_times [T]`` (days) from each cell's ``neighbours`` nearest observations ``[N]`` (``innovation``,
    ``error_var``: units and units squared); the same covariance model as the exact analysis."""
    k = min(neighbours, o_lat.size)
    _, near = cKDTree(_unit_vectors(o_lat, o_lon)).query(_unit_vectors(c_lat, c_lon), k=k)
    near = np.asarray(near).reshape(c_lat.size, k)
    prior_var = p["variance"] + p["nugget"]
    increment = np.empty((c_lat.size, c_times.size))
    variance = np.empty((c_lat.size, c_times.size))
    diagonal = np.arange(k)
    for start in range(0, c_lat.size, block):
        idx = near[start:start + block]  # [b, k]
        la, lo, t = o_lat[idx], o_lon[idx], o_t[idx]
        d_oo = great_circle_km(la[:, :, None], lo[:, :, None], la[:, None, :], lo[:, None, :])
        lag_oo = time_lag(t[:, :, None], t[:, None, :], period)
        c_oo = p["variance"] * correlation(model, d_oo / p["length_scale"]) * temporal_correlation(lag_oo, tau)
        c_oo += p["nugget"] * ((d_oo < 1e-3) & (lag_oo < 1e-6))
        c_oo[:, diagonal, diagonal] += error_var[idx] + 1e-8 * prior_var
        d_to = great_circle_km(c_lat[start:start + block, None], c_lon[start:start + block, None], la, lo)  # [b, k]
        rho = p["variance"] * correlation(model, d_to / p["length_scale"])
        lags = time_lag(c_times[None, :, None], t[:, None, :], period)  # [b, T, k]
        c_to = rho[:, None, :] * temporal_correlation(lags, tau) + p["nugget"] * ((d_to < 1e-3)[:, None, :]
                                                                                   & (lags < 1e-6))
        rhs = np.concatenate([innovation[idx][:, :, None], np.swapaxes(c_to, 1, 2)], axis=2)  # [b, k, 1 + T]
        solved = np.linalg.solve(c_oo, rhs)
        increment[start:start + block] = np.einsum("btk,bk->bt", c_to, solved[:, :, 0])
        variance[start:start + block] = prior_var - np.einsum("btk,bkt->bt", c_to, solved[:, :, 1:])
    return increment, variance


def _background_at(background: np.ndarray, index: GridIndex, lat: np.ndarray, lon: np.ndarray,
                   grid_lat: np.ndarray, grid_lon: np.ndarray) -> np.ndarray:
    """The background ``[T, D, H, W]`` at each observation ``[N]``: bilinear (:func:`geodiff.grid.point_stencil`) on
    the observation's (time, depth) slice, land (NaN) corners left out; NaN where every corner is land."""
    times, depths, height, width = background.shape
    slices = background.reshape(times * depths, height, width)
    layout = channel_layout([(k, None) for k in range(times * depths)])
    stencil = point_stencil(grid_lat, grid_lon, layout, lat, lon, variable=index.time * depths + index.depth,
                            mask=np.isfinite(slices))
    values = (stencil.weight * np.nan_to_num(slices).reshape(-1)[stencil.index]).sum(axis=1)
    return np.where(stencil.reason == "", values, np.nan)


def _anomaly_mode(train: xr.DataArray, grid: xr.DataArray, by: str | None) -> str:
    _, from_field, _ = climatology_values(train, grid, by=by, mode="auto")
    ocean = ocean_of(grid).reshape(from_field.shape)
    return "field" if np.all(from_field | ~ocean) else "zonal"


def optimal_interpolation(
    observations: Any,
    target: xr.Dataset | xr.DataArray,
    *,
    training: xr.Dataset | xr.DataArray | None = None,
    background: xr.Dataset | xr.DataArray | None = None,
    covariance: xr.Dataset | None = None,
    variable: str | None = None,
    by: str | None = None,
    model: str = "matern32",
    time_period_days: float | None = None,
    time_correlation: bool = True,
    return_std: bool = True,
    max_obs: int = 4000,
    neighbours: int | None = None,
    seed: int = 0,
) -> xr.Dataset:
    """Optimal interpolation of ``observations`` onto the ``target`` grid; posterior mean and std per cell.

    Parameters
    ----------
    observations : observation table (xr.Dataset with dim ``obs``: ``value``, ``error_std``, ``lat``, ``lon``,
        ``time`` and ``depth`` as the target needs; or a DataFrame with those columns). Rows of other variables are
        ignored; observations outside the target domain or at depths that are not target levels are not used (the
        output's ``notes`` attribute says how many).
    target : grid template ``(time, [depth], lat, lon)``; NaN (or ``sea_mask`` False) = land. Values unused.
    training : training data on any grid with the target's depth levels; used for the default background
        (:func:`~geodiff.baselines.climatology` with ``by``) and the default covariance (:func:`fit_covariance`).
    background, covariance : given explicitly instead (background on the target grid).
    by, model, time_period_days, seed : passed to the climatology and the covariance fit.
    time_correlation : use observations at other times through the fitted time correlation (default); with
        False every target time step is analysed from the observations of that step only (a per-field
        reconstruction, the protocol of a per-field generative model).
    return_std : also compute the posterior std (``<variable>_std``); costs one triangular solve per target.
    max_obs : largest number of observations per level (dense solve); more raise ``ObservationError``.
    neighbours : analyse each cell from its ``neighbours`` nearest observations only (local OI, module docstring;
        ``max_obs`` then does not apply); None (default): every observation of the level (exact).

    Returns
    -------
    xr.Dataset on the target grid: ``<variable>`` (posterior mean) and ``<variable>_std`` (posterior standard
    deviation, the same units), NaN on land; the covariance parameters used are in the attrs.

    Example
    -------
    >>> import numpy as np, xarray as xr
    >>> from geodiff.baselines import optimal_interpolation
    >>> grid = xr.DataArray(np.zeros((4, 6)), dims=("lat", "lon"), name="t",
    ...                     coords={"lat": np.arange(4.0) * 2, "lon": np.arange(6.0) * 2})
    >>> cov = xr.Dataset({"variance": 1.0, "length_scale": 500.0, "time_scale": np.inf, "nugget": 0.01})
    >>> obs = xr.Dataset({"value": ("obs", [1.0, -1.0]), "error_std": ("obs", [0.0, 0.0])},
    ...                  coords={"lat": ("obs", [0.0, 6.0]), "lon": ("obs", [0.0, 10.0])})
    >>> oi = optimal_interpolation(obs, grid, background=grid, covariance=cov)
    >>> float(oi.t_std.max()) <= 1.01 ** 0.5
    True
    """
    grid = select_field(target, variable if variable is not None else None, "target")
    name = str(variable or grid.name)
    if max_obs < 1:
        raise ConfigError(f"max_obs must be >= 1, got {max_obs}")
    if neighbours is not None and (isinstance(neighbours, bool) or not isinstance(neighbours, int) or neighbours < 1):
        raise ConfigError(f"neighbours must be None or an integer >= 1, got {neighbours!r}")
    obs = read_observations(observations, name, grid)
    train = select_field(training, name, "training") if training is not None else None
    if background is None:
        if train is None:
            raise ConfigError("optimal_interpolation needs training= (for the background) or background=")
        bg, _, _ = climatology_values(train, grid, by=by, mode="auto")
        bg_note = f"climatology of the training data (by={by!r}, mode='auto')"
    else:
        bg_da = select_field(background, name if isinstance(background, xr.Dataset) and name in background else None,
                             "background")
        if bg_da.shape != grid.shape:
            raise GridError(f"background has shape {bg_da.shape}; the target grid has {grid.shape}")
        bg = as_4d(np.asarray(bg_da.values, dtype=np.float64), grid)
        bg_note = "given"
    if covariance is None:
        if train is None:
            raise ConfigError("optimal_interpolation needs training= (to fit the covariance) or covariance=")
        mode = _anomaly_mode(train, grid, by)
        clim, _, _ = climatology_values(train, train, by=by, mode=mode)
        anomalies = train.copy(data=as_4d(np.asarray(train.values, float), train).reshape(train.shape)
                               - clim.reshape(train.shape))
        covariance = fit_covariance(anomalies, model=model, time_period_days=time_period_days, seed=seed)
        cov_note = f"fitted to training anomalies from the {mode} climatology"
    else:
        if not isinstance(covariance, xr.Dataset):
            raise ConfigError(f"covariance must be an xr.Dataset (see fit_covariance), got {type(covariance).__name__}")
        cov_note = "given"
    model_used = str(covariance.attrs.get("model", model))
    period = time_period_days if time_period_days is not None else (covariance.attrs.get("time_period_days") or None)

    index = locate(obs, grid)
    used = obs.subset(index.keep)
    shape4 = tuple(grid.sizes.get(d, 1) for d in CANONICAL)
    ocean = ocean_of(grid).reshape(shape4)
    lat_c = np.asarray(grid.lat.values, dtype=float)
    lon_c = np.asarray(grid.lon.values, dtype=float)
    bg_at_obs = _background_at(bg, index, used.lat, used.lon, lat_c, lon_c)
    bad = ~np.isfinite(bg_at_obs)
    notes = list(index.notes)
    if bad.any():
        notes.append(f"{int(bad.sum())} observations fall on land of the target grid and were not used")
    has_time = "time" in grid.dims
    grid_times = to_days(grid.time.values, "target") if has_time else np.zeros(1)
    obs_times = used.time if has_time else np.zeros(used.size)
    obs_times = np.where(np.isfinite(obs_times), obs_times, grid_times[index.time])
    lat2, lon2 = np.meshgrid(lat_c, lon_c, indexing="ij")
    mean = np.full(shape4, np.nan)
    std = np.full(shape4, np.nan)
    cov_attrs = {}
    depths = grid.depth.values if "depth" in grid.dims else [None]
    n_times = shape4[0]
    if time_correlation:
        groups = [(np.arange(n_times), None)]
    else:  # every time step analysed from its own observations only
        groups = [(np.array([t]), t) for t in range(n_times)]
    rows_all, cols_all = np.unravel_index(np.arange(shape4[2] * shape4[3]), (shape4[2], shape4[3]))
    for k, depth in enumerate(depths):
        p = _level_params(covariance, None if depth is None else float(depth), k)
        cov_attrs[f"level_{k}"] = p
        level_sel = (index.depth == k) & ~bad
        cells = np.flatnonzero(np.any(ocean[:, k], axis=0).ravel())
        prior_var = p["variance"] + p["nugget"]
        for times_out, only in groups:
            sel = level_sel if only is None else level_sel & (index.time == only)
            n_obs = int(sel.sum())
            if n_obs > max_obs and neighbours is None:
                raise ObservationError(f"{n_obs} observations at depth index {k} exceed max_obs={max_obs} (dense "
                                       "solve); thin the observations, raise max_obs or use time_correlation=False")
            if n_obs == 0:
                mean[times_out, k] = bg[times_out, k]
                std[times_out, k] = np.sqrt(prior_var)
                continue
            tau = p["time_scale"] if only is None else np.inf
            o_lat, o_lon = used.lat[sel], used.lon[sel]
            o_t = obs_times[sel] if only is None else np.full(n_obs, grid_times[only])
            innovation = used.value[sel] - bg_at_obs[sel]
            if neighbours is not None:
                rows, cols = rows_all[cells], cols_all[cells]
                increment, variance = _local_analysis(
                    p, model_used, o_lat, o_lon, o_t, innovation, used.error_std[sel] ** 2, lat2[rows, cols],
                    lon2[rows, cols], grid_times[times_out], tau, period, neighbours)
                for n, t in enumerate(times_out):
                    mean[t, k, rows, cols] = bg[t, k, rows, cols] + increment[:, n]
                    std[t, k, rows, cols] = np.sqrt(np.maximum(variance[:, n], 0.0))
                continue
            d_oo = great_circle_km(o_lat[:, None], o_lon[:, None], o_lat[None, :], o_lon[None, :])
            lag_oo = time_lag(o_t[:, None], o_t[None, :], period)
            c_oo = (p["variance"] * correlation(model_used, d_oo / p["length_scale"])
                    * temporal_correlation(lag_oo, tau))
            c_oo += p["nugget"] * ((d_oo < 1e-3) & (lag_oo < 1e-6))
            c_oo[np.diag_indices(n_obs)] += used.error_std[sel] ** 2 + 1e-8 * prior_var
            factor = linalg.cho_factor(c_oo, lower=True, check_finite=False)
            weights = linalg.cho_solve(factor, innovation, check_finite=False)
            for block in np.array_split(cells, max(1, cells.size // 2048)):
                if block.size == 0:
                    continue
                rows, cols = rows_all[block], cols_all[block]
                d_to = great_circle_km(lat2[rows, cols][:, None], lon2[rows, cols][:, None], o_lat[None, :],
                                       o_lon[None, :])
                rho_s = p["variance"] * correlation(model_used, d_to / p["length_scale"])
                same = d_to < 1e-3
                for t in times_out:
                    lag = time_lag(grid_times[t], o_t, period)
                    c_to = rho_s * temporal_correlation(lag, tau)[None, :]
                    c_to += p["nugget"] * (same & (lag < 1e-6)[None, :])
                    mean[t, k, rows, cols] = bg[t, k, rows, cols] + c_to @ weights
                    if return_std:
                        v = linalg.solve_triangular(factor[0], c_to.T, lower=True, check_finite=False)
                        std[t, k, rows, cols] = np.sqrt(np.maximum(prior_var - np.einsum("ij,ij->j", v, v), 0.0))
    outputs = estimate_outputs(name, grid, mean, std if return_std else None, "OI")
    source_attrs = target.attrs if isinstance(target, xr.Dataset) else {}
    return output_dataset(
        outputs, grid, source_attrs,
        f"geodiff.baselines.optimal_interpolation(model={model_used!r}, by={by!r}, "
        f"time_correlation={time_correlation}, neighbours={neighbours}, n_obs={int((~bad).sum())})",
        {"baseline": "optimal_interpolation", "oi_background": bg_note, "oi_covariance": cov_note,
         "oi_covariance_model": model_used, "oi_covariance_parameters": json.dumps(cov_attrs),
         "oi_time_period_days": float(period) if period else 0.0,
         "oi_time_correlation": int(time_correlation),
         "oi_neighbours": "all" if neighbours is None else int(neighbours), "notes": "; ".join(notes) or "none"},
    )
