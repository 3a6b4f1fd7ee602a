"""Data assimilation of a real climate-model field: annual 1.5 m air temperature over North America.

Data: the climate-model scenario runs A1B and E1 of the iris sample data (annual mean 1.5 m air temperature,
1860-2099, 1.25 x 1.875 degrees, 15-60 N, 225-315 E; identical up to 1999). Get them with::

    pip download --no-deps iris-sample-data && unzip iris_sample_data-*.whl -d irisdata
    # -> irisdata/iris_sample_data/sample_data/{A1B,E1}_north_america.nc

State: the anomaly of the annual field from its training climatology (both runs, years up to 2059), cropped to
32 x 48 points (17.5-56.25 N, 225-313.125 E). Forecast model: a point-wise statistical model
(:class:`geodiff.dynamics.autoregression.PointwiseAutoregression`; default persistence + the least-squares
linear trend of A1B 2000-2059). Observations: 40 fixed "stations" at random positions (not grid points), bilinear
interpolation of the truth + Gaussian noise of 0.5 K every year; 20 more stations are held out (observation-
accuracy reward) and all 60 verify the next year's forecast (forecast-skill reward). Training pairs: truth of
year t and the 1- and 2-year forecasts of the truth of years t-1 and t-2, every training year (A1B 1862-2059, E1
2000-2059), each also shifted by two random uniform offsets in [0, 4] K (the test years are warmer than any
training year). Test: 40 cycles over A1B 2060-2099; the first background is the 2-year forecast of 2058, each
analysis (ensemble mean) is forecast one year to give the next background.

Methods: no assimilation (the forecast model run freely from the first background), 3D-Var with a static B =
covariance of the training background errors (10 % shrinkage to the diagonal, times 0.25 / 0.5 / 1 / 2), latent
diffusion (autoencoder 1x32x48 -> 2x16x24 + background-conditioned latent UNet) guided by MMPS through the
decoder (8 / 16 members) and DPS (Chung).

Stages (artefacts in ``--workdir``; training stays under ~10 minutes on one thread)::

    python benchmarks/assimilation_real.py data --iris DIR   # fields, training pairs, stations, observations
    python benchmarks/assimilation_real.py train             # autoencoder + latent prior
    python benchmarks/assimilation_real.py evaluate          # cycling; --methods subset (results accumulate)
    python benchmarks/assimilation_real.py table             # Markdown tables
    python benchmarks/assimilation_real.py plot              # truth / background / analysis / spread of a year
    python benchmarks/assimilation_real.py diagnose          # errors by region, autoencoder floor

``--methods``: ``baselines``, ``mmps``, ``mmps16``, ``mmps_seed1``, ``mmps16_steps20``, ``mmps_clip``,
``mmps16_clip`` (latents clipped at 1.25x the training range), ``dps_chung``.
``train --model NAME --ae-steps N --prior-steps N`` trains another model into ``workdir/NAME``; ``evaluate --model
NAME`` evaluates it (rows ``<method>@NAME``); ``plot --plot-method KEY --year Y`` shows an evaluated method.
``--quick`` shrinks everything (smoke run).
Scripts need the package importable (``PYTHONPATH=.`` in a checkout).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from safetensors.torch import load_file, save_file

from geodiff.alignment.rewards import ForecastSkill, ObservationAccuracy, SpectralSlope
from geodiff.baselines.var3d import fit_background_covariance
from geodiff.dynamics.autoregression import PointwiseAutoregression
from geodiff.errors import DataError
from geodiff.operators import PointOperator
from geodiff.pipelines.assimilate import AssimilationModel, sample_analysis

YEAR = 360 * 86400.0  # the runs use a 360-day calendar; the forecast model steps one model year
ERROR_STD = 0.5  # K, station error
CUT = 2059  # last training year
TEST_YEARS = (2060, 2099)
LAT_SLICE, LON_SLICE = slice(2, 34), slice(0, 48)  # 32 x 48 of the 37 x 49 grid
VARIABLE = "tas"
ATTRS = {"units": "K", "standard_name": "air_temperature_anomaly",
         "long_name": f"1.5 m air temperature anomaly from the training climatology (<= {CUT})"}  # fmt: skip
EARTH_RADIUS = 6.371e6


def settings(quick: bool) -> dict:
    if quick:
        return dict(sites=40, heldout=20, shifts=1, ae_steps=40, prior_steps=40, steps=4, cycles=4)
    return dict(sites=40, heldout=20, shifts=2, ae_steps=500, prior_steps=1200, steps=10, cycles=40)


# ---------------------------------------------------------------------------------------------------- data


def read_run(folder: Path, run: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(years [T], lat [32], lon [48], field [T, 32, 48] K)`` of one scenario run."""
    path = folder / f"{run}_north_america.nc"
    if not path.exists():
        raise DataError(f"{path} not found: get it with `pip download --no-deps iris-sample-data` and unzip the "
                        "wheel; pass --iris .../iris_sample_data/sample_data")  # fmt: skip
    with xr.open_dataset(path, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)) as ds:  # 360-day calendar
        field = ds["air_temperature"].isel(latitude=LAT_SLICE, longitude=LON_SLICE).load()
    years = np.array([t.year for t in field["time"].values])
    return years, field["latitude"].values.astype(np.float64), field["longitude"].values.astype(np.float64), \
        field.values.astype(np.float64)


