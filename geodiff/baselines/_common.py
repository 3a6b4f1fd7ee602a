"""Shared plumbing of the baselines: target grids, observation tables, great-circle distances, output datasets."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from geodiff.errors import CoordinateError, GridError, ObservationError
from geodiff.grid import wrap_longitude
from geodiff.observations import ObservationTable
from geodiff.provenance import append_history, provenance_attrs

CANONICAL = ("time", "depth", "lat", "lon")
_EPOCH = np.datetime64("2000-01-01T00:00:00", "ns")


def select_field(data: xr.Dataset | xr.DataArray, variable: str | None, role: str) -> xr.DataArray:
    """The data variable of ``data`` (a Dataset's ``variable`` or its only variable), canonical dim order."""
    if isinstance(data, xr.Dataset):
        names = [str(v) for v in data.data_vars]
        if variable is None:
            if len(names) != 1:
                raise GridError(f"{role} has data variables {names}; pass variable= to choose one")
            variable = names[0]
        if variable not in data.data_vars:
            raise GridError(f"{role} has no data variable {variable!r}; it has {names}")
        da = data[variable]
    elif isinstance(data, xr.DataArray):
        da = data if variable is None or data.name == variable else data.rename(variable)
        if da.name is None:
            raise GridError(f"{role} DataArray has no name; pass variable= to name the output")
    else:
        raise GridError(f"{role} must be an xarray Dataset or DataArray, got {type(data).__name__}")
    for name in ("lat", "lon"):
        if name not in da.dims:
            raise CoordinateError(f"{role} variable {da.name!r} has no dimension {name!r}; dims are {da.dims}")
        if name not in da.coords:
            raise CoordinateError(f"{role} variable {da.name!r} has no coordinate values for {name!r}")
    extra = [d for d in da.dims if d not in CANONICAL]
    if extra:
        raise GridError(f"{role} variable {da.name!r} has dims {extra} besides {CANONICAL}")
    if "depth" in da.dims and "depth" not in da.coords:
        raise CoordinateError(f"{role} variable {da.name!r} has no coordinate values for 'depth'")
    return da.transpose(*[d for d in CANONICAL if d in da.dims])


def ocean_of(da: xr.DataArray) -> np.ndarray:
    """Boolean array of ``da``'s shape: True at ocean cells (not NaN, and ``sea_mask`` True when present)."""
    ocean = np.asarray(da.notnull().values)
    if "sea_mask" in da.coords:
        ocean = ocean & np.broadcast_to(np.asarray(da["sea_mask"].broadcast_like(da).values, dtype=bool), ocean.shape)
    return ocean


def to_days(values: Any, role: str) -> np.ndarray:
    """Times (datetime64 or cftime) -> float days since 2000-01-01."""
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.datetime64):
        return (values.astype("datetime64[ns]") - _EPOCH) / np.timedelta64(1, "D")
    if np.issubdtype(values.dtype, np.number):
        raise CoordinateError(f"{role} time is numeric ({values.dtype}); expected decoded datetimes")
    try:
        import cftime

        calendars = {getattr(v, "calendar", None) for v in values.ravel()}
        if len(calendars) != 1 or None in calendars:
            raise CoordinateError(f"{role} time mixes calendars {calendars}")
        return np.asarray(cftime.date2num(values, "days since 2000-01-01", calendar=calendars.pop()), dtype=float)
    except (TypeError, ValueError, AttributeError) as err:
        raise CoordinateError(f"{role} time values of dtype {values.dtype} are not datetimes: {err}") from err


@dataclass
class Observations:
    """Observation table fields as float64 numpy arrays (times in days since 2000-01-01, NaN when absent)."""

    value: np.ndarray
    error_std: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    time: np.ndarray
    depth: np.ndarray
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return int(self.value.size)

    def subset(self, keep: np.ndarray) -> Observations:
        return Observations(self.value[keep], self.error_std[keep], self.lat[keep], self.lon[keep],
                            self.time[keep], self.depth[keep], list(self.notes))


