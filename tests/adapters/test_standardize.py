"""standardize: units, axes, conventions, checks, records; every bad input raises a specific GeodiffError."""

from __future__ import annotations

import json

import cftime
import numpy as np
import pytest
import xarray as xr

from geodiff.adapters.standardize import (
    calendar_of,
    check_calendars,
    convert_units,
    find_axes,
    parse_units,
    select_bbox,
    standardize,
    wrap_longitude,
)
from geodiff.errors import CalendarError, CoordinateError, DataError, GeodiffWarning, UnitsError


def _field(values, units, name="thetao", **attrs):
    values = np.asarray(values, dtype="float64")
    return xr.Dataset(
        {name: (("lat", "lon"), values.reshape(1, -1), {"units": units, **attrs})},
        coords={"lat": [0.0], "lon": np.arange(values.size, dtype="float64")},
    )


# --------------------------------------------------------------------------------------------- units


def test_kelvin_to_celsius_and_back():
    ds = _field([271.15, 300.0], "K")
    out = standardize(ds, variables={"thetao": "degC"})
    np.testing.assert_allclose(out.thetao.values, [[-2.0, 26.85]])
    assert out.thetao.attrs["units"] == "degC"
    back = standardize(out, variables={"thetao": "K"})
    np.testing.assert_allclose(back.thetao.values, [[271.15, 300.0]])


def test_float32_stays_float32():
    ds = _field([280.0], "kelvin")
    ds["thetao"] = ds.thetao.astype("float32")
    assert standardize(ds, variables={"thetao": "degC"}).thetao.dtype == np.float32


def test_geopotential_to_height_and_record():
    ds = _field([9806.65, 2 * 9806.65], "m**2 s**-2", name="z", standard_name="geopotential")
    out = standardize(ds, variables={"z": "m"})
    np.testing.assert_allclose(out.z.values, [[1000.0, 2000.0]])
    assert out.z.attrs["standard_name"] == "geopotential_height"
    assert "g0=9.80665" in out.attrs["history"]
    back, changes = convert_units(out.z, "m2 s-2")
    np.testing.assert_allclose(back.values, ds.z.values)
    assert back.attrs["standard_name"] == "geopotential" and changes


def test_salinity_scales_are_the_same_number():
    ds = _field([35.0], "psu", name="so")
    out = standardize(ds, variables={"so": "1e-3"})
    assert out.so.item() == 35.0 and out.so.attrs["units"] == "1e-3"
    assert any("relabelled" in c for c in json.loads(out.attrs["geodiff_standardize"]))


def test_spellings_pint_misreads_are_fixed():
    assert str(parse_units("degrees C", "x")) == "degree_Celsius"
    assert str(parse_units("millibars", "x")) == "millibar"


@pytest.mark.parametrize("attrs", [{}, {"units": ""}])
def test_missing_units_raise_naming_the_variable(attrs):
    ds = xr.Dataset({"thetao": (("lat", "lon"), [[1.0]], attrs)}, coords={"lat": [0.0], "lon": [0.0]})
    with pytest.raises(UnitsError, match="'thetao'.*no 'units'"):
        standardize(ds, variables={"thetao": "degC"})


def test_unparseable_units_raise_naming_the_variable():
    with pytest.raises(UnitsError, match="'thetao'.*'furlongs per blorg'"):
        standardize(_field([1.0], "furlongs per blorg"), variables={"thetao": "degC"})


def test_incompatible_units_raise():
    with pytest.raises(UnitsError, match="'thetao'.*cannot be converted"):
        standardize(_field([1.0], "m"), variables={"thetao": "degC"})


def test_kelvin_with_celsius_values_raises():
    with pytest.raises(UnitsError, match="'thetao'.*'K'.*-2.*35.*degC"):
        standardize(_field([-2.0, 10.0, 35.0], "K"), variables={"thetao": "degC"})


def test_celsius_with_kelvin_values_raises():
    with pytest.raises(UnitsError, match="'thetao'.*'degC'.*300.*kelvin"):
        standardize(_field([275.0, 300.0], "degC"), variables={"thetao": "degC"})


def test_value_checks_can_be_switched_off():
    out = standardize(_field([-2.0], "K"), variables={"thetao": "K"}, check_values=False)
    assert out.thetao.item() == -2.0


def test_missing_variable_raises_data_error():
    with pytest.raises(DataError, match="'so'"):
        standardize(_field([280.0], "K"), variables={"so": "1e-3"})


