"""Every file geodiff writes passes compliance-checker's CF-1.8 check without errors: the demo, the command line's
reconstruct / downscale / assimilate outputs (netCDF), a batch store (zarr, exported to netCDF) and a downscaled
ensemble of the shipped sample; ``member`` is a CF realization and stale storage attributes are gone."""

import warnings

import numpy as np
import pytest
import torch
import xarray as xr
import yaml
from typer.testing import CliRunner

import geodiff
from geodiff.cli import app
from geodiff.io.cf import SOURCE_VALUE_ATTRIBUTES
from tests.batch.helpers import observations, synthetic_ocean, tiny_bundle
from tests.cf_compliance import cf_errors

pytest.importorskip("compliance_checker")
runner = CliRunner()


def assert_cf_ensemble(path):
    assert cf_errors(path) == []
    with xr.open_dataset(path) as ds:
        assert ds["member"].dtype == np.int32 and ds["member"].attrs["standard_name"] == "realization"
        for name in ds.data_vars:
            assert not set(SOURCE_VALUE_ATTRIBUTES) & set(ds[name].attrs), name
        for name in ds.dims:
            assert "_FillValue" not in ds[name].encoding, name


def run_cli(tmp_path, command, **settings):
    config = tmp_path / f"{command}.yaml"
    config.write_text(yaml.safe_dump({"members": 2, "seed": 1, "progress": False, **settings}))
    result = runner.invoke(app, [command, "--config", str(config)])
    assert result.exit_code == 0, result.output


def test_the_check_finds_the_errors_geodiff_used_to_write(tmp_path):
    ds = xr.Dataset({"t": (("member", "lat"), np.zeros((2, 3), "float32"), {"units": "K", "long_name": "t"})},
                    coords={"member": np.arange(2), "lat": ("lat", [0.0, 1.0, 2.0], {"units": "degrees_north",
                                                                                     "standard_name": "latitude"})})
    ds.to_netcdf(tmp_path / "old.nc")
    errors = " ".join(cf_errors(tmp_path / "old.nc"))
    assert "member failed because the datatype is int64" in errors
    assert "coordinate variable 'lat' must not have the _FillValue attribute" in errors


def test_demo_output_is_cf_clean_and_drops_the_packing_note(tmp_path):
    from geodiff.pipelines.demo import run_demo

    result = run_demo(tmp_path, members=2, steps=10, baselines=False, plot=False, progress=False)
    assert_cf_ensemble(tmp_path / "reconstruction.nc")
    assert "packing" not in result.ensemble["temperature"].attrs
    assert result.ensemble["temperature"].attrs["standard_name"] == "sea_water_temperature"


@pytest.fixture(scope="module")
def ocean_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("cf")
    observations(2).to_netcdf(root / "obs.nc")
    return tiny_bundle(root / "bundle"), root / "obs.nc"


def test_cli_reconstruct_netcdf_and_batch_store_are_cf_clean(ocean_bundle, tmp_path):
    bundle, obs = ocean_bundle
    options = {"steps": 2, "max_normalized": None}
    run_cli(tmp_path, "reconstruct", model=str(bundle), observations=str(obs), output=str(tmp_path / "out.nc"),
            options=options)
    assert_cf_ensemble(tmp_path / "out.nc")
    run_cli(tmp_path, "reconstruct", model=str(bundle), observations=str(obs), output=str(tmp_path / "out.zarr"),
            options=options, batch={"time_chunk": 1})
    with xr.open_zarr(tmp_path / "out.zarr") as store:  # netCDF with the store's metadata: a fill value where
        for variable in store.variables.values():  # it has one, none where not
            variable.encoding["_FillValue"] = variable.encoding.get("_FillValue")
        assert all(store[name].encoding["_FillValue"] is None for name in store.dims)
        store.to_netcdf(tmp_path / "store.nc")
    assert_cf_ensemble(tmp_path / "store.nc")


def test_cli_downscale_output_is_cf_clean(tmp_path):
    from tests.downscaling.conftest import FACTOR, make_bundle, make_fine_dataset

    from geodiff.pipelines.downscale import coarsen

    fine = make_fine_dataset()
    make_bundle(fine).save(tmp_path / "bundle")
    coarsen(fine[["tas"]], FACTOR).to_netcdf(tmp_path / "coarse.nc")
    fine[["orog"]].to_netcdf(tmp_path / "orog.nc")
    run_cli(tmp_path, "downscale", model=str(tmp_path / "bundle"), coarse=str(tmp_path / "coarse.nc"),
            sources={"topography": str(tmp_path / "orog.nc")}, output=str(tmp_path / "out.nc"), options={"steps": 2})
    assert_cf_ensemble(tmp_path / "out.nc")


def test_cli_assimilate_output_is_cf_clean(tmp_path):
    from geodiff.dynamics import BarotropicModel
    from geodiff.pipelines.assimilate import AssimilationModel, twin_dataset, twin_observations

    twin = BarotropicModel(nx=16, ny=16)
    truth = twin_dataset(twin, twin.random_state(1, generator=torch.Generator().manual_seed(0)),
                         np.array(["2000-01-01"], dtype="datetime64[ns]"))
    torch.manual_seed(0)
    AssimilationModel.untrained(truth, latent_channels=2, base_channels=8).save(tmp_path / "model")
    truth.to_netcdf(tmp_path / "background.nc")
    twin_observations(truth, [45.0], [0.0], error_std={"z": 5.0, "u": 1.0, "v": 1.0}, seed=1).to_netcdf(
        tmp_path / "obs.nc")
    run_cli(tmp_path, "assimilate", model=str(tmp_path / "model"), background=str(tmp_path / "background.nc"),
            observations=str(tmp_path / "obs.nc"), output=str(tmp_path / "out.nc"), options={"steps": 2})
    assert_cf_ensemble(tmp_path / "out.nc")


def test_downscaled_shipped_sample_is_cf_clean(tmp_path):
    from geodiff.pipelines.downscale import coarsen, open_sample, sample_paths

    fields, topography = open_sample()
    for name in ("heldout", "topography"):  # the shipped files themselves
        assert cf_errors(sample_paths()[name]) == [], name
    truth = fields.isel(time=[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = geodiff.downscale(geodiff.load(sample_paths()["model"]), coarsen(truth, 4),
                                sources={"topography": topography}, members=2, steps=2, progress=False)
    out.to_netcdf(tmp_path / "downscaled.nc")
    assert_cf_ensemble(tmp_path / "downscaled.nc")
