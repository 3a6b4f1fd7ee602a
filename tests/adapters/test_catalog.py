"""The data catalog: every entry opens by name from files laid out as data_catalog/ describes."""

from __future__ import annotations

import json

import pytest
import xarray as xr

from geodiff import catalog
from geodiff.adapters.regrid import regular_grid
from geodiff.errors import DataError, GeodiffWarning

GRIDDED = ["en4_analysis", "era5_pressure_levels", "era5_single_levels", "era5_pressure_levels_legacy",
           "era5_single_levels_legacy", "gridsat_b1", "amsua_tmt", "hirs_olr", "hirs_uth", "mhs_uth"]
TABLES = ["en4_profiles", "stations_csv", "stations_timeseries"]


def test_catalog_lists_every_product():
    assert set(catalog.names()) == set(GRIDDED + TABLES + ["cmip6_thetao", "gebco_2023"])
    collection = json.loads(catalog.esm_collection_path().read_text())
    assert collection["catalog_file"] == "cmip6_collection.csv"
    assert collection["assets"] == {"column_name": "path", "format": "netcdf"}


@pytest.mark.parametrize("name", GRIDDED)
def test_gridded_entries_open_canonical(data_root, name):
    if name == "en4_analysis":
        with pytest.warns(GeodiffWarning, match="valid_max"):
            ds = catalog.open(name, root=data_root)
    else:
        ds = catalog.open(name, root=data_root)
    assert isinstance(ds, xr.Dataset) and "lat" in ds.dims and "lon" in ds.dims
    assert bool((ds.lat.diff("lat") > 0).all())
    entry = catalog.describe(name)
    for var, spec in entry["variables"].items():
        assert ds[var].attrs["units"] == str(spec["canonical_units"])


@pytest.mark.parametrize("name", TABLES)
def test_table_entries_open_as_observation_tables(data_root, name):
    obs = catalog.open(name, root=data_root)
    assert list(obs.dims) == ["obs"] and {"value", "error_std"} <= set(obs.data_vars)


def test_cmip6_entry_and_gebco_entry(data_root):
    train = catalog.open("cmip6_thetao", root=data_root, target=regular_grid(10.0), depth=[5.0, 50.0],
                         source_id="MPI-ESM1-2-LR")
    assert train.thetao.dims == ("time", "depth", "lat", "lon")
    topo = catalog.open("gebco_2023", root=data_root, bbox=(175.0, -1.0, -175.0, 1.0))
    assert topo.elevation.chunks is not None


@pytest.mark.parametrize("name", sorted(set(GRIDDED + TABLES + ["gebco_2023"]) - {"stations_csv"}))
def test_raw_files_hold_the_expected_variables_and_units(data_root, name):
    expected = catalog.describe(name)["variables"]
    seen = set()
    for path in catalog.paths(name, root=data_root):
        raw = xr.open_dataset(path, decode_times=False)
        present = sorted(v for v in expected if v in raw.variables)  # ERA5 step-type files hold a part each
        catalog.check(name, raw[present]) if len(present) == len(expected) else None
        for var in present:
            assert raw[var].attrs["units"] == str(expected[var]["units"]), (name, var)
        seen.update(present)
    assert seen == set(expected)


def test_check_reports_problems(data_root):
    path = catalog.paths("hirs_olr", root=data_root)[0]
    catalog.check("hirs_olr", path)
    raw = xr.open_dataset(path)
    raw["olr"].attrs["units"] = "K"
    with pytest.raises(DataError, match="'olr' has units 'K', expected 'W m-2'"):
        catalog.check("hirs_olr", raw)
    with pytest.raises(DataError, match="'uth' is missing"):
        catalog.check("hirs_uth", path)


def test_errors_name_what_is_wrong(data_root, tmp_path, monkeypatch):
    with pytest.raises(DataError, match="no catalog entry 'nope'"):
        catalog.open("nope", root=data_root)
    with pytest.raises(DataError, match="no file matches"):
        catalog.open("hirs_olr", root=tmp_path)
    monkeypatch.delenv("GEODIFF_DATA_ROOT", raising=False)
    with pytest.raises(DataError, match="GEODIFF_DATA_ROOT"):
        catalog.open("hirs_olr")
    monkeypatch.setenv("GEODIFF_DATA_ROOT", str(data_root))
    assert catalog.open("hirs_olr").olr.attrs["units"] == "W m-2"
