"""Reconstruct held-out ocean temperature from sparse observations with the shipped diffusion prior.

The same job as ``geodiff demo``, written out with the public API so each step can be changed: which month,
how many observations, which guidance and sampler, how many members. Writes the ensemble to netCDF and a figure.

    python examples/reconstruct_ocean.py --coverage 0.05 --members 16 --steps 24 --guidance mmps
"""

from __future__ import annotations

import argparse
from pathlib import Path

import geodiff
from geodiff import metrics
from geodiff.adapters import woa
from geodiff.baselines import optimal_interpolation
from geodiff.pipelines.demo import prior_path
from geodiff.plot import plot_reconstruction


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coverage", type=float, default=0.05, help="observed fraction of ocean cells per level")
    parser.add_argument("--month", type=int, default=7, help="held-out month to reconstruct (0..11)")
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--guidance", default="mmps", choices=geodiff.registry.available("guidance"))
    parser.add_argument("--sampler", default="heun", choices=geodiff.registry.available("sampler"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("reconstruct-ocean"))
    args = parser.parse_args()

    # 1. the held-out truth and observations drawn from it (0.1 degC noise)
    split = woa.holdout_split(woa.open_sample())
    truth = split.heldout.isel(time=[args.month]).drop_vars("sea_mask")
    observations, guidance_mask = woa.holdout_observations(truth, args.coverage, seed=args.seed, error_std=0.1)

    # 2. the guided ensemble
    model = geodiff.load(prior_path())
    ensemble = geodiff.reconstruct(model, observations, guidance=args.guidance, sampler=args.sampler,
                                   members=args.members, steps=args.steps, seed=args.seed)

    # 3. optimal interpolation with a covariance fitted outside the box, for reference
    target = truth.where(truth.isnull(), 0.0)
    oi = optimal_interpolation(observations, target, training=split.train.drop_vars("sea_mask"), by="month",
                               time_period_days=366.0, time_correlation=False)

    # 4. scores on held-out cells
    field, reference = ensemble[woa.VARIABLE], truth[woa.VARIABLE]
    heldout = reference.notnull() & ~guidance_mask
    print(f"{observations.sizes['obs']} observations; scores on {int(heldout.sum())} held-out cells [degC]")
    print(f"  guided diffusion  RMSE {float(metrics.rmse(reference, field.geodiff.mean(), where=heldout)):.3f}"
          f"  CRPS {float(metrics.crps_ensemble(reference, field, where=heldout)):.3f}"
          f"  spread/skill {float(metrics.spread_skill_ratio(reference, field, where=heldout)):.2f}")
    print(f"  OI                RMSE {float(metrics.rmse(reference, oi[woa.VARIABLE], where=heldout)):.3f}"
          f"  CRPS {float(metrics.crps_gaussian(reference, oi[woa.VARIABLE], oi[woa.VARIABLE + '_std'], where=heldout)):.3f}")

    # 5. results on disk
    args.output.mkdir(parents=True, exist_ok=True)
    ensemble.to_netcdf(args.output / "ensemble.nc")
    plot_reconstruction(reference.isel(time=0), field.isel(time=0), observations, depths=[0.0, 500.0],
                        path=args.output / "reconstruction.png")
    print(f"wrote {args.output / 'ensemble.nc'} and {args.output / 'reconstruction.png'}")


if __name__ == "__main__":
    main()
