"""The command line: plugins listing, the demo at small settings, bad input exits non-zero with a message."""

import warnings

from typer.testing import CliRunner

from geodiff.cli import app

runner = CliRunner()


def test_plugins_lists_every_kind():
    result = runner.invoke(app, ["plugins"])
    assert result.exit_code == 0
    for kind in ("backbone", "schedule", "sampler", "guidance", "adapter", "reward"):
        assert f"{kind}:" in result.output
    assert "mmps" in result.output and "unet" in result.output


def test_unknown_plugin_kind_fails_clearly():
    result = runner.invoke(app, ["plugins", "widget"])
    assert result.exit_code == 2
    assert "unknown plugin kind 'widget'" in result.output


def test_demo_small_writes_netcdf_and_figure(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # coastline files may be missing on the test machine
        result = runner.invoke(app, ["demo", "--output", str(tmp_path), "--members", "2", "--steps", "10",
                                     "--no-baselines"])
    assert result.exit_code == 0, result.output
    assert "| guided diffusion |" in result.output
    assert (tmp_path / "reconstruction.nc").stat().st_size > 0
    assert (tmp_path / "reconstruction.png").stat().st_size > 10_000


def test_demo_rejects_bad_coverage(tmp_path):
    result = runner.invoke(app, ["demo", "--output", str(tmp_path), "--coverage", "1.5"])
    assert result.exit_code == 2
    assert "coverage" in result.output


# ---------------------------------------------------------------------------------------------------------------
# YAML-driven commands: train, reconstruct, batch run/status/finalise, evaluate, validate, downscale, assimilate

import dataclasses  # noqa: E402
import json  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402
import yaml  # noqa: E402

import geodiff  # noqa: E402
from tests.batch.helpers import VARIABLE, observations, synthetic_ocean  # noqa: E402


def write_config(path, **settings):
    path.write_text(yaml.safe_dump(settings))
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder with training data, an observation table and a bundle trained by ``geodiff train``."""
    root = tmp_path_factory.mktemp("cli")
    synthetic_ocean(8).to_netcdf(root / "ocean.nc")
    observations(4).to_netcdf(root / "obs.nc")
    training = {"steps": 2, "batch_size": 4, "seed": 1, "checkpoint_every": 1}
    config = write_config(root / "train.yaml", data="ocean.nc", output="bundle", checkpoint_dir="checkpoints",
                          model={"base_channels": 8, "channel_mults": [1, 2]}, training=training, progress=False)
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output
    return root


def test_train_writes_a_bundle_with_history_and_resumes_from_checkpoints(workspace, tmp_path):
    first = geodiff.load(workspace / "bundle")
    assert first.metadata["training"]["steps"] == 2
    assert first.metadata["history"].endswith(f"geodiff train --config {workspace / 'train.yaml'}")
    config = yaml.safe_load((workspace / "train.yaml").read_text())
    config.update(data=str(workspace / "ocean.nc"), output=str(tmp_path / "longer"),
                  checkpoint_dir=str(workspace / "checkpoints"))
    config["training"]["steps"] = 3
    result = runner.invoke(app, ["train", "--config", str(write_config(tmp_path / "more.yaml", **config))])
    assert result.exit_code == 0, result.output
    longer = geodiff.load(tmp_path / "longer")
    assert longer.metadata["training"]["steps"] == 3
    assert longer.metadata["training"]["resumed_from"] == "step-00000002"
    config.update(output=str(tmp_path / "straight"), checkpoint_dir=str(tmp_path / "fresh"))
    result = runner.invoke(app, ["train", "--config", str(write_config(tmp_path / "straight.yaml", **config))])
    assert result.exit_code == 0, result.output
    straight = geodiff.load(tmp_path / "straight")
    assert straight.metadata["training"]["resumed_from"] is None
    for name, tensor in straight.denoiser.state_dict().items():  # 2 + 1 resumed steps == 3 steps at once
        assert torch.equal(tensor, longer.denoiser.state_dict()[name]), name
    again = runner.invoke(app, ["train", "--config", str(tmp_path / "more.yaml")])
    assert again.exit_code == 2 and "is not empty; set overwrite: true" in again.output


def test_reconstruct_to_netcdf_appends_the_command_line_to_history(workspace, tmp_path):
    config = write_config(tmp_path / "rec.yaml", model=str(workspace / "bundle"),
                          observations=str(workspace / "obs.nc"),
                          output=str(tmp_path / "out.nc"), members=2, seed=3, options={"steps": 2, "max_normalized": None}, progress=False)
    result = runner.invoke(app, ["reconstruct", "--config", str(config)])
    assert result.exit_code == 0, result.output
    out = xr.open_dataset(tmp_path / "out.nc")
    assert out[VARIABLE].dims == ("member", "time", "depth", "lat", "lon") and out.sizes["time"] == 4
    lines = out.attrs["history"].splitlines()
    assert lines[-1].endswith(f"geodiff reconstruct --config {config}") and "geodiff.reconstruct(" in lines[-2]
    direct = geodiff.reconstruct(geodiff.load(workspace / "bundle"), observations(4), members=2, seed=3, steps=2, max_normalized=None,
                                 progress=False)
    xr.testing.assert_equal(out[VARIABLE].load(), direct[VARIABLE])


def test_reconstruct_to_zarr_in_parts_then_batch_status_run_and_finalise(workspace, tmp_path):
    settings = dict(model=str(workspace / "bundle"), observations=str(workspace / "obs.nc"),
                    output=str(tmp_path / "out.zarr"), members=2, seed=3, options={"steps": 2, "max_normalized": None}, progress=False,
                    batch={"time_chunk": 1, "chunks": {"lon": 8}})
    config = write_config(tmp_path / "rec.yaml", **settings)
    result = runner.invoke(app, ["reconstruct", "--config", str(config), "--part", "1/2"])
    assert result.exit_code == 0, result.output
    assert "2/4 regions done" in result.output
    result = runner.invoke(app, ["batch", "status", str(tmp_path / "out.zarr")])
    assert result.exit_code == 0 and "2/4 regions done" in result.output
    assert "missing: 1 (times 1:2), 3" in result.output
    result = runner.invoke(app, ["batch", "finalise", str(tmp_path / "out.zarr")])
    assert result.exit_code == 2 and "region 1 (times 1:2) is not done" in result.output
    batch_config = write_config(tmp_path / "batch.yaml", job="reconstruct", **settings)
    result = runner.invoke(app, ["batch", "run", "--config", str(batch_config), "--part", "2/2"])
    assert result.exit_code == 0 and "4 regions, finalised" in result.output, result.output
    result = runner.invoke(app, ["batch", "finalise", str(tmp_path / "out.zarr")])
    assert result.exit_code == 0, result.output
    out = xr.open_zarr(tmp_path / "out.zarr", consolidated=True)
    lines = out.attrs["history"].splitlines()
    assert lines[-3].endswith(f"geodiff reconstruct --config {config} --part 1/2")
    assert lines[-1].endswith(f"geodiff batch finalise {tmp_path / 'out.zarr'}")
    direct = geodiff.reconstruct(geodiff.load(workspace / "bundle"), observations(4), members=2, seed=3, steps=2, max_normalized=None,
                                 progress=False)
    xr.testing.assert_equal(out[VARIABLE].load(), direct[VARIABLE])


def test_evaluate_scores_an_ensemble_against_the_truth(workspace, tmp_path):
    truth = synthetic_ocean(4)
    truth.to_netcdf(tmp_path / "truth.nc")
    prediction = truth.expand_dims(member=3).copy()
    prediction[VARIABLE] = prediction[VARIABLE] + xr.DataArray([0.0, 1.0, 2.0], dims="member")
    prediction.to_netcdf(tmp_path / "pred.nc")
    config = write_config(tmp_path / "eval.yaml", prediction="pred.nc", truth="truth.nc", output="scores.json",
                          weights="none")
    result = runner.invoke(app, ["evaluate", "--config", str(config)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "scores.json").read_text())
    scores = report["scores"][VARIABLE]
    assert scores["rmse_ensemble_mean"] == pytest.approx(1.0, rel=1e-6)  # the mean is the truth + 1
    assert scores["crps"] == pytest.approx(1 - 8 / (2 * 3 * 2), rel=1e-5)  # fair CRPS of {0, 1, 2} at 0: 1/3
    assert report["history"].endswith(f"geodiff evaluate --config {config}")
    assert "| thetao | crps |" in result.output


def test_validate_checks_a_configuration_and_the_observations_without_computing(workspace, tmp_path):
    config = write_config(tmp_path / "rec.yaml", model=str(workspace / "bundle"),
                          observations=str(workspace / "obs.nc"),
                          output=str(tmp_path / "never.zarr"))
    result = runner.invoke(app, ["validate", "reconstruct", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "observations: 48 in, 48 kept" in result.output and "valid reconstruct configuration" in result.output
    assert not (tmp_path / "never.zarr").exists()
    result = runner.invoke(app, ["validate", "widget", "--config", str(config)])
    assert result.exit_code == 2 and "unknown command 'widget'" in result.output


BAD_CONFIGS = [
    ({"stepz": 3}, "unknown key 'stepz' (allowed: model, output, members"),
    ({"members": "four"}, "key 'members': Input should be a valid integer"),
    ({"members": 0}, "key 'members': Input should be greater than or equal to 1"),
    ({"batch": {"time_chunk": 2, "workerz": 1}}, "unknown key 'batch.workerz' (allowed: time_chunk, chunks"),
    ({"observations": "missing.nc"}, "key 'observations': file"),
    ({"options": {"stepz": 3}}, "unknown key(s) options.stepz for the reconstruct pipeline"),
]


@pytest.mark.parametrize(("change", "message"), BAD_CONFIGS)
def test_bad_reconstruct_config_exits_nonzero_naming_the_key(workspace, tmp_path, change, message):
    settings = {"model": str(workspace / "bundle"), "observations": str(workspace / "obs.nc"),
                "output": str(tmp_path / "out.zarr"), **change}
    config = write_config(tmp_path / "bad.yaml", **settings)
    for args in (["reconstruct", "--config", str(config)], ["validate", "reconstruct", "--config", str(config)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert message in result.output and str(config) in result.output
    assert not (tmp_path / "out.zarr").exists()  # nothing computed


def test_bad_files_and_batch_configs_exit_nonzero(workspace, tmp_path):
    result = runner.invoke(app, ["train", "--config", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 2 and "configuration file" in result.output
    assert "absent.yaml does not exist" in result.output
    (tmp_path / "broken.yaml").write_text("data: [unclosed\n")
    result = runner.invoke(app, ["train", "--config", str(tmp_path / "broken.yaml")])
    assert result.exit_code == 2 and "is not valid YAML" in result.output
    config = write_config(tmp_path / "t.yaml", data=str(workspace / "ocean.nc"), output=str(tmp_path / "b"),
                          training={"steps": 2})
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 2 and "missing key 'training.batch_size'" in result.output
    common = {"model": str(workspace / "bundle"), "observations": str(workspace / "obs.nc")}
    config = write_config(tmp_path / "b.yaml", job="reconstruct", output=str(tmp_path / "out.nc"), **common)
    result = runner.invoke(app, ["batch", "run", "--config", str(config)])
    assert result.exit_code == 2 and "key 'output' must be a .zarr store" in result.output
    config = write_config(tmp_path / "c.yaml", job="widget", output=str(tmp_path / "out.zarr"), **common)
    result = runner.invoke(app, ["batch", "run", "--config", str(config)])
    assert result.exit_code == 2 and "key 'job' must be one of" in result.output
    config = write_config(tmp_path / "d.yaml", output=str(tmp_path / "out.zarr"), **common)
    result = runner.invoke(app, ["reconstruct", "--config", str(config), "--part", "3/2"])
    assert result.exit_code == 2 and "1 <= i <= N" in result.output
    result = runner.invoke(app, ["batch", "status", str(tmp_path / "nothing.zarr")])
    assert result.exit_code == 2 and "is not a zarr store" in result.output


@pytest.mark.parametrize(("command", "inputs"),
                         [("downscale", ("coarse",)), ("assimilate", ("background", "observations"))])
def test_downscale_and_assimilate_name_an_unavailable_pipeline(workspace, tmp_path, monkeypatch, command, inputs):
    from geodiff.batch.job import JOB_KINDS

    absent = f"geodiff.pipelines.absent_{command}:{command}"  # as in an installation without that pipeline
    monkeypatch.setitem(JOB_KINDS, command, dataclasses.replace(JOB_KINDS[command], pipeline=absent))
    config = write_config(tmp_path / f"{command}.yaml", model=str(workspace / "bundle"),
                          output=str(tmp_path / "out.zarr"), **{name: str(workspace / "obs.nc") for name in inputs})
    result = runner.invoke(app, [command, "--config", str(config)])
    assert result.exit_code == 2
    assert f"pipeline '{absent}' is not available in this installation" in result.output
    assert not (tmp_path / "out.zarr").exists()


def test_validate_without_a_command_names_the_keys_it_cannot_place(tmp_path):
    config = tmp_path / "unclear.yaml"
    config.write_text("truth: a.nc\nmembers: 4\n")
    result = CliRunner().invoke(app, ["validate", "--config", str(config)])
    assert result.exit_code == 2 and "cannot tell which command its keys ['members', 'truth']" in result.output
    assert "Traceback" not in result.output
