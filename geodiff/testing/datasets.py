"""Tiny canonical datasets for tests and examples: small, deterministic, with land cells.

Example
-------
>>> from geodiff.testing.datasets import synthetic_ocean
>>> ds = synthetic_ocean(times=2)
>>> dict(ds.thetao.sizes), ds.thetao.attrs["units"], bool(ds.thetao.isel(lon=0).isnull().all())
({'time': 2, 'depth': 2, 'lat': 8, 'lon': 16}, 'degC', True)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["DEPTHS", "LAT", "LON", "LAND_LON", "VARIABLE", "synthetic_ocean"]

#: depths (m) of :func:`synthetic_ocean`
DEPTHS = (0.0, 50.0)
#: latitudes (degrees north, ascending) of :func:`synthetic_ocean`
LAT = np.linspace(-15.0, 15.0, 8)
#: longitudes (degrees east) of :func:`synthetic_ocean`
LON = np.linspace(0.0, 31.0, 16)
#: longitude columns ``0 .. LAND_LON - 1`` are land at every depth (a chunk of 8 columns is all land)
LAND_LON = 8
#: name of the data variable of :func:`synthetic_ocean`
VARIABLE = "thetao"


def synthetic_ocean(times: int = 6, seed: int = 0) -> xr.Dataset:
    """Canonical ``thetao (time, depth, lat, lon)`` in degC (daily from 2001-01-01), NaN on the western land half.

    Values: ``20 - 0.3 |lat| - 0.05 depth`` plus Gaussian noise of 0.5 degC drawn from ``seed``.
    """
    rng = np.random.default_rng(seed)
    shape = (times, len(DEPTHS), len(LAT), len(LON))
    base = 20.0 - 0.3 * np.abs(LAT)[None, None, :, None] - 0.05 * np.asarray(DEPTHS)[None, :, None, None]
    values = (base + rng.normal(0.0, 0.5, shape)).astype("float32")
    values[..., :LAND_LON] = np.nan
    return xr.Dataset(
        {VARIABLE: (("time", "depth", "lat", "lon"), values,
                    {"units": "degC", "standard_name": "sea_water_potential_temperature",
                     "long_name": "sea water potential temperature"})},
        coords={"time": pd.date_range("2001-01-01", periods=times, freq="D"),
                "depth": ("depth", np.asarray(DEPTHS), {"units": "m", "positive": "down"}),
                "lat": ("lat", LAT, {"units": "degrees_north"}), "lon": ("lon", LON, {"units": "degrees_east"})},
        attrs={"title": "synthetic ocean", "history": "made by geodiff.testing.datasets.synthetic_ocean"},
    )
