"""The Levitus 1-degree global annual temperature climatology (Debian ``ferret-datasets``) in canonical form.

Shared by the scaling benchmarks: 20 depths 0-5000 m on a 180 x 360 grid, the largest real global field on these
machines. ``GEODIFF_FERRET_DATA`` names the folder of ``levitus_climatology.cdf`` (``apt-get download
ferret-datasets`` then ``dpkg -x``; files under ``usr/share/ferret-vis/data``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

FILE = "levitus_climatology.cdf"


def levitus_path() -> Path:
    """The Levitus file, or SystemExit naming what is missing."""
    folder = os.environ.get("GEODIFF_FERRET_DATA")
    path = Path(folder or "") / FILE
    if not folder or not path.is_file():
        raise SystemExit(f"set GEODIFF_FERRET_DATA to the folder holding {FILE} (Debian ferret-datasets)")
    return path


def open_levitus(coarsen: int = 1) -> xr.Dataset:
    """``thetao (time=1, depth=20, lat, lon)`` in degC, lon rolled to -180..180, NaN on land and below the sea
    floor; ``coarsen`` > 1 takes block means over ``coarsen x coarsen`` cells (ocean cells only, NaN when all land)."""
    with xr.open_dataset(levitus_path(), decode_times=False) as src:
        temp = src["TEMP"].load()
    values = temp.values.astype("float32")
    values[~np.isfinite(values) | (np.abs(values) > 1e20)] = np.nan
    depth = np.asarray(temp["ZAXLEVITR"].values, dtype=float)
    lat = np.asarray(temp["YAXLEVITR"].values, dtype=float)
    lon = (np.asarray(temp["XAXLEVITR"].values, dtype=float) + 180.0) % 360.0 - 180.0
    order = np.argsort(lon)
    ds = xr.Dataset(
        {"thetao": (("time", "depth", "lat", "lon"), values[None][..., order],
                    {"units": "degC", "standard_name": "sea_water_potential_temperature",
                     "long_name": "Levitus annual climatology of temperature"})},
        coords={"time": pd.to_datetime(["2000-07-01"]), "depth": ("depth", depth, {"units": "m", "positive": "down"}),
                "lat": ("lat", lat, {"units": "degrees_north"}), "lon": ("lon", lon[order], {"units": "degrees_east"})},
        attrs={"source": "Levitus climatology, Debian ferret-datasets (levitus_climatology.cdf)"},
    )
    if coarsen > 1:
        ds = ds.coarsen(lat=coarsen, lon=coarsen, boundary="trim").mean()  # NaN-skipping: ocean cells only
    return ds