def test_contradictory_valid_range_warns_and_never_masks():
    """EN4 analyses: temperature in kelvin with valid_min/valid_max given in degC."""
    ds = _field([271.5, 290.0, 303.0], "kelvin", valid_min=-2.0, valid_max=45.0)
    with pytest.warns(GeodiffWarning, match="'thetao'.*valid_max=45"):
        out = standardize(ds, variables={"thetao": "degC"})
    assert not np.isnan(out.thetao.values).any()  # nothing masked
    np.testing.assert_allclose(out.thetao.values, [[-1.65, 16.85, 29.85]], atol=1e-9)
    assert "valid_max" not in out.thetao.attrs
    assert "contradictory" in out.attrs["history"]
    # the second run has nothing left to warn about and changes nothing
    xr.testing.assert_identical(standardize(out, variables={"thetao": "degC"}), out)


def test_consistent_valid_range_is_converted():
    ds = _field([280.0, 290.0], "K", valid_range=np.array([260.0, 320.0]))
    out = standardize(ds, variables={"thetao": "degC"})
    np.testing.assert_allclose(out.thetao.attrs["valid_range"], [-13.15, 46.85])


def test_packed_valid_range_is_unpacked_before_comparing():
    ds = _field([250.0, 290.0], "K")
    ds.thetao.attrs.update(valid_min=np.int16(-20000), valid_max=np.int16(16000))
    ds.thetao.encoding.update(scale_factor=0.01, add_offset=200.0, dtype="int16")
    out = standardize(ds, variables={"thetao": "K"})  # no warning (warnings are errors in these tests)
    assert out.thetao.attrs["valid_max"] == 16000


# --------------------------------------------------------------------------------------------- axes


def test_axes_are_found_and_renamed(grid_ds):
    ds = grid_ds.rename({"lat": "latitude", "lon": "longitude", "depth": "lev", "time": "valid_time"})
    out = standardize(ds)
    assert out.thetao.dims == ("time", "depth", "lat", "lon")
    assert "renamed" in out.attrs["history"]


def test_missing_latitude_raises():
    ds = xr.Dataset({"x": (("a", "lon"), [[1.0]])}, coords={"lon": [0.0]})
    with pytest.raises(CoordinateError, match="no latitude coordinate"):
        standardize(ds)


def test_ambiguous_latitude_names_candidates():
    ds = _field([280.0], "K")
    ds = ds.assign_coords(grid_lat=("lat", [0.5], {"standard_name": "latitude"}))
    with pytest.raises(CoordinateError, match=r"ambiguous lat axis: candidates \['grid_lat', 'lat'\]"):
        standardize(ds)
    out = standardize(ds, coords={"lat": "lat"})
    assert "lat" in out.dims


def test_bounds_are_not_candidates():
    ds = _field([280.0], "K").assign(lat_bnds=(("lat", "bnds"), [[-0.5, 0.5]], {"units": "degrees_north"}))
    ds.lat.attrs["bounds"] = "lat_bnds"
    assert find_axes(ds)["lat"] == "lat"


def test_latitude_out_of_range_raises():
    ds = _field([280.0], "K").assign_coords(lat=[95.0])
    with pytest.raises(CoordinateError, match="latitude coordinate 'lat'.*outside -90..90"):
        standardize(ds)


@pytest.mark.parametrize("bad", [400.0, -200.0])
def test_longitude_out_of_range_raises(bad):
    ds = _field([280.0, 281.0], "K").assign_coords(lon=[10.0, bad])
    with pytest.raises(CoordinateError, match="longitude coordinate 'lon'.*outside -180..360"):
        standardize(ds)


def test_ferret_longitudes_need_explicit_wrap():
    lon = np.arange(20.5, 380.0, 20.0)  # 20.5 .. 360.5 E, like Ferret grids
    ds = xr.Dataset({"t": (("lat", "lon"), np.ones((1, lon.size)), {"units": "degC"})},
                    coords={"lat": [0.0], "lon": lon})
    with pytest.raises(CoordinateError, match="outside -180..360"):
        standardize(ds)
    out = standardize(ds, wrap_out_of_range=True)
    assert np.all(np.diff(out.lon.values) > 0) and out.lon.min() >= -180 and out.lon.max() < 180


def test_sentinel_in_curvilinear_latitude_raises():
    lat = np.array([[10.0, 1e20], [20.0, 20.0]])
    ds = xr.Dataset({"thetao": (("j", "i"), np.ones((2, 2)), {"units": "degC"})},
                    coords={"latitude": (("j", "i"), lat, {"units": "degrees_north"}),
                            "longitude": (("j", "i"), np.zeros((2, 2)), {"units": "degrees_east"})})
    with pytest.raises(CoordinateError, match="'latitude'.*fill/sentinel.*1e\\+20"):
        standardize(ds)


