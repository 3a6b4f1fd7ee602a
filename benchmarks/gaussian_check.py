"""Guidance against the exact answer on real grids: geodiff's guided samplers with a Gaussian prior whose
covariance is the one optimal interpolation (OI) uses, against OI itself.

With a Gaussian prior the posterior is Gaussian and OI computes it exactly, so any gap between geodiff and OI
here is the guidance's (or the sampler's) doing, not the prior's. The prior: per cell, the training climatology
as mean and :func:`geodiff.baselines.fit_covariance`'s stationary covariance (Matern 3/2 in great-circle distance
plus nugget, fitted to training anomalies) between the grid's valid cells
(:func:`~geodiff.baselines.optimal_interpolation.covariance_matrix`), denoised exactly by
:class:`~geodiff.diffusion.gaussian.GaussianDenoiser` (eigendecomposition on the valid cells; land masks and
regional, non-periodic grids as they are). Sampling is what :func:`geodiff.reconstruct` does: normalised units,
float32, EDM schedule, Heun 24 steps, 16 members, denoised estimates clipped at 10, guidance built from
:meth:`PointOperator.to_normalized`. Units (``--normalisation``): ``channel`` (default) one mean/std per channel
from the training data (:class:`~geodiff.io.normalizer.Normalizer`, ``geodiff.fit(anomaly="off")``), so the
prior's mean is the climatology in those units; ``cell``: per-cell anomalies of the climatology scaled by the
prior sd ``sqrt(variance + nugget)``, as the anomaly normaliser of ``geodiff.fit`` (its default) scales them, so
the prior's mean is 0.

Methods: the exact MMPS solve (``method="exact"``, what :func:`geodiff.reconstruct` runs for a Gaussian or hybrid
prior), with the sampler's plain start and with ``start=mean``
(:class:`~geodiff.diffusion.centred_start.CentredStart`); MMPS by conjugate gradients (1 and 4 iterations); SDA
and DPS with and without their overshoot control.

Grids (real data): World Ocean Atlas surface temperature in the held-out North Pacific box (32x64 cells of
2 degrees, land on both coasts; training: the rest of the globe, months 1, 5, 9 scored); OSTIA monthly SST
(iris-sample-data, 5 S-5 N, 120-240 E, 0.83 degrees, 18x145 cells with Indonesian and New Guinean land;
training 2006-04..2009-09, scored 2009-10, 2010-02, 2010-06); HadGEM A1B annual 1.5 m air temperature over
North America (iris-sample-data, 37x49 cells; training 2000-2059, scored 2060, 2075, 2090). Observations: nested
random 2, 5, 10 % of the valid cells (the same draw, so each set contains the smaller ones), at cell centres, with
0.1 degC (K) Gaussian error; scores on the other (held-out) valid cells only, pooled over the scored times.

Run: ``python benchmarks/gaussian_check.py --iris DIR`` where DIR is ``.../iris_sample_data/sample_data`` from
``pip download --no-deps iris-sample-data`` and unzipping the wheel (without ``--iris`` only the WOA grid runs).
About 10 minutes on one CPU thread with every method (``--methods exact``: about a minute with 16 members).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from geodiff import registry
from geodiff.adapters import woa
from geodiff.baselines import climatology, fit_covariance, optimal_interpolation
from geodiff.baselines.optimal_interpolation import covariance_matrix
from geodiff.diffusion.centred_start import CentredStart
from geodiff.diffusion.clipping import ClipDenoised
from geodiff.diffusion.gaussian import GaussianDenoiser
from geodiff.diffusion.samplers import HeunSampler
from geodiff.diffusion.schedules import EDMSchedule
from geodiff.metrics import random_guidance_mask
from geodiff.operators import PointOperator

COVERAGES = (0.02, 0.05, 0.10)
ERROR_STD = 0.1
#: (guidance, options); the option ``start="mean"`` is the sampler's (:class:`CentredStart`), not the guidance's
METHODS = (("mmps", {"method": "exact"}), ("mmps", {"method": "exact", "start": "mean"}), ("mmps", {}),
           ("mmps", {"cg_iterations": 4}), ("sda", {}), ("dps", {}), ("sda", {"limit_overshoot": False}),
           ("dps", {"limit_overshoot": False}))
PRESETS = {"all": METHODS, "mmps": METHODS[:4], "exact": METHODS[:2], "cg": METHODS[2:3], "converged": METHODS[3:4]}


@dataclass
class RealGrid:
    """One grid: test truths and backgrounds ``[T, H, W]`` (NaN outside ``valid``), the OI covariance, the
    normaliser's mean/std (training data)."""

    name: str
    lat: np.ndarray
    lon: np.ndarray
    valid: np.ndarray
    truths: np.ndarray
    backgrounds: np.ndarray
    covariance: xr.Dataset
    mean: float
    std: float
    labels: list[str]


