"""One check of a gridded dataset wherever it enters: training (``geodiff.fit``, ``geodiff train``) and pipelines.

:func:`check_gridded` refuses, with a :class:`~geodiff.errors.GeodiffError` naming the dataset, the variable or the
coordinate, what would otherwise train or sample silently wrong:

- a ``lat`` / ``lon`` dimension without coordinate values (they are never invented from indices), latitudes
  beyond +-90 or non-finite (a 1e20 fill value), longitudes outside -180..360, duplicated or non-monotonic
  (:class:`~geodiff.errors.CoordinateError`);
- a ``time`` axis with missing (NaT) or duplicated times, or not increasing (:class:`CoordinateError`);
- values that are infinite or at/beyond :data:`FILL_VALUE_LIMIT` in magnitude (1e20 fill values that were not
  decoded to NaN) (:class:`~geodiff.errors.DataError`), so that they are named here rather than met later as a
  normaliser with a standard deviation of 1e19 or a sampler that "diverged";
- a variable without parseable ``units``, or a temperature whose values contradict its units (kelvin mixed with
  degC: a degC field reaching 290, a kelvin field at 15) (:class:`~geodiff.errors.UnitsError`).

A descending latitude (ERA5 stores north to south) is not refused: it is flipped to ascending, and the change is
appended to ``history`` and ``geodiff_standardize`` (:func:`~geodiff.adapters.standardize.record`).
Values are checked in one lazy pass (a dask-backed dataset is streamed, never loaded whole).

Example
-------
>>> import numpy as np, xarray as xr
>>> from geodiff.datacheck import check_gridded
>>> ds = xr.Dataset({"t2m": (("time", "lat", "lon"), np.full((2, 3, 4), 280.0), {"units": "K"})},
...                 coords={"time": np.array(["2020-01-01", "2020-01-02"], "datetime64[ns]"),
...                         "lat": [10.0, 0.0, -10.0], "lon": [0.0, 1.0, 2.0, 3.0]})
>>> out = check_gridded(ds, where="era5.nc")
>>> out.lat.values.tolist(), out.attrs["history"].splitlines()[-1].endswith("flipped latitude 'lat' to ascending")
([-10.0, 0.0, 10.0], True)
>>> check_gridded(ds.assign(t2m=ds.t2m.where(ds.lat > 0, 1e20)), where="era5.nc")
Traceback (most recent call last):
...
geodiff.errors.DataError: era5.nc: variable 't2m' holds 16 fill value(s) of magnitude >= 1e+15 (e.g. 1e+20) ...
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import xarray as xr

from geodiff.errors import CoordinateError, DataError

__all__ = ["check_gridded", "FILL_VALUE_LIMIT"]

#: a magnitude no geophysical field reaches: a fill value that was not decoded (CMIP's 1e20, netCDF's 9.97e36)
FILL_VALUE_LIMIT = 1e15


def _coordinate(ds: xr.Dataset, name: str, where: str) -> np.ndarray:
    if name not in ds.coords:
        raise CoordinateError(f"{where}: dimension {name!r} has no coordinate values (geodiff never invents them "
                              f"from indices); add them, e.g. ds.assign_coords({name}=...)")
    values = ds[name].values
    if values.ndim != 1:
        raise CoordinateError(f"{where}: coordinate {name!r} must be 1-D, got dims {ds[name].dims}")
    return values


def _check_axis(values: np.ndarray, name: str, lo: float, hi: float, where: str) -> str:
    """'ascending' or 'descending' for a finite, in-range, strictly monotonic axis; CoordinateError otherwise."""
    values = values.astype(np.float64)
    bad = ~np.isfinite(values) | (values < lo) | (values > hi)
    if bad.any():
        example = values[bad][0]
        kind = "fill/sentinel" if not np.isfinite(example) or abs(example) >= FILL_VALUE_LIMIT else "out-of-range"
        raise CoordinateError(f"{where}: coordinate {name!r} has {int(bad.sum())} {kind} value(s) outside "
                              f"{lo:g}..{hi:g} (e.g. {example:g})")
    if values.size < 2:
        return "ascending"
    steps = np.diff(values)
    if np.any(steps == 0):
        raise CoordinateError(f"{where}: coordinate {name!r} has duplicate values, e.g. "
                              f"{values[1:][steps == 0][0]:g}")
    if np.all(steps > 0):
        return "ascending"
    if np.all(steps < 0):
        return "descending"
    raise CoordinateError(f"{where}: coordinate {name!r} is not monotonic (it goes back at index "
                          f"{int(np.flatnonzero(np.sign(steps) != np.sign(steps[0]))[0]) + 1})")


def _check_time(ds: xr.Dataset, where: str) -> None:
    values = _coordinate(ds, "time", where)
    if values.dtype.kind == "M":
        missing = np.isnat(values)
        if missing.any():
            raise CoordinateError(f"{where}: coordinate 'time' has {int(missing.sum())} missing time(s) (NaT), "
                                  f"e.g. at index {int(np.flatnonzero(missing)[0])}")
    unique, counts = np.unique(values, return_counts=True)
    if np.any(counts > 1):
        raise CoordinateError(f"{where}: coordinate 'time' has duplicate times, e.g. {unique[counts > 1][0]} "
                              f"({int(counts.max())} times); drop them, e.g. ds.drop_duplicates('time')")
    if values.size > 1 and not np.all(values[1:] > values[:-1]):
        raise CoordinateError(f"{where}: coordinate 'time' is not increasing; sort it, e.g. ds.sortby('time')")


def _check_values(ds: xr.Dataset, variables: Sequence[Hashable], where: str) -> dict[Hashable, tuple[float, float]]:
    """One lazy pass: per variable the finite min and max; DataError on infinite values or fill values."""
    import dask

    pending = []
    for name in variables:
        da = ds[name]
        finite = da.where(np.isfinite(da))
        pending.append((np.isinf(da).sum(), (abs(finite) >= FILL_VALUE_LIMIT).sum(), abs(finite).max(),
                        finite.where(abs(finite) < FILL_VALUE_LIMIT).min(),
                        finite.where(abs(finite) < FILL_VALUE_LIMIT).max()))
    (computed,) = dask.compute(pending)
    ranges = {}
    for name, (inf, fill, largest, lo, hi) in zip(variables, computed):
        if int(inf):
            raise DataError(f"{where}: variable {name!r} holds {int(inf)} infinite value(s); set them to NaN (or "
                            "fix the source) before using it")
        if int(fill):
            raise DataError(f"{where}: variable {name!r} holds {int(fill)} fill value(s) of magnitude >= "
                            f"{FILL_VALUE_LIMIT:g} (e.g. {float(largest):g}) that were not decoded to NaN; open "
                            "the file with mask_and_scale=True or set them to NaN")
        ranges[name] = (float(lo), float(hi))
    return ranges


def _check_units(ds: xr.Dataset, name: Hashable, values: tuple[float, float], where: str) -> None:
    from geodiff.adapters.standardize import check_units_against_values, parse_units

    units = ds[name].attrs.get("units")
    label = f"{where}: variable {name!r}"
    parse_units(units, label)
    if all(np.isfinite(values)):
        check_units_against_values(str(units), *values, label, ds[name].attrs.get("standard_name", ""))


def check_gridded(ds: xr.Dataset | xr.DataArray, variables: Sequence[Hashable] | None = None, *,
                  where: str = "the dataset", time: bool | None = None) -> xr.Dataset:
    """``ds`` checked as the module docstring says, latitude made ascending (with a record).

    ``variables``: the data variables checked (default: those on the ``lat``/``lon`` grid); ``where`` names the
    dataset (a file, ``"coarse"``) in every message; ``time``: True requires a ``time`` axis, None checks it when
    there is one. A DataArray is taken as a one-variable Dataset.
    """
    if isinstance(ds, xr.DataArray):
        ds = ds.to_dataset(name=ds.name if ds.name is not None else "values")
    if not isinstance(ds, xr.Dataset):
        raise DataError(f"{where} must be an xarray.Dataset, got {type(ds).__name__}")
    if variables is None:
        variables = [name for name, var in ds.data_vars.items() if {"lat", "lon"} <= set(var.dims)]
        if not variables:
            raise CoordinateError(f"{where}: no data variable has dimensions 'lat' and 'lon' (found "
                                  f"{ {name: var.dims for name, var in ds.data_vars.items()} })")
    for name in variables:
        if name not in ds.data_vars:
            raise DataError(f"{where}: {name!r} is not a data variable (found {list(ds.data_vars)})")
        missing = [d for d in ("lat", "lon") if d not in ds[name].dims]
        if missing:
            raise CoordinateError(f"{where}: variable {name!r} has dims {ds[name].dims}, without {missing}; "
                                  "expected ([time,] [depth|level,] lat, lon)")
    lat = _coordinate(ds, "lat", where)
    lon = _coordinate(ds, "lon", where)
    changes = []
    if _check_axis(lat, "lat", -90.0, 90.0, where) == "descending":
        ds = ds.isel(lat=slice(None, None, -1))
        changes.append("flipped latitude 'lat' to ascending")
    if _check_axis(lon, "lon", -180.0, 360.0, where) == "descending":
        raise CoordinateError(f"{where}: coordinate 'lon' is descending; sort it, e.g. ds.sortby('lon')")
    if time or (time is None and "time" in ds.dims):
        _check_time(ds, where)
    for name, values in _check_values(ds, variables, where).items():
        _check_units(ds, name, values, where)
    if not changes:
        return ds
    from geodiff.adapters.standardize import record

    return record(ds, changes, step="check_gridded")
