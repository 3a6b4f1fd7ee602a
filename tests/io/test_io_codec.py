"""Codec: exact round trips (values, coords, attrs, encodings, land), ensembles, time axes, bad grids."""

import json

import cftime
import numpy as np
import pytest
import torch
import xarray as xr
from tests.io.io_datasets import land_mask, make_ocean

from geodiff.errors import ConfigError, CoordinateError, GridError
from geodiff.io.codec import Codec

torch.set_num_threads(1)

KEPT_ENCODING = ("dtype", "_FillValue", "units", "calendar", "zlib", "complevel")


def test_round_trip_from_netcdf_is_identical_with_encodings(ocean_nc):
    codec = Codec.from_dataset(ocean_nc)
    x, mask = codec.encode(ocean_nc, dtype=torch.float64)  # float64 tensors: exact for the float64 variable too
    assert x.shape == (3, 9, 5, 6) and x.dtype == torch.float64
    assert mask.shape == (9, 5, 6) and mask.dtype == torch.bool
    out = codec.decode(x)
    xr.testing.assert_identical(out, ocean_nc)
    for name in [*ocean_nc.data_vars, *ocean_nc.coords]:
        for key in KEPT_ENCODING:
            if key in ocean_nc[name].encoding:
                np.testing.assert_equal(out[name].encoding[key], ocean_nc[name].encoding[key])
        assert "source" not in out[name].encoding and "chunksizes" not in out[name].encoding
    assert out.time.encoding["calendar"] == "noleap" and out.time.encoding["units"] == "days since 1850-01-01"
    assert out.encoding["unlimited_dims"] == {"time"}
    assert out.thetao.dtype == np.float32 and out.so.dtype == np.float64


def test_float32_tensors_round_trip_exactly_when_values_fit(ocean):
    ocean["so"] = ocean.so.astype("float32").astype("float64")  # float64 variable with float32-representable values
    codec = Codec.from_dataset(ocean)
    x, _ = codec.encode(ocean)
    assert x.dtype == torch.float32
    xr.testing.assert_identical(codec.decode(x), ocean)


def test_channels_mask_and_land_zeros(ocean):
    codec = Codec.from_dataset(ocean)
    land = land_mask()
    assert codec.variables == ["thetao", "so", "zos"]
    assert codec.channels[:4] == [("thetao", 5.0), ("thetao", 15.0), ("thetao", 30.0), ("thetao", 60.0)]
    assert codec.channels[-1] == ("zos", None)
    assert codec.channel_slice("so") == slice(4, 8)
    expected = np.concatenate([~land, ~land, ~land[:1]])
    np.testing.assert_array_equal(codec.mask.numpy(), expected)
    x, _ = codec.encode(ocean)
    assert torch.all(x[:, ~codec.mask] == 0) and not torch.isnan(x).any()
    np.testing.assert_array_equal(x[:, 4:8].numpy(), np.nan_to_num(ocean.so.values).astype("float32"))


def test_spec_is_json_and_rebuilds_the_codec(ocean_nc):
    codec = Codec.from_dataset(ocean_nc, variables=["zos", "thetao"])
    spec = json.loads(json.dumps(codec.to_dict(), allow_nan=False))
    again = Codec.from_dict(spec, codec.mask.numpy())
    assert again.channels == codec.channels and again.to_dict() == codec.to_dict()
    x, _ = codec.encode(ocean_nc)
    xr.testing.assert_identical(again.decode(x, time=ocean_nc.time), ocean_nc[["zos", "thetao"]])
    with pytest.raises(GridError, match="pass time="):
        again.decode(x)
    later = again.decode(x, time=[cftime.DatetimeNoLeap(2001, month, 1) for month in (1, 2, 3)])
    assert later.time.encoding == {k: v for k, v in ocean_nc.time.encoding.items() if k in later.time.encoding}
    assert later.time.encoding["calendar"] == "noleap" and later.time.attrs == ocean_nc.time.attrs
    with pytest.raises(GridError, match="mask"):
        Codec.from_dict(spec, codec.mask[:-1])
    with pytest.raises(ConfigError, match="format"):
        Codec.from_dict({**spec, "format": "other"}, codec.mask)