def _grid(name, train: xr.DataArray, test: xr.DataArray, by: str | None, mode: str, labels) -> RealGrid:
    """Climatology background and covariance fitted to the training anomalies (the same kind of background)."""
    anomalies = train - climatology(train, train, by=by, mode=mode)[train.name].values
    covariance = fit_covariance(anomalies, seed=0)
    target = xr.zeros_like(test).where(test.notnull())
    background = climatology(train, target, by=by, mode=mode)[train.name]
    valid = np.asarray(test.isel(time=0).notnull().values)
    return RealGrid(name, test.lat.values.astype(float), test.lon.values.astype(float), valid,
                    np.asarray(test.values, float), np.asarray(background.values, float), covariance,
                    float(train.mean()), float(train.std()), list(labels))


def woa_grid() -> RealGrid:
    split = woa.holdout_split(woa.open_sample())
    train = split.train[woa.VARIABLE].isel(depth=0).drop_vars("sea_mask", errors="ignore")
    test = split.heldout[woa.VARIABLE].isel(depth=0, time=[0, 4, 8]).drop_vars("sea_mask", errors="ignore")
    return _grid("WOA surface temperature, North Pacific box (32x64, 2 deg)", train, test, "month", "zonal",
                 ["Jan", "May", "Sep"])


def _standard_times(da: xr.DataArray) -> xr.DataArray:
    years = [t.year for t in da.time.values]
    months = [t.month for t in da.time.values]
    return da.assign_coords(time=[np.datetime64(f"{y:04d}-{m:02d}-15") for y, m in zip(years, months)])


def ostia_grid(folder: Path) -> RealGrid:
    with xr.open_dataset(folder / "ostia_monthly.nc") as ds:
        field = ds.surface_temperature.sel(longitude=slice(120.0, 240.0)).load()
    field = field.rename(latitude="lat", longitude="lon").drop_vars(["forecast_reference_time", "forecast_period"],
                                                                    errors="ignore").astype(np.float64)
    field.name = "sst"
    train, test = field.isel(time=slice(0, 42)), field.isel(time=[42, 46, 50])
    return _grid("OSTIA monthly SST, 5S-5N 120-240E (18x145, 0.83 deg)", train, test, "month", "field",
                 [str(t)[:7] for t in test.time.values])


def a1b_grid(folder: Path) -> RealGrid:
    with xr.open_dataset(folder / "A1B_north_america.nc",
                         decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)) as ds:
        field = ds.air_temperature.load()
    field = _standard_times(field.rename(latitude="lat", longitude="lon").astype(np.float64))
    field = field.drop_vars([c for c in field.coords if c not in ("time", "lat", "lon")])
    field.name = "tas"
    years = field.time.dt.year
    train = field.where((years >= 2000) & (years < 2060), drop=True)
    test = field.sel(time=[t for t, y in zip(field.time.values, years.values) if y in (2060, 2075, 2090)])
    return _grid("HadGEM A1B 1.5 m air temperature, North America (37x49, 1.25x1.875 deg)", train, test, None,
                 "field", ["2060", "2075", "2090"])


def observations(grid: RealGrid, t: int, coverage: float, seed: int):
    """Nested random cells (same seed for every coverage), truth + N(0, ERROR_STD^2)."""
    truth = xr.DataArray(grid.truths[t], dims=("lat", "lon"))
    chosen = np.asarray(random_guidance_mask(truth.notnull(), coverage, seed=seed).values)
    rows, cols = np.nonzero(chosen)
    noise = np.random.default_rng([seed, t]).normal(0.0, ERROR_STD, grid.valid.sum())  # one draw per valid cell
    index = np.flatnonzero(grid.valid.reshape(-1))
    cell_noise = np.zeros(grid.valid.size)
    cell_noise[index] = noise
    values = grid.truths[t][rows, cols] + cell_noise.reshape(grid.valid.shape)[rows, cols]
    return rows, cols, values, grid.valid & ~chosen


