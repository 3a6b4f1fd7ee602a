"""Downscaling quality at 4x on real held-out fields, per data set and in one run: bicubic, a regression network,
and conditional diffusion (direct and residual, CorrDiff-style), all networks trained by
:func:`geodiff.training.fit_downscaling` with the same data, patches, network, time budget and early stopping.

Data sets (real fields shipped in registry packages; the truth is the high-resolution field, the coarse input
its cos-lat area mean over 4 x 4 blocks, computed here):

============ =============================================================================================== ========
name         truth                                                                                           split
============ =============================================================================================== ========
na_tas       Met Office UM A1B annual-mean 1.5 m air temperature over North America (iris-sample-data         train
             ``A1B_north_america.nc``; 36 x 48 cells of 1.25 x 1.875 deg, :mod:`data_catalog.make_downscaling_  1860-
             sample`), ETOPO5 topography (ferret-datasets) on the grid 2x finer as a source                    2059
glosea4_ts   GloSea4 ensemble monthly surface temperature, 30 S-28.75 N, 30-208.1 E (iris-sample-data          Aug-Nov
             ``GloSea4/ensemble_*.pp``, 48 x 96 cells of 1.25 x 1.875 deg, loader of                          2011 (52
             ``benchmarks/reconstruction_real.py``); ETOPO5 topography on the same grid as a source           fields)
ostia_sst    OSTIA monthly SST, 4.4 S-4.4 N, 160.8 E-93.3 W (iris-sample-data ``ostia_monthly.nc``, the         first
             16 central latitudes of the reconstruction benchmark's crop, 16 x 128 cells of 0.56 x 0.83       42 months
             deg; island cells NaN); no auxiliary source
============ =============================================================================================== ========

Test fields (never seen in training or early stopping): na_tas every 4th year of 2060-2099 (10); glosea4_ts the 13
members of December 2011 and January 2012 (8 of the 26, evenly spaced); ostia_sst the last 12 months. Each model
holds out the last 15 % of its training times for early stopping (``fit_downscaling``'s validation period).

Scores over the test fields (valid cells): RMSE of the ensemble mean (of the prediction for deterministic
methods); CRPS (fair, members; MAE for deterministic methods); power ratio by wavenumber band (members' radially
averaged power over the truth's, cycles per high-resolution cell: 1/8-1/4, 1/4-1/2 and all above 1/8, the scales
the coarse grid cannot hold; NaN cells filled with the field's mean first); spread/skill; MAE at 60 held-out
station positions (bilinear at random points, never used as guidance) of the ensemble mean; seconds per field.
Station guidance: another 60 positions, values from the truth plus Gaussian noise of ``STATION_ERROR`` (the
set's station error std, or ``--station-error``). "regression kriging of the stations" is the practitioner's
baseline for the same stations: the regression's prediction plus optimal interpolation of the station innovations
with a covariance fitted to the regression's errors over its validation period. "regression + validation error
std (Gaussian)" is the probabilistic forecast a regression gives at no extra cost: a Gaussian around its
prediction whose std per cell is the RMS of its errors over its validation period (closed-form CRPS); an ensemble
is worth its cost only where it beats this.

Running (files: ``pip download --no-deps iris-sample-data==2.5.2`` and unzip; ``apt-get download
ferret-datasets`` and ``dpkg -x``)::

    python benchmarks/downscaling.py --iris DIR/sample_data --etopo DIR/etopo5.cdf --out OUT --train --budget 600

``--train`` fits the three networks of each set (``--budget`` seconds each) into ``OUT/<set>/``; without it the
bundles there are scored. ``--residual-folds K`` trains the residual model on out-of-fold residuals (K more
regressions of ``--budget`` seconds each); ``--residual-scale none`` keeps the residuals' own size (CorrDiff)
instead of calibrating it cell by cell on the validation period (``validation``: one factor per variable).
Results go to ``OUT/<set>/scores.json`` and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

import geodiff
from geodiff import metrics
from geodiff.baselines.interpolation import bicubic
from geodiff.baselines.optimal_interpolation import fit_covariance, optimal_interpolation
from geodiff.operators import PointOperator
from geodiff.pipelines.downscale import coarsen, downscale
from geodiff.training.fit_downscaling import fit_downscaling

ROOT = Path(__file__).resolve().parents[1]
FACTOR = 4
BANDS = ((0.125, 0.25), (0.25, 0.5))
STATIONS = 60
#: station error std (data units) per set: what a real station of that kind carries once its values are averaged
#: over the field's time step (the benchmark's stations are the truth at points, so no representativeness error):
#: annual-mean 1.5 m temperature of a land station about 0.15 K (homogenisation and siting); monthly-mean SST of a
#: moored buoy (the TAO array lies in the OSTIA domain) about 0.05 K (sensor 0.03 K)
STATION_ERROR = {"na_tas": 0.15, "glosea4_ts": 0.15, "ostia_sst": 0.05}


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def data_sets(iris: Path, etopo: Path, names: list[str]) -> dict[str, tuple[xr.Dataset, xr.Dataset, dict]]:
    """``{name: (training fields, test fields, sources)}`` (module docstring)."""
    prep = _module(ROOT / "data_catalog" / "make_downscaling_sample.py", "make_downscaling_sample")
    real = _module(ROOT / "benchmarks" / "reconstruction_real.py", "reconstruction_real")
    out = {}
    if "na_tas" in names:
        fields, topography = prep.north_america(iris, etopo)
        held = prep.heldout(fields)
        out["na_tas"] = (prep.training(fields), held.isel(time=slice(0, 40, 4)), {"topography": topography})
    if "glosea4_ts" in names:
        ds = real.load_glosea4_ts(iris).drop_vars(["valid_month", "realization"])
        topography = prep.topography_on(ds["lat"].values, ds["lon"].values, etopo,
                                        "ETOPO5 relief averaged onto the GloSea4 grid (1.25 x 1.875 deg)")
        test = ds.isel(time=slice(52, 78))
        out["glosea4_ts"] = (ds.isel(time=slice(0, 52)), test.isel(time=np.linspace(0, 25, 8).astype(int)),
                             {"topography": topography})
    if "ostia_sst" in names:
        ds = real.load_ostia_sst(iris).isel(lat=slice(1, 17))
        out["ostia_sst"] = (ds.isel(time=slice(0, 42)), ds.isel(time=slice(42, 54)), {})
    return out


def variable(ds: xr.Dataset) -> str:
    return [str(n) for n, v in ds.data_vars.items() if "time" in v.dims][0]


def train(name: str, train_ds: xr.Dataset, sources: dict, out: Path, budget: float, patch: int,
          modes: list[str], residual_folds: int | None = None, residual_scale: str = "validation_per_cell") -> None:
    """The networks of ``modes`` (regression, direct, residual) of one set (``budget`` seconds each; with
    ``residual_folds``, the residual model learns out-of-fold residuals of that many more regressions;
    ``residual_scale``: fit_downscaling's, "none" or a number as text)."""
    common = dict(sources=sources, time_budget=budget, patch_size=(patch, patch), progress=False, seed=0)
    for mode in modes:
        start = time.perf_counter()
        regression = geodiff.load(out / name / "regression") if mode == "residual" else None
        scale = None if residual_scale == "none" else residual_scale if residual_scale.startswith("validation") \
            else float(residual_scale)
        folds = dict(residual_folds=residual_folds, residual_scale=scale) if mode == "residual" else {}
        bundle = fit_downscaling(train_ds, FACTOR, mode=mode, regression=regression, **folds, **common)
        bundle.save(out / name / mode, overwrite=True)
        info = bundle.metadata["training"]
        print(f"{name} {mode}: {info['steps']} of {info['planned_steps']} planned steps "
              f"({info['seconds_per_step']:.3f} s/step{', stopped by the budget' if info['stopped_by_budget'] else ''}"
              f"), best step {info['best_step']}, {info['seconds']:.0f} s training, "
              f"{time.perf_counter() - start:.0f} s in all", flush=True)


def stations(truth: xr.DataArray, seed: int) -> tuple[np.ndarray, np.ndarray, PointOperator]:
    """Random positions inside the valid part of the domain and their bilinear operator."""
    lat, lon = truth["lat"].values, truth["lon"].values
    rng = np.random.default_rng(seed)
    plat, plon = rng.uniform(lat[1], lat[-2], 4 * STATIONS), rng.uniform(lon[1], lon[-2], 4 * STATIONS)
    valid = np.isfinite(truth.isel(time=0).values)
    iy = np.clip(np.searchsorted(lat, plat), 1, lat.size - 1)
    ix = np.clip(np.searchsorted(lon, plon), 1, lon.size - 1)
    ok = valid[iy, ix] & valid[iy - 1, ix] & valid[iy, ix - 1] & valid[iy - 1, ix - 1]
    plat, plon = plat[ok][:STATIONS], plon[ok][:STATIONS]
    return plat, plon, PointOperator(lat, lon, plat, plon)


def at(operator: PointOperator, field: xr.DataArray) -> np.ndarray:
    values = np.nan_to_num(np.asarray(field.transpose("time", "lat", "lon").values, dtype=np.float64))
    return operator(torch.from_numpy(values)[:, None]).numpy()


def band_ratios(truth: xr.DataArray, estimate: xr.DataArray) -> dict[str, float]:
    def filled(da: xr.DataArray) -> xr.DataArray:
        return da.fillna(da.mean(("lat", "lon")))

    true_power = metrics.power_spectrum(filled(truth))
    est_power = metrics.power_spectrum(filled(estimate))
    k = true_power["wavenumber"]
    out = {}
    for low, high in (*BANDS, (0.125, 0.5)):
        band = (k > low) & (k <= high)
        out[f"power_{low:g}_{high:g}"] = float(est_power.where(band).sum() / true_power.where(band).sum())
    return out


def scores(truth: xr.DataArray, estimate: xr.DataArray, held_op: PointOperator) -> dict[str, float]:
    for coord in ("lat", "lon"):  # the refined coarse grid is the truth's up to rounding
        if not np.allclose(estimate[coord].values, truth[coord].values, rtol=0, atol=1e-3):
            raise ValueError(f"the estimate's {coord} is not the truth's")
    estimate = estimate.assign_coords(lat=truth["lat"], lon=truth["lon"])
    ensemble = "member" in estimate.dims and estimate.sizes["member"] > 1
    estimate = estimate if ensemble else estimate.squeeze("member", drop=True) if "member" in estimate.dims \
        else estimate
    mean = estimate.mean("member") if ensemble else estimate
    valid = truth.notnull()
    out = {"rmse": float(metrics.rmse(truth, mean.where(valid))),
           "crps": float(metrics.crps_ensemble(truth, estimate.where(valid))) if ensemble else
           float(metrics.mae(truth, mean.where(valid))),
           "spread_skill": float(metrics.spread_skill_ratio(truth, estimate.where(valid))) if ensemble else
           float("nan"),
           **band_ratios(truth, estimate.where(valid))}
    out["station_mae"] = float(np.abs(at(held_op, mean) - at(held_op, truth)).mean())
    return out


def station_error(setting: str | None, name: str, train: xr.DataArray) -> float:
    """Station error std (data units): the set's default, a number, or ``std:F`` (F times the training std)."""
    if not setting:
        return STATION_ERROR[name]
    if setting.startswith("std:"):
        return float(setting[4:]) * float(train.std())
    return float(setting)


def validation_errors(regression: geodiff.ModelBundle, train_ds: xr.Dataset, sources: dict, var: str) -> xr.DataArray:
    """The regression's errors ``(time, lat, lon)`` over its validation period (times its weights never trained on,
    so errors of the size a new period sees)."""
    train_ds = train_ds.isel(time=slice(-regression.metadata["training"]["validation_times"], None))
    train_coarse = coarsen(train_ds[[var]], FACTOR)
    fitted = downscale(regression, train_coarse, sources=sources, progress=False, seed=0)[var]
    fitted = fitted.squeeze("member", drop=True)
    return train_ds[var] - fitted.assign_coords(lat=train_ds["lat"], lon=train_ds["lon"])


def regression_kriging(errors: xr.DataArray, prediction: xr.DataArray, table: xr.Dataset, var: str) -> xr.DataArray:
    """The regression's prediction plus optimal interpolation of the station innovations, with a Matern-3/2
    covariance fitted to the regression's validation ``errors`` (regression kriging)."""
    covariance = fit_covariance(errors.rename(var), model="matern32")
    analysis = optimal_interpolation(table, prediction.rename(var), background=prediction.rename(var),
                                     covariance=covariance, time_correlation=False, return_std=False)
    return analysis[var]


def evaluate(name: str, train_ds: xr.DataArray, test: xr.Dataset, sources: dict, out: Path, args) -> list[dict]:
    var = variable(test)
    truth = test[var]
    coarse = coarsen(test[[var]], FACTOR)
    _, _, held_op = stations(truth, seed=1)
    glat, glon, guide_op = stations(truth, seed=2)
    error = station_error(args.station_error, name, train_ds[var])
    values = at(guide_op, truth)
    noisy = values + np.random.default_rng(3).normal(0, error, values.shape)
    table = xr.Dataset(
        {"value": ("obs", noisy.ravel(), {"units": truth.attrs["units"]}),
         "error_std": ("obs", np.full(noisy.size, error))},
        coords={"lat": ("obs", np.tile(glat, noisy.shape[0])), "lon": ("obs", np.tile(glon, noisy.shape[0])),
                "time": ("obs", np.repeat(truth["time"].values, noisy.shape[1])),
                "variable": ("obs", np.full(noisy.size, var))})
    rows: list[dict] = []
    n = truth.sizes["time"]

    def chosen(label: str) -> bool:  # a phrase ending in "$" must end the label
        return not args.methods or any(label.endswith(m[:-1]) if m.endswith("$") else m in label
                                       for m in args.methods.split("|"))

    def record(method: str, estimate: xr.DataArray, seconds: float, note: str = "") -> None:
        row = {"set": name, "method": method, **scores(truth, estimate, held_op), "seconds_per_field": seconds / n,
               "note": note}
        rows.append(row)
        print(json.dumps(row), flush=True)

    start = time.perf_counter()
    record("bicubic", bicubic(coarse, FACTOR)[var], time.perf_counter() - start)
    models = {mode: geodiff.load(out / name / mode) for mode in ("regression", "direct", "residual")
              if (out / name / mode).is_dir()}
    options = dict(sources=sources, progress=False, seed=0)
    start = time.perf_counter()
    prediction = downscale(models["regression"], coarse, **options)[var]
    record("regression", prediction, time.perf_counter() - start)
    start = time.perf_counter()
    errors = validation_errors(models["regression"], train_ds, sources, var)
    prediction = prediction.squeeze("member", drop=True).assign_coords(lat=truth["lat"], lon=truth["lon"])
    # the regression with an error bar: N(prediction, sigma(x)^2), sigma(x) its error RMS per cell over its
    # validation period (the probabilistic baseline a regression gives at no extra cost)
    sigma = np.sqrt((errors**2).mean("time")).assign_coords(lat=truth["lat"], lon=truth["lon"])
    valid = truth.notnull()
    rows.append({"set": name, "method": "regression + validation error std (Gaussian)",
                 **scores(truth, prediction, held_op),
                 "crps": float(metrics.crps_gaussian(truth, prediction.where(valid), sigma.where(valid))),
                 "spread_skill": float(np.sqrt((sigma**2).where(valid).mean())
                                       / metrics.rmse(truth, prediction.where(valid))),
                 "seconds_per_field": (time.perf_counter() - start) / n,
                 "note": "sigma fitted on the validation period"})
    print(json.dumps(rows[-1]), flush=True)
    if chosen("regression kriging"):
        start = time.perf_counter()
        record("regression kriging of the stations", regression_kriging(errors, prediction, table, var),
               time.perf_counter() - start)
    sampling = dict(members=args.members, steps=args.steps, **options)
    runs = [("diffusion direct, coarse guidance", "direct", {}),
            ("diffusion residual, coarse guidance", "residual", {}),
            ("diffusion residual, no guidance", "residual", {"guidance": None}),
            # downscale's default joint coarse + station solve: one diagonal-preconditioned CG step
            ("diffusion direct, coarse + station guidance", "direct", {"stations": table}),
            ("diffusion residual, coarse + station guidance", "residual", {"stations": table}),
            ("diffusion residual, coarse + station guidance, plain CG", "residual",
             {"stations": table, "guidance_options": {"preconditioner": "none"}})]
    runs = [run for run in runs if run[1] in models and chosen(run[0])]
    for label, mode, extra in runs:
        start = time.perf_counter()
        result = downscale(models[mode], coarse, **sampling, **extra)
        runaway = json.loads(result.attrs.get("geodiff_runaway", "{}")).get("members", {})
        record(label, result[var], time.perf_counter() - start,
               f"{sum(len(v) for v in runaway.values())} runaway members redrawn" if runaway else "")
    (out / name / f"scores{args.tag}.json").write_text(json.dumps(rows, indent=1))
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| set | method | RMSE | CRPS (MAE) | power 1/8-1/4 | power 1/4-1/2 | power > 1/8 | spread/skill | "
             "held-out station MAE | s / field |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['set']} | {r['method']} | {r['rmse']:.3f} | {r['crps']:.3f} | {r['power_0.125_0.25']:.2f} "
                     f"| {r['power_0.25_0.5']:.2f} | {r['power_0.125_0.5']:.2f} | {r['spread_skill']:.2f} | "
                     f"{r['station_mae']:.3f} | {r['seconds_per_field']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iris", required=True, type=Path)
    parser.add_argument("--etopo", required=True, type=Path)
    parser.add_argument("--out", default=Path("/tmp/downscaling_benchmark"), type=Path)
    parser.add_argument("--sets", default="na_tas,glosea4_ts,ostia_sst")
    parser.add_argument("--train", action="store_true", help="fit the three networks of each set first")
    parser.add_argument("--budget", type=float, default=240.0, help="training seconds per network")
    parser.add_argument("--modes", default="regression,direct,residual", help="networks --train fits (in order; "
                        "the residual model builds on the regression); the diffusion runs of absent ones are skipped")
    parser.add_argument("--residual-folds", type=int, default=None, help="train the residual model on out-of-fold "
                        "residuals of this many regressions (fit_downscaling's residual_folds; --budget each)")
    parser.add_argument("--residual-scale", default="validation_per_cell", help="fit_downscaling's residual_scale: "
                        "'validation_per_cell' (default), 'validation', 'none' (the residuals as they are, "
                        "CorrDiff) or a number")
    parser.add_argument("--patch", type=int, default=16, help="training patch (cells, square)")
    parser.add_argument("--fields", type=int, default=6, help="test fields per set (evenly spaced)")
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--steps", type=int, default=24, help="sampler steps (downscale's default)")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--methods", default="", help="score only the diffusion runs whose label holds one of these "
                        "|-separated phrases (one ending in $: ends with it; bicubic and regression always)")
    parser.add_argument("--station-error", default=None, help="station error std: data units, or std:F for F "
                        "times the training std (default: STATION_ERROR of the set)")
    parser.add_argument("--tag", default="", help="suffix of the scores file (OUT/<set>/scores<tag>.json)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name, (train_ds, test, sources) in data_sets(args.iris, args.etopo, args.sets.split(",")).items():
        if args.train:
            train(name, train_ds, sources, args.out, args.budget, args.patch, args.modes.split(","),
                  args.residual_folds, args.residual_scale)
        if not args.skip_eval:
            test = test.isel(time=np.unique(np.linspace(0, test.sizes["time"] - 1, args.fields).astype(int)))
            rows += evaluate(name, train_ds, test, sources, args.out, args)
    if rows:
        print(table(rows))


if __name__ == "__main__":
    main()
