"""GEBCO gridded bathymetry (``GEBCO_YYYY.nc``: ``elevation``, int16 metres, 15 arc-second) -> lazy subsets.

The global grid is 43200 x 86400 (7.5 GB as int16): :func:`open_dataset` opens it lazily with dask and returns
only the cells inside a bounding box, which may cross the dateline; nothing outside the box is read. Elevation is
positive up (land) and negative below sea level, in metres (``standard_name`` height_above_mean_sea_level).

Example
-------
>>> import tempfile, pathlib
>>> from geodiff.adapters import gebco
>>> from geodiff.testing import products
>>> path = products.write_gebco(pathlib.Path(tempfile.mkdtemp()) / "GEBCO_2023.nc")
>>> topo = gebco.open_dataset(path, bbox=(179.0, 0.0, -179.0, 1.0))
>>> topo.elevation.shape, topo.elevation.attrs["units"], type(topo.elevation.data).__module__.split(".")[0]
((240, 480), 'm', 'dask')
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import xarray as xr

from geodiff.adapters.files import INCOMPLETE, check_netcdf
from geodiff.adapters.standardize import select_bbox, standardize
from geodiff.errors import DataError

__all__ = ["open_dataset"]


def open_dataset(
    path: str | Path,
    bbox: Sequence[float] | None = None,
    *,
    variable: str = "elevation",
    lon: str = "-180..180",
    chunks: Any = None,
) -> xr.Dataset:
    """The GEBCO ``variable`` inside ``bbox = (west, south, east, north)`` as a lazy canonical ``(lat, lon)`` dataset.

    ``bbox=None`` returns the whole grid, still lazy. ``chunks`` is passed to xarray (default: the file's own
    chunks). The values are read only when used (``.load()``, ``.values``, arithmetic that computes).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"GEBCO file {str(path)!r} does not exist")
    check_netcdf(path)
    try:
        ds = xr.open_dataset(path, chunks={} if chunks is None else chunks)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot open GEBCO file {str(path)!r} ({INCOMPLETE} or not netCDF): {err}") from err
    if variable not in ds.data_vars:
        raise DataError(f"GEBCO variable {variable!r} not in {path.name}; found {list(ds.data_vars)}")
    ds = ds[[variable]]
    ds = standardize(ds, variables={}, lon=lon, check_values=False)
    if bbox is not None:
        ds = select_bbox(ds, bbox)
    out = standardize(ds, variables={variable: "m"}, lon=ds.attrs["geodiff_lon_convention"], check_values=False)
    out.attrs["geodiff_source_files"] = json.dumps([path.name])
    return out
