"""Every kind of bad input in one table: each is rejected with a named GeodiffError subclass, or handled with a record.

A case is ``(category, name, call, expected, text)``. ``call(tmp_path)`` builds the bad input and makes the call.
When ``expected`` is a :class:`~geodiff.errors.GeodiffError` subclass, the call must raise exactly that class (or a
subclass) and the message must contain ``text`` (the offending variable, coordinate, attribute, column or file).
When ``expected`` is ``HANDLED``, the input is legitimate but irregular (a descending latitude, depth in cm, a
NaN observation...): the call must succeed, check its own result, and return the record it left
(``history`` / ``geodiff_standardize`` / the observation report), which must contain ``text``.

``python -m tests.reliability.test_bad_inputs`` prints the counts per category.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cftime
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from geodiff import metrics
from geodiff.adapters import cmip6, era5
from geodiff.adapters.standardize import check_calendars, select_bbox, standardize
from geodiff.errors import (
    CalendarError,
    CheckpointError,
    ConfigError,
    CoordinateError,
    DataError,
    GeodiffError,
    GridError,
    ObservationError,
    StoreError,
    UnitsError,
)
from geodiff.guidance.likelihood import GaussianLikelihood
from geodiff.io.bundle import BUNDLE_FILES, load
from geodiff.observations import as_observations, validate_observations
from geodiff.pipelines.reconstruct import reconstruct
from tests.reliability import damaged_stores as damaged
from tests.reliability import helpers

HANDLED = "handled"
DAMAGED = "store, ledger or checkpoint damaged on disk, or disk full"

#: the issue's list of bad inputs, one category each
CATEGORIES = (
    "units missing or unparseable",
    "units contradicting values",
    "axes ambiguous or missing",
    "coordinates descending, non-monotonic or duplicated",
    "longitudes outside -180..360 or mixed conventions",
    "latitude beyond 90",
    "sentinel coordinates",
    "depth without positive or in cm",
    "calendars mismatched",
    "observations NaN or all NaN",
    "observations outside the domain, on land or duplicated",
    "grid not the model grid",
    "checkpoint bundle truncated, tampered, of another model or with a pickle",
    "normalised inputs outside the training range",
    "existing store of another grid or chunking",
    "store, ledger or checkpoint damaged on disk, or disk full",
    "reconstruction with zero valid observations",
    "input file incomplete (killed writer)",
    "training data not validated",
    "units declared but ignored",
    "observation and coarse times or coordinates not checked",
    "resources not bounded",
    "errors that blame the wrong thing",
)


@dataclass(frozen=True)
class Case:
    category: str
    name: str
    call: Callable[[Path], Any]
    expected: type[GeodiffError] | str
    text: str

    def __post_init__(self) -> None:
        assert self.category in CATEGORIES, self.category


# ---------------------------------------------------------------------------------------------------------------
# builders


def grid(values: Any = None, *, units: str | None = "degC", lat: Any = (-10.0, 0.0, 10.0),
         lon: Any = (-170.0, -90.0, 0.0, 90.0), depth: Any = (5.0, 50.0), depth_attrs: dict | None = None,
         lat_name: str = "lat", depth_name: str = "depth", time: Any = None) -> xr.Dataset:
    """A small (time, depth, lat, lon) dataset with the given coordinates and thetao values."""
    lat, lon, depth = np.asarray(lat, float), np.asarray(lon, float), np.asarray(depth, float)
    time = np.array(["2000-01-15", "2000-02-15"], dtype="datetime64[ns]") if time is None else time
    shape = (len(time), depth.size, lat.size, lon.size)
    data = np.full(shape, 15.0) if values is None else np.broadcast_to(np.asarray(values, float), shape).copy()
    attrs = {"standard_name": "sea_water_potential_temperature"}
    if units is not None:
        attrs["units"] = units
    return xr.Dataset(
        {"thetao": (("time", depth_name, lat_name, "lon"), data, attrs)},
        coords={"time": time,
                depth_name: (depth_name, depth, {"units": "m", "positive": "down"} if depth_attrs is None
                             else depth_attrs),
                lat_name: (lat_name, lat, {"units": "degrees_north"}),
                "lon": ("lon", lon, {"units": "degrees_east"})},
        attrs={"history": "made by the reliability tests"},
    )


def std(ds: xr.Dataset, **kwargs: Any) -> xr.Dataset:
    return standardize(ds, variables={"thetao": "degC"}, **kwargs)


def std_record(ds: xr.Dataset, check: Callable[[xr.Dataset], bool], **kwargs: Any) -> str:
    """Standardize, assert ``check`` on the result, return the record (history + JSON list)."""
    out = std(ds, **kwargs)
    assert check(out), out
    return out.attrs.get("history", "") + "\n" + out.attrs.get("geodiff_standardize", "")


GRID_LAT, GRID_LON, GRID_DEPTH = np.array([0.0, 1.0, 2.0]), np.array([10.0, 11.0, 12.0]), np.array([5.0, 10.0])
T0 = pd.Timestamp("2020-01-15")


def table(**columns: Any) -> pd.DataFrame:
    base = {"value": [1.0, 2.0], "error_std": 0.1, "lat": [0.5, 1.5], "lon": [10.5, 11.5], "time": T0}
    base.update(columns)
    return pd.DataFrame(base)


def validate(frame: pd.DataFrame, **kwargs: Any):
    ocean = np.ones((GRID_LAT.size, GRID_LON.size), bool)
    ocean[2, 2] = False  # one land cell in the north-east corner
    return validate_observations(frame, GRID_LAT, GRID_LON, ocean_mask=ocean, **kwargs)


def report_of(frame: pd.DataFrame, check: Callable[[Any], bool], **kwargs: Any) -> str:
    clean, report = validate(frame, **kwargs)
    assert check(report), str(report)
    assert clean.attrs["geodiff_validation"] == str(report)
    return str(report)


_BUNDLE: dict[str, Any] = {}


def model():
    """The tiny model bundle of the helpers (built once)."""
    if "bundle" not in _BUNDLE:
        _BUNDLE["bundle"] = helpers.bundle()
    return _BUNDLE["bundle"]


def saved_model(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    model().save(folder)
    return folder


def rewrite_manifest(folder: Path) -> None:
    """Make the manifest agree with altered files, as someone hiding a change would."""
    import hashlib

    manifest = json.loads((folder / "manifest.json").read_text())
    for name in BUNDLE_FILES:
        data = (folder / name).read_bytes()
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def other_model_folder(tmp_path: Path, part: str) -> Path:
    """A bundle whose ``part`` (config.json or codec.json) comes from another model, manifest made to agree."""
    from geodiff.backbones.unet import UNet
    from geodiff.diffusion.denoiser import Denoiser
    from geodiff.io import Codec, ModelBundle, Normalizer

    folder = saved_model(tmp_path)
    ds = helpers.ocean().isel(lat=slice(0, 4))
    codec = Codec.from_dataset(ds)
    other = ModelBundle(Denoiser(UNet(codec.shape[0], base_channels=16, channel_mults=(1,), num_res_blocks=1,
                                      attention_levels=(), mid_attention=False, norm_groups=4)),
                        codec, Normalizer.fit(ds))
    other.save(tmp_path / "other")
    (folder / part).write_bytes((tmp_path / "other" / part).read_bytes())
    rewrite_manifest(folder)
    return folder


def recon(frame: pd.DataFrame, members_override: Any = 1, **kwargs: Any) -> xr.Dataset:
    return reconstruct(model(), frame, members=members_override, steps=2, progress=False, **kwargs)


def truncated_netcdf(tmp_path: Path, fmt: str, keep: float = 0.7) -> Path:
    ds = grid(np.arange(2 * 2 * 3 * 4, dtype=float).reshape(2, 2, 3, 4))
    full = tmp_path / f"full_{fmt}.nc"
    ds.to_netcdf(full, format=fmt)
    data = full.read_bytes()
    path = tmp_path / f"thetao_cut_{fmt}.nc"
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def store_case(tmp_path: Path, change: str) -> None:
    """Write a batch output store, then ask for the same store with another grid or chunking."""
    from geodiff.batch.store import OutputStore, build_template

    sample = helpers.ocean(times=1)
    times = xr.Variable(("time",), helpers.TIMES)
    job = {"what": "reliability test"}
    store = OutputStore(tmp_path / "out.zarr")
    store.create_or_check(build_template(sample, times, 1), job)
    if change == "grid":
        other = sample.assign_coords(lat=sample.lat + 0.5)
        store.create_or_check(build_template(other, times, 1), job)
    else:
        store.create_or_check(build_template(sample, times, 1, chunks={"lat": 4}), job)


def obs_at(lat: float, lon: float, value: float = 20.0, depth: float = 10.0) -> pd.DataFrame:
    return pd.DataFrame({"value": [value], "error_std": [0.2], "lat": [lat], "lon": [lon], "depth": [depth],
                         "time": [helpers.TIMES[0]]})


# ---------------------------------------------------------------------------------------------------------------
# the table

C = Case
CASES: list[Case] = [
    # -- units
    C("units missing or unparseable", "no units attribute", lambda p: std(grid(units=None)), UnitsError,
      "'thetao' has no 'units'"),
    C("units missing or unparseable", "empty units", lambda p: std(grid(units="  ")), UnitsError, "'thetao'"),
    C("units missing or unparseable", "unparseable units", lambda p: std(grid(units="degrees Fahrenheit-ish")),
      UnitsError, "'thetao' has units 'degrees Fahrenheit-ish'"),
    C("units missing or unparseable", "units of another quantity", lambda p: std(grid(units="m s-1")), UnitsError,
      "'thetao' has units 'm s-1'"),
    C("units missing or unparseable", "cmip6 file without units",
      lambda p: cmip6.open_dataset(_write(p / "thetao.nc", grid(units=None).drop_attrs())), UnitsError, "'thetao'"),
    # -- units contradicting values
    C("units contradicting values", "K with values -2..35", lambda p: std(grid(np.linspace(-2, 35, 4), units="K")),
      UnitsError, "'thetao' says units 'K'"),
    C("units contradicting values", "degC with values near 290",
      lambda p: std(grid(np.linspace(271, 305, 4), units="degC")), UnitsError, "'thetao' says units 'degC'"),
    C("units contradicting values", "degC values reaching 251",
      lambda p: std(grid([10.0, 10.0, 10.0, 251.0], units="degC")),
      UnitsError, "reach 251"),
    # -- axes
    C("axes ambiguous or missing", "no latitude",
      lambda p: std(grid().rename(lat="y").assign_coords(y=("y", [0.0, 1.0, 2.0])).drop_vars("y")),
      CoordinateError, "no latitude coordinate"),
    C("axes ambiguous or missing", "two latitude candidates",
      lambda p: std(grid().assign_coords(latitude=("lat", [-10.0, 0.0, 10.0], {"units": "degrees_north"}))),
      CoordinateError, "candidates ['lat', 'latitude']"),
    C("axes ambiguous or missing", "coords= names a missing variable",
      lambda p: std(grid(), coords={"lat": "nav_lat"}), CoordinateError, "'nav_lat'"),
    C("axes ambiguous or missing", "unknown axis key", lambda p: std(grid(), coords={"x": "lon"}), CoordinateError,
      "['x']"),
    C("axes ambiguous or missing", "lat named only by units",
      lambda p: std_record(grid(lat_name="yt"), lambda o: "lat" in o.dims), HANDLED, "'yt' -> 'lat'"),
    # -- order
    C("coordinates descending, non-monotonic or duplicated", "descending latitude",
      lambda p: std_record(grid(lat=(10.0, 0.0, -10.0)), lambda o: o.lat.values.tolist() == [-10.0, 0.0, 10.0]),
      HANDLED, "flipped latitude 'lat'"),
    C("coordinates descending, non-monotonic or duplicated", "non-monotonic latitude",
      lambda p: std(grid(lat=(0.0, 10.0, 5.0))), CoordinateError, "latitude coordinate 'lat' is not monotonic"),
    C("coordinates descending, non-monotonic or duplicated", "duplicated latitude",
      lambda p: std(grid(lat=(0.0, 5.0, 5.0))), CoordinateError, "'lat' has duplicate values"),
    C("coordinates descending, non-monotonic or duplicated", "duplicated time",
      lambda p: std(grid(time=np.array(["2000-01-15"] * 2, dtype="datetime64[ns]"))), CoordinateError,
      "time coordinate 'time' has duplicate"),
    C("coordinates descending, non-monotonic or duplicated", "descending time",
      lambda p: std_record(grid(time=np.array(["2000-02-15", "2000-01-15"], dtype="datetime64[ns]")),
                           lambda o: bool(o.time[0] < o.time[1])), HANDLED, "reversed time 'time'"),
    C("coordinates descending, non-monotonic or duplicated", "descending depth",
      lambda p: std_record(grid(depth=(50.0, 5.0)), lambda o: o.depth.values.tolist() == [5.0, 50.0]), HANDLED,
      "so that the surface comes first"),
    C("coordinates descending, non-monotonic or duplicated", "non-monotonic depth",
      lambda p: std(grid(depth=(5.0, 50.0, 20.0))), CoordinateError, "'depth' is not monotonic"),
    C("coordinates descending, non-monotonic or duplicated", "shuffled longitude",
      lambda p: std(grid(lon=(0.0, 90.0, -90.0, 45.0))), CoordinateError,
      "longitude coordinate 'lon' is not monotonic"),
    C("coordinates descending, non-monotonic or duplicated", "bbox on a descending latitude (no silent empty)",
      lambda p: select_bbox(grid(lat=(10.0, 0.0, -10.0)), (-180, -5, 180, 5)), CoordinateError,
      "'lat' is not ascending"),
    C("coordinates descending, non-monotonic or duplicated", "bbox selecting nothing",
      lambda p: select_bbox(std(grid()), (-180, 40, 180, 50)), CoordinateError, "select no cell of 'lat'"),
    C("coordinates descending, non-monotonic or duplicated", "observation grid not ascending",
      lambda p: validate_observations(table(), GRID_LAT[::-1], GRID_LON), CoordinateError, "'lat'"),
    # -- longitude
    C("longitudes outside -180..360 or mixed conventions", "longitude 400",
      lambda p: std(grid(lon=(0.0, 90.0, 180.0, 400.0))), CoordinateError, "'lon' has 1 values outside -180..360"),
    C("longitudes outside -180..360 or mixed conventions", "longitude -200",
      lambda p: std(grid(lon=(-200.0, -90.0, 0.0, 90.0))), CoordinateError, "(e.g. -200)"),
    C("longitudes outside -180..360 or mixed conventions", "Ferret 20.5..380 with explicit wrap",
      lambda p: std_record(grid(lon=(110.5, 200.5, 290.5, 380.5)), lambda o: float(o.lon.max()) < 180,
                           wrap_out_of_range=True), HANDLED, "had values outside -180..360"),
    C("longitudes outside -180..360 or mixed conventions", "mixed conventions repeat a position",
      lambda p: std(grid(lon=(-10.0, 0.0, 10.0, 350.0))), CoordinateError, "'lon' has duplicate positions [350.0]"),
    C("longitudes outside -180..360 or mixed conventions", "0..360 grid to -180..180",
      lambda p: std_record(grid(lon=(0.0, 90.0, 180.0, 270.0)),
                           lambda o: o.lon.values.tolist() == [-180.0, -90.0, 0.0, 90.0]), HANDLED,
      "wrapped longitude 'lon' to -180..180"),
    C("longitudes outside -180..360 or mixed conventions", "observations in mixed conventions",
      lambda p: report_of(table(lon=[10.5, 11.5 - 360.0]), lambda r: r.lon_converted == 1 and r.kept == 2),
      HANDLED, "longitudes converted to the grid's convention: 1"),
    C("longitudes outside -180..360 or mixed conventions", "observation longitude 1e20",
      lambda p: as_observations(table(lon=[10.5, 1e20])), ObservationError, "column 'lon'"),
    C("longitudes outside -180..360 or mixed conventions", "observation longitude infinite",
      lambda p: as_observations(table(lon=[np.inf, 10.5])), ObservationError, "column 'lon'"),
    # -- latitude
    C("latitude beyond 90", "grid latitude 95", lambda p: std(grid(lat=(0.0, 45.0, 95.0))), CoordinateError,
      "latitude coordinate 'lat' has 1 values outside -90..90"),
    C("latitude beyond 90", "observation latitude 91", lambda p: as_observations(table(lat=[0.5, 91.0])),
      ObservationError, "column 'lat'"),
    C("latitude beyond 90", "regridder source latitude -91",
      lambda p: __import__("geodiff.adapters.regrid", fromlist=["Regridder"]).Regridder(
          np.array([-91.0, 0.0]), np.array([0.0, 10.0]), [0.0], [5.0]), CoordinateError, "out-of-range"),
    # -- sentinels
    C("sentinel coordinates", "latitude 1e20", lambda p: std(grid(lat=(0.0, 1.0, 1e20))), CoordinateError,
      "latitude coordinate 'lat' holds 1 fill/sentinel"),
    C("sentinel coordinates", "longitude 1e20", lambda p: std(grid(lon=(0.0, 1.0, 2.0, 1e20))), CoordinateError,
      "longitude coordinate 'lon' holds 1 fill/sentinel"),
    C("sentinel coordinates", "depth 1e20", lambda p: std(grid(depth=(5.0, 1e20))), CoordinateError,
      "vertical coordinate 'depth' holds 1 fill/sentinel"),
    C("sentinel coordinates", "longitude NaN", lambda p: std(grid(lon=(0.0, 1.0, np.nan, 3.0))), CoordinateError,
      "'lon' holds 1 fill/sentinel or non-finite"),
    # -- depth
    C("depth without positive or in cm", "depth without positive (name says depth)",
      lambda p: std_record(grid(depth_attrs={"units": "m"}), lambda o: o.depth.attrs["positive"] == "down"),
      HANDLED, "had no 'positive' attribute"),
    C("depth without positive or in cm", "vertical without positive (name says nothing)",
      lambda p: std(grid(depth_name="zlev", depth_attrs={"units": "m", "axis": "Z"})), CoordinateError,
      "'zlev' has no 'positive' attribute"),
    C("depth without positive or in cm", "depth in cm",
      lambda p: std_record(grid(depth=(500.0, 5000.0), depth_attrs={"units": "cm", "positive": "down"}),
                           lambda o: o.depth.values.tolist() == [5.0, 50.0]), HANDLED, "from 'cm' to 'm'"),
    C("depth without positive or in cm", "height coordinate positive up (ocean z)",
      lambda p: std_record(grid(depth=(-5.0, -50.0), depth_name="z", depth_attrs={"units": "m", "positive": "up"}),
                           lambda o: o.depth.values.tolist() == [5.0, 50.0]), HANDLED, "positive up"),
    C("depth without positive or in cm", "positive='sideways'",
      lambda p: std(grid(depth_attrs={"units": "m", "positive": "sideways"})), CoordinateError,
      "positive='sideways'"),
    C("depth without positive or in cm", "positive up with positive values",
      lambda p: std(grid(depth_name="lev", depth_attrs={"units": "m", "positive": "up"})), CoordinateError,
      "'lev' has positive='up' and positive values"),
    C("depth without positive or in cm", "depth in seconds",
      lambda p: std(grid(depth_attrs={"units": "s", "positive": "down"})), UnitsError,
      "depth coordinate 'depth' has units 's'"),
    C("depth without positive or in cm", "observation depth negative",
      lambda p: as_observations(table(depth=[5.0, -3.0])), ObservationError, "column 'depth'"),
    # -- calendars
    C("calendars mismatched", "two datasets in other calendars",
      lambda p: check_calendars(xr.Dataset(coords={"time": [cftime.DatetimeNoLeap(2000, 1, 15)]}),
                                xr.Dataset(coords={"time": [cftime.Datetime360Day(2000, 1, 15)]}),
                                names=["CESM2", "UKESM1"]), CalendarError, "'CESM2' uses 'noleap'"),
    C("calendars mismatched", "calendar other than expected",
      lambda p: std(grid(time=np.array([cftime.DatetimeNoLeap(2000, 1, 15), cftime.DatetimeNoLeap(2000, 2, 15)])),
                    calendar="360_day"), CalendarError, "time coordinate 'time' uses calendar 'noleap'"),
    C("calendars mismatched", "CMIP6 members in other calendars (strict)",
      lambda p: cmip6.stack_members(
          [std(grid(time=np.array([cftime.DatetimeNoLeap(2000, 1, 15), cftime.DatetimeNoLeap(2000, 2, 15)]))),
           std(grid(time=np.array([cftime.Datetime360Day(2000, 1, 15), cftime.Datetime360Day(2000, 2, 15)])))],
          [{"source_id": "CESM2", "member_id": "r1"}, {"source_id": "UKESM1", "member_id": "r1"}],
          calendars="strict"), CalendarError, "'CESM2/r1' uses 'noleap' but 'UKESM1/r1' uses '360_day'"),
    # -- observations NaN
    C("observations NaN or all NaN", "one NaN value",
      lambda p: report_of(table(value=[1.0, np.nan]), lambda r: r.missing_value == 1 and r.kept == 1), HANDLED,
      "dropped, missing value (NaN): 1"),
    C("observations NaN or all NaN", "NaN position",
      lambda p: report_of(table(lat=[0.5, np.nan]), lambda r: r.missing_position == 1), HANDLED,
      "missing position or time (NaN): 1"),
    C("observations NaN or all NaN", "all values NaN", lambda p: validate(table(value=[np.nan, np.nan])),
      ObservationError, "missing value (NaN): 2"),
    C("observations NaN or all NaN", "infinite value", lambda p: as_observations(table(value=[1.0, np.inf])),
      ObservationError, "column 'value' is infinite at obs_id 1"),
    C("observations NaN or all NaN", "NaN error_std without a default",
      lambda p: report_of(table(error_std=[0.1, np.nan]), lambda r: r.missing_error_std == 1), HANDLED,
      "missing error_std and no default: 1"),
    C("observations NaN or all NaN", "zero error_std (exact observation) given to guided sampling",
      lambda p: GaussianLikelihood(torch.ones(2), lambda x: x, torch.tensor([0.1, 0.0])),
      ObservationError, "error_std must be positive"),
    C("observations NaN or all NaN", "negative error_std", lambda p: as_observations(table(error_std=[0.1, -1.0])),
      ObservationError, "column 'error_std' must be finite and >= 0"),
    C("observations NaN or all NaN", "no error_std column",
      lambda p: as_observations(table().drop(columns="error_std")),
      ObservationError, "['error_std']"),
    # -- observations outside / land / duplicated
    C("observations outside the domain, on land or duplicated", "outside the domain",
      lambda p: report_of(table(lat=[0.5, 30.0]), lambda r: r.outside_grid == 1 and r.kept == 1), HANDLED,
      "outside the grid: 1"),
    C("observations outside the domain, on land or duplicated", "on land",
      lambda p: report_of(table(lat=[0.5, 2.0], lon=[10.5, 12.0]), lambda r: r.on_land == 1), HANDLED,
      "on land or below the sea floor: 1"),
    C("observations outside the domain, on land or duplicated", "duplicates with conflicting values (average)",
      lambda p: report_of(table(lat=[0.5, 0.5], lon=[10.5, 10.5], value=[1.0, 3.0]),
                          lambda r: r.conflicting_groups == 1 and r.kept == 1), HANDLED, "1 with conflicting values"),
    C("observations outside the domain, on land or duplicated", "duplicates with conflicting values (error)",
      lambda p: validate(table(lat=[0.5, 0.5], lon=[10.5, 10.5], value=[1.0, 3.0]), duplicates="error"),
      ObservationError, "obs_id [0, 1]"),
    C("observations outside the domain, on land or duplicated", "duplicated obs_id",
      lambda p: as_observations(table(obs_id=["a", "a"])), ObservationError, "'obs_id' has duplicates, e.g. 'a'"),
    C("observations outside the domain, on land or duplicated", "deeper than the last level",
      lambda p: report_of(table(depth=[5.0, 900.0]), lambda r: r.outside_grid == 1, grid_depth=GRID_DEPTH), HANDLED,
      "outside the grid: 1"),
    # -- grids
    C("grid not the model grid", "field on another latitude grid",
      lambda p: model().encode(helpers.ocean().assign_coords(lat=helpers.LAT + 0.5)), CoordinateError, "'lat'"),
    C("grid not the model grid", "field on other depth levels",
      lambda p: model().encode(helpers.ocean().assign_coords(depth=helpers.DEPTH * 2)), CoordinateError,
      "coordinate 'depth' of variable 'thetao' differs"),
    C("grid not the model grid", "field missing the model's variable",
      lambda p: model().encode(helpers.ocean().rename(thetao="so")), GridError, "['thetao']"),
    C("grid not the model grid", "field with another land mask",
      lambda p: model().encode(helpers.ocean().fillna(0.0)), GridError, "'thetao' has a value at a land"),
    C("grid not the model grid", "observations of a variable the model does not have",
      lambda p: recon(helpers.observations().assign(variable="so")), ObservationError, "unknown variable 'so'"),
    C("grid not the model grid", "scores of fields on shifted grids (no silent inner join)",
      lambda p: metrics.rmse(helpers.ocean().thetao, helpers.ocean().thetao.assign_coords(lat=helpers.LAT + 1.0)),
      GridError, "truth and estimate are on different grids: coordinate(s) ['lat']"),
    C("grid not the model grid", "scores of an ensemble on a partly overlapping grid",
      lambda p: metrics.crps_ensemble(helpers.ocean().thetao.isel(lon=slice(0, 8)),
                                      helpers.ocean().thetao.expand_dims(member=2).isel(lon=slice(4, 12))),
      GridError, "['lon']"),
    # -- bundles
    C("checkpoint bundle truncated, tampered, of another model or with a pickle", "truncated weights",
      lambda p: load(_cut(saved_model(p) / "model.safetensors")), CheckpointError, "model.safetensors has"),
    C("checkpoint bundle truncated, tampered, of another model or with a pickle", "one byte changed",
      lambda p: load(_flip(saved_model(p) / "normalizer.json")), CheckpointError, "normalizer.json does not match"),
    C("checkpoint bundle truncated, tampered, of another model or with a pickle", "missing manifest",
      lambda p: load(_remove(saved_model(p) / "manifest.json")), CheckpointError, "manifest.json is missing"),
    C("checkpoint bundle truncated, tampered, of another model or with a pickle", "config of another model",
      lambda p: load(other_model_folder(p, "config.json")), CheckpointError, "does not fit the denoiser"),
    C("checkpoint bundle truncated, tampered, of another model or with a pickle", "codec of another grid",
      lambda p: load(other_model_folder(p, "codec.json")), CheckpointError, "codec.json"),
    C("checkpoint bundle truncated, tampered, of another model or with a pickle", "a pickle file beside it",
      lambda p: load(_touch(saved_model(p) / "model.pt", b"\x80\x04K\x01.")), CheckpointError,
      "model.pt looks like a pickle"),
    C("checkpoint bundle truncated, tampered, of another model or with a pickle", "pickle in place of safetensors",
      lambda p: load(_pickled_weights(saved_model(p))), CheckpointError, "model.safetensors is a pickle"),
    C("checkpoint bundle truncated, tampered, of another model or with a pickle", "torch.save zip in place of weights",
      lambda p: load(_zip_weights(saved_model(p))), CheckpointError, "model.safetensors is a zip archive"),
    # -- normalised range
    C("normalised inputs outside the training range", "observations in kelvin for a degC model",
      lambda p: recon(helpers.observations().assign(value=lambda f: f.value + 273.15)), ObservationError,
      "obs_id 0 of 'thetao': value 29"),
    C("normalised inputs outside the training range", "an observation holding a fill value",
      lambda p: recon(helpers.observations().assign(value=lambda f: np.where(f.obs_id == 5, 9.96921e36, f.value))),
      ObservationError, "obs_id 5"),
    C("normalised inputs outside the training range", "field in kelvin for a degC model",
      lambda p: model().encode(helpers.ocean() + 273.15), DataError, "variable 'thetao'"),
    C("normalised inputs outside the training range", "check switched off explicitly",
      lambda p: _encoded_anyway(), HANDLED, "max_normalized=None"),
    # -- stores
    C("existing store of another grid or chunking", "store of another grid",
      lambda p: store_case(p, "grid"), StoreError, "coordinate 'lat' has other values"),
    C("existing store of another grid or chunking", "store of another chunking",
      lambda p: store_case(p, "chunks"), StoreError, "chunking of variable 'thetao'"),
    # -- damaged on disk
    C(DAMAGED, "one bit flipped in a batch store chunk", damaged.corrupted_chunk, StoreError,
      "variable 'v' in region 2 (times 2:3) cannot be read (corrupted chunk)"),
    C(DAMAGED, "corrupted ledger chunk", damaged.corrupted_ledger, StoreError,
      "the ledger entry of region 1 (times 1:2) cannot be read"),
    C(DAMAGED, "corrupted region repaired, then recomputed", damaged.repaired_region, HANDLED,
      "marked regions [2] not done"),
    C(DAMAGED, "disk full during a batch write", damaged.disk_full_batch, StoreError,
      "no space left on the device while writing region 1 (times 1:2)"),
    C(DAMAGED, "disk full while writing a netCDF output", damaged.disk_full_netcdf, StoreError,
      "no space left on the device while writing a netCDF file"),
    C(DAMAGED, "disk full while writing a training checkpoint", damaged.disk_full_checkpoint, StoreError,
      "no space left on the device while writing the checkpoint of step 1"),
    C(DAMAGED, "disk full while saving a model bundle", lambda p: damaged.disk_full_bundle(model(), p), StoreError,
      "no space left on the device while writing a model bundle"),
    C(DAMAGED, "checkpoint manifest naming a file outside its folder", damaged.checkpoint_naming_outside,
      CheckpointError, "names '../secret.json', which is not a file inside"),
    C(DAMAGED, "checkpoint file left out of its manifest", damaged.checkpoint_file_unlisted, CheckpointError,
      "does not list: ema/model.safetensors"),
    C(DAMAGED, "bundle weights grown to 4 GiB (refused before reading)",
      lambda p: load(damaged.padded_weights(saved_model(p))), CheckpointError,
      "model.safetensors has 4294967296 bytes; the manifest says"),
    # -- zero valid observations
    C("reconstruction with zero valid observations", "every observation NaN",
      lambda p: recon(helpers.observations().assign(value=np.nan)), ObservationError, "missing value (NaN): 24"),
    C("reconstruction with zero valid observations", "every observation on land",
      lambda p: recon(obs_at(-5.0, -120.0)), ObservationError, "on land or below the sea floor: 1"),
    C("reconstruction with zero valid observations", "every observation outside the grid",
      lambda p: recon(obs_at(-60.0, 100.0)), ObservationError, "outside the grid: 1"),
    C("reconstruction with zero valid observations", "a requested time without observations",
      lambda p: recon(helpers.observations(), times=[helpers.TIMES[2]]), ObservationError,
      "no valid observation at time 2001-03-15"),
    C("reconstruction with zero valid observations", "an empty table",
      lambda p: recon(helpers.observations().iloc[:0]), ObservationError, "no usable observation"),
    # -- files
    C("input file incomplete (killed writer)", "netCDF-3 cut short (reads as zeros otherwise)",
      lambda p: cmip6.open_dataset(truncated_netcdf(p, "NETCDF3_CLASSIC")), DataError,
      "thetao_cut_NETCDF3_CLASSIC.nc' is incomplete or corrupt"),
    C("input file incomplete (killed writer)", "netCDF-4 cut short",
      lambda p: cmip6.open_dataset(truncated_netcdf(p, "NETCDF4")), DataError,
      "thetao_cut_NETCDF4.nc' is incomplete or corrupt"),
    C("input file incomplete (killed writer)", "netCDF-3 cut short, opened by xarray then standardized",
      lambda p: std(xr.open_dataset(truncated_netcdf(p, "NETCDF3_64BIT", keep=0.95))), DataError,
      "thetao_cut_NETCDF3_64BIT.nc' is incomplete or corrupt"),
    C("input file incomplete (killed writer)", "empty file", lambda p: era5.open_dataset(_touch(p / "era5.nc", b"")),
      DataError, "era5.nc' is incomplete or corrupt"),
]


# -- inputs checked where they enter (training, pipelines), units, times, resources (through the API; the same
#    classes through the ``geodiff`` command are in tests/reliability/test_cli_inputs.py)


def gridded(spoil: Callable[[xr.Dataset], xr.Dataset]) -> Any:
    from geodiff.datacheck import check_gridded

    return check_gridded(spoil(helpers.ocean()), where="ocean.nc")


def flipped_record() -> str:
    out = gridded(lambda ds: ds.isel(lat=slice(None, None, -1)))
    assert np.all(np.diff(out.lat.values) > 0)
    return out.attrs["history"]


def as_table(frame: pd.DataFrame) -> xr.Dataset:
    return xr.Dataset.from_dataframe(frame.reset_index(drop=True)).rename(index="obs").drop_vars("obs")


def fahrenheit_record() -> str:
    """A table in degF reconstructs as the same table in degC (converted, recorded), not as degC numbers."""
    from geodiff.pipelines.units import observations_to_model_units

    frame = helpers.observations()
    table = as_table(frame.assign(value=frame.value * 9 / 5 + 32, error_std=frame.error_std * 9 / 5))
    table["value"].attrs["units"] = "degF"
    kwargs = dict(max_normalized=None, seed=1)
    np.testing.assert_allclose(recon(table, **kwargs).thetao.values, recon(frame, **kwargs).thetao.values,
                               rtol=1e-4, atol=1e-4)
    return observations_to_model_units(as_observations(table), {"thetao": "degC"}).attrs["history"]


def zoned_times_record() -> str:
    frame = table(time=pd.to_datetime(["2020-01-15 01:00", "2020-01-15 01:00"]).tz_localize("Europe/Paris"))
    out = as_observations(frame)
    assert out.time.values[0] == np.datetime64("2020-01-15T00:00")
    return out.attrs["time_converted"]


_DOWNSCALE: dict[str, Any] = {}


def downscale_with(spoil: Callable[[xr.Dataset], xr.Dataset], **kwargs: Any) -> Any:
    """Downscale the shipped sample's first two years, coarsened by 4, after ``spoil``."""
    import geodiff
    from geodiff.pipelines.downscale import coarsen, downscale, open_sample, sample_paths

    if "model" not in _DOWNSCALE:
        fields, topography = open_sample()
        _DOWNSCALE.update(model=geodiff.load(sample_paths()["model"]), coarse=coarsen(fields.isel(time=[0, 1]), 4),
                          topography=topography)
    return downscale(_DOWNSCALE["model"], spoil(_DOWNSCALE["coarse"]), sources={"topography": _DOWNSCALE["topography"]},
                     members=1, steps=1, progress=False, **kwargs)