def stage_data(work: Path, cfg: dict, iris: Path | None) -> None:
    if iris is None:
        raise SystemExit("data needs --iris DIR (see the module docstring for how to get the files)")
    years, lat, lon, a1b = read_run(iris, "A1B")
    years_e1, _, _, e1 = read_run(iris, "E1")
    if not np.array_equal(years, years_e1) or not np.array_equal(years, np.arange(years[0], years[-1] + 1)):
        raise DataError("A1B and E1 must hold the same consecutive years")
    train = years <= CUT
    shared = years[np.all(a1b == e1, axis=(1, 2))]  # the historical part is identical in both runs
    e1_only = train & (years > shared.max())
    climatology = np.concatenate([a1b[train], e1[e1_only]]).mean(0)
    a1b, e1 = a1b - climatology, e1 - climatology
    recent = (years >= 2000) & train
    forecast = PointwiseAutoregression.fit(torch.from_numpy(a1b[recent][:, None]), step_s=YEAR,
                                           variables=(VARIABLE,), kind="persistence_trend")  # fmt: skip
    truths, backgrounds, leads = [], [], []
    for run, first in ((a1b, years[0] + 2), (e1, shared.max() + 1)):
        index = np.flatnonzero(train & (years >= first))
        for lead in (1, 2):
            start = torch.from_numpy(run[index - lead][:, None])
            backgrounds.append(forecast.forecast(start, lead * YEAR)[:, 0].numpy())
            truths.append(run[index])
            leads.append(np.full(index.size, lead))
    truth, background, lead = np.concatenate(truths), np.concatenate(backgrounds), np.concatenate(leads)
    rng = np.random.default_rng(0)
    shift = np.concatenate([np.zeros(truth.shape[0])] + [rng.uniform(0, 4, truth.shape[0])
                                                         for _ in range(cfg["shifts"])])  # fmt: skip
    repeat = cfg["shifts"] + 1
    # stations: uniform in the interior of the cropped grid, not on grid points
    n = cfg["sites"] + cfg["heldout"]
    site_lat = rng.uniform(lat[1], lat[-2], n)
    site_lon = rng.uniform(lon[1], lon[-2], n)
    test = (years >= TEST_YEARS[0]) & (years <= TEST_YEARS[1])
    save_file({
        "train_truth": torch.from_numpy(np.tile(truth, (repeat, 1, 1)) + shift[:, None, None]).float(),
        "train_background": torch.from_numpy(np.tile(background, (repeat, 1, 1)) + shift[:, None, None]).float(),
        "train_lead": torch.from_numpy(np.tile(lead, repeat)),
        "train_error": torch.from_numpy(background - truth),  # unshifted background errors, for 3D-Var's B
        "train_truth_unshifted": torch.from_numpy(truth),
        "test_truth": torch.from_numpy(a1b[test]), "before_test": torch.from_numpy(a1b[test.argmax() - 2]),
        "test_years": torch.from_numpy(years[test]), "climatology": torch.from_numpy(climatology),
        "lat": torch.from_numpy(lat), "lon": torch.from_numpy(lon),
        "site_lat": torch.from_numpy(site_lat), "site_lon": torch.from_numpy(site_lon),
        "forecast_coefficient": forecast.coefficient, "forecast_offset": forecast.offset,
    }, str(work / "data.safetensors"))  # fmt: skip
    err = background - truth
    print(f"data: {truth.shape[0]} pairs x {repeat} (shifts), years {years[0]}-{years[-1]}, identical runs up to "
          f"{shared.max()}; anomaly std (training) {a1b[train].std():.2f} K, test mean anomaly "
          f"{a1b[test].mean():+.2f} K; training background RMSE lead 1 {np.sqrt((err[lead == 1] ** 2).mean()):.3f} K, "
          f"lead 2 {np.sqrt((err[lead == 2] ** 2).mean()):.3f} K; trend (A1B 2000-{CUT}) mean "
          f"{forecast.offset.mean():.4f} K/yr")


