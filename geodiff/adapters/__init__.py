"""Dataset adapters: product files -> canonical ``xr.Dataset`` (gridded) or observation tables (points).

One source per module, each returning xarray with CF metadata and a record of every change in ``history``:

=================  ==========================================================================================
module             reads
=================  ==========================================================================================
``cmip6``          CMIP6 ocean output on native curvilinear grids; regridding, stacking, ESM-collection search
``en4``            EN4.2.2 objective analyses (gridded) and profiles (observation table, QC applied)
``era5``           ERA5 single / pressure levels, current CDS and legacy netCDF layouts
``gridsat``        GridSat-B1 infrared brightness temperature (packed int16, 0.07 deg)
``sounders``       AMSU-A / HIRS / MHS gridded climate data records (layer temperature, OLR, UTH)
``gebco``          GEBCO elevation, lazily subset by a bounding box
``stations``       station CSV / CF point tables; :func:`observation_table`
``standardize``    units (pint / cf_xarray), axes, lat / lon / depth conventions, checks
``files``          is a netCDF file complete? (a writer killed mid-write leaves it short: refused, named)
``regrid``         curvilinear -> rectilinear regridding (KD-tree on the sphere), depth interpolation
=================  ==========================================================================================

Adapters never import torch.

Example
-------
>>> import numpy as np, xarray as xr
>>> from geodiff.adapters.standardize import standardize
>>> ds = xr.Dataset({"sst": (("lat", "lon"), np.full((2, 2), 300.0), {"units": "K"})},
...                 coords={"lat": [10.0, -10.0], "lon": [0.0, 350.0]})
>>> out = standardize(ds, variables={"sst": "degC"})
>>> out.lat.values.tolist(), out.lon.values.tolist(), round(float(out.sst[0, 0]), 2)
([-10.0, 10.0], [-10.0, 0.0], 26.85)
"""

from __future__ import annotations

from geodiff.adapters import cmip6, en4, era5, files, gebco, gridsat, regrid, sounders, standardize, stations
from geodiff.adapters.regrid import EN4_DEPTHS, Regridder, en4_grid, interp_depth, regular_grid
from geodiff.adapters.standardize import (
    calendar_of,
    check_calendars,
    convert_units,
    find_axes,
    select_bbox,
    wrap_longitude,
)
from geodiff.adapters.stations import observation_table, read_stations

__all__ = [
    "EN4_DEPTHS",
    "Regridder",
    "calendar_of",
    "check_calendars",
    "cmip6",
    "convert_units",
    "en4",
    "en4_grid",
    "era5",
    "files",
    "find_axes",
    "gebco",
    "gridsat",
    "interp_depth",
    "observation_table",
    "read_stations",
    "regrid",
    "regular_grid",
    "select_bbox",
    "sounders",
    "standardize",
    "stations",
    "wrap_longitude",
]