def oi_analysis(grid: RealGrid, t: int, rows, cols, values):
    template = xr.DataArray(np.where(grid.valid, 0.0, np.nan), dims=("lat", "lon"), name="field",
                            coords={"lat": grid.lat, "lon": grid.lon})
    obs = xr.Dataset({"value": ("obs", values), "error_std": ("obs", np.full(values.size, ERROR_STD))},
                     coords={"lat": ("obs", grid.lat[rows]), "lon": ("obs", grid.lon[cols])})
    oi = optimal_interpolation(obs, template, background=template.copy(data=grid.backgrounds[t]),
                               covariance=grid.covariance, time_correlation=False)
    return oi.field.values, oi.field_std.values


@dataclass
class Units:
    """Normalised units ``x = (field - centre) / scale``: ``centre`` and ``scale`` ``[C]`` (per channel) or
    ``[C, H, W]`` (per cell), as :meth:`PointOperator.to_normalized` takes them."""

    centre: np.ndarray
    scale: np.ndarray

    @classmethod
    def of(cls, grid: RealGrid, t: int, normalisation: str) -> Units:
        if normalisation == "channel":
            return cls(np.array([grid.mean]), np.array([grid.std]))
        prior_sd = float(np.sqrt(grid.covariance.variance + grid.covariance.nugget))
        return cls(np.nan_to_num(grid.backgrounds[t])[None], np.full((1, *grid.valid.shape), prior_sd))

    def decode(self, x: np.ndarray) -> np.ndarray:
        """``[M, H, W]`` normalised -> the data's units."""
        if self.centre.size == 1:
            return x * float(self.scale[0]) + float(self.centre[0])
        return x * self.scale[0] + self.centre[0]

    def sd(self) -> float:
        """The (uniform) scale: covariances are divided by its square."""
        return float(self.scale.reshape(-1)[0])


def guided_ensemble(prior: GaussianDenoiser, grid: RealGrid, units: Units, rows, cols, values, method: str,
                    options: dict, members: int, sigmas: torch.Tensor, seed: int, noise_free: bool = False
                    ) -> np.ndarray:
    """Members ``[M, H, W]`` in the data's units, sampled as :func:`geodiff.reconstruct` samples (with
    ``options["start"] == "mean"``, from :class:`CentredStart`).

    ``noise_free``: one member from zero noise instead. A sampler that is affine in its noise (Heun on the exact
    Gaussian denoiser with the exact solve, clipping not reached) maps it to the ensemble's expectation, so its
    distance from OI's mean is the sampler's bias without Monte Carlo error."""
    operator = PointOperator(grid.lat, grid.lon, lat=grid.lat[rows], lon=grid.lon[cols], mask=grid.valid)
    op_n, y_n, e_n = operator.to_normalized(values, np.full(values.size, ERROR_STD), units.centre, units.scale)
    options = dict(options)
    sampler = ClipDenoised(HeunSampler(), 10.0)
    if options.pop("start", "noise") == "mean":
        sampler = CentredStart(sampler)
    guidance = registry.get("guidance", method)(y_n, op_n, e_n, **options)  # float64, as reconstruct passes them
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(members, 1, *grid.valid.shape, generator=generator)
    if noise_free:
        noise = torch.zeros(1, 1, *grid.valid.shape)
    x = guidance.sample(sampler, prior, noise, sigmas, generator=generator)
    return units.decode(x[:, 0].double().numpy())


