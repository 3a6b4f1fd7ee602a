"""Sparse-observation reconstruction on real data sets that ship in registry packages: geodiff against optimal
interpolation, EOF projection and climatology, scored on held-out cells in one protocol.

Data sets (``prepare`` turns each into a canonical dataset with provenance: package, file, version, sha256):

========== =========================================================================================== ==========
name       source                                                                                      times
========== =========================================================================================== ==========
ostia_sst  OSTIA monthly SST (iris-sample-data ``ostia_monthly.nc``), 5 S-4.4 N, 160.8 E-93.3 W, native 54 months
           0.56 x 0.83 deg (18 x 128 cells; island cells NaN)
na_tas     Met Office Unified Model (HadGEM) scenario A1B annual 1.5 m air temperature over North       240 years
           America (iris-sample-data ``A1B_north_america.nc``), 15-60 N, 135-45 W, 1.25 x 1.875 deg (37 x 49)
glosea4_ts GloSea4 seasonal-forecast ensemble, monthly surface temperature (iris-sample-data              6 months x
           ``GloSea4/ensemble_*.pp``), 30 S-28.75 N, 30-208.1 E, 1.25 x 1.875 deg (48 x 96); the 13         13 members
           members of each month are samples along ``time`` (as
           :func:`geodiff.adapters.cmip6.stack_members` stacks members), labelled day = member + 1 of the month
woa_temp   World Ocean Atlas monthly climatology of sea water temperature (geodiff's shipped sample of    12 months
           Debian ``ferret-datasets``), 0-64 N, 130 E-102 W, 2 deg (32 x 64), depths 0, 50, 100, 200 m
========== =========================================================================================== ==========

Protocol. Chronological split: the last ``n_test`` times are the test period (never used to fit or tune
anything); the times before are the training period, whose last ``n_validation`` times are the validation period
(held out by ``geodiff.fit`` for model selection; the baselines have nothing to tune and fit on the whole training
period). For every test time and level, nested random observation sets of 2, 5 and 10 % of the valid cells
(:func:`geodiff.metrics.random_guidance_mask` with one seed: the 2 % set lies inside the 5 % set inside the 10 % set)
sit at cell centres; each observed value is the truth plus Gaussian noise of ``error_std`` = 1 % of the training
anomaly std of that level (the same noise draw at a cell for every coverage). Scores are over the test cells that
are valid and *not* observed at that coverage, all test times pooled, unweighted by area.

Methods, all fitted on the training period only:

* climatology: per-cell mean of the training period (per calendar month for ``ostia_sst``; the other sets' test
  months or years are not in their training period, so one mean);
* optimal interpolation (:func:`geodiff.baselines.optimal_interpolation`): simple kriging of the anomalies from that
  climatology (the module has no universal kriging), a stationary covariance per level fitted to the training
  anomalies; the covariance model (exponential, Matern 3/2, Matern 5/2, Gaussian) is the one with the lowest RMSE on
  the validation period (5 % coverage, fitted on the training period before it) among those whose OI system is
  positive definite; every test field is analysed from its own observations (``time_correlation=False``, the
  per-field protocol of a generative prior);
* EOF projection (:func:`geodiff.baselines.eof_projection`): EOFs of the training anomalies, ridge = 1 (Gaussian
  posterior under the EOF prior), number of modes by cross-validation over the observations;
* geodiff: a diffusion prior per data set trained on the training period with ``geodiff.fit`` (``--train``) or read
  from ``--priors DIR/<name>``, then ``geodiff.reconstruct(bundle, observations, members=16)`` at its defaults
  (``--options`` passes other settings). A reconstruction that fails (diverged members, observations refused as
  out of the prior's range) is recorded as failed with the error, not scored.

Scores: RMSE of the mean; CRPS (ensemble: scoringrules' fair estimator; OI and EOF: Gaussian CRPS of their posterior
mean and std; climatology: MAE); spread/skill (``geodiff.metrics.spread_skill_ratio`` for ensembles, sqrt(mean
posterior variance) / RMSE for OI and EOF); coverage of the central 90 % interval (ensemble 5-95 % quantiles;
mean +- 1.645 std for OI and EOF); seconds per field; and the ratio of RMSE and CRPS to OI's.

Getting the files (no installation needed)::

    pip download --no-deps iris-sample-data==2.5.2 && unzip iris_sample_data-2.5.2-py3-none-any.whl -d irisdata

Running (``CACHE`` holds the canonical sets, observations, scores and ``results.json``)::

    python benchmarks/reconstruction_real.py prepare --iris irisdata/iris_sample_data/sample_data --cache CACHE
    python benchmarks/reconstruction_real.py baselines --cache CACHE
    python benchmarks/reconstruction_real.py geodiff --cache CACHE --priors PRIORS [--train --time-budget 1800]
        # --train fits a prior per data set that has none under PRIORS (geodiff.fit, 30 minutes each by default)
    python benchmarks/reconstruction_real.py geodiff --cache CACHE --priors PRIORS --zero-correction
        # the same priors with their learned correction zeroed: the hybrid prior's Gaussian part, sampled
    python benchmarks/reconstruction_real.py table --cache CACHE

``--sets a,b`` limits any subcommand to some data sets; ``--test-times N`` scores N evenly spaced test times only
(run ``baselines`` with the same N into the same cache, so that every row of a table scores the same fields).
"""

