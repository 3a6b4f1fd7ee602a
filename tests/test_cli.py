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
        result = runner.invoke(app, ["demo", "--output", str(tmp_path), "--members", "2", "--steps", "2",
                                     "--no-baselines"])
    assert result.exit_code == 0, result.output
    assert "| guided diffusion |" in result.output
    assert (tmp_path / "reconstruction.nc").stat().st_size > 0
    assert (tmp_path / "reconstruction.png").stat().st_size > 10_000


def test_demo_rejects_bad_coverage(tmp_path):
    result = runner.invoke(app, ["demo", "--output", str(tmp_path), "--coverage", "1.5"])
    assert result.exit_code == 2
    assert "coverage" in result.output
