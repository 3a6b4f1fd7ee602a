"""Bad inputs through the ``geodiff`` command: every expected failure exits 2 with one line naming the file, key or
value (never a traceback), ``validate`` refuses what the run would, and what can be standardised is, with a record.

A case is ``(category, name, command, build, text)``. ``build(workspace, tmp_path)`` writes the inputs and returns
the configuration (a dict written as YAML, or the text of a YAML file). The command must exit with code 2, print
no traceback, and its message must contain ``text``; for the YAML-driven commands ``geodiff validate`` must refuse
the same configuration with the same message, before anything is computed.

``python -m tests.reliability.test_cli_inputs`` prints the table: category, input tried, outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import yaml
from typer.testing import CliRunner

from geodiff.cli import app
from geodiff.testing.datasets import VARIABLE, synthetic_ocean
from tests.batch.helpers import observations, tiny_bundle

runner = CliRunner()

CATEGORIES = (
    "input files cut short, empty, not what their name says or corrupt",
    "training data not validated",
    "units ignored where they are declared",
    "bad coordinates and times",
    "resources not bounded",
    "errors that blame the wrong thing",
    "validate passes what run refuses",
)


@dataclass(frozen=True)
class CliCase:
    category: str
    name: str
    command: str
    build: Callable[[Path, Path], Any]
    text: str

    def __post_init__(self) -> None:
        assert self.category in CATEGORIES, self.category


# ---------------------------------------------------------------------------------------------------------------
# builders


def _cut(path: Path, keep: float = 0.6) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _write(tmp: Path, name: str, ds: xr.Dataset, fmt: str = "NETCDF4") -> Path:
    path = tmp / name
    ds.to_netcdf(path, format=fmt)
    return path


def train_config(ws: Path, tmp: Path, data: Path | str | None = None, **training: Any) -> dict[str, Any]:
    return {"data": str(data or ws / "ocean.nc"), "output": str(tmp / "bundle"), "progress": False,
            "model": {"base_channels": 8, "channel_mults": [1, 2]},
            "training": {"steps": 1, "batch_size": 2, **training}}


def recon_config(ws: Path, tmp: Path, observations_path: Path | str | None = None, **settings: Any) -> dict:
    options = {"steps": 2, "max_normalized": None, **settings.pop("options", {})}
    return {"model": str(ws / "bundle"), "observations": str(observations_path or ws / "obs.nc"),
            "output": str(tmp / "out.nc"), "members": 2, "progress": False, "options": options, **settings}


def spoiled_training(ws: Path, tmp: Path, spoil: Callable[[xr.Dataset], xr.Dataset], **training: Any) -> dict:
    return train_config(ws, tmp, _write(tmp, "spoiled.nc", spoil(synthetic_ocean(8))), **training)


def corrupt_zarr_observations(ws: Path, tmp: Path) -> dict:
    path = tmp / "obs.zarr"
    observations(4).to_zarr(path, zarr_format=3)
    chunk = next(p for p in (path / "value").rglob("*") if p.is_file() and p.name != "zarr.json")
    data = bytearray(chunk.read_bytes())
    for i in range(8, len(data), 7):
        data[i] ^= 0xFF
    chunk.write_bytes(bytes(data))
    return recon_config(ws, tmp, path)


def csv_observations(ws: Path, tmp: Path, time: str) -> dict:
    table = observations(1).to_dataframe().reset_index(drop=True)
    table["time"] = table["time"].astype(str)
    table.loc[3, "time"] = time
    path = tmp / "obs.csv"
    table.to_csv(path, index=False)
    return recon_config(ws, tmp, path)


def string_time_observations(ws: Path, tmp: Path) -> dict:
    table = observations(1)
    times = table["time"].values.astype(str).astype(object)
    times[2] = "not a time"
    path = _write(tmp, "obs_text_times.nc", table.assign_coords(time=("obs", times)))
    return recon_config(ws, tmp, path)


def truth_and_prediction(ws: Path, tmp: Path, truth_units: str) -> dict:
    truth = synthetic_ocean(2)
    prediction = truth.expand_dims(member=2)
    if truth_units == "K":
        truth = truth.assign({VARIABLE: (truth[VARIABLE] + 273.15).assign_attrs(truth[VARIABLE].attrs, units="K")})
    else:
        del truth[VARIABLE].attrs["units"]
    return {"prediction": str(_write(tmp, "pred.nc", prediction)), "truth": str(_write(tmp, "truth.nc", truth)),
            "weights": "none"}


ALIAS_BOMB = """model: {model}
observations: {obs}
output: {out}
options:
  guidance_options:
    a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
    h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