def _lat_values(ds: xr.Dataset, values: np.ndarray) -> xr.Dataset:
    return ds.assign_coords(lat=("lat", values, ds.lat.attrs))


INPUT_CASES: list[Case] = [
    # -- training data (geodiff.fit, geodiff train and the pipelines share geodiff.datacheck.check_gridded)
    C("training data not validated", "1e20 fill values", lambda p: gridded(lambda ds: ds.fillna(1e20)), DataError,
      "fill value(s) of magnitude >= 1e+15 (e.g. 1e+20)"),
    C("training data not validated", "kelvin mixed with degC",
      lambda p: gridded(lambda ds: ds.where(ds.time != ds.time[1], ds + 273.15)), UnitsError, "impossible in degC"),
    C("training data not validated", "latitudes of +-150", lambda p: gridded(lambda ds: ds.assign_coords(
        lat=ds.lat * 150 / 14)), CoordinateError, "'lat' has 4 out-of-range value(s)"),
    C("training data not validated", "non-monotonic longitudes",
      lambda p: gridded(lambda ds: ds.isel(lon=[0, 2, 1, *range(3, 16)])), CoordinateError, "'lon' is not monotonic"),
    C("training data not validated", "descending latitude (ERA5 order)", lambda p: flipped_record(), HANDLED,
      "flipped latitude 'lat' to ascending"),
    C("training data not validated", "duplicate times",
      lambda p: gridded(lambda ds: ds.isel(time=[0, 1, 1])), CoordinateError, "duplicate times"),
    C("training data not validated", "negative grad_clip",
      lambda p: __import__("geodiff").train(model().denoiser, torch.zeros(2, 3, 8, 16), steps=1, batch_size=1,
                                            grad_clip=-1.0, progress=False), ConfigError, "grad_clip must be"),
    # -- units
    C("units declared but ignored", "observation value in degF", lambda p: fahrenheit_record(), HANDLED,
      "observations: converted 'thetao' from 'degF' to 'degC'"),
    C("units declared but ignored", "observation value in an unconvertible unit",
      lambda p: recon(as_table(helpers.observations()).assign(
          value=lambda t: t.value.assign_attrs(units="m s-1"))), UnitsError, "cannot be converted to 'degC'"),
    C("units declared but ignored", "observation value in K with degC numbers",
      lambda p: recon(as_table(helpers.observations()).assign(value=lambda t: t.value.assign_attrs(units="K"))),
      UnitsError, "impossible in kelvin"),
    # -- times and coordinates
    C("observation and coarse times or coordinates not checked", "observation time 'not a time'",
      lambda p: as_observations(table(time=["2020-01-15", "not a time"])), ObservationError,
      "obs_id 1 holds 'not a time', which is not a time"),
    C("observation and coarse times or coordinates not checked", "time-zone-aware observation times",
      lambda p: zoned_times_record(), HANDLED, "(Europe/Paris) converted to UTC"),
    C("observation and coarse times or coordinates not checked", "NaT observation time",
      lambda p: report_of(table(time=[T0, pd.NaT]), lambda r: r.missing_position == 1 and r.kept == 1), HANDLED,
      "missing position or time (NaN): 1"),
    C("observation and coarse times or coordinates not checked", "downscale with no lat values (never invented)",
      lambda p: downscale_with(lambda ds: ds.drop_vars("lat")), CoordinateError,
      "dimension 'lat' has no coordinate values"),
    C("observation and coarse times or coordinates not checked", "downscale with latitudes up to 118.75",
      lambda p: downscale_with(lambda ds: _lat_values(ds, np.linspace(20.0, 118.75, ds.sizes["lat"]))),
      CoordinateError, "coarse: coordinate 'lat' has"),
    C("observation and coarse times or coordinates not checked", "downscale with duplicate coarse times",
      lambda p: downscale_with(lambda ds: ds.isel(time=[0, 0])), CoordinateError, "duplicate times"),
    C("input file incomplete (killed writer)", "reconstruct given the path of an observation file cut short",
      lambda p: recon(str(_cut_file(_write(p / "obs.nc", as_table(helpers.observations())), 0.8))), DataError,
      "obs.nc' is incomplete or corrupt"),
    # -- resources
    C("resources not bounded", "members=100000000",
      lambda p: recon(helpers.observations(), members_override=100_000_000), ConfigError, "needs at least"),
    C("resources not bounded", "a UNet of 2^20 base channels",
      lambda p: __import__("geodiff.backbones.unet", fromlist=["UNet"]).UNet(1, base_channels=2**20),
      ConfigError, "a UNet with base_channels=1048576"),
    C("resources not bounded", "float members", lambda p: recon(helpers.observations(), members_override=2.5),
      ConfigError, "members must be an integer >= 1, got 2.5"),
    C("resources not bounded", "max_normalized='none'", lambda p: recon(helpers.observations(), max_normalized="none"),
      ConfigError, "max_normalized must be a positive number, 'auto' or None"),
    # -- wrong blame
    C("errors that blame the wrong thing", "device='cuda' without CUDA",
      lambda p: recon(helpers.observations(), device="cuda" if not torch.cuda.is_available() else "cuda:99"),
      ConfigError, "device='cuda"),
    C("errors that blame the wrong thing", "unknown key in guidance_options",
      lambda p: recon(helpers.observations(), guidance_options={"scale_": 1.0}), ConfigError,
      "unknown key(s) 'scale_' for MMPSGuidance (allowed: method, cg_iterations"),
    C("errors that blame the wrong thing", "inf in a coarse field (not 'sampling diverged')",
      lambda p: downscale_with(lambda ds: ds.where(ds.lat < ds.lat[3], np.inf)), DataError,
      "coarse: variable 'tas' holds"),
    C("errors that blame the wrong thing", "1e20 observation with the range check off (not 'diverged')",
      lambda p: recon(helpers.observations().assign(value=lambda f: np.where(f.obs_id == 2, 1e20, f.value)),
                      max_normalized=None), ObservationError, "fill value(s) (|value| >= 1e+15)"),
]
CASES += INPUT_CASES


