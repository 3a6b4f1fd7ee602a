"""CMIP6 thetao: native layouts, standardization, regridding to the EN4 grid, ESM-collection search, stacking."""

from __future__ import annotations

import csv

import cftime
import netCDF4
import numpy as np
import pytest
import xarray as xr

from geodiff import catalog
from geodiff.adapters import cmip6
from geodiff.testing import products
from geodiff.adapters.regrid import en4_grid, regular_grid
from geodiff.adapters.standardize import calendar_of
from geodiff.errors import CalendarError, DataError, GridError, UnitsError


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmip6")
    products.write_cmip6_tree(root)
    return root


def _path(root, source_id, member_id="r1i1p1f1"):
    row = next(r for r in products.cmip6_catalog_rows() if r["source_id"] == source_id and r["member_id"] == member_id)
    return root / row["path"]


@pytest.mark.parametrize("source_id,dims,lev_units,calendar", [
    ("CESM2", ("time", "lev", "nlat", "nlon"), "centimeters", "noleap"),
    ("MPI-ESM1-2-LR", ("time", "lev", "j", "i"), "m", "proleptic_gregorian"),
    ("UKESM1-0-LL", ("time", "lev", "j", "i"), "m", "360_day"),
])
def test_fixture_files_follow_the_cmip6_layout(tree, source_id, dims, lev_units, calendar):
    member = "r1i1p1f2" if source_id == "UKESM1-0-LL" else "r1i1p1f1"
    path = _path(tree, source_id, member)
    assert path.name.startswith(f"thetao_Omon_{source_id}_historical_{member}_gn_")
    with netCDF4.Dataset(path) as nc:
        var = nc["thetao"]
        assert var.dimensions == dims and var.dtype == np.float32
        assert var._FillValue == np.float32(1e20) and var.missing_value == np.float32(1e20)
        assert var.units == "degC" and var.standard_name == "sea_water_potential_temperature"
        assert nc["lev"].units == lev_units and nc["lev"].positive == "down"
        assert nc["time"].calendar == calendar
        assert nc.variable_id == "thetao" and nc.table_id == "Omon" and nc.source_id == source_id
        lat_name = "lat" if source_id == "CESM2" else "latitude"
        assert nc[lat_name].dimensions == dims[2:]
        raw = var[:]
        assert np.ma.is_masked(raw)  # land and sea floor stored as 1e20


