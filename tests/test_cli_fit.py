"""``geodiff fit``: thin over geodiff.fit (same defaults, same weights), data selection, strict keys."""

import inspect
import typing

import pytest
import torch
import yaml
from typer.testing import CliRunner

import geodiff
from geodiff.cli import app
from geodiff.jobconfig import FIT_SELECTION_KEYS, FitConfig, load_config
from geodiff.testing.datasets import VARIABLE, synthetic_ocean

runner = CliRunner()


def test_every_argument_of_fit_is_a_key_with_fits_default():
    parameters = inspect.signature(geodiff.fit).parameters
    arguments = {name: field for name, field in FitConfig.model_fields.items() if name not in FIT_SELECTION_KEYS}
    assert set(arguments) == set(parameters) - {"ds"}
    for name, field in arguments.items():
        assert field.get_default(call_default_factory=True) == parameters[name].default, name
    hints = typing.get_type_hints(inspect.unwrap(geodiff.fit))
    for name in ("anomaly", "prior"):
        assert typing.get_args(FitConfig.model_fields[name].annotation) == typing.get_args(hints[name]), name


def test_a_configuration_without_settings_runs_fit_with_its_defaults(tmp_path):
    synthetic_ocean(4).to_netcdf(tmp_path / "ocean.nc")
    (tmp_path / "fit.yaml").write_text("data: ocean.nc\noutput: prior\n")
    settings = load_config(tmp_path / "fit.yaml", "fit")
    defaults = {name: p.default for name, p in inspect.signature(geodiff.fit).parameters.items() if name != "ds"}
    assert settings.model_dump(exclude=set(FIT_SELECTION_KEYS)) == defaults


@pytest.fixture
def workspace(tmp_path):
    synthetic_ocean(12).to_netcdf(tmp_path / "ocean.nc")
    return tmp_path


def write(folder, name, **settings):
    (folder / name).write_text(yaml.safe_dump(settings))
    return str(folder / name)


def test_fit_writes_the_bundle_geodiff_fit_returns(workspace):
    options = dict(steps=2, validate_every=1, base_channels=8, batch_size=2, seed=3, check_correction=False,
                   progress=False)
    config = write(workspace, "fit.yaml", data="ocean.nc", output="prior", levels=[50.0],
                   bbox=[10.0, -10.0, 31.0, 10.0], **options)
    validated = runner.invoke(app, ["validate", "--config", config])  # the command read from the keys
    assert validated.exit_code == 0 and "valid fit configuration" in validated.output, validated.output
    result = runner.invoke(app, ["fit", "--config", config])
    assert result.exit_code == 0 and "wrote model bundle" in result.output, result.output
    written = geodiff.load(workspace / "prior")
    assert written.metadata["history"].endswith(f"geodiff fit --config {config}")
    assert written.metadata["training"]["prior"] == "hybrid"
    assert written.metadata["training_data"] == {"path": str(workspace / "ocean.nc"),
                                                 "bbox": [10.0, -10.0, 31.0, 10.0], "levels": [50.0]}
    ds = synthetic_ocean(12).sel(depth=[50.0], lat=slice(-10, 10), lon=slice(10, 31))
    direct = geodiff.fit(ds, **options)
    assert list(written.codec.lat) == list(ds.lat.values) and list(written.codec.lon) == list(ds.lon.values)
    for name, tensor in direct.denoiser.state_dict().items():
        assert torch.equal(written.denoiser.state_dict()[name], tensor), name
    assert written.metadata["training"]["history"] == direct.metadata["training"]["history"]


@pytest.mark.parametrize("settings, message", [
    ({"stepz": 3}, "unknown key 'stepz' (allowed: data, variables, bbox"),
    ({"training": {"steps": 3}}, "unknown key 'training'"),
    ({"steps": "ten"}, "key 'steps'"),
    ({"validation": 0.7}, "key 'validation'"),
    ({"prior": "gaussian"}, "key 'prior'"),
    ({"bbox": [0.0, 10.0, 20.0]}, "key 'bbox'"),
    ({"device": "gpu"}, "key 'device'"),
    ({"levels": [25.0]}, "key 'levels': [25.0] are not values of 'depth'"),
    ({"variables": ["so"]}, "key 'variables': ['so'] not data variables"),
    ({"bbox": [100.0, -10.0, 120.0, 10.0]}, "key 'bbox'"),
])
def test_bad_settings_are_refused_with_one_line(workspace, settings, message):
    config = write(workspace, "bad.yaml", data="ocean.nc", output="prior", **settings)
    for command in (["fit", "--config", config], ["validate", "fit", "--config", config]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (workspace / "prior").exists()


def test_help_lists_the_keys_and_train_points_to_fit():
    fit_help = runner.invoke(app, ["fit", "--help"]).output
    for key in ("data: path = required", "bbox:", "levels:", "time_budget:", "check_correction: bool = True"):
        assert key in fit_help
    assert "geodiff fit" in " ".join(runner.invoke(app, ["train", "--help"]).output.split())