def test_nan_in_longitude_raises():
    ds = _field([280.0, 281.0], "K").assign_coords(lon=[0.0, np.nan])
    with pytest.raises(CoordinateError, match="'lon'.*non-finite"):
        standardize(ds)


def test_duplicate_latitude_raises():
    ds = xr.Dataset({"t": (("lat", "lon"), np.ones((2, 1)), {"units": "degC"})},
                    coords={"lat": [5.0, 5.0], "lon": [0.0]})
    with pytest.raises(CoordinateError, match="latitude coordinate 'lat' has duplicate values"):
        standardize(ds)


def test_non_monotonic_latitude_raises():
    ds = xr.Dataset({"t": (("lat", "lon"), np.ones((3, 1)), {"units": "degC"})},
                    coords={"lat": [0.0, 10.0, 5.0], "lon": [0.0]})
    with pytest.raises(CoordinateError, match="latitude coordinate 'lat' is not monotonic"):
        standardize(ds)


def test_duplicate_longitude_modulo_360_raises():
    ds = _field([1.0, 2.0, 3.0], "degC").assign_coords(lon=[0.0, 180.0, 360.0])
    with pytest.raises(CoordinateError, match="longitude coordinate 'lon' has duplicate positions"):
        standardize(ds)


def test_shuffled_longitude_raises():
    ds = _field([1.0, 2.0, 3.0, 4.0], "degC").assign_coords(lon=[0.0, 90.0, 45.0, 135.0])
    with pytest.raises(CoordinateError, match="longitude coordinate 'lon' is not monotonic"):
        standardize(ds)


@pytest.mark.parametrize("times", [["2000-01-01", "2000-01-01"], ["2000-01-01", "2000-03-01", "2000-02-01"]])
def test_bad_time_axis_raises(times):
    ds = xr.Dataset({"t": (("time", "lat", "lon"), np.ones((len(times), 1, 1)), {"units": "degC"})},
                    coords={"time": np.array(times, "datetime64[ns]"), "lat": [0.0], "lon": [0.0]})
    with pytest.raises(CoordinateError, match="time coordinate 'time'"):
        standardize(ds)


def test_latitude_flipped_and_longitude_rolled_with_record():
    ds = xr.Dataset({"t": (("lat", "lon"), np.arange(8.0).reshape(2, 4), {"units": "degC"})},
                    coords={"lat": [10.0, -10.0], "lon": [0.0, 90.0, 180.0, 270.0]})
    out = standardize(ds)
    assert out.lat.values.tolist() == [-10.0, 10.0]
    assert out.lon.values.tolist() == [-180.0, -90.0, 0.0, 90.0]
    assert out.t.sel(lat=10.0, lon=-90.0) == 3.0  # the value at 270 E, row of 10 N
    log = json.loads(out.attrs["geodiff_standardize"])
    assert any("flipped latitude" in c for c in log) and any("wrapped longitude" in c for c in log)
    assert out.attrs["geodiff_lon_convention"] == "-180..180"


def test_zero_to_360_convention():
    ds = _field([1.0, 2.0], "degC").assign_coords(lon=[-90.0, 0.0])
    out = standardize(ds, lon="0..360")
    assert out.lon.values.tolist() == [0.0, 270.0] and out.attrs["geodiff_lon_convention"] == "0..360"


def test_unknown_convention_raises():
    with pytest.raises(CoordinateError, match="longitude convention"):
        standardize(_field([1.0], "degC"), lon="-90..270")


def test_lon_bounds_follow_the_wrap():
    ds = _field([1.0, 2.0], "degC").assign_coords(lon=("lon", [90.0, 270.0], {"bounds": "lon_bnds"}))
    ds["lon_bnds"] = (("lon", "bnds"), [[45.0, 135.0], [225.0, 315.0]])
    out = standardize(ds)
    np.testing.assert_allclose(out.lon_bnds.sel(lon=-90.0), [-135.0, -45.0])


def test_curvilinear_longitudes_wrapped_not_reordered():
    lon = np.array([[350.0, 10.0], [340.0, 20.0]])
    ds = xr.Dataset({"thetao": (("time", "j", "i"), np.ones((1, 2, 2)), {"units": "degC"})},
                    coords={"time": [cftime.DatetimeNoLeap(2000, 1, 15)],
                            "latitude": (("j", "i"), [[0.0, 0.0], [5.0, 5.0]], {"units": "degrees_north"}),
                            "longitude": (("j", "i"), lon, {"units": "degrees_east"})})
    out = standardize(ds)
    assert out.thetao.dims == ("time", "j", "i")
    np.testing.assert_allclose(out.lon.values, [[-10.0, 10.0], [-20.0, 20.0]])


