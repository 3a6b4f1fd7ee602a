"""GridSat-B1 (packed int16), sounder climate data records, GEBCO (lazy subsets across the dateline)."""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest

from geodiff.adapters import gebco, gridsat, sounders
from geodiff.testing import products
from geodiff.errors import DataError


@pytest.fixture(scope="module")
def gridsat_file(tmp_path_factory):
    return products.write_gridsat(tmp_path_factory.mktemp("gridsat"))


@pytest.fixture(scope="module")
def gebco_file(tmp_path_factory):
    return products.write_gebco(tmp_path_factory.mktemp("gebco") / "GEBCO_2023.nc")


def test_gridsat_layout_is_packed(gridsat_file):
    assert gridsat_file.name == "GRIDSAT-B1.2000.01.01.00.v02r01.nc"
    with netCDF4.Dataset(gridsat_file) as nc:
        var = nc["irwin_cdr"]
        assert var.dtype == np.int16 and var.dimensions == ("time", "lat", "lon")
        assert var.scale_factor == np.float32(0.01) and var.add_offset == np.float32(200.0)
        assert var._FillValue == -31999 and var.units == "K"
        assert nc.dimensions["lon"].size == 5143
        np.testing.assert_allclose(np.diff(nc["lat"][:]), 0.07, atol=1e-4)


def test_gridsat_unpacked_and_subset_across_the_dateline(gridsat_file):
    ds = gridsat.open_dataset(gridsat_file, bbox=(175.0, -1.0, -170.0, 1.0))
    assert ds.irwin_cdr.chunks is not None  # still lazy
    assert ds.attrs["geodiff_lon_convention"] == "0..360"
    lon = ds.lon.values
    assert lon[0] >= 175.0 and lon[-1] <= 190.0 and np.all(np.diff(lon) > 0)
    with netCDF4.Dataset(gridsat_file) as nc:
        nc.set_auto_maskandscale(False)
        raw = nc["irwin_cdr"][0]
        raw_lon = nc["lon"][:]
        raw_lat = nc["lat"][:]
    j = int(np.argmin(np.abs(raw_lon - (-172.01))))
    i = int(np.argmin(np.abs(raw_lat - 0.0)))
    expected = raw[i, j] * np.float32(0.01) + np.float32(200.0)
    got = ds.irwin_cdr.sel(lat=raw_lat[i], lon=raw_lon[j] + 360.0, method="nearest").isel(time=0).values.item()
    assert got == pytest.approx(float(expected), abs=1e-3)
    assert ds.irwin_cdr.attrs["units"] == "K" and "dateline" in ds.attrs["history"]


def test_gridsat_fill_value_is_nan(gridsat_file):
    ds = gridsat.open_dataset(gridsat_file, bbox=(-180.0, -1.0, -175.0, 1.0)).load()
    assert ds.irwin_cdr.isnull().any()  # the strip without coverage
    assert float(ds.irwin_cdr.min()) > 150.0


def test_gridsat_missing_variable(gridsat_file):
    with pytest.raises(DataError, match="'irwin_vza_adj'"):
        gridsat.open_dataset(gridsat_file, variables=("irwin_vza_adj",))


@pytest.mark.parametrize("product,variable,units", [
    ("amsua_tmt", "tcdr_TMT", "K"), ("hirs_olr", "olr", "W m-2"), ("hirs_uth", "uth", "%"), ("mhs_uth", "uth", "%")])
def test_sounder_products(tmp_path, product, variable, units):
    path = products.write_sounder(tmp_path, product)
    assert sounders.product_of(path) == product
    ds = sounders.open_dataset(path)
    assert list(ds.data_vars) == [variable] and ds[variable].attrs["units"] == units
    assert ds[variable].dims == ("time", "lat", "lon") and float(ds.lon[0]) < 0.0
    with netCDF4.Dataset(path) as nc:
        assert nc["lon"][0] > 0.0  # the file is 0..360


def test_sounder_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="cannot tell the sounder product"):
        sounders.product_of("something.nc")
    path = products.write_sounder(tmp_path, "hirs_olr")
    with pytest.raises(DataError, match="variables \\['uth'\\] not found"):
        sounders.open_dataset(path, product="hirs_uth")


def test_gebco_layout_is_full_size(gebco_file):
    with netCDF4.Dataset(gebco_file) as nc:
        assert nc["elevation"].shape == (43200, 86400) and nc["elevation"].dtype == np.int16
        assert nc["elevation"].units == "m" and nc["elevation"].chunking() == [240, 240]
    assert gebco_file.stat().st_size < 5_000_000  # the file is not 7.5 GB: unwritten chunks


def test_gebco_subset_across_the_dateline_is_lazy_and_right(gebco_file):
    ds = gebco.open_dataset(gebco_file, bbox=(179.5, 2.0, -179.5, 2.5))
    elev = ds.elevation
    assert elev.chunks is not None and elev.shape == (120, 240)
    assert elev.data.npartitions <= 4  # only the chunks that hold the box are in the graph
    assert ds.attrs["geodiff_lon_convention"] == "0..360"
    lon, lat = ds.lon.values, ds.lat.values
    assert 179.5 <= lon[0] < lon[-1] <= 180.5 and np.all(np.diff(lon) > 0)
    expected = np.round(-4000.0 + 10.0 * (lat[:, None] + (lon[None, :] - 170.0)))
    np.testing.assert_array_equal(elev.values, expected.astype("int16"))


def test_gebco_plain_box_and_whole_grid_stay_lazy(gebco_file):
    ds = gebco.open_dataset(gebco_file, bbox=(171.0, -1.0, 172.0, 0.0))
    assert ds.elevation.shape == (240, 240) and ds.attrs["geodiff_lon_convention"] == "-180..180"
    whole = gebco.open_dataset(gebco_file)
    assert whole.elevation.shape == (43200, 86400) and whole.elevation.chunks is not None


def test_gebco_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        gebco.open_dataset(tmp_path / "GEBCO_2023.nc", bbox=(0, 0, 1, 1))
