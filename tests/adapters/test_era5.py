"""ERA5: current CDS and legacy layouts, single and pressure levels, geopotential height."""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest
import xarray as xr

from geodiff.adapters import era5
from geodiff.testing import products
from geodiff.errors import DataError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("era5")
    out = {}
    for layout in ("cds", "legacy"):
        for kind in ("pressure", "single"):
            out[layout, kind] = products.write_era5(root / f"{layout}-{kind}", layout=layout, kind=kind)
    return out


def test_cds_layout(folder):
    files = folder["cds", "single"]
    names = sorted(f.name for f in files)
    assert names == ["data_stream-oper_stepType-accum.nc", "data_stream-oper_stepType-instant.nc"]
    with netCDF4.Dataset(folder["cds", "pressure"][0]) as nc:
        assert nc["z"].dimensions == ("valid_time", "pressure_level", "latitude", "longitude")
        assert nc["z"].units == "m**2 s**-2" and nc["valid_time"].dtype == np.int64
        assert nc["latitude"][0] == 90.0 and nc["longitude"][0] == 0.0
        assert list(nc["pressure_level"][:]) == [1000.0, 850.0, 500.0]
        assert "number" in nc.variables and "expver" in nc.variables


def test_legacy_layout_is_packed(folder):
    with netCDF4.Dataset(folder["legacy", "pressure"][0]) as nc:
        z = nc["z"]
        assert z.dimensions == ("time", "level", "latitude", "longitude") and z.dtype == np.int16
        assert hasattr(z, "scale_factor") and hasattr(z, "add_offset") and z._FillValue == -32767
        assert nc["level"].units == "millibars" and list(nc["level"][:]) == [500, 850, 1000]


@pytest.mark.parametrize("layout", ["cds", "legacy"])
def test_pressure_levels_are_canonical(folder, layout):
    ds = era5.open_dataset(folder[layout, "pressure"])
    assert ds.z.dims == ("time", "level", "lat", "lon")
    assert ds.level.values.tolist() == [1000.0, 850.0, 500.0] and ds.level.attrs["units"] == "hPa"
    assert bool((ds.lat.diff("lat") > 0).all()) and float(ds.lat[0]) == -90.0
    assert float(ds.lon[0]) == -180.0 and float(ds.lon[-1]) < 180.0
    assert ds.z.attrs["units"] == "m**2 s**-2" and ds.attrs["geodiff_era5_layout"] == layout
    assert ds.time.dtype.kind == "M" and ds.sizes["time"] == 4


def test_both_layouts_hold_the_same_values(folder):
    cds = era5.open_dataset(folder["cds", "pressure"]).load()
    legacy = era5.open_dataset(folder["legacy", "pressure"]).load()
    np.testing.assert_array_equal(cds.time.values, legacy.time.values)
    for name in ("z", "t"):
        scale = float(cds[name].max() - cds[name].min()) / 65533.0
        np.testing.assert_allclose(legacy[name].values, cds[name].values, atol=scale)  # int16 packing step


def test_single_levels_merge_step_types(folder):
    ds = era5.open_dataset(folder["cds", "single"])
    assert sorted(ds.data_vars) == ["msl", "t2m", "tp"]
    assert ds.t2m.dims == ("time", "lat", "lon") and "expver" in ds.coords and ds.expver.dims == ("time",)
    assert "combined 2 ERA5 files" in ds.attrs["history"]
    legacy = era5.open_dataset(folder["legacy", "single"], variables=["t2m"])
    assert list(legacy.data_vars) == ["t2m"]


def test_geopotential_height_with_record(folder):
    z = era5.open_dataset(folder["cds", "pressure"]).z
    zh = era5.open_dataset(folder["cds", "pressure"], geopotential_height=True).z
    np.testing.assert_allclose(zh.values, z.values / 9.80665, rtol=1e-6)
    assert zh.attrs["units"] == "m" and zh.attrs["standard_name"] == "geopotential_height"
    assert zh.attrs["long_name"] == "Geopotential height"
    assert float(zh.sel(level=500.0).mean()) == pytest.approx(5570.0 + 150 * 2 / np.pi, rel=0.02)


def test_legacy_expver_dimension_is_combined(tmp_path):
    times = np.datetime64("2024-01-01T00", "ns") + np.arange(4) * np.timedelta64(1, "h")
    data = np.full((4, 2, 2, 3), np.nan)
    data[:2, 0] = 280.0  # ERA5 final
    data[2:, 1] = 281.0  # ERA5T
    ds = xr.Dataset({"t2m": (("time", "expver", "latitude", "longitude"), data, {"units": "K"})},
                    coords={"time": times, "expver": [1, 5], "latitude": [10.0, -10.0],
                            "longitude": [0.0, 120.0, 240.0]})
    ds.to_netcdf(tmp_path / "mixed.nc")
    out = era5.open_dataset(tmp_path / "mixed.nc")
    assert out.t2m.dims == ("time", "lat", "lon") and not out.t2m.isnull().any()
    assert out.expver.values.tolist() == ["1", "1", "5", "5"]
    assert "expver" in out.attrs["history"]


def test_bad_inputs(folder, tmp_path):
    with pytest.raises(DataError, match="not found"):
        era5.open_dataset(folder["cds", "pressure"], variables=["q"])
    with pytest.raises(DataError, match="no 'z'"):
        era5.open_dataset(folder["cds", "single"], geopotential_height=True)
    with pytest.raises(DataError, match="mix layouts"):
        era5.open_dataset(folder["cds", "pressure"] + folder["legacy", "pressure"])
    with pytest.raises(DataError, match="no ERA5 netCDF files"):
        era5.open_dataset(tmp_path)