def test_dims_transposed_to_canonical_order(grid_ds):
    ds = grid_ds.transpose("lon", "lat", "depth", "time")
    out = standardize(ds)
    assert out.thetao.dims == ("time", "depth", "lat", "lon")
    assert "transposed" in out.attrs["history"]


# --------------------------------------------------------------------------------------------- depth


def _column(values, **attrs):
    return xr.Dataset({"thetao": (("lev", "lat", "lon"), np.ones((len(values), 1, 1)), {"units": "degC"})},
                      coords={"lev": ("lev", np.asarray(values, "float64"), attrs), "lat": [0.0], "lon": [0.0]})


def test_depth_in_cm_becomes_metres():
    out = standardize(_column([500.0, 1500.0], units="centimeters", positive="down"))
    assert out.depth.values.tolist() == [5.0, 15.0]
    assert out.depth.attrs["units"] == "m" and out.depth.attrs["positive"] == "down"


def test_depth_positive_up_is_flipped():
    out = standardize(_column([-5.0, -15.0], units="m", positive="up"))
    assert out.depth.values.tolist() == [5.0, 15.0] and out.depth.attrs["positive"] == "down"


def test_depth_without_positive_is_taken_as_down_with_record():
    out = standardize(_column([5.0, 15.0], units="m"))
    assert out.depth.attrs["positive"] == "down"
    assert "no 'positive' attribute" in out.attrs["history"]


def test_ambiguous_vertical_without_positive_raises():
    ds = _column([-5.0, -15.0], units="m").rename({"lev": "height"})
    ds.height.attrs["axis"] = "Z"
    with pytest.raises(CoordinateError, match="vertical coordinate 'height' has no 'positive' attribute"):
        standardize(ds)


def test_descending_depth_is_reversed():
    out = standardize(_column([100.0, 10.0], units="m", positive="down"))
    assert out.depth.values.tolist() == [10.0, 100.0]


def test_sentinel_depth_raises():
    with pytest.raises(CoordinateError, match="vertical coordinate 'lev'.*sentinel"):
        standardize(_column([5.0, 1e20], units="m", positive="down"))


def test_pressure_levels_in_pa_become_hpa_surface_first():
    ds = _column([50000.0, 85000.0, 100000.0], units="Pa").rename({"lev": "plev"})
    out = standardize(ds)
    assert out.level.values.tolist() == [1000.0, 850.0, 500.0] and out.level.attrs["units"] == "hPa"


# --------------------------------------------------------------------------------------------- calendars


def _monthly(calendar):
    times = [cftime.datetime(2000, m, 15, calendar=calendar) for m in (1, 2)]
    return xr.Dataset({"t": (("time", "lat", "lon"), np.ones((2, 1, 1)), {"units": "degC"})},
                      coords={"time": times, "lat": [0.0], "lon": [0.0]})


@pytest.mark.parametrize("calendar", ["noleap", "360_day"])
def test_calendar_kept(calendar):
    out = standardize(_monthly(calendar))
    assert calendar_of(out) == calendar
    assert out.time.values[0].calendar == calendar


def test_calendars_compared():
    assert check_calendars(_monthly("noleap"), _monthly("365_day")) == "noleap"
    with pytest.raises(CalendarError, match="'a' uses 'noleap' but 'b' uses '360_day'"):
        check_calendars(_monthly("noleap"), _monthly("360_day"), names=["a", "b"])
    with pytest.raises(CalendarError, match="calendar '360_day'; expected 'noleap'"):
        standardize(_monthly("360_day"), calendar="noleap")


def test_numeric_time_is_decoded_with_its_calendar():
    ds = _monthly("noleap")
    ds = ds.assign_coords(time=("time", [14.0, 45.0], {"units": "days since 2000-01-01", "calendar": "noleap"}))
    out = standardize(ds)
    assert calendar_of(out) == "noleap" and "decoded time" in out.attrs["history"]


# --------------------------------------------------------------------------------------------- bbox


def _global(step=30.0, convention="-180..180"):
    lon = np.arange(-180.0, 180.0, step) if convention == "-180..180" else np.arange(0.0, 360.0, step)
    lat = np.arange(-75.0, 76.0, step)
    return xr.Dataset({"h": (("lat", "lon"), lat[:, None] + 0 * lon[None] + lon[None] / 1000.0)},
                      coords={"lat": lat, "lon": lon}, attrs={"geodiff_lon_convention": convention})


