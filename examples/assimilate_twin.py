"""Cycle a latent diffusion assimilation model over a barotropic twin experiment, against 3D-Var.

Every step is the public API: a truth run of the built-in barotropic model, training pairs (truth, 24 h forecast
of a perturbed truth), a latent diffusion model trained on them (``AssimilationModel.fit``), sparse noisy
observations of height and winds, ``geodiff.pipelines.assimilate.cycle`` over a window, and 3D-Var with a static
covariance from the same training errors. Writes the analysis ensemble to netCDF and a figure.

    python examples/assimilate_twin.py                 # about 15 minutes on one CPU thread
    python examples/assimilate_twin.py --quick         # a one-minute smoke run (untrained-quality model)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from geodiff.baselines.var3d import fit_background_covariance, var3d_analysis  # noqa: E402
from geodiff.dynamics import BarotropicModel  # noqa: E402
from geodiff.dynamics.twin import backgrounds, observation_sites, truth_run  # noqa: E402
from geodiff.operators import PointOperator  # noqa: E402
from geodiff.pipelines.assimilate import AssimilationModel, cycle, twin_dataset, twin_observations  # noqa: E402

DAY = 86400.0
ERRORS = {"z": 5.0, "u": 1.0, "v": 1.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--sites", type=int, default=64)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--guidance", default="mmps", choices=["mmps", "dps", "none"])
    parser.add_argument("--output", type=Path, default=Path("assimilate-twin"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.output.mkdir(parents=True, exist_ok=True)
    n_train, ae_steps, prior_steps = (200, 100, 150) if args.quick else (800, 800, 1500)

    # 1. the twin model, a training truth run and its backgrounds (24 h forecasts of perturbed truths)
    twin = BarotropicModel(nx=32, ny=32)
    train = truth_run(twin, n_train + 2, DAY / 2, spin_up_s=200 * DAY, seed=1)
    train_bg = backgrounds(twin, train[:-2], DAY, rms_wind=1.5, seed=2)
    train_times = np.datetime64("2000-01-01", "ns") + np.arange(n_train) * np.timedelta64(12, "h")
    truth_ds, bg_ds = twin_dataset(twin, train[2:], train_times), twin_dataset(twin, train_bg, train_times)

    # 2. the latent diffusion model p(z | background)
    model = AssimilationModel.fit(truth_ds, bg_ds, autoencoder_steps=ae_steps, prior_steps=prior_steps)
    model.save(args.output / "model", overwrite=True)

    # 3. a test window and its observations at fixed random sites
    run = truth_run(twin, args.cycles + 1, DAY, spin_up_s=300 * DAY, seed=11)
    test = run[1:]  # the first background is a 24 h forecast of the perturbed run[0], valid with test[0]
    times = np.datetime64("2001-01-01", "ns") + np.arange(args.cycles) * np.timedelta64(1, "D")
    test_ds = twin_dataset(twin, test, times)
    lat, lon = observation_sites(twin, args.sites, seed=13)
    observations = twin_observations(test_ds, lat, lon, error_std=ERRORS, seed=14)
    first = twin_dataset(twin, backgrounds(twin, run[:1], DAY, rms_wind=2.0, seed=12), times[:1])

    # 4. cycling with the diffusion model
    result = cycle(model, twin, first, observations, times, interval_s=DAY, members=args.members,
                   steps=args.steps, guidance=args.guidance)  # fmt: skip
    result.analysis.to_netcdf(args.output / "analysis.nc")

    # 5. 3D-Var with a static B from the training background errors
    b_matrix = fit_background_covariance((train_bg - train[2:]).reshape(n_train, -1).numpy(), shrinkage=0.1)
    coords = twin.coordinates()
    operator = PointOperator(coords["lat"], coords["lon"], np.tile(lat, 3), np.tile(lon, 3),
                             variable=np.repeat(["z", "u", "v"], lat.size),
                             channels=[("z", None), ("u", None), ("v", None)]).to_sparse().to_dense().numpy()
    background, var_analyses = first_state(first), []
    for t, time in enumerate(times):
        at = observations.isel(obs=np.flatnonzero(observations.time.values == time))
        xa = var3d_analysis(background.reshape(-1).numpy(), b_matrix, operator, at.value.values, at.error_std.values)
        var_analyses.append(torch.from_numpy(xa).reshape(background.shape))
        background = twin.forecast(var_analyses[-1][None], DAY)[0]

    # 6. scores (RMSE / climatological std, mean over z, u, v) and a figure
    scale = train.std(dim=(0, 2, 3))
    diffusion = torch.stack([torch.from_numpy(result.analysis.mean("member")[v].values) for v in "zuv"], 1)
    bgs = torch.stack([torch.from_numpy(result.background[v].values) for v in "zuv"], 1)
    print("| cycle | background | diffusion analysis | 3D-Var analysis |")
    print("|---|---|---|---|")
    for t in range(args.cycles):
        scores = [score(x[t], test[t], scale) for x in (bgs, diffusion, torch.stack(var_analyses))]
        print(f"| {t} | " + " | ".join(f"{s:.3f}" for s in scores) + " |")
    figure, axes = plt.subplots(1, 4, figsize=(16, 4))
    last = args.cycles - 1
    for ax, (title, field) in zip(axes, [("truth", test[last, 0]), ("background", bgs[last, 0]),
                                         ("diffusion analysis (mean)", diffusion[last, 0]),
                                         ("3D-Var analysis", var_analyses[last][0])]):  # fmt: skip
        image = ax.pcolormesh(coords["lon"], coords["lat"], field.numpy(), cmap="RdBu_r", vmin=-150, vmax=150)
        ax.set_title(f"{title}: z [m], cycle {last}")
        ax.scatter(lon, lat, s=4, c="k")
    figure.colorbar(image, ax=axes, shrink=0.8)
    figure.savefig(args.output / "assimilation.png", dpi=100)
    print(f"wrote {args.output / 'analysis.nc'} and {args.output / 'assimilation.png'}")


def first_state(first) -> torch.Tensor:
    return torch.from_numpy(np.stack([first[v].isel(time=0).values for v in "zuv"]).astype(np.float64))


def score(field: torch.Tensor, truth: torch.Tensor, scale: torch.Tensor) -> float:
    err = ((field.double() - truth.double()) / scale[:, None, None]).pow(2).mean(dim=(-2, -1)).sqrt()
    return float(err.mean())


if __name__ == "__main__":
    main()