def _write(path: Path, ds: xr.Dataset) -> Path:
    ds.to_netcdf(path)
    return path


def _cut_file(path: Path, keep: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _cut(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:-100])
    return path.parent


def _flip(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return path.parent


def _remove(path: Path) -> Path:
    path.unlink()
    return path.parent


def _touch(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path.parent if path.suffix != ".nc" else path


def _pickled_weights(folder: Path) -> Path:
    (folder / "model.safetensors").write_bytes(b"\x80\x04\x95" + b"\0" * 64)
    rewrite_manifest(folder)
    return folder


def _zip_weights(folder: Path) -> Path:
    import io

    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buffer)  # the format bundles refuse (it holds pickles); it is never loaded
    (folder / "model.safetensors").write_bytes(buffer.getvalue())
    rewrite_manifest(folder)
    return folder


def _encoded_anyway() -> str:
    """Encoding far-out values is possible only when asked for explicitly; the call says so."""
    x, _ = model().encode(helpers.ocean() + 273.15, max_normalized=None)
    assert float(x.abs().max()) > 10.0
    return "encoded with max_normalized=None"


# ---------------------------------------------------------------------------------------------------------------
# tests


@pytest.mark.parametrize("case", CASES, ids=[f"{c.category[:24]}|{c.name}" for c in CASES])
def test_bad_input(case: Case, tmp_path: Path) -> None:
    if case.expected == HANDLED:
        record = case.call(tmp_path)
        assert isinstance(record, str) and case.text in record, record
        return
    with pytest.raises(case.expected) as info:
        case.call(tmp_path)
    assert isinstance(info.value, GeodiffError)
    assert case.text in str(info.value), f"{case.text!r} not in: {info.value}"


def test_the_table_covers_every_category_of_bad_input() -> None:
    counts = Counter(case.category for case in CASES)
    assert set(counts) == set(CATEGORIES), set(CATEGORIES) - set(counts)
    assert len({(c.category, c.name) for c in CASES}) == len(CASES)  # no case counted twice
    for case in CASES:  # a specific subclass, never the catch-all base, and something the message must name
        if case.expected != HANDLED:
            assert issubclass(case.expected, GeodiffError) and case.expected is not GeodiffError, case.name
        assert case.text.strip(), case.name


def summary() -> str:
    """Counts per category: cases rejected (by error class) and handled with a record."""
    lines = [f"{len(CASES)} bad inputs in {len(CATEGORIES)} categories"]
    for category in CATEGORIES:
        cases = [c for c in CASES if c.category == category]
        errors = Counter(c.expected.__name__ for c in cases if c.expected != HANDLED)
        handled = sum(1 for c in cases if c.expected == HANDLED)
        parts = [f"{n} {name}" for name, n in sorted(errors.items())] + ([f"{handled} handled"] if handled else [])
        lines.append(f"  {category}: {len(cases)} ({', '.join(parts)})")
    totals = Counter(c.expected.__name__ if c.expected != HANDLED else HANDLED for c in CASES)
    lines.append("  total: " + ", ".join(f"{n} {k}" for k, n in sorted(totals.items())))
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary())
