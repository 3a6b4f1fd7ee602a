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


def test_downscale_batch_over_another_domain_writes_the_output_grid(tmp_path):
    """A downscaling model samples any domain: the store's grid is the coarse field's refined grid, not the grid
    the model was trained on."""
    from geodiff.batch import PipelineJob, finalise, run_batch
    from geodiff.batch.store import OutputStore
    from geodiff.pipelines.downscale import coarsen, downscale, refine_coords
    from tests.downscaling.conftest import FACTOR, make_bundle, make_fine_dataset

    training = make_fine_dataset()
    other = make_fine_dataset().isel(lat=slice(0, 8), lon=slice(0, 16))  # a smaller domain ...
    other = other.assign_coords(lat=other["lat"] + 10.0, lon=other["lon"] - 30.0)  # ... somewhere else
    coarse = coarsen(other[["tas"]], FACTOR)
    bundle = make_bundle(training)
    job = PipelineJob("downscale", bundle, {"coarse": coarse}, members=2, seed=1, options={"steps": 2})
    template = job.sample()
    np.testing.assert_allclose(template["lat"].values, refine_coords(coarse["lat"].values, FACTOR))
    np.testing.assert_allclose(template["lon"].values, refine_coords(coarse["lon"].values, FACTOR))
    run_batch(job, tmp_path / "out.zarr", time_chunk=1, progress=False)
    out = finalise(tmp_path / "out.zarr")
    ledger = OutputStore(tmp_path / "out.zarr").entries()
    assert [entry["runaway"]["policy"] for entry in ledger] == ["resample", "resample"]  # kept per region
    direct = downscale(bundle, coarse, members=2, steps=2, seed=1, progress=False)
    assert out["tas"].sizes == {"member": 2, "time": 2, "lat": 8, "lon": 16}
    xr.testing.assert_equal(out["tas"].load(), direct["tas"])
    assert out["tas"].attrs == direct["tas"].attrs
