"""Station tables -> observation tables; observation-table checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from geodiff.testing import products
from geodiff.adapters.stations import observation_table, read_stations
from geodiff.errors import DataError, ObservationError


def test_csv_to_observation_table_with_units(tmp_path):
    path = products.write_stations_csv(tmp_path / "stations.csv")
    frame = pd.read_csv(path)
    obs = read_stations(path, variable="t2m", units="degC", to_units="K", error_column="t2m_error")
    kept = frame.dropna(subset=["t2m"])
    np.testing.assert_allclose(obs.value.values, kept.t2m.values + 273.15)
    np.testing.assert_allclose(obs.error_std.values, 0.5)  # an error is a difference: not shifted
    assert obs.attrs["n_missing"] == 1 and obs.value.attrs["units"] == "K"
    assert obs.obs_id.values[0] == "ST000@2000-01-01T00:00:00"
    assert obs.time.dtype == np.dtype("datetime64[ns]") and "converted 't2m'" in obs.attrs["history"]


def test_dataframe_and_constant_error():
    frame = pd.DataFrame({"lat": [1.0], "lon": [359.0], "time": ["2000-01-01"], "sst": [20.0], "station_id": ["a"]})
    obs = read_stations(frame, variable="sst", units="degC", error_std=0.3)
    assert obs.lon.values.tolist() == [-1.0] and obs.error_std.values.tolist() == [0.3]


def test_cf_timeseries_netcdf(tmp_path):
    path = products.write_stations_netcdf(tmp_path / "ts.nc")
    obs = read_stations(path, variable="tas", error_std=0.5, station="station_name")
    raw = xr.open_dataset(path)
    assert obs.sizes["obs"] == raw.tas.size - 1 and obs.value.attrs["units"] == "K"
    first = obs.where(obs.station == "WMO00001", drop=True)
    np.testing.assert_allclose(first.value.values, raw.tas.isel(station=1).values, rtol=1e-6)
    np.testing.assert_allclose(first.lat.values, float(raw.lat[1]))


def test_station_inputs_are_checked(tmp_path):
    path = products.write_stations_csv(tmp_path / "stations.csv")
    with pytest.raises(DataError, match="give units="):
        read_stations(path, variable="t2m", error_std=0.5)
    with pytest.raises(ObservationError, match="error_std"):
        read_stations(path, variable="t2m", units="degC")
    with pytest.raises(DataError, match="no column 'rh'"):
        read_stations(path, variable="rh", units="%", error_std=1.0)
    with pytest.raises(DataError, match="does not exist"):
        read_stations(tmp_path / "none.csv", variable="t2m", units="degC", error_std=1.0)


@pytest.mark.parametrize("field,value,match", [
    ("lat", 95.0, "column 'lat'"), ("lon", 1e20, "column 'lon'"), ("error_std", -1.0, "column 'error_std'"),
    ("value", np.inf, "column 'value'"), ("time", "not a time", "column 'time'"), ("depth", -5.0, "column 'depth'")])
def test_observation_table_checks(field, value, match):
    kwargs = dict(value=[1.0, 2.0], error_std=[0.1, 0.1], lat=[0.0, 1.0], lon=[0.0, 1.0],
                  time=["2000-01-01", "2000-01-02"], variable="t", source="s", depth=[1.0, 2.0])
    kwargs[field] = [kwargs[field][0], value] if isinstance(kwargs[field], list) else value
    with pytest.raises(ObservationError, match=match):
        observation_table(**kwargs)


def test_observation_ids_are_unique():
    with pytest.raises(ObservationError, match="obs_id"):
        observation_table(value=[1.0, 2.0], error_std=1.0, lat=0.0, lon=0.0, time="2000-01-01", variable="t",
                          source="s", obs_id=["a", "a"])


def test_observation_table_zarr_round_trip(tmp_path):
    obs = read_stations(products.write_stations_csv(tmp_path / "s.csv"), variable="t2m", units="degC",
                        error_std=0.5)
    obs.to_zarr(tmp_path / "obs.zarr", consolidated=False)
    back = xr.open_zarr(tmp_path / "obs.zarr", consolidated=False).load()
    assert back.attrs == obs.attrs
    assert back.obs_id.values.tolist() == obs.obs_id.values.tolist()
    np.testing.assert_array_equal(back.value.values, obs.value.values)
