"""Reconstruction quality on real held-out fields: guided diffusion against OI, EOF projection and climatology,
and accuracy against network evaluations for each sampler + guidance, against the ReconMOST-faithful run.

Protocol (:func:`geodiff.adapters.woa.holdout_split`): World Ocean Atlas monthly temperature; a North Pacific box
(0-64 N, 130 E-102 W, 32x64 cells, 19 depths) is held out of prior training and of every baseline fit. For each
chosen month and coverage, that fraction of the box's ocean cells on every level is observed with 0.1 degC
noise; scores are on the other (held-out) ocean cells. Everything is measured in this run; tables are printed
in Markdown. ``python benchmarks/reconstruction.py`` (about 15-30 minutes on 2 CPU cores), ``--quick`` for a
smaller run.

Needs the two bundles made by ``examples/train_woa_prior.py`` (the shipped prior) and
``examples/train_woa_prior.py --faithful`` (ReconMOST's configuration: eps-prediction, DDPM 1000-step linear
schedule, x = 2(T+5)/45 - 1, no land mask); the faithful run samples it with DDPM over all 1000 steps and
ReconMOST guidance of scale 4.
"""

from __future__ import annotations

import argparse
import time
import warnings
import numpy as np
import torch

import geodiff
from geodiff import metrics
from geodiff.adapters import woa
from geodiff.baselines import climatology, eof_projection, optimal_interpolation
from geodiff.diffusion.schedules import EDMSchedule, VPSchedule
from geodiff.errors import SamplingError
from geodiff.pipelines.demo import OBSERVATION_ERROR, prior_path

FAITHFUL = prior_path().with_name("woa_prior_reconmost")


def problem(split, month: int, coverage: float, seed: int):
    truth = split.heldout.isel(time=[month]).drop_vars("sea_mask")
    obs, guidance_mask = woa.holdout_observations(truth, coverage, seed=seed, error_std=OBSERVATION_ERROR)
    heldout = truth[woa.VARIABLE].notnull() & ~guidance_mask
    return truth, obs, heldout


def ensemble_scores(truth, ensemble, heldout) -> dict[str, float]:
    reference, field = truth[woa.VARIABLE], ensemble[woa.VARIABLE]
    return {"rmse": float(metrics.rmse(reference, field.mean("member"), where=heldout)),
            "crps": float(metrics.crps_ensemble(reference, field, where=heldout)),
            "spread_skill": float(metrics.spread_skill_ratio(reference, field, where=heldout))}


def fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def quality_table(split, model, months, coverages, members, steps, seed) -> None:
    training = split.train.drop_vars("sea_mask")
    patches = split.training_patches(stride=(4, 8), anomalies=True)
    print(f"\n## Held-out quality ({len(months)} months, {members} members, Heun {steps} steps + MMPS)\n")
    print("| coverage | method | RMSE [degC] | CRPS [degC] | spread/skill | seconds |")
    print("|---|---|---|---|---|---|")
    for coverage in coverages:
        rows: dict[str, list[dict[str, float]]] = {}
        for month in months:
            truth, obs, heldout = problem(split, month, coverage, seed)
            target = truth.where(truth.isnull(), 0.0)
            reference = truth[woa.VARIABLE]
            start = time.perf_counter()
            ens = geodiff.reconstruct(model, obs, members=members, steps=steps, seed=seed, progress=False)
            rows.setdefault("guided diffusion (mmps)", []).append(
                {**ensemble_scores(truth, ens, heldout), "seconds": time.perf_counter() - start})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                start = time.perf_counter()
                clim = climatology(training, target, by="month", mode="zonal")
                rows.setdefault("climatology", []).append(
                    {"rmse": float(metrics.rmse(reference, clim[woa.VARIABLE], where=heldout)),
                     "seconds": time.perf_counter() - start})
                start = time.perf_counter()
                oi = optimal_interpolation(obs, target, training=training, by="month", time_period_days=366.0,
                                           time_correlation=False, seed=seed)
                rows.setdefault("optimal interpolation", []).append(
                    {"rmse": float(metrics.rmse(reference, oi[woa.VARIABLE], where=heldout)),
                     "crps": float(metrics.crps_gaussian(reference, oi[woa.VARIABLE], oi[woa.VARIABLE + "_std"],
                                                         where=heldout)),
                     "seconds": time.perf_counter() - start})
                start = time.perf_counter()
                eof = eof_projection(obs, target, patches, background=clim, seed=seed)
                rows.setdefault("EOF projection", []).append(
                    {"rmse": float(metrics.rmse(reference, eof[woa.VARIABLE], where=heldout)),
                     "crps": float(metrics.crps_gaussian(reference, eof[woa.VARIABLE], eof[woa.VARIABLE + "_std"],
                                                         where=heldout)),
                     "seconds": time.perf_counter() - start})
        for method, results in rows.items():
            mean = {key: float(np.mean([r[key] for r in results])) if key in results[0] else None
                    for key in ("rmse", "crps", "spread_skill", "seconds")}
            print(f"| {100 * coverage:g} % | {method} | {fmt(mean['rmse'])} | {fmt(mean['crps'])} | "
                  f"{fmt(mean['spread_skill'])} | {mean['seconds']:.1f} |", flush=True)


