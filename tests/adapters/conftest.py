"""Shared fixtures for the adapter tests: format-faithful files written once per session."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from geodiff.testing import products


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """A data root holding one file (set) of every catalog entry, laid out as data_catalog/ describes."""
    return products.write_catalog_tree(tmp_path_factory.mktemp("geodiff-data"))


@pytest.fixture
def grid_ds():
    """A small rectilinear dataset in canonical form (time, depth, lat, lon), degC, with land NaN."""
    lat = np.array([-10.0, 0.0, 10.0])
    lon = np.array([-170.0, -90.0, 0.0, 90.0])
    depth = np.array([5.0, 50.0])
    values = np.full((2, 2, 3, 4), 15.0, dtype="float32")
    values[:, :, 0, 0] = np.nan
    return xr.Dataset(
        {"thetao": (("time", "depth", "lat", "lon"), values,
                    {"units": "degC", "standard_name": "sea_water_potential_temperature", "long_name": "temp"})},
        coords={
            "time": np.array(["2000-01-15", "2000-02-15"], dtype="datetime64[ns]"),
            "depth": ("depth", depth, {"units": "m", "positive": "down"}),
            "lat": ("lat", lat, {"units": "degrees_north"}),
            "lon": ("lon", lon, {"units": "degrees_east"}),
        },
        attrs={"history": "created for a test"},
    )