"""


def alias_bomb(ws: Path, tmp: Path) -> str:
    return ALIAS_BOMB.format(model=ws / "bundle", obs=ws / "obs.nc", out=tmp / "out.nc")


def duplicate_keys(ws: Path, tmp: Path) -> str:
    return f"model: {ws / 'bundle'}\nobservations: {ws / 'obs.nc'}\noutput: {tmp / 'out.nc'}\nmembers: 2\nmembers: 64\n"


def _lat(ds: xr.Dataset, values: Any) -> xr.Dataset:
    return ds.assign_coords(lat=("lat", np.asarray(values, float), ds.lat.attrs))


# ---------------------------------------------------------------------------------------------------------------
# the table

C = CliCase
FILES, TRAINING, UNITS, COORDS, RESOURCES, BLAME, VALIDATE = CATEGORIES
CASES: list[CliCase] = [
    # -- files
    C(FILES, "train on a netCDF-4 file cut short", "train",
      lambda w, t: train_config(w, t, _cut(_write(t, "cut.nc", synthetic_ocean(8)))), "is incomplete or corrupt"),
    C(FILES, "train on a netCDF-3 file cut short (reads as zeros otherwise)", "train",
      lambda w, t: train_config(w, t, _cut(_write(t, "cut3.nc", synthetic_ocean(8), "NETCDF3_64BIT"), 0.9)),
      "is incomplete or corrupt"),
    C(FILES, "reconstruct from an observation file cut short", "reconstruct",
      lambda w, t: recon_config(w, t, _cut(_write(t, "obs_cut.nc", observations(4), "NETCDF3_64BIT"), 0.8)),
      "is incomplete or corrupt"),
    C(FILES, "zero-byte file named .nc", "reconstruct",
      lambda w, t: recon_config(w, t, (t / "empty.nc").write_bytes(b"") or t / "empty.nc"), "it is empty (0 bytes)"),
    C(FILES, "text file named .nc", "train",
      lambda w, t: train_config(w, t, (t / "text.nc").write_text("time,lat,lon\n1,2,3\n") and t / "text.nc"),
      "is not a netCDF file"),
    C(FILES, "corrupted zarr chunk in an input", "reconstruct", corrupt_zarr_observations,
      "variable 'value' has a chunk that cannot be read"),
    C(FILES, "CSV with an unparseable time", "reconstruct", lambda w, t: csv_observations(w, t, "yesterday"),
      "row 3 holds 'yesterday', which is not a time"),
    C(FILES, "output below a file", "reconstruct", lambda w, t: recon_config(w, t, output=str(w / "obs.nc" / "o.nc")),
      "obs.nc is a file, not a folder"),
    # -- training data
    C(TRAINING, "1e20 fill values", "train",
      lambda w, t: spoiled_training(w, t, lambda ds: ds.where(ds.time != ds.time[2], 1e20)),
      "fill value(s) of magnitude >= 1e+15"),
    C(TRAINING, "kelvin mixed with degC", "train",
      lambda w, t: spoiled_training(w, t, lambda ds: ds.where(ds.time != ds.time[3], ds + 273.15)),
      "impossible in degC"),
    C(TRAINING, "latitudes of +-150", "train",
      lambda w, t: spoiled_training(w, t, lambda ds: _lat(ds, ds.lat.values * 10)), "coordinate 'lat' has"),
    C(TRAINING, "non-monotonic longitudes", "train",
      lambda w, t: spoiled_training(w, t, lambda ds: ds.isel(lon=[*range(4), 6, 5, *range(7, ds.sizes["lon"])])),
      "coordinate 'lon' is not monotonic"),
    C(TRAINING, "negative grad_clip", "train", lambda w, t: train_config(w, t, grad_clip=-1.0),
      "key 'training.grad_clip': Input should be greater than or equal to 0"),
    C(TRAINING, "duplicate times", "train",
      lambda w, t: spoiled_training(w, t, lambda ds: ds.isel(time=[0, 1, 1, 2, 3])), "duplicate times"),
    C(TRAINING, "infinite values", "train",
      lambda w, t: spoiled_training(w, t, lambda ds: ds.where(ds.time != ds.time[1], np.inf)),
      "infinite value(s)"),
    # -- units
    C(UNITS, "evaluate: truth in K, prediction in degC -- converted (see test below); truth without units",
      "evaluate", lambda w, t: truth_and_prediction(w, t, "none"), "variable 'thetao' has no 'units'"),
    C(UNITS, "observation value in an unknown unit", "reconstruct",
      lambda w, t: recon_config(w, t, _write(t, "obs_furlong.nc", observations(2).assign(
          value=observations(2).value.assign_attrs(units="furlong")))), "cannot be converted to 'degC'"),
    # -- coordinates and times
    C(COORDS, "observation times 'not a time'", "reconstruct", string_time_observations,
      "'not a time', which is not a time"),
    C(COORDS, "config times not a time", "reconstruct", lambda w, t: recon_config(w, t, times=["2001-01-01", "soon"]),
      "key 'times': row 1 holds 'soon'"),
    C(COORDS, "assimilate-style gridded input without lat values", "train",
      lambda w, t: spoiled_training(w, t, lambda ds: ds.drop_vars("lat")), "dimension 'lat' has no coordinate values"),
    # -- resources
    C(RESOURCES, "members: 100000000", "reconstruct", lambda w, t: recon_config(w, t, members=100_000_000),
      "key 'members': 100000000 members of fields"),
    C(RESOURCES, "2^20 base channels", "train",
      lambda w, t: {**train_config(w, t), "model": {"base_channels": 2**20}}, "key 'model.base_channels': 1048576"),
    C(RESOURCES, "YAML alias bomb in options.guidance_options", "reconstruct", alias_bomb,
      "values through its aliases (more than 100000)"),
    C(RESOURCES, "duplicate YAML keys", "reconstruct", duplicate_keys, "key 'members' is given twice (lines 4 and 5)"),
    C(RESOURCES, "a binary file as configuration", "reconstruct", lambda w, t: b"\x89HDF\r\n\x1a\n\xff\xfe\x00",
      "is not a text (YAML) file"),
    C(RESOURCES, "float members", "reconstruct", lambda w, t: recon_config(w, t, members=2.5),
      "key 'members': Input should be a valid integer"),
    C(RESOURCES, "max_normalized: 'none'", "reconstruct",
      lambda w, t: recon_config(w, t, options={"max_normalized": "none"}), "max_normalized must be a positive number"),
    # -- wrong blame
    C(BLAME, "device: cuda without CUDA", "reconstruct", lambda w, t: recon_config(w, t, options={"device": "cuda"}),
      "asks for CUDA but this machine has no usable CUDA GPU"),
    C(BLAME, "unknown key in guidance_options", "reconstruct",
      lambda w, t: recon_config(w, t, options={"guidance_options": {"cg_iterashuns": 2}}),
      "unknown key(s) 'cg_iterashuns' for MMPSGuidance (allowed: method, cg_iterations"),
    C(BLAME, "a guidance option of the wrong type", "reconstruct",
      lambda w, t: recon_config(w, t, options={"guidance_options": {"cg_iterations": "three"}}),
      "key 'cg_iterations' of MMPSGuidance: expected int"),
    C(BLAME, "an option of the wrong type", "reconstruct", lambda w, t: recon_config(w, t, options={"steps": "many"}),
      "key 'options.steps': expected int"),
    C(BLAME, "observation value 1e20 with the range check off", "reconstruct",
      lambda w, t: recon_config(w, t, _write(t, "obs_fill.nc", observations(2).assign(
          value=observations(2).value.where(observations(2).obs != 3, 1e20)))), "fill value(s) (|value| >= 1e+15)"),
    # -- validate == run
    C(VALIDATE, "guidance: mmsp", "reconstruct", lambda w, t: recon_config(w, t, options={"guidance": "mmsp"}),
      "no guidance plugin named 'mmsp'"),
    C(VALIDATE, "netCDF output that exists already", "reconstruct",
      lambda w, t: recon_config(w, t, output=str(w / "obs.nc")), "obs.nc exists; remove it"),
    C(VALIDATE, "training output that is not empty", "train",
      lambda w, t: {**train_config(w, t), "output": str(w / "bundle")}, "is not empty; set overwrite: true"),
    C(VALIDATE, "unknown precision", "reconstruct", lambda w, t: recon_config(w, t, options={"precision": "fp64"}),
      "precision must be one of ('fp32', 'bf16', 'fp16')"),
    C(VALIDATE, "unknown runaway policy", "reconstruct",
      lambda w, t: recon_config(w, t, options={"on_runaway": "ignore"}), "on_runaway must be one of"),
    C(VALIDATE, "sampler options of another sampler", "reconstruct",
      lambda w, t: recon_config(w, t, options={"sampler_options": {"eta": 0.5}}),
      "unknown key(s) 'eta' for HeunSampler"),
]
if __import__("torch").cuda.is_available():  # the CUDA case needs a machine without it
    CASES = [case for case in CASES if "cuda" not in case.name]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Training data, an observation table and a tiny model bundle."""
    root = tmp_path_factory.mktemp("cli-inputs")
    synthetic_ocean(8).to_netcdf(root / "ocean.nc")
    observations(4).to_netcdf(root / "obs.nc")
    tiny_bundle(root / "bundle", steps=1)
    return root