def read_observations(observations: Any, variable: str, grid: xr.DataArray) -> Observations:
    """The observations of ``variable`` that :meth:`geodiff.observations.ObservationTable.validate` keeps on
    ``grid`` (the same schema, checks, land and domain rules and duplicate merging as the diffusion pipelines, so
    every method is scored on the same records), as float64 arrays; the validation report goes to ``notes``.

    A table without ``time`` is accepted for a grid with at most one time (its records are at that time).
    """
    if isinstance(observations, xr.DataArray) or not isinstance(observations, xr.Dataset | pd.DataFrame):
        raise ObservationError(f"observations must be an xr.Dataset with dim 'obs' or a DataFrame, "
                               f"got {type(observations).__name__}")
    table = observations.to_xarray().rename({"index": "obs"}) if isinstance(observations, pd.DataFrame) \
        else observations
    if "obs" not in table.dims:
        raise ObservationError(f"observation table has no dimension 'obs'; dims are {tuple(table.dims)}")
    timed = "time" in grid.dims and grid.sizes["time"] > 1
    if "time" not in table.variables:
        if timed:
            raise ObservationError("observation table has no field 'time' but the target grid has several times")
        stamp = grid["time"].values.reshape(-1)[0] if "time" in grid.coords else _EPOCH
        table = table.assign_coords(time=("obs", np.full(table.sizes["obs"], stamp)))
    levels = grid["depth"].values if "depth" in grid.dims and grid.sizes["depth"] > 1 else None
    if levels is None and "depth" in grid.dims and "depth" in table.variables:
        levels = grid["depth"].values
    ocean = xr.DataArray(ocean_of(grid), dims=grid.dims)
    ocean = ocean.any([d for d in ("time", "depth") if d in grid.dims and (d == "time" or levels is None)])
    validated = ObservationTable.validate(
        table, grid["lat"].values, grid["lon"].values, levels, ocean_mask=ocean.values, variables=[variable],
    ).data
    n = validated.sizes["obs"]

    def numeric(name: str) -> np.ndarray:
        return np.asarray(validated[name].values, dtype=np.float64).reshape(-1)

    depth = numeric("depth") if "depth" in validated.variables else np.full(n, np.nan)
    time = to_days(validated["time"].values, "observation") if "time" in grid.dims else np.full(n, np.nan)
    notes = [line.strip() for line in str(validated.attrs["geodiff_validation"]).splitlines()[1:] if line.strip()]
    return Observations(numeric("value"), numeric("error_std"), numeric("lat"), numeric("lon"), time, depth, notes)