def test_collection_csv_lists_the_fixture_files(tree):
    with open(catalog.catalog_dir() / "cmip6_collection.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows == products.cmip6_catalog_rows()
    for row in rows:
        assert (tree / row["path"]).exists()


def test_open_dataset_standardizes_the_native_grid(tree):
    ds = cmip6.open_dataset(_path(tree, "CESM2"))
    assert ds.thetao.dims == ("time", "depth", "nlat", "nlon")
    assert ds.depth.values[:3].tolist() == [5.0, 15.0, 25.0] and ds.depth.attrs["units"] == "m"
    assert ds.lat.dims == ("nlat", "nlon") and float(ds.lon.max()) < 180.0
    assert calendar_of(ds) == "noleap" and isinstance(ds.time.values[0], cftime.datetime)
    assert np.isnan(ds.thetao.values).any() and not (ds.thetao.values > 1e10).any()
    assert "centimeters" in ds.attrs["history"]
    mpi = cmip6.open_dataset(_path(tree, "MPI-ESM1-2-LR"))
    assert mpi.thetao.dims == ("time", "depth", "j", "i") and "lat" in mpi.coords


def test_open_dataset_missing_variable(tree):
    with pytest.raises(DataError, match="'so'"):
        cmip6.open_dataset(_path(tree, "CESM2"), "so")


def test_to_en4_grid_matches_the_truth(tree):
    native = cmip6.open_dataset(_path(tree, "MPI-ESM1-2-LR"))
    out = cmip6.to_grid(native, en4_grid()).load()
    assert out.thetao.dims == ("time", "depth", "lat", "lon") and out.thetao.shape == (3, 42, 173, 360)
    lat, lon = out.lat.values[:, None], out.lon.values[None, :]
    month = 1  # first time step
    truth = products.ocean_temperature(lat, lon, out.depth.values[0], month)
    sea = ~products.is_land(lat, lon) & (np.abs(lat) < 60)
    surface = out.thetao.isel(time=0, depth=0).values
    finite = np.isfinite(surface) & sea
    assert finite.sum() > 0.95 * sea.sum()
    err = np.abs(surface - truth)[finite]
    assert np.sqrt(np.mean(err**2)) < 0.4 and err.max() < 1.5  # a 3 deg source on a 1 deg target
    # no extrapolation below the sea floor: where the floor (everywhere within 4 deg) is shallower than a level -> NaN
    from scipy.ndimage import maximum_filter

    floor = maximum_filter(products.seafloor_depth(lat, lon), size=9, mode="wrap")
    level = 30  # 2133.5 m
    too_deep = (floor < out.depth.values[level] - 100.0) & ~products.is_land(lat, lon)
    assert too_deep.any() and np.isnan(out.thetao.isel(time=0, depth=level).values[too_deep]).all()


def test_no_values_below_the_deepest_model_level(tree, tmp_path):
    native = cmip6.open_dataset(_path(tree, "CESM2")).isel(depth=slice(0, 10))  # deepest level 360 m
    out = cmip6.to_grid(native, regular_grid(10.0), depth=[5.0, 300.0, 360.0, 400.0, 1000.0])
    values = out.thetao.isel(time=0).values
    assert np.isfinite(values[:3]).any() and np.isnan(values[3:]).all()


def test_search_with_intake_esm():
    rows = cmip6.search(catalog.esm_collection_path(), source_id=["CESM2", "MPI-ESM1-2-LR"], variable_id="thetao")
    assert sorted(zip(rows.source_id, rows.member_id)) == [
        ("CESM2", "r1i1p1f1"), ("CESM2", "r2i1p1f1"), ("MPI-ESM1-2-LR", "r1i1p1f1")]
    with pytest.raises(DataError, match="unknown query keys"):
        cmip6.search(catalog.esm_collection_path(), model="CESM2")


def test_open_collection_stacks_models_and_members(tree):
    target = regular_grid(6.0, (-84.0, 90.0))
    train = cmip6.open_collection(catalog.esm_collection_path(), root=tree, target=target, depth=[5.0, 100.0, 1000.0],
                                  source_id=["CESM2", "MPI-ESM1-2-LR"], variable_id="thetao")
    assert train.thetao.dims == ("time", "depth", "lat", "lon") and train.sizes["time"] == 9
    assert train.time.values.tolist() == list(range(9))
    assert sorted(set(train.source_id.values.tolist())) == ["CESM2", "MPI-ESM1-2-LR"]
    assert set(train.calendar.values.tolist()) == {"noleap", "proleptic_gregorian"}
    assert train.model_time.values[0].startswith("2000-01-")
    # one land mask for every sample (what the codec needs)
    valid = train.thetao.notnull()
    assert bool((valid == valid.isel(time=0)).all())
    assert "stacked 3 runs" in train.attrs["history"] and train.thetao.attrs["units"] == "degC"


def test_strict_calendars_refuse_to_mix(tree):
    with pytest.raises(CalendarError, match="noleap.*360_day|360_day.*noleap"):
        cmip6.open_collection(catalog.esm_collection_path(), root=tree, target=regular_grid(30.0),
                              depth=[5.0], source_id=["CESM2", "UKESM1-0-LL"], member_id=["r1i1p1f1", "r1i1p1f2"],
                              calendars="strict")


def test_stack_members_checks_grids_and_units():
    def run(lat, units="degC"):
        return xr.Dataset({"thetao": (("time", "lat", "lon"), np.ones((1, len(lat), 2)), {"units": units})},
                          coords={"time": [cftime.DatetimeNoLeap(2000, 1, 15)], "lat": lat, "lon": [0.0, 1.0]})

    with pytest.raises(GridError, match="another grid"):
        cmip6.stack_members([run([0.0, 1.0]), run([0.0, 2.0])])
    with pytest.raises(UnitsError, match="'thetao'.*'K'"):
        cmip6.stack_members([run([0.0, 1.0]), run([0.0, 1.0], "K")])


@pytest.mark.parametrize("engine", ["netcdf", "zarr"])
def test_training_set_round_trip_keeps_attributes(tree, tmp_path, engine):
    train = cmip6.open_collection(catalog.esm_collection_path(), root=tree, target=regular_grid(30.0), depth=[5.0],
                                  source_id="CESM2").load()
    native = cmip6.open_dataset(_path(tree, "CESM2")).load()
    for ds, name in ((train, "train"), (native, "native")):
        if engine == "netcdf":
            ds.to_netcdf(tmp_path / f"{name}.nc")
            back = xr.open_dataset(tmp_path / f"{name}.nc", decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))
        else:
            ds.to_zarr(tmp_path / f"{name}.zarr", consolidated=False)
            back = xr.open_zarr(tmp_path / f"{name}.zarr", consolidated=False,
                                decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))
        assert back.attrs == ds.attrs
        for var in ds.variables:
            assert back[var].attrs == ds[var].attrs, (name, var)
        xr.testing.assert_allclose(back.load(), ds)
    assert calendar_of(back) == "noleap"


