"""The data catalog: every entry opens by name from files laid out as data_catalog/ describes."""

from __future__ import annotations

import json

import pytest
import xarray as xr

from geodiff import catalog
from geodiff.adapters.regrid import regular_grid
from geodiff.errors import DataError, GeodiffWarning
from geodiff.tutorial import sample_path

GRIDDED = ["en4_analysis", "era5_pressure_levels", "era5_single_levels", "era5_pressure_levels_legacy",
           "era5_single_levels_legacy", "gridsat_b1", "amsua_tmt", "hirs_olr", "hirs_uth", "mhs_uth"]
TABLES = ["en4_profiles", "stations_csv", "stations_timeseries"]
SAMPLES = ["woa_monthly_temperature_sample", "north_america_tas_sample"]


def test_catalog_lists_every_product():
    assert set(catalog.names()) == set(GRIDDED + TABLES + SAMPLES + ["cmip6_thetao", "gebco_2023"])
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


def test_intake_reads_the_catalog_with_url_doi_and_licence_per_product(tmp_path, monkeypatch):
    import intake

    monkeypatch.chdir(tmp_path)  # any folder
    monkeypatch.setenv("GEODIFF_DATA_ROOT", "/data")
    cat = intake.open_catalog(str(catalog.catalog_dir() / "products.yaml"))
    assert sorted(cat) == catalog.names()
    for name in cat:
        described = cat._entries[name].describe()
        metadata = described["metadata"]
        assert {"url", "doi", "licence", "reference", "adapter", "variables"} <= set(metadata), name
        assert metadata["licence"] and metadata["reference"], name
        assert metadata["doi"] is None or metadata["doi"].startswith("10."), name
        assert described["description"] == catalog.describe(name)["description"]
    real = [name for name in cat if not name.startswith("stations") and not name.endswith("_sample")]
    assert all(cat._entries[name].describe()["metadata"]["url"].startswith("https://") for name in real)
    without_doi = {name for name in real if cat._entries[name].describe()["metadata"]["doi"] is None}
    assert without_doi == {"amsua_tmt", "hirs_olr", "hirs_uth", "mhs_uth"}  # cited by reference and version


@pytest.mark.parametrize("name", SAMPLES)
def test_shipped_samples_are_catalog_entries_that_open_from_anywhere(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GEODIFF_DATA_ROOT", raising=False)  # no data root needed
    entry = catalog.describe(name)
    [path] = catalog.paths(name)
    assert path.resolve() == sample_path(entry["sample"]).resolve()
    ds = catalog.open(name)
    assert set(entry["variables"]) <= set(ds.data_vars)


def test_the_esm_collection_opens_with_intake_esm_from_any_folder(data_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the data root: the paths are resolved under it
    store = catalog.esm_datastore(root=data_root)
    found = store.search(source_id="MPI-ESM1-2-LR")
    datasets = found.to_dataset_dict(xarray_open_kwargs={"decode_times": False}, progressbar=False)
    [ds] = datasets.values()
    assert "thetao" in ds.data_vars and ds.sizes["member_id"] == 1