def test_bbox_across_the_dateline():
    out = select_bbox(_global(), (120.0, -20.0, -120.0, 20.0))
    assert out.lon.values.tolist() == [120.0, 150.0, 180.0, 210.0, 240.0]
    assert out.attrs["geodiff_lon_convention"] == "0..360" and "dateline" in out.attrs["history"]
    np.testing.assert_allclose(out.h.sel(lon=210.0, lat=15.0), 15.0 - 0.15)  # the value of -150 E


def test_bbox_across_the_prime_meridian_on_a_0_360_grid():
    out = select_bbox(_global(convention="0..360"), (-60.0, 0.0, 60.0, 20.0))
    assert out.lon.values.tolist() == [-60.0, -30.0, 0.0, 30.0, 60.0]
    assert out.attrs["geodiff_lon_convention"] == "-180..180"


def test_bbox_plain_and_lazy():
    ds = _global().chunk({"lat": 2, "lon": 3})
    out = select_bbox(ds, (-100.0, -50.0, 10.0, 50.0))
    assert out.lon.values.tolist() == [-90.0, -60.0, -30.0, 0.0] and out.h.chunks is not None


def test_bbox_selecting_nothing_raises():
    with pytest.raises(CoordinateError, match="select no cell"):
        select_bbox(_global(), (0.0, 80.0, 10.0, 85.0))


def test_wrap_longitude_values():
    np.testing.assert_allclose(wrap_longitude(np.array([-180.0, 180.0, 359.0]), "-180..180"), [-180.0, -180.0, -1.0])


# ------------------------------------------------------------------------------ records, idempotence, files


def test_history_is_appended_never_overwritten(grid_ds):
    ds = grid_ds.assign_coords(lat=grid_ds.lat[::-1].values)
    out = standardize(ds, variables={"thetao": "K"})
    lines = out.attrs["history"].splitlines()
    assert lines[0] == "created for a test" and "standardize:" in lines[1]
    again = standardize(out, variables={"thetao": "degC"})
    assert again.attrs["history"].startswith(out.attrs["history"])
    assert len(json.loads(again.attrs["geodiff_standardize"])) > len(json.loads(out.attrs["geodiff_standardize"]))


def test_idempotent_on_messy_input(grid_ds):
    ds = grid_ds.rename({"lat": "latitude", "lon": "longitude", "depth": "lev"})
    ds = ds.assign_coords(latitude=ds.latitude[::-1].values, longitude=(ds.longitude.values + 360.0) % 360.0,
                          lev=("lev", ds.lev.values * 100.0, {"units": "cm", "positive": "down"}))
    ds = ds.sortby("longitude")
    ds["thetao"] = ds.thetao + 273.15
    ds.thetao.attrs.update(units="K")
    once = standardize(ds, variables={"thetao": "degC"}, lon="-180..180")
    twice = standardize(once, variables={"thetao": "degC"}, lon="-180..180")
    xr.testing.assert_identical(once, twice)
    assert once.attrs == twice.attrs


def test_input_is_not_modified(grid_ds):
    before = grid_ds.copy(deep=True)
    standardize(grid_ds.rename({"lat": "latitude"}), variables={"thetao": "K"})
    xr.testing.assert_identical(grid_ds, before)


@pytest.mark.parametrize("engine", ["netcdf", "zarr"])
def test_file_round_trip_keeps_attributes(tmp_path, grid_ds, engine):
    out = standardize(grid_ds.assign_coords(lon=grid_ds.lon.values % 360.0).sortby("lon"),
                      variables={"thetao": "K"})
    if engine == "netcdf":
        path = tmp_path / "out.nc"
        out.to_netcdf(path)
        back = xr.open_dataset(path)
    else:
        path = tmp_path / "out.zarr"
        out.to_zarr(path, consolidated=False)
        back = xr.open_zarr(path, consolidated=False)
    assert back.attrs["history"] == out.attrs["history"]
    assert json.loads(back.attrs["geodiff_standardize"]) == json.loads(out.attrs["geodiff_standardize"])
    assert back.attrs["geodiff_lon_convention"] == "-180..180"
    for name in ("thetao", "lat", "lon", "depth"):
        assert back[name].attrs == out[name].attrs
    xr.testing.assert_allclose(back.load(), out)
    # and reading it back changes nothing
    xr.testing.assert_identical(standardize(back.load(), variables={"thetao": "K"}), back.load())