def check(grid: RealGrid, members: int, sigmas: torch.Tensor, seed: int, methods, normalisation: str = "channel"
          ) -> list[dict]:
    """Rows of scores per coverage and method; ``sigmas``: the sampler's noise levels (a schedule's)."""
    started = time.perf_counter()
    scale = Units.of(grid, 0, normalisation).sd()
    cov = covariance_matrix(grid.covariance, grid.lat, grid.lon, grid.valid) / scale**2
    prior = GaussianDenoiser(torch.zeros(int(grid.valid.sum())), torch.from_numpy(cov), (1, *grid.valid.shape),
                             mask=torch.from_numpy(grid.valid)[None])
    print(f"\n{grid.name}: {int(grid.valid.sum())} valid cells, covariance {_describe(grid.covariance)}, "
          f"prior set up in {time.perf_counter() - started:.1f} s", flush=True)
    rows_out = []
    for coverage in COVERAGES:
        sums: dict[str, dict[str, float]] = {}
        n_obs = []
        for t in range(grid.truths.shape[0]):
            rows, cols, values, held = observations(grid, t, coverage, seed)
            n_obs.append(values.size)
            truth = grid.truths[t]
            mean, std = oi_analysis(grid, t, rows, cols, values)
            oi_var = std[held] ** 2
            _accumulate(sums, "OI", mean[held] - truth[held], oi_var, 0.0, np.zeros(held.sum()), oi_var, 0)
            _accumulate(sums, "climatology", grid.backgrounds[t][held] - truth[held], np.zeros(held.sum()), 0.0,
                        grid.backgrounds[t][held] - mean[held], oi_var, 0)
            units = Units.of(grid, t, normalisation)
            centre = np.broadcast_to(units.centre[0] if units.centre.size > 1 else units.centre, grid.valid.shape)
            prior.mean = torch.from_numpy((grid.backgrounds[t] - centre)[grid.valid] / scale)
            for method, options in methods:
                tic = time.perf_counter()
                x = guided_ensemble(prior, grid, units, rows, cols, values, method, options, members, sigmas, seed + t)
                spread2 = x.var(0, ddof=1)[held] * (members + 1) / members
                label = _label(method, options)
                _accumulate(sums, label, x.mean(0)[held] - truth[held], spread2,
                            time.perf_counter() - tic, x.mean(0)[held] - mean[held], oi_var, members)
                if options.get("method") == "exact":
                    expectation = guided_ensemble(prior, grid, units, rows, cols, values, method, options, 1, sigmas,
                                                  0, noise_free=True)[0]
                    sums[label]["bias"] = sums[label].get("bias", 0.0) + float(np.sum((expectation - mean)[held] ** 2))
        oi = _scores(sums["OI"])
        for label, acc in sums.items():
            scores = _scores(acc)
            rows_out.append({"grid": grid.name, "coverage": coverage, "n_obs": int(np.mean(n_obs)), "method": label,
                             **scores, "rmse_ratio": scores["rmse"] / oi["rmse"],
                             "spread_skill_ratio": scores["spread_skill"] / oi["spread_skill"]})
    return rows_out


def _describe(cov: xr.Dataset) -> str:
    return (f"variance {float(cov.variance):.3g}, length {float(cov.length_scale):.0f} km, "
            f"nugget {float(cov.nugget):.3g}")


def _label(method: str, options: dict) -> str:
    return method + ("" if not options else " " + ", ".join(f"{k}={v}" for k, v in options.items()))


def _accumulate(sums, label, error, variance, seconds, gap, oi_variance, members: int) -> None:
    """Pool squared errors, ensemble (or posterior) variances and the squared gap to OI's mean over cells;
    ``members``: the ensemble size behind ``variance`` (0 for OI and climatology)."""
    acc = sums.setdefault(label, {"se": 0.0, "var": 0.0, "n": 0, "seconds": 0.0, "fields": 0, "gap": 0.0,
                                  "oi_var": 0.0, "members": members})
    acc["gap"] += float(np.sum(gap**2))
    acc["oi_var"] += float(np.sum(oi_variance))
    acc["se"] += float(np.sum(error**2))
    acc["var"] += float(np.sum(variance))
    acc["n"] += int(error.size)
    acc["seconds"] += seconds
    acc["fields"] += 1


def _scores(acc) -> dict[str, float]:
    """RMSE, spread/skill, the gap to OI's mean and its Monte Carlo floor, the spread against OI's posterior sd.

    With ``M`` members whose (unbiased) variance is ``s^2`` per cell, the ensemble mean of even an exact sampler
    lies ``sqrt(sum s^2 / (M sum oi_var))`` (the floor, in OI posterior sds) from OI's mean; what the gap holds
    beyond it, ``sqrt(gap^2 - floor^2)``, is the sampler's bias ("excess"), up to Monte Carlo noise. "bias": the
    noise-free member's distance from OI's mean in the same units (exact solve only, see :func:`guided_ensemble`)."""
    rmse = np.sqrt(acc["se"] / acc["n"])
    members = acc["members"]
    sample_var = acc["var"] * members / (members + 1) if members else acc["var"]
    gap2 = acc["gap"] / acc["oi_var"]
    floor2 = sample_var / (members * acc["oi_var"]) if members else 0.0
    return {"rmse": float(rmse), "spread_skill": float(np.sqrt(acc["var"] / acc["n"]) / rmse),
            "gap": float(np.sqrt(gap2)), "floor": float(np.sqrt(floor2)),
            "excess": float(np.sqrt(max(gap2 - floor2, 0.0))),
            "bias": float(np.sqrt(acc["bias"] / acc["oi_var"])) if "bias" in acc else None,
            "spread_to_oi": float(np.sqrt(sample_var / acc["oi_var"])), "seconds": acc["seconds"] / acc["fields"]}


