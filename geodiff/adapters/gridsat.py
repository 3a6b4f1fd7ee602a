"""GridSat-B1 (NOAA CDR of geostationary infrared brightness temperature) -> canonical datasets.

Files ``GRIDSAT-B1.YYYY.MM.DD.HH.v02r01.nc`` hold one time on a 0.07 deg grid (70 S..70 N, 180 W..180 E;
2000 x 5143 cells). ``irwin_cdr`` (IR window, CDR quality) and the other channels are int16 packed with
``scale_factor = 0.01`` and ``add_offset = 200`` (kelvin) and ``_FillValue = -31999``; xarray unpacks them (the
packed ``valid_min``/``valid_max`` are unpacked before any comparison). :func:`open_dataset` reads lazily and
subsets by a bounding box (which may cross the dateline) before anything is loaded.

Example
-------
>>> import tempfile
>>> from geodiff.adapters import gridsat
>>> from geodiff.testing import products
>>> path = products.write_gridsat(tempfile.mkdtemp())
>>> ds = gridsat.open_dataset(path, bbox=(170.0, -2.0, -170.0, 2.0))
>>> ds.irwin_cdr.dims, ds.irwin_cdr.attrs["units"], float(ds.lon[0]), ds.attrs["geodiff_lon_convention"]
(('time', 'lat', 'lon'), 'K', 170.0, '0..360')
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import xarray as xr

from geodiff.adapters.files import netcdf_files, open_netcdf_files
from geodiff.adapters.standardize import select_bbox, standardize

__all__ = ["CHANNELS", "open_dataset"]

#: GridSat-B1 brightness-temperature channels and their canonical unit.
CHANNELS: dict[str, str] = {"irwin_cdr": "K", "irwin_2": "K", "irwin_vza_adj": "K", "irwvp": "K", "vschn": "1"}


def open_dataset(
    paths: str | Path | Sequence[str | Path],
    variables: Sequence[str] = ("irwin_cdr",),
    *,
    bbox: Sequence[float] | None = None,
    lon: str = "-180..180",
) -> xr.Dataset:
    """GridSat-B1 file(s) as a canonical ``(time, lat, lon)`` dataset in kelvin, lazily subset to ``bbox``.

    ``bbox = (west, south, east, north)`` in degrees; ``west > east`` crosses the dateline (the result's
    longitudes then run continuously in 0..360, recorded). Only the selected cells are read.
    """
    files = netcdf_files(paths, "GridSat-B1")
    ds = open_netcdf_files(files, "GridSat-B1", variables)
    ds = ds[list(variables)]
    ds = standardize(ds, variables={}, lon=lon)  # coordinates only: nothing is read yet
    if bbox is not None:
        ds = select_bbox(ds, bbox)
    out = standardize(ds, variables={v: CHANNELS.get(v, ds[v].attrs.get("units")) for v in variables},
                      lon=ds.attrs["geodiff_lon_convention"])
    out.attrs["geodiff_source_files"] = json.dumps([f.name for f in files])
    return out
