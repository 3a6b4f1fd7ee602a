"""Downscale held-out coarse air temperature 4x with the shipped conditional diffusion model.

The shipped sample (``geodiff/data/downscaling``; see ``data_catalog/make_downscaling_sample.py``) holds Met Office
Unified Model annual-mean 1.5 m air temperature over North America for the held-out years 2060-2099 and ETOPO5
topography on a grid twice as fine; the model was trained on 1860-2059 by ``benchmarks/downscaling.py --train``.
The script coarsens the chosen years by 4 x 4 area means, downscales them (coarse field + topography as sources,
coarse-consistency guidance, optional station observations taken from the truth with noise), compares with
bicubic interpolation and writes ``downscaled.nc`` and ``downscaled.png`` into ``--out``.

    python examples/downscale.py --years 0 10 --members 8 --steps 16 --stations 40 --out downscale-example
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

import geodiff
from geodiff import metrics
from geodiff.baselines.interpolation import bicubic
from geodiff.pipelines.downscale import coarsen, open_sample, sample_paths

FACTOR = 4


def station_table(truth: xr.Dataset, count: int, seed: int, error: float = 0.3) -> pd.DataFrame:
    """``count`` station records per year at random positions: the truth interpolated there plus noise."""
    rng = np.random.default_rng(seed)
    lat = rng.uniform(truth.lat.values[1], truth.lat.values[-2], count)
    lon = rng.uniform(truth.lon.values[1], truth.lon.values[-2], count)
    values = truth.tas.interp(lat=xr.DataArray(lat, dims="obs"), lon=xr.DataArray(lon, dims="obs")).values
    return pd.DataFrame({"value": (values + rng.normal(0.0, error, values.shape)).ravel(), "error_std": error,
                         "lat": np.tile(lat, truth.sizes["time"]), "lon": np.tile(lon, truth.sizes["time"]),
                         "time": np.repeat(truth.time.values, count)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--years", type=int, nargs="+", default=[0, 10], help="indices into 2060-2099")
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--stations", type=int, default=0, help="station observations per year used as guidance")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="downscale-example")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    fields, topography = open_sample()
    truth = fields.isel(time=args.years)
    coarse = coarsen(truth, FACTOR)
    model = geodiff.load(sample_paths()["model"])
    stations = station_table(truth, args.stations, args.seed + 1) if args.stations else None
    ensemble = geodiff.downscale(model, coarse, sources={"topography": topography}, stations=stations,
                                 members=args.members, steps=args.steps, seed=args.seed)
    cubic = bicubic(coarse, FACTOR)
    print("| method | RMSE [K] | CRPS [K] | high-k power ratio |")
    print("|---|---|---|---|")
    for name, estimate in (("bicubic", cubic.tas), ("diffusion", ensemble.tas)):
        members = "member" in estimate.dims
        mean = estimate.mean("member") if members else estimate
        crps = metrics.crps_ensemble(truth.tas, estimate) if members else metrics.mae(truth.tas, estimate)
        ratio = metrics.high_wavenumber_power_ratio(truth.tas, estimate, cutoff=1 / (2 * FACTOR))
        print(f"| {name} | {float(metrics.rmse(truth.tas, mean)):.3f} | {float(crps):.3f} | {ratio:.3f} |")
    ensemble.to_netcdf(out / "downscaled.nc")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5), constrained_layout=True)
    limits = dict(vmin=float(truth.tas[0].min()), vmax=float(truth.tas[0].max()), cmap="RdYlBu_r")
    coarse.tas[0].plot(ax=axes[0], **limits)
    cubic.tas[0].plot(ax=axes[1], **limits)
    ensemble.tas.isel(member=0, time=0).plot(ax=axes[2], **limits)
    truth.tas[0].plot(ax=axes[3], **limits)
    for ax, title in zip(axes, ["coarse input", "bicubic", "diffusion member 0", "truth"]):
        ax.set_title(title)
    fig.savefig(out / "downscaled.png", dpi=80)
    print(f"wrote {out / 'downscaled.nc'} and {out / 'downscaled.png'}")


if __name__ == "__main__":
    main()
