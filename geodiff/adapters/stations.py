"""Point observations (station CSV tables, CF point / timeSeries netCDF) -> geodiff observation tables.

An observation table (layout and checks in :mod:`geodiff.observations`) is an ``xr.Dataset`` with one dimension ``obs``, data variables
``value`` and ``error_std`` and coordinates ``lat``, ``lon``, ``time``, optional ``depth``, ``variable``,
``source``, ``obs_id`` (plus ``units``: the unit of each value). :func:`observation_table` builds and checks one;
:func:`read_stations` reads station files into one, converting units with pint.

Example
-------
>>> import numpy as np
>>> from geodiff.adapters.stations import observation_table
>>> obs = observation_table(value=[20.5, 21.0], error_std=0.5, lat=[10.0, 11.0], lon=[190.0, -170.5],
...                         time=np.array(["2000-01-01", "2000-01-02"], "datetime64[ns]"),
...                         variable="tas", source="stations", units="degC")
>>> obs.sizes["obs"], obs.lon.values.tolist(), obs.obs_id.values.tolist()
(2, [-170.0, -170.5], ['stations:0', 'stations:1'])
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from geodiff.adapters.files import INCOMPLETE, check_netcdf
from geodiff.adapters.standardize import convert_units, record
from geodiff.errors import DataError, ObservationError
from geodiff.grid import wrap_longitude
from geodiff.observations import as_observations

__all__ = ["observation_table", "read_stations"]


def _column(values: Any, n: int, name: str, dtype: Any = None) -> np.ndarray:
    arr = np.asarray(values, dtype=dtype)
    if arr.ndim == 0:
        arr = np.full(n, arr.item() if arr.dtype.kind != "U" else str(arr), dtype=arr.dtype if dtype is None else dtype)
    if arr.shape != (n,):
        raise ObservationError(f"column {name!r} has shape {arr.shape}; expected ({n},) like 'value'")
    return arr


def observation_table(
    value: Any,
    error_std: Any,
    lat: Any,
    lon: Any,
    time: Any,
    variable: Any,
    source: Any,
    *,
    depth: Any = None,
    obs_id: Any = None,
    units: Any = None,
    lon_convention: str = "-180..180",
    coords: Mapping[str, Any] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """An observation table (dim ``obs``) from columns; scalars are broadcast.

    The table is checked by :func:`geodiff.observations.as_observations` (each problem an
    :class:`~geodiff.errors.ObservationError` naming the column: positive finite ``error_std``, ``|lat| <= 90``,
    longitudes within -360..720, no infinite value, non-negative depths, unique ``obs_id``, default
    ``"<source>:<index>"``); times must parse. Longitudes are wrapped to ``lon_convention``. Missing (NaN) values
    or positions stay in the table: :func:`geodiff.observations.validate_observations` counts and drops them.
    """
    value = np.asarray(value, dtype="float64")
    if value.ndim != 1:
        raise ObservationError(f"column 'value' must be 1-D, got shape {value.shape}")
    n = value.size
    if n == 0:
        raise ObservationError("the observation table has no observation")
    error = _column(error_std, n, "error_std", "float64")
    lat_a = _column(lat, n, "lat", "float64")
    lon_a = _column(lon, n, "lon", "float64")
    time_raw = _column(time, n, "time")
    if np.issubdtype(time_raw.dtype, np.datetime64):
        time_a = time_raw.astype("datetime64[ns]")
    else:
        parsed = pd.to_datetime(pd.Series(time_raw), utc=True, errors="coerce")
        time_a = parsed.dt.tz_localize(None).to_numpy("datetime64[ns]")
    bad = np.isnat(time_a)
    if bad.any():
        raise ObservationError(f"column 'time' has {int(bad.sum())} missing or unparseable times")
    variable_a = _column(variable, n, "variable").astype(str)
    source_a = _column(source, n, "source").astype(str)
    if obs_id is None:
        obs_id_a = np.array([f"{s}:{i}" for i, s in enumerate(source_a)])
    else:
        obs_id_a = _column(obs_id, n, "obs_id").astype(str)
    coord_vars: dict[str, Any] = {
        "lat": ("obs", lat_a, {"standard_name": "latitude", "units": "degrees_north"}),
        "lon": ("obs", lon_a, {"standard_name": "longitude", "units": "degrees_east"}),
        "time": ("obs", time_a, {"standard_name": "time"}),
    }
    if depth is not None:
        depth_a = _column(depth, n, "depth", "float64")
        coord_vars["depth"] = ("obs", depth_a, {"standard_name": "depth", "units": "m", "positive": "down"})
    # strings as objects: variable-length in netCDF and zarr v3
    coord_vars["variable"] = ("obs", variable_a.astype(object))
    coord_vars["source"] = ("obs", source_a.astype(object))
    coord_vars["obs_id"] = ("obs", obs_id_a.astype(object))
    value_attrs: dict[str, Any] = {"long_name": "observed value"}
    if units is not None:
        units_a = _column(units, n, "units").astype(str)
        coord_vars["units"] = ("obs", units_a.astype(object))
        if len(set(units_a.tolist())) == 1:
            value_attrs["units"] = str(units_a[0])
    for name, values in (coords or {}).items():
        column = _column(values, n, name)
        coord_vars[name] = ("obs", column.astype(object) if column.dtype.kind == "U" else column)
    ds = xr.Dataset(
        {"value": ("obs", value, value_attrs),
         "error_std": ("obs", error, {"long_name": "observation error standard deviation",
                                      **({"units": value_attrs["units"]} if "units" in value_attrs else {})})},
        coords=coord_vars,
        attrs={"geodiff_lon_convention": lon_convention, **dict(attrs or {})},
    )
    as_observations(ds)  # the table's schema: raises ObservationError naming the column
    return ds.assign_coords(lon=ds["lon"].copy(data=wrap_longitude(lon_a, lon_convention)))


def _read_table(source: Any) -> tuple[Any, str]:
    if isinstance(source, pd.DataFrame):
        return source, "DataFrame"
    if isinstance(source, xr.Dataset):
        return source, "Dataset"
    path = Path(source)
    if not path.exists():
        raise DataError(f"station file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt"):
        return pd.read_csv(path), path.name
    if suffix in (".nc", ".nc4", ".cdf"):
        check_netcdf(path)
        try:
            return xr.open_dataset(path), path.name
        except (OSError, ValueError) as err:
            raise DataError(f"cannot open station file {str(path)!r} ({INCOMPLETE} or not netCDF): {err}") from err
    raise DataError(f"station file {path.name!r}: expected .csv or .nc")


def _dsg_to_frame(ds: xr.Dataset, variable: str, lat: str, lon: str, time: str, station: str | None) -> pd.DataFrame:
    """A CF point / timeSeries dataset as one row per (station, time)."""
    if variable not in ds.data_vars:
        raise DataError(f"variable {variable!r} is not in the station file; found {list(ds.data_vars)}")
    da = ds[variable]
    for name in (lat, lon, time):
        if name not in ds.variables:
            raise DataError(f"the station file has no {name!r}; name the coordinate with lat=/lon=/time=")
    frame = da.reset_coords(drop=True).to_dataframe(name="__value").reset_index()
    for name in (lat, lon, time):
        coord = ds[name]
        if set(coord.dims) <= set(da.dims):
            frame[name] = coord.broadcast_like(da).values.ravel()
    if station and station in ds.variables:
        frame[station] = ds[station].broadcast_like(da).values.ravel()
    elif station:
        frame[station] = [f"{d}" for d in range(len(frame))] if not da.dims else frame[da.dims[0]].astype(str)
    return frame


def read_stations(
    source: Any,
    *,
    variable: str,
    column: str | None = None,
    units: str | None = None,
    to_units: str | None = None,
    error_std: float | None = None,
    error_column: str | None = None,
    lat: str = "lat",
    lon: str = "lon",
    time: str = "time",
    depth: str | None = None,
    station: str | None = "station_id",
    source_name: str = "stations",
    lon_convention: str = "-180..180",
) -> xr.Dataset:
    """Station values (CSV, DataFrame or CF point / timeSeries netCDF) as an observation table.

    ``column`` is the value column (default ``variable``); ``units`` its unit (default the netCDF ``units``
    attribute; required for CSV); ``to_units`` converts with pint. The error is ``error_column`` or the constant
    ``error_std`` (one of them is required). Missing values are dropped and counted (``attrs["n_missing"]``).
    ``obs_id`` is ``"<station>@<time>"``.

    >>> import tempfile, pathlib
    >>> from geodiff.testing import products
    >>> path = products.write_stations_csv(pathlib.Path(tempfile.mkdtemp()) / "stations.csv")
    >>> obs = read_stations(path, variable="t2m", units="degC", to_units="K", error_column="t2m_error")
    >>> obs.sizes["obs"], obs.attrs["n_missing"], obs.value.attrs["units"]
    (23, 1, 'K')
    """
    table, label = _read_table(source)
    column = column or variable
    if isinstance(table, xr.Dataset):
        if units is None:
            units = table[column].attrs.get("units") if column in table.variables else None
        frame = _dsg_to_frame(table, column, lat, lon, time, station)
        value_col = "__value"
    else:
        frame = table
        value_col = column
    for name in (value_col, lat, lon, time):
        if name not in frame.columns:
            raise DataError(f"station table {label!r} has no column {name!r}; columns are {list(frame.columns)}")
    if units is None:
        raise DataError(f"station table {label!r}: give units= for column {column!r} (no 'units' attribute found)")
    if error_column is None and error_std is None:
        raise ObservationError("give error_std= (a constant) or error_column= for the observation errors")
    if error_column is not None and error_column not in frame.columns:
        raise DataError(f"station table {label!r} has no error column {error_column!r}")
    values = pd.to_numeric(frame[value_col], errors="coerce").to_numpy("float64")
    keep = np.isfinite(values)
    n_missing = int((~keep).sum())
    frame = frame.loc[keep]
    values = values[keep]
    out_units = units
    changes: list[str] = []
    if to_units is not None and to_units != units:
        converted, changes = convert_units(xr.DataArray(values, dims="obs", attrs={"units": units}), to_units,
                                           name=column)
        values = np.asarray(converted.values)
        out_units = to_units
    errors = (frame[error_column].to_numpy("float64") if error_column is not None
              else np.full(values.size, float(error_std)))
    if to_units is not None and to_units != units:  # errors are differences: scale only
        scale = convert_units(xr.DataArray([0.0, 1.0], dims="x", attrs={"units": units}), to_units,
                              check_values=False)[0].values
        errors = errors * abs(float(scale[1] - scale[0]))
    stations = frame[station].astype(str).to_numpy() if station and station in frame.columns else np.array(
        [str(i) for i in range(values.size)])
    times = pd.to_datetime(frame[time], utc=True, errors="coerce").dt.tz_localize(None).to_numpy("datetime64[ns]")
    obs_ids = [f"{s}@{np.datetime_as_string(t, unit='s')}" for s, t in zip(stations, times)]
    obs = observation_table(
        value=values, error_std=errors, lat=frame[lat].to_numpy("float64"), lon=frame[lon].to_numpy("float64"),
        time=times, variable=variable, source=source_name,
        depth=frame[depth].to_numpy("float64") if depth else None, obs_id=obs_ids, units=out_units,
        lon_convention=lon_convention, coords={"station": stations},
        attrs={"n_missing": n_missing, "geodiff_source_files": json.dumps([label])},
    )
    if n_missing:
        changes.append(f"dropped {n_missing} missing values of {column!r}")
    return record(obs, [f"read {obs.sizes['obs']} observations of {column!r} from {label}"] + changes,
                  step="read_stations")