def load_data(work: Path) -> dict:
    return load_file(str(work / "data.safetensors"))


def forecast_model(data: dict, kind: str = "persistence_trend") -> PointwiseAutoregression:
    if kind == "persistence":
        return PointwiseAutoregression(torch.ones_like(data["forecast_offset"]),
                                       torch.zeros_like(data["forecast_offset"]), step_s=YEAR,
                                       variables=(VARIABLE,), kind=kind)  # fmt: skip
    return PointwiseAutoregression(data["forecast_coefficient"], data["forecast_offset"], step_s=YEAR,
                                   variables=(VARIABLE,), kind=kind)  # fmt: skip


def as_dataset(data: dict, fields: torch.Tensor, years: np.ndarray) -> xr.Dataset:
    """Fields ``[T, H, W]`` (K anomaly) as a canonical ``(time, lat, lon)`` dataset."""
    times = np.array([f"{int(y)}-06-01" for y in years], dtype="datetime64[ns]")
    return xr.Dataset({VARIABLE: (("time", "lat", "lon"), fields.float().numpy(), dict(ATTRS))},
                      coords={"time": times, "lat": ("lat", data["lat"].numpy(), {"units": "degrees_north"}),
                              "lon": ("lon", data["lon"].numpy(), {"units": "degrees_east"})})  # fmt: skip


# ---------------------------------------------------------------------------------------------------- train


def stage_train(work: Path, cfg: dict, model_name: str = "model") -> None:
    data = load_data(work)
    years = np.arange(data["train_truth"].shape[0])  # placeholder times: pairs are independent samples
    truth = as_dataset(data, data["train_truth"], 1000 + years)
    background = as_dataset(data, data["train_background"], 1000 + years)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    da = AssimilationModel.fit(truth, background, latent_channels=2, base_channels=16,
                               autoencoder_steps=cfg["ae_steps"], prior_steps=cfg["prior_steps"], batch_size=32,
                               seed=0, periodic=False, progress=True)  # fmt: skip
    da.save(work / model_name, overwrite=True)
    print(f"train: {time.perf_counter() - t0:.0f} s; {json.dumps(da.prior.metadata)}")


# ---------------------------------------------------------------------------------------------------- evaluate


