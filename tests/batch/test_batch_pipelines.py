"""Downscaling and assimilation as batch jobs through the CLI: the zarr store equals one direct pipeline call."""

import numpy as np
import torch
import xarray as xr
import yaml
from typer.testing import CliRunner

import geodiff
from geodiff.cli import app

runner = CliRunner()


def invoke(command, tmp_path, **settings):
    config = tmp_path / f"{command}.yaml"
    config.write_text(yaml.safe_dump(settings))
    result = runner.invoke(app, [command, "--config", str(config)])
    assert result.exit_code == 0, result.output
    return config


def test_downscale_command_writes_a_resumable_store_equal_to_a_direct_call(tmp_path):
    from geodiff.pipelines.downscale import coarsen, downscale
    from tests.downscaling.conftest import FACTOR, make_bundle, make_fine_dataset

    fine = make_fine_dataset()
    make_bundle(fine).save(tmp_path / "model")
    coarsen(fine[["tas"]], FACTOR).to_netcdf(tmp_path / "coarse.nc")
    fine[["orog"]].to_netcdf(tmp_path / "orog.nc")
    config = invoke("downscale", tmp_path, model="model", coarse="coarse.nc", sources={"topography": "orog.nc"},
                    output="out.zarr", members=2, seed=1, options={"steps": 2}, progress=False)
    out = xr.open_zarr(tmp_path / "out.zarr", consolidated=True)
    assert out.attrs["history"].splitlines()[-2].endswith(f"geodiff downscale --config {config}")
    direct = downscale(geodiff.load(tmp_path / "model"), xr.open_dataset(tmp_path / "coarse.nc"),
                       sources={"topography": xr.open_dataset(tmp_path / "orog.nc")}, members=2, steps=2, seed=1,
                       progress=False)
    xr.testing.assert_equal(out["tas"].load(), direct["tas"])


def test_assimilate_command_writes_a_resumable_store_equal_to_a_direct_call(tmp_path):
    from geodiff.dynamics import BarotropicModel
    from geodiff.pipelines.assimilate import AssimilationModel, assimilate, twin_dataset, twin_observations

    twin = BarotropicModel(nx=16, ny=16)
    times = np.array(["2000-01-01", "2000-01-02", "2000-01-03"], dtype="datetime64[ns]")
    truth = twin_dataset(twin, twin.random_state(3, generator=torch.Generator().manual_seed(0)), times)
    AssimilationModel.untrained(truth, latent_channels=2, base_channels=8).save(tmp_path / "model")
    twin_observations(truth, [45.0, 50.0], [0.0, 5.0], error_std={"z": 5.0, "u": 1.0, "v": 1.0},
                      seed=0).to_netcdf(tmp_path / "obs.nc")
    truth.to_netcdf(tmp_path / "background.nc")
    invoke("assimilate", tmp_path, model="model", background="background.nc", observations="obs.nc",
           output="out.zarr", members=2, seed=1, options={"steps": 2}, batch={"time_chunk": 2}, progress=False)
    out = xr.open_zarr(tmp_path / "out.zarr", consolidated=True)
    assert out["z"].encoding["chunks"][1] == 2
    direct = assimilate(AssimilationModel.load(tmp_path / "model"), xr.open_dataset(tmp_path / "background.nc"),
                        xr.open_dataset(tmp_path / "obs.nc"), members=2, steps=2, seed=1, progress=False)
    for name in direct.data_vars:
        xr.testing.assert_equal(out[name].load(), direct[name])