def _config_file(tmp_path: Path, config: Any) -> Path:
    path = tmp_path / "config.yaml"
    if isinstance(config, bytes):
        path.write_bytes(config)
    else:
        path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    return path


def _refused(args: list[str], text: str) -> None:
    result = runner.invoke(app, args)
    output = result.output
    assert result.exit_code == 2, (result.exit_code, output, result.exception)
    assert "Traceback" not in output and not isinstance(result.exception, Exception) or \
        isinstance(result.exception, SystemExit), output
    assert text in output, f"{text!r} not in: {output}"
    assert len(output.strip().splitlines()) == 1, output  # one message


@pytest.mark.parametrize("case", CASES, ids=[f"{c.category[:20]}|{c.name}" for c in CASES])
def test_bad_input_through_the_command_exits_2_naming_it(case: CliCase, workspace: Path, tmp_path: Path) -> None:
    config = _config_file(tmp_path, case.build(workspace, tmp_path))
    _refused(["validate", case.command, "--config", str(config)], case.text)
    _refused([case.command, "--config", str(config)], case.text)
    assert not (tmp_path / "out.nc").exists() and not (tmp_path / "bundle").exists()  # nothing computed


def test_the_table_covers_every_category() -> None:
    assert {case.category for case in CASES} == set(CATEGORIES)
    assert len({case.name for case in CASES}) == len(CASES)