def table(rows: list[dict], members: int, steps: int, normalisation: str, sigma_max: float) -> None:
    print("\n| grid | coverage | obs | method | RMSE | geodiff/OI RMSE | spread/skill | ratio to OI's | "
          "spread/OI sd | gap to OI's mean | MC floor | excess | bias | s/field |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ensemble = r["method"] not in ("OI", "climatology")
        skill = "-" if r["method"] == "climatology" else f"{r['spread_skill']:.3f}"
        ratio = "-" if r["method"] == "climatology" else f"{r['spread_skill_ratio']:.3f}"
        spread = f"{r['spread_to_oi']:.3f}" if ensemble else "-"
        floor, excess = (f"{r['floor']:.3f}", f"{r['excess']:.3f}") if ensemble else ("-", "-")
        bias = "-" if r["bias"] is None else f"{r['bias']:.3f}"
        print(f"| {r['grid'].split(',')[0]} | {r['coverage']:.0%} | {r['n_obs']} | {r['method']} | {r['rmse']:.3f} | "
              f"{r['rmse_ratio']:.3f} | {skill} | {ratio} | {spread} | {r['gap']:.3f} | {floor} | {excess} | {bias} | "
              f"{r['seconds']:.1f} |")
    print(f"\n({members} members, Heun {steps} steps, sigma_max {sigma_max:g}, {normalisation} normalisation; spread "
          "with the (M+1)/M correction; OI's spread/skill uses its posterior std; spread/OI sd: RMS ensemble sd "
          "(unbiased) / RMS OI posterior sd; gap to OI's mean: RMS of (ensemble mean - OI mean) / RMS of OI's "
          "posterior std; MC floor: what the finite ensemble alone gives, sqrt(ensemble variance / M) in the same "
          f"units ({1 / np.sqrt(members):.3f} for an exact sampler); "
          "excess: sqrt(gap^2 - floor^2), the sampler's bias up to Monte Carlo noise; bias: a noise-free member's "
          "distance from OI's mean, the exact solve's bias without Monte Carlo error)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iris", type=Path, help="iris-sample-data's sample_data folder (OSTIA, A1B grids)")
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--sigma-max", type=float, default=EDMSchedule().sigma_max, help="the EDM schedule's largest "
                        "noise level (reconstruct's: 80)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default="all", choices=sorted(PRESETS),
                        help="'all', 'mmps' (the four MMPS rows), 'exact' (MMPS's exact solve, what reconstruct runs "
                        "for a Gaussian prior, with the plain and the centred start), 'cg' (MMPS by one CG iteration, "
                        "reconstruct's default for a trained network) or 'converged' (MMPS with 4 CG iterations)")
    parser.add_argument("--normalisation", default="channel", choices=("channel", "cell"),
                        help="'channel': one mean/std per channel; 'cell': per-cell anomalies (module docstring)")
    parser.add_argument("--grids", default="woa,ostia,a1b", help="comma-separated subset of woa, ostia, a1b")
    args = parser.parse_args()
    torch.set_num_threads(1)
    methods = PRESETS[args.methods]
    wanted = args.grids.split(",")
    grids = [woa_grid()] if "woa" in wanted else []
    if args.iris is not None:
        grids += [make(args.iris) for name, make in (("ostia", ostia_grid), ("a1b", a1b_grid)) if name in wanted]
    rows = []
    for grid in grids:
        rows += check(grid, args.members, EDMSchedule(sigma_max=args.sigma_max).sigmas(args.steps), args.seed, methods,
                      args.normalisation)
    table(rows, args.members, args.steps, args.normalisation, args.sigma_max)


if __name__ == "__main__":
    main()