def test_ensemble_decode_adds_member_dim(ocean):
    codec = Codec.from_dataset(ocean)
    x, _ = codec.encode(ocean, dtype=torch.float64)
    ens = torch.stack([x, x + 1, x - 2])
    out = codec.decode(ens, member=True)
    assert out.thetao.dims == ("member", "time", "depth", "lat", "lon")
    assert out.zos.dims == ("member", "time", "lat", "lon")
    assert out.sizes["member"] == 3 and list(out.member.values) == [0, 1, 2]
    assert list(out.data_vars) == ["thetao", "so", "zos"]
    assert out.attrs == ocean.attrs and out.thetao.attrs["units"] == "degC"
    assert out.member.dtype == np.int32 and out.member.attrs["standard_name"] == "realization"
    for m in range(3):  # the same values; an ensemble adds CF attributes to its axes where the input has none
        xr.testing.assert_equal(out.isel(member=m, drop=True), codec.decode(ens[m]))
    xr.testing.assert_equal(out.isel(member=0, drop=True), ocean)
    for name in ocean.variables:
        for key, value in ocean[name].attrs.items():
            np.testing.assert_equal(out[name].attrs[key], value)
    assert np.isnan(out.thetao.values[:, :, land_mask()]).all()
    single = codec.decode(ens[:, 0], member=True)  # [M, C, H, W]: members of one field
    assert single.thetao.dims == ("member", "depth", "lat", "lon")


def test_decode_with_another_time_axis(ocean):
    codec = Codec.from_dataset(ocean)
    x, _ = codec.encode(ocean, dtype=torch.float64)
    field = codec.decode(x[1])  # one field, no time dimension
    assert field.thetao.dims == ("depth", "lat", "lon") and "time" not in field.coords
    xr.testing.assert_identical(field, ocean.isel(time=1, drop=True))
    xr.testing.assert_identical(codec.decode(x[1:2], time=None), field)
    later = make_ocean(times=5, seed=1)
    y, _ = codec.encode(later, dtype=torch.float64)
    xr.testing.assert_identical(codec.decode(y, time=later.time), later)
    chosen = codec.decode(x[2], time=ocean.time[[2]])  # coordinates along time come with the time DataArray
    xr.testing.assert_identical(chosen, ocean.isel(time=[2]))
    scalar = codec.decode(x[2], time=ocean.time[2])  # a scalar time -> time dim of length 1
    xr.testing.assert_identical(scalar, ocean.isel(time=[2]).drop_vars("month"))
    plain = codec.decode(x[:2], time=np.array(["2001-01-01", "2001-02-01"], dtype="datetime64[ns]"))
    assert plain.sizes["time"] == 2 and plain.time.dtype == "datetime64[ns]"
    with pytest.raises(GridError, match="2 values but x holds 3"):
        codec.decode(x, time=ocean.time[:2])
    with pytest.raises(GridError, match="codec's time axis has 3"):
        codec.decode(y)


def test_static_and_undecoded_time_datasets(ocean):
    static = ocean.isel(time=0, drop=True)
    codec = Codec.from_dataset(static)
    x, mask = codec.encode(static, dtype=torch.float64)
    assert x.shape == (1, 9, 5, 6) and not codec.has_time
    xr.testing.assert_identical(codec.decode(x), static)
    xr.testing.assert_identical(codec.decode(x[0]), static)
    numeric = ocean.assign_coords(time=("time", [0.5, 1.5, 2.5], {"units": "months since 0000-01-01"}))
    codec = Codec.from_dataset(numeric)
    xr.testing.assert_identical(codec.decode(codec.encode(numeric, dtype=torch.float64)[0]), numeric)


def test_dask_backed_dataset_gives_the_same_codec(ocean):
    lazy = ocean.chunk({"time": 1, "depth": 2})
    codec = Codec.from_dataset(lazy)
    eager = Codec.from_dataset(ocean)
    assert torch.equal(codec.mask, eager.mask)
    assert torch.equal(codec.encode(lazy)[0], eager.encode(ocean)[0])


def test_bad_layouts_name_the_variable(ocean):
    with pytest.raises(GridError, match="'thetao' has dims .*expected \\(time, <level>, lat, lon\\)"):
        Codec.from_dataset(ocean.assign(thetao=ocean.thetao.transpose("time", "lat", "depth", "lon")))
    with pytest.raises(GridError, match="'zos' has dtype int"):
        Codec.from_dataset(ocean.assign(zos=ocean.zos.fillna(0).astype("int32")))
    with pytest.raises(GridError, match="'nope' is not a data variable"):
        Codec.from_dataset(ocean, variables=["thetao", "nope"])
    with pytest.raises(CoordinateError, match="'depth' of variable 'thetao' has no coordinate"):
        Codec.from_dataset(ocean.drop_vars("depth"))
    with pytest.raises(GridError, match="'zos' has dims"):
        Codec.from_dataset(ocean.assign(zos=ocean.zos.isel(time=0, drop=True)))


