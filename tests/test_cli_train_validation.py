"""``geodiff train`` with a validation split: validation losses logged and recorded; ``threads`` is a config key."""

import logging

import yaml
from typer.testing import CliRunner

import geodiff
from geodiff.cli import app
from tests.batch.helpers import synthetic_ocean

runner = CliRunner()


def test_train_holds_out_validation_times_and_reports_their_loss(tmp_path, caplog):
    synthetic_ocean(8).to_netcdf(tmp_path / "ocean.nc")
    settings = dict(data="ocean.nc", output="bundle", progress=False, threads=1,
                    model={"base_channels": 8, "channel_mults": [1, 2]},
                    training={"steps": 4, "batch_size": 2, "seed": 1, "validation": 0.25, "eval_every": 2})
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(settings))
    with caplog.at_level(logging.INFO, logger="geodiff"):
        result = runner.invoke(app, ["train", "--config", str(tmp_path / "train.yaml")])
    assert result.exit_code == 0, result.output
    training = geodiff.load(tmp_path / "bundle").metadata["training"]
    assert training["validation_times"] == 2 and len(training["validation_losses"]) == 3  # steps 0, 2, 4
    logged = [r.message for r in caplog.records if r.name == "geodiff.training.trainer"]
    assert sum(line.startswith("step ") and "validation loss" in line for line in logged) == 3
    assert "best validation loss" in logged[-1]
    settings["training"]["validation"] = 0.6
    settings["threads"] = 0
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(settings))
    result = runner.invoke(app, ["train", "--config", str(tmp_path / "bad.yaml")])
    assert result.exit_code == 2 and "key 'threads'" in result.output and "key 'training.validation'" in result.output