class Cycles:
    """The test window: truths, station operators, yearly observations (40 assimilated + 20 held out) and the
    rewards of each year (held-out observation accuracy, next-year forecast skill, spectral slope)."""

    def __init__(self, data: dict, cfg: dict, forecast: PointwiseAutoregression):
        self.lat, self.lon = data["lat"].numpy(), data["lon"].numpy()
        n = cfg["sites"]
        self.truth = data["test_truth"][: cfg["cycles"]].double()  # [T, H, W]
        self.years = data["test_years"][: cfg["cycles"]].numpy()
        site_lat, site_lon = data["site_lat"].numpy(), data["site_lon"].numpy()
        self.site_lat, self.site_lon = site_lat, site_lon
        every = PointOperator(self.lat, self.lon, site_lat, site_lon)
        self.assimilated = PointOperator(self.lat, self.lon, site_lat[:n], site_lon[:n])
        heldout = PointOperator(self.lat, self.lon, site_lat[n:], site_lon[n:])
        rng = np.random.default_rng(500)
        clean = every(self.truth[:, None]).numpy()  # [T, 60]
        self.obs = torch.from_numpy(clean + rng.normal(0.0, ERROR_STD, clean.shape))
        self.y = self.obs[:, :n]
        self.error_std = torch.full((n,), ERROR_STD, dtype=torch.float64)
        width_m = math.radians(self.lon[-1] - self.lon[0]) * EARTH_RADIUS * math.cos(math.radians(self.lat.mean()))
        slope = SpectralSlope(target=0.0, length_x=width_m, band=(2, 12), channels=(0, 0))
        target = float(slope.slope(data["train_truth_unshifted"][::4, None].double()).mean())
        self.rewards = []
        for t in range(self.truth.shape[0]):
            rewards = {
                "observation_accuracy": ObservationAccuracy(heldout, self.obs[t, n:], ERROR_STD),
                "spectral_slope": SpectralSlope(target=target, length_x=width_m, band=(2, 12), channels=(0, 0)),
            }
            if t + 1 < self.truth.shape[0]:
                rewards["forecast_skill"] = ForecastSkill(forecast, YEAR, operator=every, y=self.obs[t + 1],
                                                          error_std=ERROR_STD)  # fmt: skip
            self.rewards.append(rewards)
        self.slope_target = target

    def scores(self, states: torch.Tensor) -> dict[str, float]:
        """Rewards of ``states [T, B, H, W]`` (mean over B, then over the years that have the reward)."""
        totals: dict[str, list[float]] = {}
        with torch.no_grad():
            for t, rewards in enumerate(self.rewards):
                for name, reward in rewards.items():
                    totals.setdefault(name, []).append(float(reward(states[t][:, None].double()).mean()))
        return {name: float(np.mean(values)) for name, values in totals.items()}


def weighted_rmse(a: torch.Tensor, b: torch.Tensor, lat: np.ndarray) -> float:
    """cos(lat)-weighted RMSE (K) over ``[..., H, W]``, all leading dims pooled."""
    weight = torch.from_numpy(np.cos(np.radians(lat)))[:, None].expand(a.shape[-2:])
    return float(((a - b).pow(2) * weight).sum() / (weight.sum() * a[..., 0, 0].numel())) ** 0.5


def dataarray(fields: torch.Tensor, lat: np.ndarray, lon: np.ndarray, member: bool = False) -> xr.DataArray:
    dims = ("time", "member", "lat", "lon") if member else ("time", "lat", "lon")
    return xr.DataArray(fields.double().numpy(), dims=dims, coords={"lat": lat, "lon": lon})


def probabilistic(cycles: Cycles, members: torch.Tensor) -> dict[str, float]:
    """Ensemble CRPS (fair) and spread/skill of ``members [T, M, H, W]`` (cos-lat weights)."""
    from geodiff.metrics import crps_ensemble, lat_weights, spread_skill_ratio

    truth = dataarray(cycles.truth, cycles.lat, cycles.lon)
    ensemble = dataarray(members, cycles.lat, cycles.lon, member=True)
    weights = lat_weights(truth["lat"])
    return {"crps": float(crps_ensemble(truth, ensemble, weights=weights)),
            "spread_skill": float(spread_skill_ratio(truth, ensemble, weights=weights)),
            "spread": float(members.var(1).mean().sqrt())}  # fmt: skip