def nfe_table(split, model, month, members, seed, quick: bool) -> None:
    truth, obs, heldout = problem(split, month, 0.05, seed)
    runs = [("heun", "mmps", s, EDMSchedule()) for s in ((5, 12) if quick else (5, 10, 25))]
    runs += [("dpmpp_2m", "mmps", s, EDMSchedule()) for s in ((10, 20) if quick else (10, 20, 50))]
    runs += [("ddpm", "reconmost", s, VPSchedule()) for s in ((50,) if quick else (50, 100))]
    print(f"\n## Accuracy against network evaluations (month {month + 1}, 5 % coverage, {members} members)\n")
    print("| prior | sampler | guidance | steps | NFE | RMSE [degC] | CRPS [degC] | spread/skill | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for sampler, guidance, steps, schedule in runs:
        start = time.perf_counter()
        try:
            ens = geodiff.reconstruct(model, obs, guidance=guidance, sampler=sampler, steps=steps,
                                      schedule=schedule, members=members, seed=seed, progress=False)
        except SamplingError as err:
            print(f"| shipped (EDM) | {sampler} | {guidance} | {steps} | - | diverged: {err} |||| ")
            continue
        s = ensemble_scores(truth, ens, heldout)
        nfe = geodiff.registry.get("sampler", sampler)().nfe(steps)
        print(f"| shipped (EDM) | {sampler} | {guidance} | {steps} | {nfe} | {fmt(s['rmse'])} | {fmt(s['crps'])} | "
              f"{fmt(s['spread_skill'])} | {time.perf_counter() - start:.1f} |", flush=True)
    if not FAITHFUL.is_dir():
        print(f"\n(no ReconMOST-faithful bundle at {FAITHFUL}: run examples/train_woa_prior.py --faithful)")
        return
    faithful = geodiff.load(FAITHFUL)
    for steps in ((100,) if quick else (50, 100, 1000)):
        start = time.perf_counter()
        try:
            ens = geodiff.reconstruct(faithful, obs, guidance="reconmost", guidance_options={"scale": 4.0},
                                      sampler="ddpm", steps=steps, schedule=VPSchedule(), members=members,
                                      seed=seed, progress=False)
        except SamplingError as err:
            print(f"| ReconMOST-faithful | ddpm | reconmost (scale 4) | {steps} | {steps} | diverged: {err} |||| ")
            continue
        s = ensemble_scores(truth, ens, heldout)
        print(f"| ReconMOST-faithful | ddpm | reconmost (scale 4) | {steps} | {steps} | {fmt(s['rmse'])} | "
              f"{fmt(s['crps'])} | {fmt(s['spread_skill'])} | {time.perf_counter() - start:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer months, coverages and step counts")
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    split = woa.holdout_split(woa.open_sample())
    model = geodiff.load(prior_path())
    months = [7] if args.quick else [1, 4, 7, 10]
    coverages = [0.05] if args.quick else [0.01, 0.05, 0.10]
    print(f"# Reconstruction benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"prior sha256 {model.sha256[:12]}")
    quality_table(split, model, months, coverages, args.members, args.steps, args.seed)
    nfe_table(split, model, 7, args.members, args.seed, args.quick)


if __name__ == "__main__":
    main()