# ---------------------------------------------------------------------------------------------------------------
# handled with a record (the command succeeds and its result is right)


def test_evaluate_converts_a_truth_in_kelvin_to_the_prediction_units(workspace: Path, tmp_path: Path) -> None:
    scores = {}
    for units in ("K", "degC"):
        settings = truth_and_prediction(workspace, tmp_path, units) if units == "K" else {
            "prediction": str(_write(tmp_path, "pred_c.nc", synthetic_ocean(2).expand_dims(member=2))),
            "truth": str(_write(tmp_path, "truth_c.nc", synthetic_ocean(2))), "weights": "none"}
        settings["output"] = str(tmp_path / f"scores_{units}.json")
        result = runner.invoke(app, ["evaluate", "--config", str(_config_file(tmp_path, settings))])
        assert result.exit_code == 0, result.output
        scores[units] = yaml.safe_load((tmp_path / f"scores_{units}.json").read_text())["scores"][VARIABLE]
    assert scores["K"]["bias"] == pytest.approx(scores["degC"]["bias"], abs=1e-4)  # not -273.15
    assert abs(scores["K"]["bias"]) < 1e-3


def test_training_data_with_descending_latitude_is_flipped(workspace: Path, tmp_path: Path) -> None:
    import geodiff

    config = spoiled_training(workspace, tmp_path, lambda ds: ds.isel(lat=slice(None, None, -1)))
    result = runner.invoke(app, ["train", "--config", str(_config_file(tmp_path, config))])
    assert result.exit_code == 0, result.output
    assert np.all(np.diff(geodiff.load(tmp_path / "bundle").codec.lat) > 0)


def test_help_lists_the_configuration_keys_and_version() -> None:
    from geodiff import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"geodiff {__version__}"
    for command, keys in (("train", ["training.grad_clip: float >= 0 | None = 1.0", "data: path = required"]),
                          ("reconstruct", ["members: int >= 1 = 8", "options.guidance: str = 'mmps'"]),
                          ("evaluate", ["weights: 'coslat' | 'none' = 'coslat'"]),
                          ("downscale", ["coarse: path = required", "options.guidance: str | None = 'coarse'"]),
                          ("assimilate", ["background: path = required"])):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, result.output
        for key in keys:
            assert key in result.output, (command, key, result.output)
    result = runner.invoke(app, ["batch", "run", "--help"])
    assert "job: 'reconstruct' | 'downscale' | 'assimilate' = required" in result.output


def table() -> str:
    """The table of the cases: category, input tried, outcome."""
    lines = ["| category | input tried | command | outcome |", "|---|---|---|---|"]
    for case in CASES:
        lines.append(f"| {case.category} | {case.name} | geodiff {case.command} (and validate) | "
                     f"exit 2: ...{case.text}... |")
    lines += ["| units ignored where they are declared | evaluate: truth in K, prediction in degC | geodiff evaluate | "
              "handled: truth converted to degC, bias ~0 |",
              "| training data not validated | descending latitude | geodiff train | handled: flipped, recorded |"]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
