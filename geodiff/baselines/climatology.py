"""Climatology baseline: the training mean, or its latitude-depth (zonal) mean where the target was held out.

``mode="field"``: at each target cell the mean of the training data at that cell (over time, or per calendar
month with ``by="month"``). ``mode="zonal"``: the mean over all training longitudes at the cell's latitude and
depth (interpolated linearly in latitude to the target's latitudes; latitudes without training data take the
nearest latitude that has some). ``mode="auto"`` (default) uses the field mean where the training data cover the
cell and the zonal mean elsewhere: inside a geographic hold-out box the training data are NaN, so the box gets the
latitude-depth mean of everything outside it. The output records which mode filled how many cells.

Example
-------
>>> import numpy as np, xarray as xr
>>> from geodiff.baselines import climatology
>>> lat, lon = [-1.0, 1.0], [0.0, 1.0, 2.0]
>>> train = xr.Dataset({"t": (("time", "lat", "lon"), np.arange(12.0).reshape(2, 2, 3))},
...                    coords={"time": np.array(["2000-01-01", "2000-02-01"], "datetime64[ns]"),
...                            "lat": lat, "lon": lon})
>>> climatology(train).t.isel(time=0).values.tolist()  # time mean at each cell (on the training grid)
[[3.0, 4.0, 5.0], [6.0, 7.0, 8.0]]
>>> climatology(train, mode="zonal").t.isel(time=0).values.tolist()  # latitude mean
[[4.0, 4.0, 4.0], [7.0, 7.0, 7.0]]
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import xarray as xr

from geodiff.baselines._common import as_4d, ocean_of, output_dataset, select_field, to_days, variable_attrs
from geodiff.errors import ConfigError, CoordinateError, GridError
from geodiff.grid import wrap_longitude

__all__ = ["climatology"]

Mode = Literal["auto", "field", "zonal"]


def _groups(da: xr.DataArray, by: str | None, role: str) -> np.ndarray:
    """Group id per time step (0 for every step when ``by`` is None)."""
    if by is None:
        return np.zeros(da.sizes.get("time", 1), dtype=int)
    if by != "month":
        raise ConfigError(f"by={by!r}: expected None or 'month'")
    if "time" not in da.dims:
        raise CoordinateError(f"by='month' needs a time dimension on the {role} data")
    to_days(da["time"].values, role)  # validates the time type
    return np.asarray(da["time"].dt.month.values, dtype=int) - 1


def _match(target: np.ndarray, source: np.ndarray, periodic: bool, tol: float) -> np.ndarray:
    """Index in ``source`` of each target value, -1 where there is none within ``tol``."""
    diff = target[:, None] - source[None, :]
    if periodic:
        diff = wrap_longitude(diff, "-180..180")
    index = np.argmin(np.abs(diff), axis=1)
    ok = np.abs(diff[np.arange(target.size), index]) <= tol
    return np.where(ok, index, -1)


def _depth_map(grid: xr.DataArray, train: xr.DataArray) -> np.ndarray:
    if "depth" not in grid.dims:
        if "depth" in train.dims and train.sizes["depth"] != 1:
            raise GridError("the target has no depth dimension but the training data have several levels")
        return np.zeros(1, dtype=int)
    if "depth" not in train.dims:
        raise GridError("the target has depth levels but the training data have no depth dimension")
    index = _match(np.asarray(grid.depth.values, float), np.asarray(train.depth.values, float), False, 0.01)
    if np.any(index < 0):
        missing = np.asarray(grid.depth.values)[index < 0].tolist()
        raise GridError(f"target depth levels {missing} m are not levels of the training data")
    return index


def climatology_values(train: xr.DataArray, grid: xr.DataArray, *, by: str | None = None,
                       mode: Mode = "auto") -> tuple[np.ndarray, np.ndarray, int]:
    """Climatology on ``grid``: float64 array of ``grid``'s full (time, depth, lat, lon) shape, the boolean array of
    cells filled from the field mean (the others hold the zonal mean), and the number of (month, level, latitude)
    rows whose zonal mean was interpolated from other latitudes."""
    if mode not in ("auto", "field", "zonal"):
        raise ConfigError(f"mode={mode!r}: expected 'auto', 'field' or 'zonal'")
    values = as_4d(np.asarray(train.values, dtype=np.float64), train)
    g_train = _groups(train, by, "training")
    n_groups = 12 if by == "month" else 1
    ok = np.isfinite(values)
    sums = np.zeros((n_groups, *values.shape[1:]))
    counts = np.zeros((n_groups, *values.shape[1:]))
    np.add.at(sums, g_train, np.where(ok, values, 0.0))
    np.add.at(counts, g_train, ok)
    with np.errstate(invalid="ignore", divide="ignore"):
        field = sums / counts
        zonal = sums.sum(-1) / counts.sum(-1)  # [G, K, lat]

    g_target = _groups(grid, by, "target") if by else np.zeros(grid.sizes.get("time", 1), dtype=int)
    have = np.unique(g_train)
    if np.any(~np.isin(g_target, have)):
        missing = sorted(set((np.unique(g_target[~np.isin(g_target, have)]) + 1).tolist()))
        raise GridError(f"the training data have no time step in month(s) {missing} needed by the target")
    k_map = _depth_map(grid, train)
    lat_t = np.asarray(grid.lat.values, float)
    lon_t = np.asarray(grid.lon.values, float)
    lat_s = np.asarray(train.lat.values, float)
    lon_s = np.asarray(train.lon.values, float)

    # zonal mean interpolated to target latitudes, each (group, level) on the latitudes that have data
    zonal_t = np.full((n_groups, k_map.size, lat_t.size), np.nan)
    order = np.argsort(lat_s)
    filled_lat = 0
    for g in np.unique(g_target):
        for kk, k in enumerate(k_map):
            row = zonal[g, k, order]
            good = np.isfinite(row)
            if not good.any():
                raise GridError(f"the training data have no value at depth index {int(k)} in group {int(g)}")
            zonal_t[g, kk] = np.interp(lat_t, lat_s[order][good], row[good])
            filled_lat += int(np.sum(~_has_lat(lat_t, lat_s[order][good])))
    out_shape = (g_target.size, k_map.size, lat_t.size, lon_t.size)
    result = np.broadcast_to(zonal_t[g_target][..., None], out_shape).copy()
    use = np.zeros(out_shape, dtype=bool)
    if mode in ("auto", "field"):
        i_lat = _match(lat_t, lat_s, False, 1e-6)
        i_lon = _match(lon_t, lon_s, True, 1e-6)
        if mode == "field" and (np.any(i_lat < 0) or np.any(i_lon < 0)):
            raise GridError("mode='field' needs the target lat/lon to be points of the training grid")
        sub = field[g_target][:, k_map][:, :, np.clip(i_lat, 0, None)][..., np.clip(i_lon, 0, None)]
        sub[:, :, i_lat < 0] = np.nan
        sub[..., i_lon < 0] = np.nan
        use = np.isfinite(sub)
        if mode == "field" and not use.all():
            result[:] = np.nan
        result[use] = sub[use]
    return result, use, filled_lat


def _has_lat(target: np.ndarray, source: np.ndarray) -> np.ndarray:
    return np.any(np.abs(target[:, None] - source[None, :]) <= 1e-6, axis=1)


def climatology(
    training: xr.Dataset | xr.DataArray,
    target: xr.Dataset | xr.DataArray | None = None,
    *,
    variable: str | None = None,
    by: str | None = None,
    mode: Mode = "auto",
) -> xr.Dataset:
    """Climatology of ``training`` on the ``target`` grid (default: the training grid).

    Parameters
    ----------
    training : canonical data ``(time, [depth], lat, lon)``; NaN cells (land, held-out box) are skipped.
    target : grid template; its NaN cells (or ``sea_mask`` False) are land in the output. Its values are not used.
    variable : data variable (default: the only one).
    by : ``None`` (mean over all times, broadcast to the target's times) or ``"month"`` (mean per calendar month,
        each target time takes its month's mean).
    mode : ``"auto"``, ``"field"`` or ``"zonal"`` (see the module docstring).

    Returns
    -------
    xr.Dataset on the target grid with the input variable name, NaN on land, attrs recording the mode and counts.

    Example
    -------
    >>> from geodiff.adapters import woa
    >>> from geodiff.baselines import climatology
    >>> split = woa.holdout_split(woa.open_sample())
    >>> clim = climatology(split.train, split.target, by="month")
    >>> clim.temperature.dims, clim.attrs["cells_field_mean"]  # the box is held out: all zonal means
    (('time', 'depth', 'lat', 'lon'), 0)
    """
    train = select_field(training, variable, "training")
    name = str(train.name)
    if target is None:
        grid = train
    else:
        grid = select_field(target, name if isinstance(target, xr.Dataset) and name in target else None, "target")
    values, from_field, interpolated = climatology_values(train, grid, by=by, mode=mode)
    values = values.reshape(grid.shape)
    ocean = ocean_of(grid)
    from_field = from_field.reshape(grid.shape)
    counts = {"cells_field_mean": int((from_field & ocean).sum()), "cells_zonal_mean": int((~from_field & ocean).sum()),
              "zonal_rows_interpolated_in_latitude": interpolated}
    comment = (f"climatology baseline: mode={mode!r}, by={by!r}; {counts['cells_field_mean']} cells from the "
               f"training mean at the cell, {counts['cells_zonal_mean']} from the latitude-depth (zonal) mean")
    attrs = variable_attrs(train, comment=comment)
    source_attrs = target.attrs if isinstance(target, xr.Dataset) else (
        training.attrs if isinstance(training, xr.Dataset) else {})
    return output_dataset(
        {name: (values, attrs)}, grid, source_attrs,
        f"geodiff.baselines.climatology(mode={mode!r}, by={by!r})",
        {"baseline": "climatology", "climatology_mode": mode, "climatology_by": str(by), **counts},
    )