def cycle_var3d(cycles: Cycles, forecast, first: torch.Tensor, b_matrix: np.ndarray):
    """3D-Var cycling; returns analyses, backgrounds ``[T, H, W]`` and the analysis-error std ``[T, H, W]``."""
    h = cycles.assimilated.to_sparse().to_dense().numpy()
    bht = b_matrix @ h.T
    gain = np.linalg.solve(h @ bht + ERROR_STD**2 * np.eye(h.shape[0]), bht.T).T  # [D, N]
    analysis_std = np.sqrt(np.clip(np.diag(b_matrix) - (gain * bht).sum(1), 0, None))
    background, analyses, bgs = first, [], []
    for t in range(cycles.truth.shape[0]):
        xb = background.reshape(-1).numpy()
        xa = torch.from_numpy(xb + gain @ (cycles.y[t].numpy() - h @ xb)).reshape(background.shape)
        analyses.append(xa)
        bgs.append(background)
        background = forecast.forecast(xa[None, None], YEAR)[0, 0]
    std = torch.from_numpy(analysis_std).reshape(first.shape).expand(len(analyses), -1, -1)
    return torch.stack(analyses), torch.stack(bgs), std


def cycle_diffusion(cycles: Cycles, forecast, first: torch.Tensor, da: AssimilationModel, *, members: int,
                    steps: int, guidance: str, guidance_options: dict | None = None, seed_offset: int = 0,
                    clip_latent: float | None = None):  # fmt: skip
    """Diffusion cycling; returns members ``[T, M, H, W]`` and backgrounds ``[T, H, W]``."""
    background, out, bgs = first, [], []
    for t in range(cycles.truth.shape[0]):
        generator = torch.Generator().manual_seed(10_000 + seed_offset + t)
        states, _ = sample_analysis(da, background[None].float(), operator=cycles.assimilated, y=cycles.y[t],
                                    error_std=cycles.error_std, members=members, steps=steps, guidance=guidance,
                                    guidance_options=guidance_options, generator=generator,
                                    clip_latent=clip_latent)  # fmt: skip
        states = states[:, 0].double()
        out.append(states)
        bgs.append(background)
        background = forecast.forecast(states.mean(0)[None, None], YEAR)[0, 0]
    return torch.stack(out), torch.stack(bgs)


VARIANTS = {
    "mmps": ("latent diffusion, MMPS, 8 members", dict(guidance="mmps", members=8)),
    "mmps16": ("latent diffusion, MMPS, 16 members", dict(guidance="mmps", members=16)),
    "mmps_seed1": ("latent diffusion, MMPS, 8 members, other seeds", dict(guidance="mmps", members=8,
                                                                          seed_offset=1000)),
    "mmps16_steps20": ("latent diffusion, MMPS, 16 members, 20 Heun steps", dict(guidance="mmps", members=16,
                                                                                steps=20)),
    "mmps_clip": ("latent diffusion, MMPS, 8 members, clipped latents", dict(guidance="mmps", members=8, clip=True)),
    "mmps16_clip": ("latent diffusion, MMPS, 16 members, clipped latents", dict(guidance="mmps", members=16,
                                                                               clip=True)),
    "dps_chung": ("latent diffusion, DPS (Chung, scale 1), 8 members",
                  dict(guidance="dps", members=8, guidance_options={"convention": "chung"})),
}


def latent_bound(da: AssimilationModel, data: dict) -> float:
    """The model's latent bound; models trained before :meth:`AssimilationModel.fit` recorded their latent range
    get it recorded here from the training truths and backgrounds, as ``fit`` does."""
    if da.latent_bound is None:
        states = torch.cat([data["train_truth"], data["train_background"]])[:, None].float()
        da.prior.metadata["latent_max_abs"] = max(float(da.encode(part).abs().max()) for part in states.split(256))
    return da.latent_bound


