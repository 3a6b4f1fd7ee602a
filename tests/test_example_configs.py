"""Every configuration in examples/configs/ runs as shipped, through the command line, from a copy of the
repository layout: validate, then fit; validate, then train; reconstruct in parts, batch status, batch run;
evaluate."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
from typer.testing import CliRunner

import geodiff
from geodiff.cli import app

REPOSITORY = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture
def configs(tmp_path):
    """``examples/configs`` copied into a fresh tree beside the package (the relative paths of a clone)."""
    shutil.copytree(REPOSITORY / "examples" / "configs", tmp_path / "examples" / "configs",
                    ignore=shutil.ignore_patterns("reconstruction.zarr", "scores.json", "prior", "checkpoints",
                                                  "fitted_prior", "fit_checkpoints"))
    (tmp_path / "geodiff").symlink_to(REPOSITORY / "geodiff", target_is_directory=True)
    return tmp_path / "examples" / "configs"


def geodiff_command(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, f"geodiff {' '.join(args)}:\n{result.output}"
    return result.output


def test_every_example_config_is_run_by_a_test():
    shipped = sorted(p.name for p in (REPOSITORY / "examples" / "configs").glob("*.yaml"))
    assert shipped == ["evaluate.yaml", "fit.yaml", "reconstruct_woa_batch.yaml", "train.yaml"]


def test_fit_config_runs_as_shipped(configs):
    config = str(configs / "fit.yaml")
    assert "valid fit configuration" in geodiff_command("validate", "--config", config)  # command from the keys
    assert "wrote model bundle" in geodiff_command("fit", "--config", config)
    settings = yaml.safe_load(Path(config).read_text())
    bundle = geodiff.load(configs / settings["output"])
    training = bundle.metadata["training"]
    assert training["prior"] == "hybrid" and training["steps"] == settings["steps"]
    assert "correction_check" in training  # the learned correction was judged on guided reconstructions
    west, south, east, north = settings["bbox"]
    assert bundle.codec.shape[0] == len(settings["levels"])
    assert south <= min(bundle.codec.lat) and max(bundle.codec.lat) <= north
    assert west <= min(bundle.codec.lon) and max(bundle.codec.lon) <= east


def test_train_config_runs_as_shipped(configs):
    config = str(configs / "train.yaml")
    assert "valid train configuration" in geodiff_command("validate", "train", "--config", config)
    assert "wrote model bundle" in geodiff_command("train", "--config", config)
    bundle = geodiff.load(configs / "prior")
    assert bundle.metadata["training"]["steps"] == yaml.safe_load(Path(config).read_text())["training"]["steps"]


def test_reconstruct_and_evaluate_configs_run_as_shipped(configs):
    config = str(configs / "reconstruct_woa_batch.yaml")
    for command in ("reconstruct", "batch"):
        assert f"valid {command} configuration" in geodiff_command("validate", command, "--config", config)
    assert "1/2 regions done" in geodiff_command("reconstruct", "--config", config, "--part", "1/2")
    assert "missing: 1" in geodiff_command("batch", "status", str(configs / "reconstruction.zarr"))
    assert "2 regions, finalised" in geodiff_command("batch", "run", "--config", config)
    out = xr.open_zarr(configs / "reconstruction.zarr")
    truth = xr.open_dataset(configs / "data" / "woa_truth.nc")
    assert dict(out["temperature"].sizes) == {"member": 4, **truth["temperature"].sizes}
    shipped = xr.open_dataset(configs / "data" / "woa_reconstruction.nc")  # what evaluate.yaml scores
    np.testing.assert_array_equal(out["temperature"].values, shipped["temperature"].values)
    for command in (["validate", "--config"], ["validate", "batch", "--config"]):  # the command read from the keys
        assert "valid batch configuration" in geodiff_command(*command, config)
    evaluate = str(configs / "evaluate.yaml")
    assert "valid evaluate configuration" in geodiff_command("validate", "evaluate", "--config", evaluate)
    assert "rmse_ensemble_mean" in geodiff_command("evaluate", "--config", evaluate)
    scores = json.loads((configs / "scores.json").read_text())["scores"]["temperature"]
    assert 0 < scores["rmse_ensemble_mean"] < 5  # degC: the climatological spread of the box is about 8


def test_a_batch_config_names_its_pipeline(configs, tmp_path):
    settings = yaml.safe_load((configs / "reconstruct_woa_batch.yaml").read_text())
    (configs / "other.yaml").write_text(yaml.safe_dump({**settings, "job": "downscale"}))
    result = runner.invoke(app, ["reconstruct", "--config", str(configs / "other.yaml")])
    assert result.exit_code == 2 and "key 'job' is 'downscale'" in result.output
