"""The demo (``geodiff demo``): reconstruct a held-out ocean temperature field from sparse observations.

Data: World Ocean Atlas monthly temperature (19 depths, 0-1000 m, 2 degrees) shipped with geodiff. A North
Pacific box (0-64 N, 130 E-102 W; 32x64 cells) is held out of everything: the shipped diffusion prior was
trained on patches from the rest of the ocean (``examples/train_woa_prior.py``) and the baselines fit their
statistics there too. One month of the box is the truth; ``coverage`` of its ocean cells on every level are
observed (with 0.1 degC noise), the rest is held out for scoring.

Methods: guided diffusion (MMPS guidance with one CG step, Heun sampler, 24 steps), optimal interpolation (kriging with a Matern
covariance fitted to training anomalies), EOF projection (DINEOF's stable limit with EOFs of training patches;
DINEOF itself needs a time series of gappy fields, not one field) and the latitude-depth climatology. Scores on held-out cells: RMSE, CRPS (ensemble CRPS for diffusion, Gaussian CRPS from
OI's posterior std), spread-skill ratio, and seconds.

Example
-------
>>> from geodiff.pipelines.demo import prior_path
>>> (prior_path() / "manifest.json").is_file()
True
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xarray as xr

from geodiff import metrics
from geodiff.adapters import woa
from geodiff.baselines import climatology, eof_projection, optimal_interpolation
from geodiff.errors import ConfigError
from geodiff.io.bundle import load
from geodiff.io.encoding import write_netcdf
from geodiff.pipelines.reconstruct import reconstruct
from geodiff.tutorial import prior_path

__all__ = ["prior_path", "run_demo", "DemoResult", "score_table"]

DEMO_MONTH = 7  # August: the held-out month reconstructed by the demo (index into the 12 climatological months)
OBSERVATION_ERROR = 0.1  # degC, Gaussian noise added to the observed truth and given as error_std


@dataclass
class DemoResult:
    """Everything the demo computed: truth, observations, guidance mask, each method's field and the scores."""

    truth: xr.DataArray
    observations: xr.Dataset
    guidance_mask: xr.DataArray
    ensemble: xr.Dataset
    estimates: dict[str, xr.DataArray]
    stds: dict[str, xr.DataArray]
    seconds: dict[str, float]
    scores: list[dict[str, Any]]


def score_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the demo scores."""
    lines = ["| method | RMSE held-out [degC] | CRPS held-out [degC] | spread/skill | seconds |", "|---|---|---|---|---|"]
    for row in rows:
        cells = [row["method"]] + [
            "-" if row.get(key) is None else f"{row[key]:.3f}" for key in ("rmse", "crps", "spread_skill")
        ] + [f"{row['seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_demo(
    output: str | Path | None = "geodiff-demo",
    *,
    coverage: float = 0.05,
    members: int = 16,
    steps: int = 24,
    seed: int = 0,
    month: int = DEMO_MONTH,
    guidance: str = "mmps",
    baselines: bool = True,
    plot: bool = True,
    progress: bool = True,
) -> DemoResult:
    """Run the demo, print the score table, write ``reconstruction.nc`` and ``reconstruction.png`` to ``output``."""
    if not 0 < coverage < 1:
        raise ConfigError(f"coverage must be a fraction in (0, 1), got {coverage}")
    if not 0 <= month < 12:
        raise ConfigError(f"month must be 0..11, got {month}")
    split = woa.holdout_split(woa.open_sample())
    variable = woa.VARIABLE
    truth_ds = split.heldout.isel(time=[month]).drop_vars("sea_mask")
    truth = truth_ds[variable]
    observations, guidance_mask = woa.holdout_observations(truth_ds, coverage, seed=seed, error_std=OBSERVATION_ERROR)
    target = xr.zeros_like(truth_ds).where(truth_ds.notnull())
    training = split.train.drop_vars("sea_mask")
    heldout_cells = truth.notnull() & ~guidance_mask

    estimates: dict[str, xr.DataArray] = {}
    stds: dict[str, xr.DataArray] = {}
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    ensemble = reconstruct(load(prior_path()), observations, guidance=guidance, members=members, steps=steps,
                           seed=seed, progress=progress)
    seconds["guided diffusion"] = time.perf_counter() - start
    estimates["guided diffusion"] = ensemble[variable].mean("member")

    if baselines:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices on land columns
            start = time.perf_counter()
            background = climatology(training, target, variable=variable, by="month", mode="zonal")
            seconds["climatology"] = time.perf_counter() - start
            estimates["climatology"] = background[variable]

            start = time.perf_counter()
            oi = optimal_interpolation(observations, target, training=training, variable=variable, by="month",
                                       time_period_days=366.0, time_correlation=False, seed=seed)
            seconds["optimal interpolation"] = time.perf_counter() - start
            estimates["optimal interpolation"] = oi[variable]
            stds["optimal interpolation"] = oi[f"{variable}_std"]

            start = time.perf_counter()
            patches = split.training_patches(stride=(4, 8), anomalies=True)
            eof = eof_projection(observations, target, patches, background=background, variable=variable, seed=seed)
            seconds["EOF projection"] = time.perf_counter() - start
            estimates["EOF projection"] = eof[variable]
            stds["EOF projection"] = eof[f"{variable}_std"]

    scores = []
    for name, estimate in estimates.items():
        row: dict[str, Any] = {"method": name, "seconds": seconds[name],
                               "rmse": float(metrics.rmse(truth, estimate, where=heldout_cells))}
        if name == "guided diffusion":
            row["crps"] = float(metrics.crps_ensemble(truth, ensemble[variable], where=heldout_cells))
            row["spread_skill"] = float(metrics.spread_skill_ratio(truth, ensemble[variable], where=heldout_cells))
        elif name in stds:
            row["crps"] = float(metrics.crps_gaussian(truth, estimate, stds[name], where=heldout_cells))
        scores.append(row)
    n_obs = observations.sizes["obs"]
    print(f"Held-out North Pacific box, month {month + 1}, {n_obs} observations "
          f"({100 * coverage:g} % of ocean cells per level), {members} members, {steps} steps")
    print(score_table(scores))

    if output is not None:
        output = Path(output)
        output.mkdir(parents=True, exist_ok=True)
        write_netcdf(ensemble, output / "reconstruction.nc")
        if plot:
            from geodiff.plot import plot_reconstruction

            figure = plot_reconstruction(truth.isel(time=0), ensemble[variable].isel(time=0), observations,
                                         depths=[0.0, 500.0], path=output / "reconstruction.png")
            import matplotlib.pyplot as plt

            plt.close(figure)
        print(f"wrote {output / 'reconstruction.nc'}" + (f" and {output / 'reconstruction.png'}" if plot else ""))
    return DemoResult(truth, observations, guidance_mask, ensemble, estimates, stds, seconds, scores)