# ---------------------------------------------------------------------------------------------------------------
# Pangeo-style collections: zarr stores (``zstore`` column), local or behind a URL

QUERY = dict(depth=[5.0, 100.0], source_id=["CESM2", "MPI-ESM1-2-LR"])


@pytest.fixture(scope="module")
def from_files(tree):
    return cmip6.open_collection(catalog.esm_collection_path(), root=tree, target=regular_grid(30.0), **QUERY).load()


def assert_same_training_set(found, expected):
    xr.testing.assert_identical(found.thetao.load(), expected.thetao)
    for name in ("source_id", "member_id", "model_time", "calendar"):
        assert found[name].values.tolist() == expected[name].values.tolist()
    assert "stacked 3 runs" in found.attrs["history"]


@pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part:UserWarning")  # zarr v3's notice
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_pangeo_zarr_collection_opens_like_the_file_collection(from_files, tmp_path, zarr_format):
    collection = products.write_cmip6_zarr_collection(tmp_path, zarr_format=zarr_format)
    assert "zstore" in cmip6.search(collection).columns
    assert_same_training_set(cmip6.open_collection(collection, target=regular_grid(30.0), **QUERY), from_files)


def test_zarr_stores_behind_urls_open_through_fsspec(from_files, tmp_path):
    import uuid

    import fsspec

    base = f"memory://cmip6-{uuid.uuid4().hex}"
    collection = products.write_cmip6_zarr_collection(tmp_path, base=base)  # zstore: memory://... as gs://cmip6/...
    fsspec.filesystem("memory").put(str(tmp_path / "CMIP6"), base.removeprefix("memory://") + "/CMIP6",
                                    recursive=True)
    stores = tmp_path / "CMIP6"
    stores.rename(tmp_path / "moved")  # only the copies behind the URLs remain
    assert_same_training_set(cmip6.open_collection(collection, target=regular_grid(30.0), **QUERY), from_files)
    native = cmip6.open_dataset(f"{base}/CMIP6/CMIP/NCAR/CESM2/historical/r1i1p1f1/Omon/thetao/gn/v20190308/")
    assert native.thetao.dims == ("time", "depth", "nlat", "nlon") and native.thetao.chunks is not None
