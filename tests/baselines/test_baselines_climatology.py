"""geodiff.baselines.climatology: field and zonal means, month grouping, hold-out fallback, errors."""

import numpy as np
import pytest
import xarray as xr

from geodiff.baselines import climatology
from geodiff.errors import ConfigError, CoordinateError, GeodiffError, GridError


@pytest.fixture
def training(months):
    rng = np.random.default_rng(0)
    lat = np.array([-10.0, 0.0, 10.0, 20.0])
    lon = np.array([0.0, 90.0, 180.0, 270.0, 300.0])
    depth = np.array([0.0, 100.0])
    values = rng.normal(size=(24, 2, 4, 5)) + np.arange(24)[:, None, None, None] % 12
    values[:, :, 0, 0] = np.nan  # land
    values[:, 1, 3, :2] = np.nan  # below the sea floor
    da = xr.DataArray(values, dims=("time", "depth", "lat", "lon"), name="t",
                      coords={"time": np.datetime64("2000-01-16", "ns") + np.arange(24) * np.timedelta64(1, "D")
                              * 30.44, "depth": depth, "lat": lat, "lon": lon},
                      attrs={"units": "degC", "standard_name": "sea_water_temperature", "long_name": "temperature"})
    return da.to_dataset().assign_attrs(history="made for a test")


def test_field_mean_and_land(training):
    clim = climatology(training)
    expected = training.t.mean("time")
    np.testing.assert_allclose(clim.t.isel(time=0).values, expected.values, rtol=1e-6)
    assert clim.t.dims == training.t.dims
    assert np.isnan(clim.t.values[:, 0, 0, 0]).all() and np.isnan(clim.t.values[:, 1, 3, :2]).all()
    assert clim.t.attrs["units"] == "degC" and clim.t.attrs["standard_name"] == "sea_water_temperature"
    assert clim.attrs["history"].startswith("made for a test\n")
    assert clim.attrs["cells_zonal_mean"] == 0


def test_by_month(training):
    clim = climatology(training, by="month")
    month = training.time.dt.month
    expected = training.t.groupby(month).mean("time")
    for t in range(24):
        np.testing.assert_allclose(clim.t.isel(time=t).values, expected.sel(month=int(month[t])).values, rtol=1e-6)


def test_held_out_cells_take_the_zonal_mean(training):
    box = (training.lat >= 0) & (training.lat <= 10) & (training.lon >= 90) & (training.lon <= 180)
    train = training.where(~box)
    clim = climatology(train, training)
    zonal = train.t.mean(("time", "lon"))
    got = clim.t.isel(time=0)
    for lat in (0.0, 10.0):
        for lon in (90.0, 180.0):
            for depth in (0.0, 100.0):
                expected = float(zonal.sel(lat=lat, depth=depth))
                assert float(got.sel(lat=lat, lon=lon, depth=depth)) == pytest.approx(expected)
    outside = got.sel(lat=-10.0, lon=270.0)
    np.testing.assert_allclose(outside.values, train.t.mean("time").sel(lat=-10.0, lon=270.0).values, rtol=1e-6)
    assert clim.attrs["cells_zonal_mean"] == 4 * 2 * 24


def test_zonal_mode_interpolates_in_latitude(training):
    target = training.t.isel(lat=[0, 1]).assign_coords(lat=[-5.0, 25.0])  # 25 N is beyond the training data
    clim = climatology(training, target, mode="zonal")
    zonal = training.t.mean(("time", "lon"))
    assert float(clim.t.isel(time=0, depth=0, lon=2).sel(lat=-5.0)) == pytest.approx(
        float(zonal.sel(depth=0, lat=[-10.0, 0.0]).mean()))
    # beyond the last training latitude with data: the nearest latitude's mean
    nearest = float(zonal.sel(depth=0, lat=20.0))
    assert float(clim.t.isel(time=0, depth=0, lon=2).sel(lat=25.0)) == pytest.approx(nearest)


def test_dataarray_and_sea_mask_template(training):
    template = xr.zeros_like(training.t)
    template.coords["sea_mask"] = training.t.isel(time=0).notnull().drop_vars("time")
    clim = climatology(training.t, template)
    assert np.isnan(clim.t.values[:, 0, 0, 0]).all()


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"mode": "nearest"}, ConfigError, "mode"),
        ({"by": "season"}, ConfigError, "by"),
    ],
)
def test_bad_arguments(training, kwargs, error, words):
    with pytest.raises(error, match=words):
        climatology(training, **kwargs)


def test_bad_grids(training):
    with pytest.raises(GridError, match="depth"):
        climatology(training, training.t.assign_coords(depth=[0.0, 50.0]))
    with pytest.raises(GridError, match="month"):
        climatology(training.isel(time=slice(0, 6)), training, by="month")
    with pytest.raises(CoordinateError, match="lat"):
        climatology(training.rename(lat="y"))
    with pytest.raises(GridError, match="variable"):
        climatology(training.assign(s=training.t))
    with pytest.raises(GridError, match="field"):
        climatology(training, training.t.assign_coords(lon=training.lon + 1.0), mode="field")
    with pytest.raises(GeodiffError):
        climatology(np.zeros(3))