from __future__ import annotations

import argparse
import json
import platform
import struct
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr

import geodiff
from geodiff import metrics
from geodiff.adapters import woa
from geodiff.adapters.standardize import record, standardize
from geodiff.baselines import climatology, eof_projection, optimal_interpolation
from geodiff.baselines.optimal_interpolation import MODELS, fit_covariance
from geodiff.errors import ConfigError, DataError, ObservationError, SamplingError
from geodiff.training.correction_check import settle_correction, without_correction

COVERAGES = (0.02, 0.05, 0.10)
#: observation error as a fraction of the training anomaly std of each level
ERROR_FRACTION = 0.01
#: half-width of the central 90 % interval of a Gaussian, in standard deviations
Z90 = 1.6448536269514722
IRIS_PACKAGE = "iris-sample-data"


# ---------------------------------------------------------------------------------------------------------------
# sources


def iris_version(sample_data: Path) -> str:
    """Version of the unzipped iris-sample-data wheel that ``sample_data`` belongs to (from its dist-info)."""
    for info in sample_data.resolve().parents[1].glob("iris_sample_data-*.dist-info"):
        return info.name.removeprefix("iris_sample_data-").removesuffix(".dist-info")
    return "unknown (no iris_sample_data-*.dist-info beside the sample_data folder)"


def provenance(path: Path, package: str, version: str) -> dict[str, str]:
    """Attributes naming where a source file came from (package, version, file, sha256)."""
    return {"source_package": f"{package} {version}", "source_file": path.name,
            "source_file_sha256": woa.file_sha256(path)}


def source_file(folder: Path | None, relative: str) -> Path:
    if folder is None:
        raise ConfigError("this data set needs --iris DIR (iris_sample_data/sample_data of the unzipped wheel)")
    path = Path(folder) / relative
    if not path.is_file():
        raise DataError(f"{path} not found: `pip download --no-deps iris-sample-data` and unzip the wheel; pass "
                        "--iris .../iris_sample_data/sample_data")
    return path


