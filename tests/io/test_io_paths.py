"""One opener for local paths and fsspec URLs: zarr v2/v3 and netCDF in memory://, CSV, errors; a memory:// zarr
observation table through reconstruct, the reconstruct command and a batch job."""

import uuid

import fsspec
import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
from typer.testing import CliRunner

import geodiff
from geodiff.cli import app
from geodiff.errors import ConfigError, DataError
from geodiff.io.paths import exists, is_url, is_zarr, join, open_dataset, open_input
from geodiff.jobconfig import load_config
from tests.batch.helpers import VARIABLE, observations, tiny_bundle


#: zarr's own notice that consolidated metadata is not yet part of the v3 specification (xarray writes it)
pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part:UserWarning")


def memory_url(name: str) -> str:
    return f"memory://geodiff-test-{uuid.uuid4().hex}/{name}"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory.mktemp("paths") / "bundle")


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("consolidated", [True, False])
def test_zarr_stores_v2_and_v3_open_lazily_from_memory(zarr_format, consolidated):
    ds = xr.Dataset({"t": (("time", "x"), np.arange(12.0).reshape(4, 3), {"units": "K"})},
                    coords={"time": pd.date_range("2000-01-01", periods=4), "x": [0.0, 1.0, 2.0]})
    url = memory_url("t.zarr")
    ds.chunk(time=2).to_zarr(url, zarr_format=zarr_format, consolidated=consolidated)
    assert is_url(url) and exists(url) and is_zarr(url)
    opened = open_dataset(url)
    assert opened["t"].chunks == ((2, 2), (3,))  # lazy, with the store's chunks
    xr.testing.assert_identical(opened.load(), ds)


def test_a_zarr_store_without_the_suffix_is_recognised_by_its_metadata(tmp_path):
    xr.Dataset({"t": ("x", [1.0])}).to_zarr(tmp_path / "store", consolidated=False)
    assert is_zarr(tmp_path / "store") and not is_zarr(tmp_path)
    assert open_input(tmp_path / "store")["t"].values.tolist() == [1.0]


def test_netcdf_and_csv_behind_a_url_open_like_local_files(tmp_path):
    table = observations(2, per_time=3)
    table.to_netcdf(tmp_path / "obs.nc")
    table.to_dataframe().reset_index(drop=True).to_csv(tmp_path / "obs.csv", index=False)
    fs = fsspec.filesystem("memory")
    base = memory_url("")
    for name in ("obs.nc", "obs.csv"):
        fs.put(str(tmp_path / name), base.removeprefix("memory://") + name)
    from_url = open_input(join(base, "obs.nc"))
    assert from_url["value"].chunks is not None
    xr.testing.assert_identical(from_url.load(), open_input(tmp_path / "obs.nc").load())
    csv = open_input(join(base, "obs.csv"))
    assert csv["time"].dtype.kind == "M" and np.allclose(csv["value"], table["value"].values)


def test_missing_and_unknown_locations_raise_data_errors(tmp_path):
    with pytest.raises(DataError, match="memory://nowhere/x.zarr' does not exist"):
        open_dataset("memory://nowhere/x.zarr")
    (tmp_path / "obs.txt").write_text("1 2 3")
    with pytest.raises(DataError, match="expected a netCDF file"):
        open_input(tmp_path / "obs.txt")
    with pytest.raises(DataError, match="cannot reach 'nosuchprotocol://x.zarr'"):
        exists("nosuchprotocol://x.zarr")


def test_configurations_keep_urls_and_resolve_local_paths(tmp_path, bundle):
    url = memory_url("obs.zarr")
    observations(2).to_zarr(url)
    config = tmp_path / "rec.yaml"
    config.write_text(yaml.safe_dump({"model": str(bundle), "observations": url, "output": "out.nc"}))
    settings = load_config(config, "reconstruct")
    assert settings.observations == url and settings.output == tmp_path / "out.nc"
    config.write_text(yaml.safe_dump({"model": str(bundle), "observations": memory_url("absent.zarr"),
                                      "output": "out.nc"}))
    with pytest.raises(ConfigError, match="key 'observations': file memory://.*absent.zarr does not exist"):
        load_config(config, "reconstruct")


def test_memory_zarr_observations_round_trip_through_reconstruct_and_a_batch_job(tmp_path, bundle):
    table = observations(3)
    url = memory_url("obs.zarr")
    table.to_zarr(url, zarr_format=2)
    options = {"steps": 2, "max_normalized": None}
    direct = geodiff.reconstruct(geodiff.load(bundle), table, members=2, seed=3, progress=False, **options)
    from_store = geodiff.reconstruct(geodiff.load(bundle), open_input(url), members=2, seed=3, progress=False,
                                     **options)
    out_url = memory_url("out.zarr")
    from_store.to_zarr(out_url)
    xr.testing.assert_identical(open_dataset(out_url)[VARIABLE].load(), direct[VARIABLE])

    settings = {"model": str(bundle), "observations": url, "members": 2, "seed": 3, "options": options,
                "progress": False}
    runner = CliRunner()
    config = tmp_path / "rec.yaml"
    config.write_text(yaml.safe_dump({**settings, "output": "out.nc"}))
    result = runner.invoke(app, ["reconstruct", "--config", str(config)])
    assert result.exit_code == 0, result.output
    xr.testing.assert_equal(xr.open_dataset(tmp_path / "out.nc")[VARIABLE].load(), direct[VARIABLE])
    config = tmp_path / "batch.yaml"
    config.write_text(yaml.safe_dump({**settings, "job": "reconstruct", "output": "out.zarr"}))
    result = runner.invoke(app, ["batch", "run", "--config", str(config)])
    assert result.exit_code == 0, result.output
    xr.testing.assert_equal(xr.open_zarr(tmp_path / "out.zarr")[VARIABLE].load(), direct[VARIABLE])