def stage_evaluate(work: Path, cfg: dict, methods: list[str], results_name: str = "results.json",
                   model_name: str = "model") -> None:
    torch.manual_seed(0)
    data = load_data(work)
    forecast = forecast_model(data)
    cycles = Cycles(data, cfg, forecast)
    first = forecast.forecast(data["before_test"][None, None].double(), 2 * YEAR)[0, 0]
    truth, lat = cycles.truth, cycles.lat
    path = work / results_name
    results = json.loads(path.read_text()) if path.exists() else {"rows": {}, "rewards": {}}
    results["slope_target"] = cycles.slope_target

    def report(key, name, analysis, bgs, seconds, extra=None, rewards=True):
        last = truth.shape[0] - 1
        next_from_analysis = forecast.forecast(analysis[:last, None], YEAR)[:, 0]
        next_from_background = forecast.forecast(bgs[:last, None], YEAR)[:, 0]
        results["rows"][key] = {
            "method": name,
            "background": weighted_rmse(bgs, truth, lat),
            "analysis": weighted_rmse(analysis, truth, lat),
            "forecast_from_analysis": weighted_rmse(next_from_analysis, truth[1:], lat),
            "forecast_from_background": weighted_rmse(next_from_background, truth[1:], lat),
            "seconds": seconds, **(extra or {}),
        }  # fmt: skip
        if rewards:
            results["rewards"][key] = cycles.scores(analysis[:, None])
        path.write_text(json.dumps(results, indent=1))
        row = results["rows"][key]
        print(f"{name}: background {row['background']:.3f} K, analysis {row['analysis']:.3f} K, next-year forecast "
              f"{row['forecast_from_analysis']:.3f} vs {row['forecast_from_background']:.3f} K ({seconds:.0f} s)")

    if "baselines" in methods:
        free = [first]
        for _ in range(truth.shape[0] - 1):
            free.append(forecast.forecast(free[-1][None, None], YEAR)[0, 0])
        report("free", "no assimilation (trend forecast run freely)", torch.stack(free), torch.stack(free), 0.0)
        errors = data["train_error"].double().reshape(data["train_error"].shape[0], -1).numpy()
        b_matrix = fit_background_covariance(errors, shrinkage=0.1)
        obs_only = torch.stack([torch.zeros_like(first)] * truth.shape[0])  # climatology (0 anomaly), for scale
        report("climatology", "training climatology (zero anomaly; no spectrum, so no rewards)", obs_only, obs_only,
               0.0, rewards=False)
        for factor in (0.25, 0.5, 1.0, 2.0):
            t0 = time.perf_counter()
            analyses, bgs, std = cycle_var3d(cycles, forecast, first, factor * b_matrix)
            from geodiff.metrics import crps_gaussian, lat_weights

            truth_da = dataarray(truth, lat, cycles.lon)
            crps = float(crps_gaussian(truth_da, dataarray(analyses, lat, cycles.lon), dataarray(std, lat, cycles.lon),
                                       weights=lat_weights(truth_da["lat"])))  # fmt: skip
            report(f"var3d_{factor}", f"3D-Var (static B x {factor})", analyses, bgs, time.perf_counter() - t0,
                   {"crps": crps, "spread": float(std.pow(2).mean().sqrt())})  # fmt: skip
    todo = [m for m in methods if m in VARIANTS]
    if not todo:
        return
    da = AssimilationModel.load(work / model_name)
    suffix = "" if model_name == "model" else f"@{model_name}"
    for key in todo:
        name, options = VARIANTS[key]
        name, key = name + (f" [{model_name}]" if suffix else ""), key + suffix
        options = dict(options)
        if options.pop("clip", False):
            options["clip_latent"] = latent_bound(da, data)
        t0 = time.perf_counter()
        members, bgs = cycle_diffusion(cycles, forecast, first, da, **{"steps": cfg["steps"], **options})
        seconds = time.perf_counter() - t0
        save_file({"members": members.float().contiguous(), "background": bgs.float().contiguous()},
                  str(work / f"members_{key}.safetensors"))
        report(key, name, members.mean(1), bgs, seconds, probabilistic(cycles, members))
        results["rewards"][f"{key}_members"] = cycles.scores(members)
        path.write_text(json.dumps(results, indent=1))


