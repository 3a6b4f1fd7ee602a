"""Regridding (curvilinear -> rectilinear on the sphere) and depth interpolation against analytic truths."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from geodiff.testing import products
from geodiff.adapters.regrid import (
    EN4_DEPTHS,
    Regridder,
    en4_grid,
    interp_depth,
    regrid,
    regular_grid,
    unit_vectors,
)
from geodiff.errors import CoordinateError, GridError


@pytest.fixture(scope="module")
def rotated():
    lat, lon = products.rotated_grid(72, 144, 72.0, -40.0)
    return xr.DataArray(lat, dims=("nlat", "nlon")), xr.DataArray(lon, dims=("nlat", "nlon"))


def _truth(lat, lon):
    return products.ocean_temperature(lat, lon, 0.0, 1)


def test_unit_vectors_are_unit_and_periodic():
    v = unit_vectors([10.0, 10.0], [-170.0, 190.0])
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0)
    np.testing.assert_allclose(v[0], v[1], atol=1e-12)


def test_en4_grid_definition():
    g = en4_grid()
    assert dict(g.sizes) == {"depth": 42, "lat": 173, "lon": 360}
    assert float(g.lat[0]) == -83.0 and float(g.lat[-1]) == 89.0
    assert np.all(np.diff(g.lon) == 1.0) and len(EN4_DEPTHS) == 42


@pytest.mark.parametrize("method,tol", [("idw", 0.6), ("mean", 0.8), ("nearest", 1.2)])
def test_curvilinear_to_regular_matches_the_truth(rotated, method, tol):
    lat2d, lon2d = rotated
    field = xr.DataArray(_truth(lat2d.values, lon2d.values), dims=("nlat", "nlon"))
    target = regular_grid(2.0, (-70.0, 70.0))
    out = Regridder(lat2d, lon2d, target.lat.values, target.lon.values, method=method)(field)
    truth = _truth(out.lat.values[:, None], out.lon.values[None, :])
    # the rotated grid has a hole around its pole (72 N, 40 W), inside the synthetic Greenland: compare at sea
    sea = ~products.is_land(out.lat.values[:, None], out.lon.values[None, :])
    assert np.isfinite(out.values[sea]).all()
    err = np.abs(out.values - truth)[sea]
    assert np.nanmax(err) < tol
    assert np.sqrt(np.nanmean(err**2)) < tol / 3


def test_constant_field_is_exact_and_dateline_is_seamless(rotated):
    lat2d, lon2d = rotated
    field = xr.DataArray(np.full(lat2d.shape, 7.25), dims=("nlat", "nlon"))
    lon = np.array([179.0, 179.9, -179.9, -179.0])
    out = Regridder(lat2d, lon2d, np.array([0.0, 30.0]), lon)(field)
    np.testing.assert_allclose(out.values, 7.25)


def test_land_follows_the_nearest_source_cell(rotated):
    lat2d, lon2d = rotated
    values = np.where(products.is_land(lat2d.values, lon2d.values), np.nan, 1.0)
    field = xr.DataArray(values, dims=("nlat", "nlon"))
    target = regular_grid(2.0, (-70.0, 70.0))
    out = Regridder(lat2d, lon2d, target.lat.values, target.lon.values)(field)
    land = products.is_land(out.lat.values[:, None], out.lon.values[None, :])
    # away from the coasts the land/sea pattern is the truth's; ocean values stay 1 (land never contributes)
    lat, lon = out.lat.values[:, None], out.lon.values[None, :]
    interior_land = land & (lat < 60.0)  # away from the hole around the rotated pole (72 N, 40 W)
    for dlat, dlon in ((3, 0), (-3, 0), (0, 3), (0, -3)):
        interior_land &= products.is_land(lat + dlat, lon + dlon)
    assert np.isnan(out.values[interior_land]).all()
    np.testing.assert_allclose(out.values[np.isfinite(out.values)], 1.0)
    assert np.isfinite(out.values[~land]).mean() > 0.97
    anyland = Regridder(lat2d, lon2d, target.lat.values, target.lon.values, land="any")(field)
    assert np.isfinite(anyland.values).sum() >= np.isfinite(out.values).sum()


def test_regional_source_gives_nan_far_away():
    lat = np.linspace(-10.0, 10.0, 21)
    lon = np.linspace(-10.0, 10.0, 21)
    field = xr.DataArray(np.ones((21, 21)), dims=("lat", "lon"), coords={"lat": lat, "lon": lon})
    out = Regridder(lat, lon, np.array([0.0, 40.0]), np.array([0.0, 100.0]))(field)
    assert out.values[0, 0] == 1.0 and np.isnan(out.values[1, 1]) and np.isnan(out.values[0, 1])


def test_dask_and_numpy_agree(rotated):
    lat2d, lon2d = rotated
    data = np.stack([_truth(lat2d.values, lon2d.values) + i for i in range(3)])
    field = xr.DataArray(data, dims=("time", "nlat", "nlon"))
    regridder = Regridder(lat2d, lon2d, np.arange(-60.0, 61.0, 20.0), np.arange(-180.0, 180.0, 30.0))
    eager = regridder(field)
    lazy = regridder(field.chunk({"time": 1}))
    assert lazy.chunks is not None
    xr.testing.assert_allclose(eager, lazy.compute())


def test_bad_regridder_inputs_raise(rotated):
    lat2d, lon2d = rotated
    with pytest.raises(GridError, match="unknown regridding method"):
        Regridder(lat2d, lon2d, [0.0], [0.0], method="bicubic")
    with pytest.raises(CoordinateError, match="non-finite"):
        Regridder(np.array([[0.0, np.nan]]), np.array([[0.0, 1.0]]), [0.0], [0.0])
    regridder = Regridder(lat2d, lon2d, [0.0], [0.0])
    with pytest.raises(GridError, match="horizontal shape"):
        regridder.apply_array(np.zeros((3, 4)))


def test_interp_depth_never_extrapolates_below_the_sea_floor():
    depth = np.array([6.0, 17.0, 30.0, 60.0])
    values = np.array([[20.0, 18.0, 15.0, 10.0], [20.0, 18.0, np.nan, np.nan]])  # column 2: floor after 17 m
    da = xr.DataArray(values.T, dims=("depth", "x"), coords={"depth": depth}, name="t")
    out = interp_depth(da, [5.0, 10.0, 17.0, 25.0, 45.0, 80.0])
    expected = [20.0, 20.0 - 2.0 * 4 / 11, 18.0, 18.0 - 3.0 * 8 / 13, 12.5, np.nan]
    np.testing.assert_allclose(out.isel(x=0).values, expected)
    np.testing.assert_allclose(out.isel(x=1).values, [20.0, 20.0 - 2.0 * 4 / 11, 18.0, np.nan, np.nan, np.nan])
    assert np.isnan(interp_depth(da, [5.0], surface="nan").values).all()


def test_interp_depth_records_and_keeps_attributes():
    ds = xr.Dataset({"t": (("depth",), [1.0, 2.0], {"units": "degC"})},
                    coords={"depth": ("depth", [6.0, 16.0], {"units": "m", "positive": "down"})})
    out = interp_depth(ds, [5.0, 11.0])
    assert out.t.attrs == {"units": "degC"} and out.depth.attrs["positive"] == "down"
    assert "took its value" in out.attrs["history"] and "no extrapolation" in out.attrs["history"]


def test_regrid_with_target_mask():
    src = regular_grid(10.0)
    src["t"] = xr.DataArray(np.ones((18, 36)), dims=("lat", "lon"))
    target = regular_grid(30.0)
    mask = xr.DataArray(np.ones((6, 12), bool), dims=("lat", "lon"), coords={"lat": target.lat, "lon": target.lon})
    mask[0, :] = False
    out = regrid(src, target, target_mask=mask)
    assert np.isnan(out.t[0]).all() and np.isfinite(out.t[1:]).all()
    with pytest.raises(GridError, match="target_mask"):
        regrid(src, target, target_mask=mask.isel(lat=slice(1, None)))


def test_float32_stays_float32_lazily_and_eagerly():
    ds = xr.Dataset({"t": (("depth", "x"), np.ones((2, 3), "float32"))}, coords={"depth": [6.0, 16.0]})
    for obj in (ds, ds.chunk()):
        out = interp_depth(obj, [5.0, 10.0])
        assert out.t.dtype == np.float32 and out.t.load().dtype == np.float32


def test_training_set_encodes_and_decodes_with_the_codec(tmp_path):
    from geodiff import catalog
    from geodiff.adapters import cmip6
    from geodiff.io import codec as codec_mod

    products.write_cmip6_tree(tmp_path)
    train = cmip6.open_collection(catalog.esm_collection_path(), root=tmp_path, target=regular_grid(30.0),
                                  depth=[10.0, 100.0], source_id=["CESM2", "MPI-ESM1-2-LR"],
                                  member_id="r1i1p1f1").load()
    codec = codec_mod.Codec.from_dataset(train)
    x, mask = codec.encode(train)
    assert tuple(x.shape) == (6, 2, 6, 12) and tuple(mask.shape) == (2, 6, 12)
    xr.testing.assert_identical(codec.decode(x), train)
