"""Fixtures of the io tests (datasets built in io_datasets.py)."""

import numpy as np
import pytest
import xarray as xr
from tests.io.io_datasets import make_ocean


@pytest.fixture
def ocean() -> xr.Dataset:
    return make_ocean()


@pytest.fixture
def ocean_nc(tmp_path) -> xr.Dataset:
    """``make_ocean()`` written to netCDF (packing, fill values, a noleap calendar) and read back."""
    path = tmp_path / "ocean.nc"
    make_ocean().to_netcdf(
        path,
        encoding={
            "thetao": {"zlib": True, "complevel": 1, "_FillValue": np.float32(1e20)},
            "so": {"dtype": "float64", "_FillValue": -999.0},
            "time": {"units": "days since 1850-01-01", "calendar": "noleap", "dtype": "int32"},
        },
        unlimited_dims=["time"],
    )
    with xr.open_dataset(path, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)) as ds:
        return ds.load()