def test_check_grid_and_encode_reject_other_grids(ocean):
    codec = Codec.from_dataset(ocean)
    codec.check_grid(ocean)
    codec.check_grid(ocean.isel(time=0))  # one field without time is fine
    with pytest.raises(CoordinateError, match="coordinate 'lat' of variable 'thetao'.*index 0: -11.0, expected -10.0"):
        codec.encode(ocean.assign_coords(lat=ocean.lat - 1))
    with pytest.raises(GridError, match="dimension 'lon' of variable 'thetao' has size 5; expected 6"):
        codec.encode(ocean.isel(lon=slice(0, 5)))
    with pytest.raises(GridError, match="variable 'so' is missing"):
        codec.encode(ocean.drop_vars("so"))
    with pytest.raises(GridError, match="'depth'.*size 3; expected 4"):
        codec.check_grid(ocean.isel(depth=slice(0, 3)))
    with pytest.raises(GridError, match="'zos' differs from the other variables in having a 'time'"):
        codec.check_grid(ocean.assign(zos=ocean.zos.isel(time=0)))
    with pytest.raises(GridError, match="x has shape"):
        codec.decode(torch.zeros(2, 9, 5, 5))
    with pytest.raises(GridError, match="expected \\[M, B, C, H, W\\]"):
        codec.decode(torch.zeros(9, 5, 6), member=True)


def test_changing_land_mask_is_an_error_or_explicit(ocean):
    moving = ocean.copy(deep=True)
    moving["so"][1, 0, 2, 3] = np.nan  # a cell that is ocean at other times
    with pytest.raises(GridError, match="'so' has a NaN \\(land\\) pattern that changes over time at 1 cells"):
        Codec.from_dataset(moving)
    always = Codec.from_dataset(moving, varying_nan="valid_always")
    ever = Codec.from_dataset(moving, varying_nan="valid_ever")
    channel = always.channel_slice("so").start
    assert not always.mask[channel, 2, 3] and ever.mask[channel, 2, 3]
    assert int(ever.mask.sum()) - int(always.mask.sum()) == 1
    x, _ = ever.encode(moving)
    assert x[1, channel, 2, 3] == 0
    assert np.isnan(always.decode(always.encode(moving)[0]).so.values[:, 0, 2, 3]).all()
    strict = Codec.from_dataset(ocean)
    with pytest.raises(GridError, match="'so' is NaN at a valid cell \\(time index 1, depth=5.0, lat=0.0, lon=30.0"):
        strict.encode(moving)
    filled = ocean.fillna(0.0)
    with pytest.raises(GridError, match="'thetao' has a value at a land \\(masked\\) cell"):
        strict.encode(filled)


def test_attribute_values_keep_their_types(ocean):
    ocean.attrs.update(
        {"flags": np.array([1, 2, 4], "int8"), "scale": np.float32(0.5), "limit": -np.inf, "tuple": (1, "a"),
         "nested": {"__float__": "x"}, "raw": b"\x00\x01"}
    )
    codec = Codec.from_dataset(ocean)
    x, _ = codec.encode(ocean, dtype=torch.float64)
    again = Codec.from_dict(json.loads(json.dumps(codec.to_dict(), allow_nan=False)), codec.mask)
    out, out2 = codec.decode(x), again.decode(x, time=ocean.time)
    for result in (out, out2):
        xr.testing.assert_identical(result, ocean)
        assert result.attrs["flags"].dtype == np.int8 and type(result.attrs["scale"]) is np.float32
        assert result.attrs["tuple"] == (1, "a") and result.attrs["limit"] == -np.inf
        assert result.attrs["nested"] == {"__float__": "x"} and result.attrs["raw"] == b"\x00\x01"
        assert result.thetao.attrs["valid_range"].dtype == np.float32
    ocean.attrs["bad"] = object()
    with pytest.raises(GridError, match="global attributes\\['bad'\\] holds a value of type object"):
        Codec.from_dataset(ocean)