def read_pp(path: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Fields of an unpacked Met Office PP file on a regular lat-lon grid: ``[(int header [45], real header [19],
    values [rows, columns] float64 with NaN for missing data)]`` (UMDP F3: big-endian 32-bit Fortran records)."""
    data = path.read_bytes()
    fields, offset = [], 0

    def fortran_record() -> bytes:
        nonlocal offset
        (length,) = struct.unpack(">i", data[offset:offset + 4])
        body = data[offset + 4:offset + 4 + length]
        if len(body) != length or data[offset + 4 + length:offset + 8 + length] != data[offset:offset + 4]:
            raise DataError(f"{path}: truncated or corrupt Fortran record at byte {offset}")
        offset += length + 8
        return body

    while offset < len(data):
        header = fortran_record()
        ints = np.frombuffer(header[:180], ">i4").astype(np.int64)
        reals = np.frombuffer(header[180:256], ">f4").astype(np.float64)
        body = fortran_record()
        rows, columns, extra, packing, code = ints[17], ints[18], ints[19], ints[20], ints[15]
        if packing != 0 or code != 1 or extra != 0 or reals[14] == 0:
            raise DataError(f"{path}: field {len(fields)} is packed (LBPACK={packing}), not on a regular lat-lon grid "
                            f"(LBCODE={code}, BDY={reals[14]}) or has extra data (LBEXT={extra}); not supported")
        values = np.frombuffer(body, ">f4", count=rows * columns).astype(np.float64).reshape(rows, columns)
        fields.append((ints, reals, np.where(values == reals[17], np.nan, values)))
    return fields


def crop(ds: xr.Dataset, note: str, **slices: slice) -> xr.Dataset:
    """``ds.isel(**slices)`` with the crop recorded in ``history``."""
    return record(ds.isel(**slices), [note], step="benchmarks/reconstruction_real.py")


def open_iris_netcdf(iris: Path | None, relative: str, variable: str, units: str, long_name: str) -> xr.Dataset:
    """One variable of an iris-sample-data netCDF file in canonical form (lon 0..360), with its provenance."""
    path = source_file(iris, relative)
    raw = xr.open_dataset(path)[[variable]].load()
    raw = raw.drop_vars([v for v in raw.coords if v not in ("time", "latitude", "longitude")])
    raw[variable].attrs.pop("grid_mapping", None)
    raw[variable].attrs["long_name"] = long_name
    ds = standardize(raw, variables={variable: units}, lon="0..360")
    ds.attrs.update(provenance(path, IRIS_PACKAGE, iris_version(path.parent)))
    return ds


def load_ostia_sst(iris: Path | None) -> xr.Dataset:
    """OSTIA monthly SST, 5 S-4.4 N, 160.8 E-93.3 W at its native grid: ``(time 54, lat 18, lon 128)``, degC."""
    ds = open_iris_netcdf(iris, "ostia_monthly.nc", "surface_temperature", "degC",
                          "OSTIA sea surface temperature, monthly mean")
    start = int(np.searchsorted(ds.lon.values, 160.8))
    return crop(ds, "kept 128 longitudes from 160.8 E (central and eastern equatorial Pacific)",
                lon=slice(start, start + 128))


def load_na_tas(iris: Path | None) -> xr.Dataset:
    """Unified Model (HadGEM) scenario A1B annual 1.5 m air temperature over North America:
    ``(time 240, lat 37, lon 49)``, K."""
    return open_iris_netcdf(iris, "A1B_north_america.nc", "air_temperature", "K",
                            "1.5 m air temperature, annual mean, Met Office Unified Model 6.05 scenario A1B")


def load_glosea4_ts(iris: Path | None) -> xr.Dataset:
    """GloSea4 ensemble monthly surface temperature, 30 S-28.75 N, 30-208.1 E: ``(time 78, lat 48, lon 96)``, K.

    The 13 members of a month are samples along ``time`` (month-major: the members of August 2011, then September,
    ...); a sample is labelled with a day inside the month it averages, day = member + 1, so that times are unique
    and ordered; ``valid_month`` and ``realization`` are coordinates."""
    paths = sorted(Path(source_file(iris, "GloSea4/ensemble_000.pp")).parent.glob("ensemble_*.pp"))
    samples = []
    for path in paths:
        member = int(path.stem.split("_")[1])
        for ints, reals, values in read_pp(path):
            if ints[41] != 24:
                raise DataError(f"{path}: STASH {ints[41]} is not surface temperature (24)")
            samples.append((f"{ints[0]:04d}-{ints[1]:02d}", member, values, reals))
    samples.sort(key=lambda s: (s[0], s[1]))
    reals = samples[0][3]
    rows, columns = samples[0][2].shape
    lat = reals[13] + reals[14] * np.arange(1, rows + 1)
    lon = reals[15] + reals[16] * np.arange(1, columns + 1)
    field = np.stack([s[2] for s in samples]).astype(np.float32)
    times = np.array([np.datetime64(f"{s[0]}-01") + np.timedelta64(s[1], "D") for s in samples], "datetime64[ns]")
    ds = xr.Dataset(
        {"surface_temperature": (("time", "lat", "lon"), field, {
            "units": "K", "standard_name": "surface_temperature",
            "long_name": "surface temperature, monthly mean, GloSea4 seasonal forecast member"})},
        coords={"time": ("time", times, {"long_name": "valid month (monthly mean), day of month = member + 1"}),
                "valid_month": ("time", [s[0] for s in samples]),
                "realization": ("time", np.array([s[1] for s in samples])),
                "lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude"}),
                "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude"})},
        attrs={"geodiff_lon_convention": "0..360", "history": "GloSea4 PP fields read by "
               "benchmarks/reconstruction_real.py (UMDP F3 layout, unpacked, regular lat-lon grid)"})
    south, west = int(np.searchsorted(lat, -30.0)), int(np.searchsorted(lon, 30.0))
    ds = crop(ds, "kept 48 latitudes from 30 S and 96 longitudes from 30 E (Indian Ocean to the western Pacific)",
              lat=slice(south, south + 48), lon=slice(west, west + 96))
    ds.attrs.update(provenance(paths[0], IRIS_PACKAGE, iris_version(paths[0].parents[1])))
    ds.attrs["source_file"] = f"GloSea4/ensemble_*.pp ({len(paths)} files)"
    ds.attrs["source_file_sha256"] = " ".join(f"{p.name}:{woa.file_sha256(p)}" for p in paths)
    return ds


def load_woa_temp(iris: Path | None) -> xr.Dataset:
    """World Ocean Atlas monthly temperature, 0-64 N, 130 E-102 W, 4 depths: ``(time 12, depth 4, lat 32, lon 64)``."""
    full = woa.open_sample()
    ds = full.sel(depth=[0.0, 50.0, 100.0, 200.0]).drop_vars("sea_mask")
    lon = np.mod(ds.lon.values, 360.0)
    ds = ds.assign_coords(lon=("lon", lon, ds.lon.attrs)).sortby("lon")
    ds.attrs["geodiff_lon_convention"] = "0..360"
    south, west = int(np.searchsorted(ds.lat.values, 0.0)), int(np.searchsorted(ds.lon.values, 130.0))
    ds = crop(ds, "depths 0, 50, 100, 200 m; 32 latitudes from 0 N and 64 longitudes from 130 E (North Pacific); "
              "longitudes put in 0..360", lat=slice(south, south + 32), lon=slice(west, west + 64))
    return ds.load()


@dataclass(frozen=True)
class DataSet:
    """A benchmark data set: its loader, split (number of test and validation times) and climatology grouping."""

    loader: Callable[[Path | None], xr.Dataset]
    n_test: int
    n_validation: int
    by: str | None


DATASETS: dict[str, DataSet] = {
    "ostia_sst": DataSet(load_ostia_sst, n_test=12, n_validation=6, by="month"),
    "na_tas": DataSet(load_na_tas, n_test=40, n_validation=30, by=None),
    "glosea4_ts": DataSet(load_glosea4_ts, n_test=26, n_validation=13, by=None),
    "woa_temp": DataSet(load_woa_temp, n_test=4, n_validation=2, by=None),
}


# ---------------------------------------------------------------------------------------------------------------
# prepare: canonical sets, split, nested observation sets


def variable_of(ds: xr.Dataset) -> str:
    (name,) = [v for v in ds.data_vars if {"time", "lat", "lon"} <= set(ds[v].dims)]
    return str(name)


def climatology_field(train: xr.Dataset, target: xr.Dataset, by: str | None) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN land cells
        return climatology(train, target, by=by)


def observation_sets(test: xr.Dataset, name: str, error_std: np.ndarray, seed: int) -> dict[float, xr.Dataset]:
    """Nested observation tables at each coverage; ``error_std`` per level (shape ``[depth]`` or ``[1]``)."""
    truth = test[name]
    noise_std = xr.DataArray(error_std, dims=("depth",)) if "depth" in truth.dims else float(error_std[0])
    rng = np.random.default_rng([seed, 7])
    noisy = truth + noise_std * xr.DataArray(rng.standard_normal(truth.shape), dims=truth.dims)
    errors = xr.ones_like(truth) * noise_std
    tables, previous = {}, None
    for coverage in COVERAGES:
        mask = metrics.random_guidance_mask(truth.notnull(), coverage, seed=seed, per_level=True)
        if previous is not None and bool((previous & ~mask).any()):
            raise AssertionError("observation sets are not nested")
        previous = mask
        stacked = xr.Dataset({"value": noisy.where(mask), "error_std": errors.where(mask)}).stack(obs=truth.dims)
        stacked = stacked.isel(obs=np.flatnonzero(stacked.value.notnull().values)).reset_index("obs")
        n = stacked.sizes["obs"]
        units = truth.attrs.get("units", "")
        stacked["value"].attrs = {"units": units, "long_name": f"observed {name}"}
        stacked["error_std"].attrs = {"units": units, "long_name": "observation error standard deviation"}
        stacked = stacked.assign_coords(variable=("obs", np.full(n, name)),
                                        source=("obs", np.full(n, "reconstruction_real")), obs_id=("obs", np.arange(n)))
        stacked = stacked.drop_vars([c for c in stacked.coords if c not in ("lat", "lon", "time", "depth", "variable",
                                                                             "source", "obs_id")])
        stacked.attrs = {"coverage": coverage, "seed": seed,
                         "comment": f"{100 * coverage:g} % of the valid cells of every test field and level "
                                    f"(nested with the other coverages), truth + N(0, error_std)"}
        tables[coverage] = stacked
    return tables


def prepare(cache: Path, names: list[str], iris: Path | None, seed: int) -> None:
    for key in names:
        spec = DATASETS[key]
        ds = spec.loader(iris)
        name = variable_of(ds)
        n_time = ds.sizes["time"]
        n_train = n_time - spec.n_test
        train, test = ds.isel(time=slice(0, n_train)), ds.isel(time=slice(n_train, None))
        clim_train = climatology_field(train, train, spec.by)
        anomalies = train[name] - clim_train[name]
        spatial = [d for d in anomalies.dims if d not in ("depth",)]
        anomaly_std = np.atleast_1d(anomalies.std(spatial).values).astype(float)
        error_std = ERROR_FRACTION * anomaly_std
        folder = cache / key
        folder.mkdir(parents=True, exist_ok=True)
        train.to_netcdf(folder / "train.nc")
        test.to_netcdf(folder / "test.nc")
        for coverage, table in observation_sets(test, name, error_std, seed).items():
            table.to_netcdf(folder / f"obs_{round(100 * coverage):02d}.nc")
        valid = ds[name].isel(time=0).notnull().sum(("lat", "lon"))
        shape = {d: int(s) for d, s in ds[name].sizes.items()}
        meta = {
            "name": key, "variable": name, "units": ds[name].attrs.get("units", ""), "shape": shape,
            "valid_cells_per_level": np.atleast_1d(valid.values).tolist(), "by": spec.by, "seed": seed,
            "split": {"train": [str(ds.time.values[0]), str(ds.time.values[n_train - 1])], "n_train": n_train,
                      "validation": [str(ds.time.values[n_train - spec.n_validation]),
                                     str(ds.time.values[n_train - 1])], "n_validation": spec.n_validation,
                      "test": [str(ds.time.values[n_train]), str(ds.time.values[-1])], "n_test": spec.n_test},
            "anomaly_std": anomaly_std.tolist(), "error_std": error_std.tolist(),
            "error_note": f"observation error = {ERROR_FRACTION:g} x training anomaly std per level",
            "source": {k: ds.attrs.get(k, "") for k in ("source_package", "source_file", "source_file_sha256")},
            "history": ds.attrs.get("history", ""),
        }
        if "valid_month" in ds.coords:
            meta["split"]["months"] = {part: sorted(set(map(str, sub.valid_month.values)))
                                       for part, sub in (("train", train), ("test", test))}
        (folder / "meta.json").write_text(json.dumps(meta, indent=1))
        print(f"{key}: {shape}, valid cells per level {meta['valid_cells_per_level']}, train {n_train} "
              f"(validation {spec.n_validation}), test {spec.n_test}; error_std {np.round(error_std, 4).tolist()} "
              f"{meta['units']}", flush=True)


# ---------------------------------------------------------------------------------------------------------------
# scoring


def open_set(cache: Path, key: str, test_times: int | None = None
             ) -> tuple[dict, xr.Dataset, xr.Dataset, dict[float, xr.Dataset]]:
    """The prepared set; ``test_times``: keep that many evenly spaced test times (and their observations)."""
    folder = cache / key
    if not (folder / "meta.json").is_file():
        raise ConfigError(f"{folder} has no prepared data set; run `prepare` first")
    meta = json.loads((folder / "meta.json").read_text())
    train, test = xr.load_dataset(folder / "train.nc"), xr.load_dataset(folder / "test.nc")
    obs = {c: xr.load_dataset(folder / f"obs_{round(100 * c):02d}.nc") for c in COVERAGES}
    if test_times is not None and test_times < test.sizes["time"]:
        kept = test.time.values[np.unique(np.linspace(0, test.sizes["time"] - 1, test_times).round().astype(int))]
        test = test.sel(time=kept)
        obs = {c: table.isel(obs=np.flatnonzero(np.isin(table.time.values, kept))) for c, table in obs.items()}
    return meta, train, test, obs


def heldout_mask(test: xr.Dataset, name: str, table: xr.Dataset) -> xr.DataArray:
    """Valid test cells that carry no observation."""
    observed = xr.zeros_like(test[name], dtype=bool)
    index = {d: xr.DataArray(table[d].values, dims="obs") for d in test[name].dims}
    observed.loc[index] = True
    return test[name].notnull() & ~observed


def gaussian_scores(truth: xr.DataArray, mean: xr.DataArray, std: xr.DataArray, where: xr.DataArray) -> dict:
    rmse = float(metrics.rmse(truth, mean, where=where))
    inside = (abs(truth - mean) <= Z90 * std).where(where & truth.notnull() & mean.notnull())
    return {"rmse": rmse, "crps": float(metrics.crps_gaussian(truth, mean, std, where=where)),
            "spread_skill": float(np.sqrt((std ** 2).where(where & truth.notnull()).mean())) / rmse,
            "coverage90": float(inside.mean())}


def ensemble_scores(truth: xr.DataArray, ensemble: xr.DataArray, where: xr.DataArray) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN land cells
        low, high = ensemble.quantile(0.05, "member"), ensemble.quantile(0.95, "member")
    inside = ((truth >= low) & (truth <= high)).where(where & truth.notnull() & low.notnull())
    return {"rmse": float(metrics.rmse(truth, ensemble.mean("member"), where=where)),
            "crps": float(metrics.crps_ensemble(truth, ensemble, where=where)),
            "spread_skill": float(metrics.spread_skill_ratio(truth, ensemble, where=where)),
            "coverage90": float(inside.mean())}


def write_scores(cache: Path, key: str, method_group: str, rows: list[dict]) -> None:
    (cache / key / f"scores_{method_group}.json").write_text(json.dumps(rows, indent=1))


def rank_covariance_models(train: xr.Dataset, meta: dict, seed: int) -> tuple[list[str], dict[str, float | None]]:
    """Covariance models of OI ranked by held-out RMSE on the validation period at 5 % coverage (fitted on the
    training period before it); a model whose covariance matrix is not positive definite there is left out.

    Matern covariances other than the exponential one are not positive definite on the sphere with great-circle
    distances for every length scale, which is why the choice is made on data, not fixed."""
    name, by, n_validation = meta["variable"], meta["by"], meta["split"]["n_validation"]
    fit_part, valid = train.isel(time=slice(None, -n_validation)), train.isel(time=slice(-n_validation, None))
    anomalies = fit_part[name] - climatology_field(fit_part, fit_part, by)[name]
    background = climatology_field(fit_part, valid, by)
    table = observation_sets(valid, name, np.asarray(meta["error_std"]), seed + 1)[0.05]
    where = heldout_mask(valid, name, table)
    scores: dict[str, float | None] = {}
    for model in MODELS:
        covariance = fit_covariance(anomalies, model=model, seed=seed)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                oi = optimal_interpolation(table, valid, background=background, covariance=covariance,
                                           time_correlation=False, return_std=False, seed=seed)
            scores[model] = float(metrics.rmse(valid[name], oi[name], where=where))
        except np.linalg.LinAlgError:
            scores[model] = None
    ranked = sorted((m for m in MODELS if scores[m] is not None), key=lambda m: scores[m])
    if not ranked:
        raise DataError(f"{meta['name']}: no covariance model gives a positive definite OI system on validation")
    return ranked, scores


def oi_on_test(table: xr.Dataset, test: xr.Dataset, background: xr.Dataset, anomalies: xr.DataArray,
               ranked: list[str], seed: int) -> tuple[xr.Dataset, xr.Dataset, list[str]]:
    """OI with the best-ranked covariance model whose system is positive definite on every test field."""
    failed = []
    for model in ranked:
        covariance = fit_covariance(anomalies, model=model, seed=seed)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                return optimal_interpolation(table, test, background=background, covariance=covariance,
                                             time_correlation=False, seed=seed), covariance, failed
        except np.linalg.LinAlgError:
            failed.append(model)
    raise DataError(f"OI failed with every covariance model ({failed}): not positive definite")


def run_baselines(cache: Path, names: list[str], seed: int, test_times: int | None = None) -> None:
    for key in names:
        meta, train, test, tables = open_set(cache, key, test_times)
        name, by, n_fields = meta["variable"], meta["by"], test.sizes["time"]
        truth = test[name]
        rows = []
        start = time.perf_counter()
        ranked, validation_rmse = rank_covariance_models(train, meta, seed)
        clim_train = climatology_field(train, train, by)
        clim_test = climatology_field(train, test, by)
        anomalies = train[name] - clim_train[name]
        patches = anomalies.rename(time="sample")
        fit_seconds = time.perf_counter() - start
        print(f"{key}: OI covariance models by validation RMSE {validation_rmse}", flush=True)
        for coverage, table in tables.items():
            where = heldout_mask(test, name, table)
            rows.append({"method": "climatology", "coverage": coverage, "rmse": float(
                metrics.rmse(truth, clim_test[name], where=where)), "crps": None, "mae": float(
                metrics.mae(truth, clim_test[name], where=where)), "spread_skill": None, "coverage90": None,
                "seconds_per_field": 0.0, "n_obs": int(table.sizes["obs"]), "n_scored": int(where.sum()),
                "test_times": n_fields})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                start = time.perf_counter()
                oi, covariance, failed = oi_on_test(table, test, clim_test, anomalies, ranked, seed)
                oi_seconds = (time.perf_counter() - start) / n_fields
                start = time.perf_counter()
                eof = eof_projection(table, test, patches, background=clim_test, seed=seed)
                eof_seconds = (time.perf_counter() - start) / n_fields
            for method, out, seconds, extra in (
                    ("optimal interpolation", oi, oi_seconds, {"covariance": {
                        "model": covariance.attrs["model"], "not_positive_definite": failed,
                        "validation_rmse": validation_rmse, **{
                            k: np.atleast_1d(covariance[k].values).round(4).tolist()
                            for k in ("variance", "length_scale", "nugget")}}}),
                    ("EOF projection", eof, eof_seconds, {"modes": eof.attrs.get("eof_modes", "")})):
                scores = gaussian_scores(truth, out[name], out[name + "_std"], where)
                rows.append({"method": method, "coverage": coverage, **scores,
                             "mae": float(metrics.mae(truth, out[name], where=where)), "seconds_per_field": seconds,
                             "n_obs": int(table.sizes["obs"]), "n_scored": int(where.sum()), "test_times": n_fields,
                             **extra})
            print(f"{key} {100 * coverage:g} %: " + ", ".join(
                f"{r['method']} {r['rmse']:.4f}" for r in rows if r["coverage"] == coverage), flush=True)
        rows.append({"method": "fit (climatology, covariance model choice)", "seconds": fit_seconds})
        write_scores(cache, key, "baselines", rows)


def run_geodiff(cache: Path, names: list[str], priors: Path, train_missing: bool, time_budget: float,
                steps: int | None, members: int, seed: int, options: dict, gaussian_part: bool = False,
                test_times: int | None = None, check: bool = False) -> None:
    method, group = ("geodiff (Gaussian part)", "geodiff_gaussian") if gaussian_part else ("geodiff", "geodiff")
    for key in names:
        meta, train, test, tables = open_set(cache, key, test_times)
        name = meta["variable"]
        folder = priors / key
        training_note: dict = {}
        if (folder / "manifest.json").is_file():
            bundle = geodiff.load(folder)
            training_note = {"prior": str(folder), "sha256": bundle.sha256}
        elif train_missing:
            fit = getattr(geodiff, "fit", None)
            if fit is None:
                raise ConfigError("geodiff.fit is not available in this version; pass trained bundles with --priors")
            start = time.perf_counter()
            plain = train.drop_vars([c for c in train.coords if c not in train.dims])  # labels such as realization
            bundle = fit(plain, variables=[name], time_budget=time_budget, steps=steps,
                         # fit holds out ceil(validation * times): exactly the split's validation period
                         validation=(meta["split"]["n_validation"] - 0.5) / meta["split"]["n_train"],
                         checkpoint_dir=cache / key / "checkpoints", seed=seed, progress=False)
            bundle.save(folder, overwrite=True)
            training_note = {"prior": str(folder), "sha256": bundle.sha256, "train_seconds":
                             time.perf_counter() - start, "time_budget": time_budget, "steps": steps}
        else:
            raise ConfigError(f"no prior bundle at {folder}; train one with --train or pass --priors DIR")
        if check and not gaussian_part:
            # what geodiff.fit now does last, for a prior trained before it did
            outcome = settle_correction(bundle, train.drop_vars([c for c in train.coords if c not in train.dims]),
                                        seed=seed)
            print(f"{key}: learned correction {'kept' if outcome['keep'] else 'left out'}: {outcome['reason']}",
                  flush=True)
        if gaussian_part:
            if not hasattr(bundle.denoiser, "gaussian_spectrum"):
                raise ConfigError("--zero-correction needs a hybrid prior (geodiff.fit(prior='hybrid'))")
            bundle = without_correction(bundle)
        rows = []
        for coverage, table in tables.items():
            where = heldout_mask(test, name, table)
            start = time.perf_counter()
            try:
                ensemble = geodiff.reconstruct(bundle, table, members=members, seed=seed, progress=False, **options)
            except (SamplingError, ObservationError) as err:  # diverged members, or observations it refuses
                rows.append({"method": method, "coverage": coverage, "rmse": None, "crps": None, "mae": None,
                             "spread_skill": None, "coverage90": None, "seconds_per_field": None,
                             "failed": f"{type(err).__name__}: {err}"})
                print(f"{key} {100 * coverage:g} %: geodiff failed: {err}", flush=True)
                continue
            seconds = (time.perf_counter() - start) / test.sizes["time"]
            field = ensemble[name].transpose("member", *test[name].dims)
            scores = ensemble_scores(test[name], field, where)
            rows.append({"method": method, "coverage": coverage, **scores, "mae": float(metrics.mae(
                test[name], field.mean("member"), where=where)), "seconds_per_field": seconds,
                "members": members, "options": options, "n_obs": int(table.sizes["obs"]), "n_scored": int(where.sum()),
                "test_times": test.sizes["time"]})
            print(f"{key} {100 * coverage:g} %: {method} RMSE {scores['rmse']:.4f}", flush=True)
        training_note["metadata"] = json.loads(json.dumps(bundle.metadata, default=str))
        rows.append({"method": "prior", **training_note})
        write_scores(cache, key, group, rows)


# ---------------------------------------------------------------------------------------------------------------
# table


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(cache: Path, names: list[str]) -> None:
    results = {"machine": f"{platform.node()} ({platform.processor() or platform.machine()}), torch "
                          f"{torch.__version__}, {torch.get_num_threads()} threads", "data_sets": {}}
    for key in names:
        meta = json.loads((cache / key / "meta.json").read_text())
        rows, notes = [], []
        for group in ("baselines", "geodiff", "geodiff_gaussian"):
            path = cache / key / f"scores_{group}.json"
            if path.is_file():
                scores = json.loads(path.read_text())
                rows += [r for r in scores if "coverage" in r]
                notes += [r for r in scores if "coverage" not in r]
        oi = {r["coverage"]: r for r in rows if r["method"] == "optimal interpolation"}
        for r in rows:
            ref = oi.get(r["coverage"])
            r["rmse_vs_oi"] = r["rmse"] / ref["rmse"] if ref and r["rmse"] is not None else None
            r["crps_vs_oi"] = r["crps"] / ref["crps"] if ref and r["crps"] is not None else None
        results["data_sets"][key] = {"meta": meta, "rows": rows, "notes": notes}
        shape = " x ".join(f"{s} {d}" for d, s in meta["shape"].items())
        split = meta["split"]
        day = [t[:10] for t in (*split["train"], *split["test"])]
        print(f"\n### {key}: {shape}, valid cells per level {meta['valid_cells_per_level']}; train "
              f"{day[0]}..{day[1]} ({split['n_train']} times, the last {split['n_validation']} for validation), "
              f"test {day[2]}..{day[3]} ({split['n_test']}); observation error "
              f"{', '.join(f'{e:.4g}' for e in meta['error_std'])} {meta['units']}\n")
        scored = sorted({r["test_times"] for r in rows if r.get("test_times")})
        if scored and scored != [split["n_test"]]:
            print(f"Scored on {', '.join(map(str, scored))} evenly spaced test times of {split['n_test']}.\n")
        print(f"| coverage | method | RMSE [{meta['units']}] | CRPS (MAE) | spread/skill | 90 % coverage | "
              "s/field | RMSE/OI | CRPS/OI |")
        print("|---|---|---|---|---|---|---|---|---|")
        order = ("geodiff", "geodiff (Gaussian part)", "optimal interpolation", "EOF projection", "climatology")
        for r in sorted(rows, key=lambda r: (r["coverage"], order.index(r["method"]))):
            if r.get("failed"):
                print(f"| {100 * r['coverage']:g} % | {r['method']} | {r['failed']} |||||||")
                continue
            crps = fmt(r["crps"]) if r["crps"] is not None else f"({fmt(r['mae'])})"
            print(f"| {100 * r['coverage']:g} % | {r['method']} | {fmt(r['rmse'])} | {crps} | "
                  f"{fmt(r['spread_skill'], 2)} | {fmt(r['coverage90'], 2)} | {fmt(r['seconds_per_field'], 3)} | "
                  f"{fmt(r['rmse_vs_oi'], 2)} | {fmt(r['crps_vs_oi'], 2)} |")
        for note in notes:
            if note["method"] == "prior":
                training = note.get("metadata", {}).get("training", {})
                kept = ("steps", "best_step", "seconds", "training_times", "validation_times", "patch_size")
                summary = {k: training[k] for k in kept if k in training}
                print(f"\ngeodiff prior {note.get('prior')} (sha256 {str(note.get('sha256'))[:12]}): trained "
                      f"{fmt(note.get('train_seconds'), 0)} s here; training record {json.dumps(summary)}")
    (cache / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\n(all numbers in {cache / 'results.json'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("prepare", "baselines", "geodiff", "table"))
    parser.add_argument("--cache", type=Path, required=True, help="folder for data sets, observations and scores")
    parser.add_argument("--sets", default=",".join(DATASETS), help="comma-separated data set names")
    parser.add_argument("--iris", type=Path, default=None, help="prepare: iris_sample_data/sample_data folder")
    parser.add_argument("--priors", type=Path, default=None, help="geodiff: folder with one bundle per data set")
    parser.add_argument("--train", action="store_true", help="geodiff: train missing priors with geodiff.fit")
    parser.add_argument("--time-budget", type=float, default=1800.0, help="geodiff --train: seconds per data set")
    parser.add_argument("--steps", type=int, default=None, help="geodiff --train: optimizer steps (instead of the "
                        "number that fits the time budget)")
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--options", type=json.loads, default={}, help="geodiff: further keyword arguments of "
                        "geodiff.reconstruct as JSON, e.g. '{\"steps\": 48}' (default: none, its defaults)")
    parser.add_argument("--zero-correction", action="store_true", help="geodiff: the hybrid prior's Gaussian part "
                        "alone (learned correction left out), scored as 'geodiff (Gaussian part)'")
    parser.add_argument("--check-correction", action="store_true", help="geodiff: for a prior trained before "
                        "geodiff.fit checked its learned correction, run that check (validation period) and apply it")
    parser.add_argument("--test-times", type=int, default=None, help="baselines, geodiff: score that many evenly "
                        "spaced test times only (the same ones for every method)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    names = [n for n in args.sets.split(",") if n]
    unknown = sorted(set(names) - set(DATASETS))
    if unknown:
        raise SystemExit(f"unknown data set(s) {unknown}; known: {list(DATASETS)}")
    if args.command == "prepare":
        prepare(args.cache, names, args.iris, args.seed)
    elif args.command == "baselines":
        run_baselines(args.cache, names, args.seed, args.test_times)
    elif args.command == "geodiff":
        if args.priors is None:
            raise SystemExit("geodiff needs --priors DIR (read from, or written to with --train)")
        run_geodiff(args.cache, names, args.priors, args.train, args.time_budget, args.steps, args.members,
                    args.seed, args.options, gaussian_part=args.zero_correction, test_times=args.test_times,
                    check=args.check_correction)
    else:
        table(args.cache, names)


if __name__ == "__main__":
    main()
