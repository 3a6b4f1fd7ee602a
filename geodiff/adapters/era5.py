"""ERA5 (ECMWF reanalysis) single and pressure levels -> canonical datasets.

Two netCDF layouts are in circulation and both are read:

* current CDS (2024 on): ``valid_time``, ``pressure_level`` (hPa), ``latitude``/``longitude``, a scalar
  ``number`` and an ``expver`` coordinate along ``valid_time``; variables with different step types come in
  separate files (``data_stream-oper_stepType-instant.nc``, ``...-accum.nc``), merged here;
* legacy CDS: ``time``, ``level`` (millibars, increasing), int16 variables packed with ``scale_factor`` /
  ``add_offset``; when ERA5 and ERA5T are mixed, an ``expver`` *dimension* (1, 5) with complementary NaNs,
  combined here into one series (the ``expver`` of each time is kept as a coordinate).

Both come out canonical: ``time``, ``level`` (hPa, surface first), ``lat`` ascending (ERA5 stores 90..-90),
``lon`` in one convention (ERA5 stores 0..360). ``z`` is geopotential (m2 s-2); with
``geopotential_height=True`` it is divided by standard gravity (9.80665 m s-2) into geopotential height (m), keeping
its name ``z`` and recording the conversion.

Example
-------
>>> import tempfile
>>> from geodiff.adapters import era5
>>> from geodiff.testing import products
>>> files = products.write_era5(tempfile.mkdtemp(), layout="cds", kind="pressure")
>>> ds = era5.open_dataset(files, geopotential_height=True)
>>> ds.z.dims, ds.z.attrs["units"], ds.level.values.tolist(), bool(ds.lat[0] < ds.lat[-1])
(('time', 'level', 'lat', 'lon'), 'm', [1000.0, 850.0, 500.0], True)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from geodiff.adapters.files import INCOMPLETE, netcdf_files
from geodiff.adapters.standardize import record, standardize
from geodiff.errors import DataError

__all__ = ["layout_of", "open_dataset"]


def layout_of(ds: xr.Dataset) -> str:
    """``"cds"`` (``valid_time``) or ``"legacy"`` (``time``) for an ERA5 dataset; DataError otherwise.

    >>> import xarray as xr
    >>> layout_of(xr.Dataset(coords={"valid_time": [0]}))
    'cds'
    """
    if "valid_time" in ds.variables:
        return "cds"
    if "time" in ds.variables:
        return "legacy"
    raise DataError(f"not an ERA5 layout: no 'valid_time' or 'time' (variables {list(ds.variables)})")


def _combine_expver(ds: xr.Dataset, changes: list[str]) -> xr.Dataset:
    """Legacy ERA5/ERA5T mixes: an ``expver`` dimension with complementary NaNs -> one series."""
    if "expver" not in ds.dims:
        return ds
    versions = [int(v) for v in np.asarray(ds["expver"].values).astype(int)]
    first = ds.isel(expver=0, drop=True)
    which = xr.full_like(first[list(first.data_vars)[0]].isel({d: 0 for d in first[list(first.data_vars)[0]].dims
                                                               if d != "time"}, drop=True), versions[0], dtype=int)
    combined = first
    for i in range(1, ds.sizes["expver"]):
        nxt = ds.isel(expver=i, drop=True)
        var = list(first.data_vars)[0]
        missing = combined[var].isnull().all([d for d in combined[var].dims if d != "time"])
        which = xr.where(missing, versions[i], which)
        combined = combined.combine_first(nxt)
    combined = combined.assign_coords(expver=("time", which.values.astype(str)))
    changes.append(f"combined the expver dimension {versions} into one series (coordinate 'expver' per time)")
    return combined


def open_dataset(
    paths: str | Path | Sequence[str | Path],
    variables: Sequence[str] | None = None,
    *,
    geopotential_height: bool = False,
    units: Mapping[str, str] | None = None,
    lon: str = "-180..180",
) -> xr.Dataset:
    """ERA5 file(s) (or a folder of them) of either layout as a canonical dataset.

    ``variables`` selects short names (``z``, ``t``, ``t2m``, ``msl``, ``tp``...), default all. ``units`` maps
    variables to canonical units (pint); ``geopotential_height=True`` adds ``{"z": "m"}``. Files of one request
    split by step type are merged; files of consecutive times are concatenated.
    """
    files = netcdf_files(paths, "ERA5", folder_glob="*.nc")
    try:
        opened = [xr.open_dataset(f, chunks={}) for f in files]
    except (OSError, ValueError) as err:
        raise DataError(
            f"cannot open ERA5 files {[str(f) for f in files]} ({INCOMPLETE} or not netCDF): {err}"
        ) from err
    layouts = {layout_of(ds) for ds in opened}
    if len(layouts) != 1:
        raise DataError(f"ERA5 files {[f.name for f in files]} mix layouts {sorted(layouts)}; open them apart")
    layout = layouts.pop()
    try:
        ds = xr.combine_by_coords(opened, combine_attrs="drop_conflicts", data_vars="all", coords="different",
                                  compat="no_conflicts", join="outer")
    except (ValueError, TypeError) as err:
        raise DataError(f"ERA5 files {[f.name for f in files]} cannot be combined: {err}") from err
    if isinstance(ds, xr.DataArray):  # pragma: no cover - combine_by_coords of datasets returns a Dataset
        ds = ds.to_dataset()
    changes: list[str] = []
    if len(files) > 1:
        changes.append(f"combined {len(files)} ERA5 files ({', '.join(f.name for f in files)})")
    ds = _combine_expver(ds, changes)
    if variables is not None:
        missing = [v for v in variables if v not in ds.data_vars]
        if missing:
            raise DataError(f"ERA5 variables {missing} not found; the files hold {list(ds.data_vars)}")
        ds = ds[list(variables)]
    wanted = dict(units or {})
    if geopotential_height:
        if "z" not in ds.data_vars:
            raise DataError("geopotential_height=True but the files hold no 'z' (geopotential)")
        wanted["z"] = "m"
    ds = record(ds, changes, step="era5.open_dataset")
    out = standardize(ds, variables=wanted, lon=lon)
    if geopotential_height and str(out["z"].attrs.get("long_name", "")).lower() == "geopotential":
        out["z"].attrs["long_name"] = "Geopotential height"
    out.attrs["geodiff_era5_layout"] = layout
    out.attrs["geodiff_source_files"] = json.dumps([f.name for f in files])
    return out