def _nearest(coord: np.ndarray, points: np.ndarray, periodic: bool) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest coordinate value and the absolute offset (degrees, or days)."""
    diff = points[:, None] - coord[None, :]
    if periodic:
        diff = wrap_longitude(diff, "-180..180")
    index = np.argmin(np.abs(diff), axis=1)
    return index, np.abs(diff[np.arange(points.size), index])


def _spacing(coord: np.ndarray, periodic: bool) -> float:
    if coord.size < 2:
        return np.inf
    steps = np.abs(np.diff(coord))
    if periodic:
        steps = wrap_longitude(steps, "-180..180")
    return float(np.max(np.abs(steps)))


@dataclass
class GridIndex:
    """Observations located on the target grid (nearest cell; see ``notes`` for the offsets recorded)."""

    keep: np.ndarray  # bool [n_obs]: inside the target domain and on a level of the grid
    time: np.ndarray  # int [n_kept] (0 when the grid has no time)
    depth: np.ndarray  # int [n_kept] (0 when the grid has no depth)
    lat: np.ndarray
    lon: np.ndarray
    notes: list[str]


def locate(obs: Observations, grid: xr.DataArray, *, role: str = "target") -> GridIndex:
    """Nearest target cell of each observation; observations outside the domain are dropped with a note.

    Depth must equal a grid level (within 0.01 m): the baselines work level by level and do not interpolate in
    depth. Observations farther than half a grid step from the domain, or at a depth not on the grid, are dropped.
    """
    notes = list(obs.notes)
    lat_c = np.asarray(grid["lat"].values, dtype=np.float64)
    lon_c = np.asarray(grid["lon"].values, dtype=np.float64)
    i_lat, d_lat = _nearest(lat_c, obs.lat, periodic=False)
    i_lon, d_lon = _nearest(lon_c, obs.lon, periodic=True)
    half_lat = 0.5 * _spacing(lat_c, False) if lat_c.size > 1 else 0.5
    half_lon = 0.5 * _spacing(lon_c, True) if lon_c.size > 1 else 0.5
    keep = (d_lat <= half_lat + 1e-9) & (d_lon <= half_lon + 1e-9)
    if "depth" in grid.dims:
        levels = np.asarray(grid["depth"].values, dtype=np.float64)
        if grid.sizes["depth"] == 1 and np.all(np.isnan(obs.depth)):
            i_dep, d_dep = np.zeros(obs.size, int), np.zeros(obs.size)
        else:
            i_dep, d_dep = _nearest(levels, obs.depth, periodic=False)
        on_level = d_dep <= 0.01
        if np.any(keep & ~on_level):
            notes.append(f"{int((keep & ~on_level).sum())} observations at depths that are not levels of the "
                         f"{role} grid were dropped (no vertical interpolation)")
        keep &= on_level
    else:
        i_dep = np.zeros(obs.size, int)
    if "time" in grid.dims:
        times = to_days(grid["time"].values, role)
        if grid.sizes["time"] == 1 and np.all(np.isnan(obs.time)):
            i_t, d_t = np.zeros(obs.size, int), np.zeros(obs.size)
        else:
            i_t, d_t = _nearest(times, obs.time, periodic=False)
        half_t = 0.5 * (np.max(np.diff(times)) if times.size > 1 else np.inf)
        keep &= d_t <= half_t
        kept_t = d_t[keep]
        if kept_t.size and kept_t.max() > 1e-6:
            notes.append(f"observation times assigned to the nearest {role} time (max offset {kept_t.max():.3g} days)")
    else:
        i_t = np.zeros(obs.size, int)
    outside = int((~keep).sum())
    if outside:
        notes.append(f"{outside} of {obs.size} observations lie outside the {role} domain or levels and were not used")
    offset = np.maximum(d_lat, d_lon)[keep]
    if offset.size and offset.max() > 1e-6:
        notes.append(f"observations assigned to the nearest {role} cell (max offset {offset.max():.3g} degrees)")
    if not keep.any():
        raise ObservationError(f"none of the {obs.size} observations lies inside the {role} grid "
                               f"(lat {lat_c.min()}..{lat_c.max()}, lon {lon_c.min()}..{lon_c.max()})")
    return GridIndex(keep, i_t[keep], i_dep[keep], i_lat[keep], i_lon[keep], notes)


def full_shape(grid: xr.DataArray) -> tuple[int, int, int, int]:
    """(time, depth, lat, lon) sizes, 1 for an absent dim."""
    return tuple(grid.sizes.get(d, 1) for d in CANONICAL)  # type: ignore[return-value]


def as_4d(values: np.ndarray, grid: xr.DataArray) -> np.ndarray:
    return np.asarray(values).reshape(full_shape(grid))


def output_dataset(
    values: dict[str, tuple[np.ndarray, dict[str, Any]]],
    grid: xr.DataArray,
    source_attrs: dict[Hashable, Any],
    history: str,
    attrs: dict[str, Any],
) -> xr.Dataset:
    """Dataset on ``grid`` (coords and dims kept) with NaN on land; ``history`` (a line, time-stamped) appended to
    the source's, ``attrs`` and the provenance attributes added."""
    ocean = ocean_of(grid)
    data = {}
    for name, (array, var_attrs) in values.items():
        array = np.asarray(array, dtype=np.float32).reshape(grid.shape)
        data[name] = (grid.dims, np.where(ocean, array, np.nan).astype(np.float32), var_attrs)
    coords = {k: v for k, v in grid.coords.items()}
    ds = xr.Dataset(data, coords=coords)
    previous = str(source_attrs.get("history", "")).strip()
    kept = {k: v for k, v in source_attrs.items() if k != "history"}
    kept.update(attrs)
    kept.update(provenance_attrs())
    if previous:
        kept["history"] = previous
    ds.attrs = append_history(kept, history)
    return ds


def variable_attrs(da: xr.DataArray, **extra: Any) -> dict[str, Any]:
    keep = ("standard_name", "long_name", "units")
    out = {k: da.attrs[k] for k in keep if k in da.attrs}
    out.update(extra)
    return out


def estimate_outputs(name: str, grid: xr.DataArray, mean: np.ndarray, std: np.ndarray | None,
                     method: str) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    """``{name: (mean, attrs), name_std: (std, attrs)}`` for :func:`output_dataset`; ``method`` labels long_name."""
    attrs = variable_attrs(grid)
    if "long_name" in attrs:
        attrs["long_name"] = f"{attrs['long_name']} ({method})"
    outputs = {name: (mean, attrs)}
    if std is not None:
        std_attrs = {"long_name": f"posterior standard deviation of {name} ({method})"}
        if "units" in grid.attrs:
            std_attrs["units"] = grid.attrs["units"]
        outputs[f"{name}_std"] = (std, std_attrs)
    return outputs