def stage_table(work: Path, cfg: dict) -> None:
    results = {"rows": {}, "rewards": {}}
    for path in sorted(work.glob("results*.json")):
        part = json.loads(path.read_text())
        results["rows"].update(part["rows"])
        results["rewards"].update(part["rewards"])
    print(f"\n### Cycling real field (A1B annual 1.5 m temperature, {cfg['cycles']} yearly cycles from "
          f"{TEST_YEARS[0]}, {cfg['sites']} stations, 0.5 K)\n")
    print("cos(lat)-weighted RMSE in K over all cycles; next-year forecast verified against the next year's truth "
          "(years 1 .. T-1). CRPS in K (ensemble: fair CRPS of the members; 3D-Var: Gaussian with the analysis-error "
          "variance of B); spread = rms ensemble std (3D-Var: rms analysis-error std).\n")
    print("| method | background | analysis | next-year forecast from analysis | from background | CRPS | "
          "spread | spread/skill | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results["rows"].values():
        crps = f"{r['crps']:.3f}" if "crps" in r else ""
        spread = f"{r['spread']:.3f}" if "spread" in r else ""
        ratio = f"{r['spread_skill']:.2f}" if "spread_skill" in r else ""
        print(f"| {r['method']} | {r['background']:.3f} | {r['analysis']:.3f} | {r['forecast_from_analysis']:.3f} | "
              f"{r['forecast_from_background']:.3f} | {crps} | {spread} | {ratio} | {r['seconds']:.0f} |")
    print("\nRewards (higher is better; of the analysis, i.e. the ensemble mean for diffusion, and of the single "
          "members in rows marked 'members').\n")
    names = ["observation_accuracy", "forecast_skill", "spectral_slope"]
    print("| method | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for key, values in results["rewards"].items():
        base = key.removesuffix("_members")
        label = results["rows"][base]["method"] + (" (members)" if key.endswith("_members") else "")
        print(f"| {label} | " + " | ".join(f"{values[k]:.4f}" for k in names) + " |")


def stage_diagnose(work: Path, cfg: dict) -> None:
    """Where the errors are: analysis RMSE in the interior / the 3-point border and by distance to the nearest
    station, for 3D-Var (B x 0.5, B x 1) and every saved diffusion run; and each model's autoencoder floor
    (reconstruction RMSE of the test truths)."""
    data = load_data(work)
    forecast = forecast_model(data)
    cycles = Cycles(data, cfg, forecast)
    truth, lat, lon = cycles.truth, cycles.lat, cycles.lon
    interior = torch.zeros(truth.shape[1:], dtype=torch.bool)
    interior[3:-3, 3:-3] = True
    grid_lat, grid_lon = np.meshgrid(lat, lon, indexing="ij")
    n = cfg["sites"]
    spacing = (lat[1] - lat[0], lon[1] - lon[0])
    distance = np.min(np.hypot((grid_lat[..., None] - cycles.site_lat[:n]) / spacing[0],
                               (grid_lon[..., None] - cycles.site_lon[:n]) / spacing[1]), axis=-1)  # grid cells
    bands = ((0, 1), (1, 2), (2, 4), (4, np.inf))
    first = forecast.forecast(data["before_test"][None, None].double(), 2 * YEAR)[0, 0]
    errors = data["train_error"].double().reshape(data["train_error"].shape[0], -1).numpy()
    b_matrix = fit_background_covariance(errors, shrinkage=0.1)
    analyses = {f"3D-Var (B x {f})": cycle_var3d(cycles, forecast, first, f * b_matrix)[0] for f in (0.5, 1.0)}
    for path in sorted(work.glob("members_*.safetensors")):
        analyses[path.stem.removeprefix("members_")] = load_file(str(path))["members"].double().mean(1)
    header = " | ".join(f"{lo:g}-{hi:g} cells (n={int(((distance >= lo) & (distance < hi)).sum())})"
                        for lo, hi in bands)  # fmt: skip
    print(f"| analysis | interior | border (3 points) | {header} |")
    print("|---|---|---|" + "---|" * len(bands))
    for name, analysis in analyses.items():
        square = (analysis - truth).pow(2).mean(0)
        cells = [square[interior].mean().sqrt(), square[~interior].mean().sqrt()]
        cells += [square[torch.from_numpy((distance >= lo) & (distance < hi))].mean().sqrt() for lo, hi in bands]
        print(f"| {name} | " + " | ".join(f"{float(c):.3f}" for c in cells) + " |")
    for folder in sorted(p.parent for p in work.glob("*/autoencoder")):
        da = AssimilationModel.load(folder)
        with torch.no_grad():
            decoded = da.decode(da.encode(truth[:, None].float()))[:, 0].double()
        print(f"autoencoder floor [{folder.name}]: reconstruction RMSE of the test truths "
              f"{weighted_rmse(decoded, truth, lat):.3f} K")


def stage_plot(work: Path, cfg: dict, year: int, key: str = "mmps") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from geodiff.plot import plot_map, projection_for

    data = load_data(work)
    saved = load_file(str(work / f"members_{key}.safetensors"))  # written by evaluate
    years = data["test_years"].numpy()
    t = int(np.flatnonzero(years == year)[0])
    lat, lon = data["lat"].numpy(), data["lon"].numpy()
    n = cfg["sites"]

    def field(values, name):
        return xr.DataArray(values.double().numpy(), dims=("lat", "lon"), coords={"lat": lat, "lon": lon},
                            name=name, attrs={"units": "K"})  # fmt: skip

    members = saved["members"][t]
    truth = data["test_truth"][t]
    panels = [(field(truth, "truth"), "truth"),
              (field(saved["background"][t], "background"), "background (forecast of last year's analysis)"),
              (field(members.mean(0), "analysis"), f"analysis mean ({members.shape[0]} members)"),
              (field(members.std(0), "spread"), "ensemble spread (std)"),
              (field(saved["background"][t] - truth, "background_error"), "background - truth"),
              (field(members.mean(0) - truth, "analysis_error"), "analysis mean - truth")]  # fmt: skip
    limit = float(max(abs(p[0]).max() for p in panels[:3]))
    error_limit = float(max(abs(p[0]).max() for p in panels[4:]))
    fig = plt.figure(figsize=(19, 7))
    for i, (da, title) in enumerate(panels):
        ax = fig.add_subplot(2, 3, (1, 2, 4, 5, 3, 6)[i], projection=projection_for(da["lon"]))
        spread, error = i == 3, i >= 4
        low, high = (0, None) if spread else (-error_limit, error_limit) if error else (-limit, limit)
        plot_map(da, ax=ax, title=f"{title}, {year}", cmap="viridis" if spread else "RdBu_r", vmin=low, vmax=high,
                 points=(data["site_lat"].numpy()[:n], data["site_lon"].numpy()[:n]))  # fmt: skip
    fig.suptitle("1.5 m air temperature anomaly (K) from the training climatology, A1B")
    out = work / f"analysis_{key}_{year}.png"
    fig.savefig(out, dpi=90, bbox_inches="tight")
    print(f"plot: {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["data", "train", "evaluate", "table", "plot", "diagnose"])
    parser.add_argument("--iris", type=Path, default=None, help="data: folder with {A1B,E1}_north_america.nc")
    parser.add_argument("--methods", default="baselines,mmps", help="evaluate: comma-separated subset")
    parser.add_argument("--workdir", default="assimilation-real-benchmark")
    parser.add_argument("--results", default="results.json", help="evaluate: file (in workdir) to add results to")
    parser.add_argument("--model", default="model", help="train/evaluate/plot: model folder name in the workdir")
    parser.add_argument("--ae-steps", type=int, default=None, help="train: autoencoder steps")
    parser.add_argument("--prior-steps", type=int, default=None, help="train: latent prior steps")
    parser.add_argument("--plot-method", default="mmps", help="plot: evaluated method whose members to show")
    parser.add_argument("--year", type=int, default=2080, help="plot: the year to show")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    cfg = settings(args.quick)
    cfg["ae_steps"] = args.ae_steps or cfg["ae_steps"]
    cfg["prior_steps"] = args.prior_steps or cfg["prior_steps"]
    if args.stage == "data":
        stage_data(work, cfg, args.iris)
    elif args.stage == "train":
        stage_train(work, cfg, args.model)
    elif args.stage == "evaluate":
        stage_evaluate(work, cfg, args.methods.split(","), args.results, args.model)
    elif args.stage == "table":
        stage_table(work, cfg)
    elif args.stage == "diagnose":
        stage_diagnose(work, cfg)
    else:
        stage_plot(work, cfg, args.year, args.plot_method)


if __name__ == "__main__":
    main()
