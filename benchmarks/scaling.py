"""Seconds and peak memory per field as observations and grids grow: geodiff against exact and local OI.

The field is real: the Levitus 1-degree global surface temperature climatology (``benchmarks/levitus.py``,
180 x 360 cells, 65 % ocean), coarsened 4x and 2x for the grid sweep. Observations are drawn at random positions
in random ocean cells (value: the cell's temperature + 0.1 degC noise), from 1e2 to 1e5 per field.

- **exact OI** (:func:`geodiff.baselines.optimal_interpolation`, dense Cholesky of ``n_obs x n_obs``), with the
  posterior std and mean only; background the zonal mean, covariance fitted to the anomalies from it (Matern 3/2);
  measured while its memory stays a few GB, then extrapolated with its exact operation counts (``n^3 / 3`` for the
  factor, ``cells n^2`` for the std) fitted to the measured times.
- **local OI** (``neighbours=k``): every cell from its ``k`` nearest observations (cKDTree); ``k`` is chosen so
  that its analysis is within 2 % (of the field's anomaly std) of the exact one, measured here.
- **geodiff** (``geodiff.reconstruct``, MMPS + Heun): an untrained mask-aware UNet (base 32, 3 halvings, periodic
  in longitude; untrained, so the cost is what it measures, not the accuracy) on the same grid. The network cost
  is the same per evaluation whatever the observations, so a short run (2 members, 3 Heun steps = 5 evaluations
  per member) is timed and the cost of a field at the reported settings (16 members, Heun 24 steps = 47
  evaluations) is that time per member-evaluation times 16 x 47 (start-up included, so slightly high).

Every measurement runs in this one process, one after the other (ratios within one run on a shared machine);
peak memory is the rise of the resident set over the measurement (``/proc/self/clear_refs``, VmHWM). One thread.
``python benchmarks/scaling.py`` (about 10 minutes); writes ``benchmarks/scaling.png`` and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402

from levitus import open_levitus  # noqa: E402

MEMBERS, NFE = 16, 47  # the per-field setting reported for geodiff (Heun 24 steps)
ERROR = 0.1  # degC


def _status(name: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(name)) / 1024


def measure(fn, *args, **kwargs) -> tuple[object, float, float]:
    """``(result, seconds, peak MiB above the resident set at the start)``; freed memory is handed back to the
    system first (``malloc_trim``), else a run that reuses what an earlier one freed shows no rise."""
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark
    before = _status("VmRSS")
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    seconds = time.perf_counter() - start
    return result, seconds, max(_status("VmHWM") - before, 0.0)


def surface(coarsen: int) -> xr.Dataset:
    return open_levitus(coarsen).isel(depth=[0])


def draw_observations(ds: xr.Dataset, n: int, seed: int) -> xr.Dataset:
    """``n`` observations in random ocean cells, uniform within the cell, value of the cell + noise."""
    rng = np.random.default_rng(seed)
    field = ds.thetao.values[0, 0]
    i, j = np.nonzero(np.isfinite(field))
    pick = rng.integers(0, i.size, n)
    i, j = i[pick], j[pick]
    dlat, dlon = float(np.diff(ds.lat.values[:2])[0]), float(np.diff(ds.lon.values[:2])[0])
    lat = ds.lat.values[i] + rng.uniform(-0.25, 0.25, n) * dlat  # within the cell, off its centre
    lon = ds.lon.values[j] + rng.uniform(-0.25, 0.25, n) * dlon
    return xr.Dataset(
        {"value": ("obs", field[i, j] + rng.normal(0, ERROR, n)), "error_std": ("obs", np.full(n, ERROR))},
        coords={"lat": ("obs", lat), "lon": ("obs", (lon + 180.0) % 360.0 - 180.0),
                "depth": ("obs", np.zeros(n)), "time": ("obs", np.repeat(ds.time.values[:1], n)),
                "variable": ("obs", np.full(n, "thetao"))})


def zonal_background(ds: xr.Dataset) -> xr.DataArray:
    return ds.thetao.mean("lon", skipna=True).broadcast_like(ds.thetao).where(ds.thetao.notnull())


def covariance(ds: xr.Dataset) -> xr.Dataset:
    from geodiff.baselines import fit_covariance

    return fit_covariance(ds.thetao - zonal_background(ds), model="matern32", max_distance_km=3000.0)


def oi(ds, obs, cov, *, neighbours=None, std=True):
    from geodiff.baselines import optimal_interpolation

    return optimal_interpolation(obs, ds.thetao, background=zonal_background(ds), covariance=cov, return_std=std,
                                 time_correlation=False, neighbours=neighbours, max_obs=10**6)


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.sqrt(np.mean((a[ok] - b[ok]) ** 2)))


def make_bundle(ds: xr.Dataset):
    from geodiff.backbones.unet import UNet
    from geodiff.diffusion.denoiser import Denoiser
    from geodiff.io import Codec, ModelBundle, Normalizer

    torch.manual_seed(0)
    codec = Codec.from_dataset(ds)
    net = UNet(in_channels=1, base_channels=32, channel_mults=(1, 2, 2, 2), num_res_blocks=1, attention_levels=(),
               mid_attention=True, mask_aware=True, periodic_lon=True)
    torch.nn.init.normal_(net.output[-1].weight, std=1e-3)  # untrained, but not a fresh UNet's zero output layer
    denoiser = Denoiser(net, sigma_data=1.0)
    denoiser.set_mask(codec.mask)
    return ModelBundle(denoiser.eval(), codec, Normalizer.fit(ds), {"name": "untrained (cost only)"})


def geodiff_run(bundle, obs, members=2, steps=3):
    import geodiff

    return geodiff.reconstruct(bundle, obs, members=members, steps=steps, guidance="mmps", progress=False,
                               max_normalized=None, runaway_factor=None, on_runaway="keep")


def geodiff_field(bundle, obs) -> dict:
    out, seconds, peak = measure(geodiff_run, bundle, obs)
    nfe = json.loads(out.attrs["geodiff_guidance"])["nfe_per_member"]
    per = seconds / (2 * nfe)
    kept = json.loads(out.attrs["geodiff_observations"])["kept"]
    return {"seconds": per * MEMBERS * NFE, "measured_seconds": seconds, "per_member_nfe": per, "peak_mib": peak,
            "kept": kept}


def fit_exact_times(rows: list[dict], cells: int) -> tuple[float, float]:
    """Least squares ``seconds = a n^3 + b cells n^2`` (the std) on the measured exact-OI rows with std."""
    n = np.array([r["n"] for r in rows], float)
    t = np.array([r["seconds"] for r in rows], float)
    design = np.stack([n**3, cells * n**2], axis=1)
    weights = 1.0 / t  # relative error
    coef, *_ = np.linalg.lstsq(design * weights[:, None], t * weights, rcond=None)
    return float(max(coef[0], 0.0)), float(max(coef[1], 0.0))


def obs_sweep(args, report) -> dict:
    ds = surface(1)
    ocean = int(np.isfinite(ds.thetao.values).sum())
    cov = covariance(ds)
    truth = ds.thetao.values
    print(f"\n## Observations 1e2..1e5 on the 1-degree global grid (180 x 360, {ocean} ocean cells)\n", flush=True)
    counts = [100, 300, 1000, 3000, 10000, 30000, 100000]
    exact_std_max, exact_mean_max = (1000, 3000) if args.quick else (3000, 10000)
    results = {"exact": [], "exact_mean": [], "local": [], "geodiff": [], "ocean_cells": ocean}
    # the neighbour count that matches the exact analysis, at 3000 observations
    probe = draw_observations(ds, 1000 if args.quick else 3000, seed=99)
    reference = oi(ds, probe, cov).thetao.values
    spread = float(np.nanstd(truth - zonal_background(ds).values))
    chosen = None
    match_rows = []
    for k in (8, 16, 32, 64):
        local = oi(ds, probe, cov, neighbours=k).thetao.values
        gap = rmse(local, reference) / spread
        match_rows.append((k, gap, rmse(local, truth), rmse(reference, truth)))
        if chosen is None and gap < 0.02:
            chosen = k
    chosen = chosen or 64
    results["neighbours"] = chosen
    results["match"] = match_rows
    bundle = make_bundle(ds)
    for n in counts:
        obs = draw_observations(ds, n, seed=n)
        row = {"n": n}
        if n <= exact_std_max:
            out, s, peak = measure(oi, ds, obs, cov)
            results["exact"].append({"n": n, "seconds": s, "peak_mib": peak, "rmse": rmse(out.thetao.values, truth)})
        if n <= exact_mean_max:
            out, s, peak = measure(oi, ds, obs, cov, std=False)
            results["exact_mean"].append({"n": n, "seconds": s, "peak_mib": peak,
                                          "rmse": rmse(out.thetao.values, truth)})
        out, s, peak = measure(oi, ds, obs, cov, neighbours=chosen)
        results["local"].append({"n": n, "seconds": s, "peak_mib": peak, "rmse": rmse(out.thetao.values, truth)})
        if n in (100, 1000, 10000, 100000):
            row = geodiff_field(bundle, obs)
            results["geodiff"].append({"n": n, **row})
        print(f"  {n} observations done (load {os.getloadavg()[0]:.1f})", flush=True)
    report["obs"] = results
    return results


def grid_sweep(args, report) -> dict:
    n = 2000
    rows = []
    print(f"\n## Grid 4 -> 2 -> 1 degree global, {n} observations\n", flush=True)
    for coarsen in (4, 2, 1):
        ds = surface(coarsen)
        cov = covariance(ds)
        obs = draw_observations(ds, n, seed=coarsen)
        truth = ds.thetao.values
        row = {"grid": f"{ds.sizes['lat']} x {ds.sizes['lon']}", "cells": int(ds.sizes["lat"] * ds.sizes["lon"]),
               "ocean": int(np.isfinite(truth).sum())}
        out, row["exact_s"], row["exact_mib"] = measure(oi, ds, obs, cov)
        row["exact_rmse"] = rmse(out.thetao.values, truth)
        out, row["local_s"], row["local_mib"] = measure(oi, ds, obs, cov, neighbours=report["obs"]["neighbours"])
        row["local_rmse"] = rmse(out.thetao.values, truth)
        g = geodiff_field(make_bundle(ds), obs)
        row["geodiff_s"], row["geodiff_mib"], row["geodiff_per_nfe"] = g["seconds"], g["peak_mib"], g["per_member_nfe"]
        rows.append(row)
        print(f"  {row['grid']} done (load {os.getloadavg()[0]:.1f})", flush=True)
    report["grid"] = rows
    return rows


def crossover(report) -> dict:
    obs = report["obs"]
    cells = obs["ocean_cells"]
    a, b = fit_exact_times(obs["exact"], cells)
    a_mean, _ = fit_exact_times([{**r, "seconds": r["seconds"]} for r in obs["exact_mean"]], 0)
    geodiff_s = float(np.median([r["seconds"] for r in obs["geodiff"]]))
    grid = np.logspace(2, 6, 4001)
    exact = a * grid**3 + b * cells * grid**2
    mean_only = a_mean * grid**3
    n_std = float(grid[np.argmax(exact >= geodiff_s)]) if np.any(exact >= geodiff_s) else None
    n_mean = float(grid[np.argmax(mean_only >= geodiff_s)]) if np.any(mean_only >= geodiff_s) else None
    # memory: the largest measured exact run's peak scaled by n^2
    last = obs["exact_mean"][-1]
    mem_per_n2 = last["peak_mib"] / last["n"] ** 2
    n_24gb = math.sqrt(24 * 1024 / mem_per_n2)
    out = {"a": a, "b": b, "a_mean": a_mean, "geodiff_s": geodiff_s, "n_std": n_std, "n_mean": n_mean,
           "mib_per_n2": mem_per_n2, "n_24gb": n_24gb}
    report["crossover"] = out
    return out


def tables(report) -> None:
    obs, cross = report["obs"], report["crossover"]
    print("\nNeighbour count of local OI against the exact analysis (gap: RMS difference / anomaly std):\n")
    print("| k | gap to exact | RMSE local [degC] | RMSE exact [degC] |\n|---|---|---|---|")
    for k, gap, r_local, r_exact in obs["match"]:
        print(f"| {k} | {gap:.3f} | {r_local:.3f} | {r_exact:.3f} |")
    print(f"\nchosen k = {obs['neighbours']}\n")
    print("| observations | exact OI s (MiB) | exact OI mean only s (MiB) | local OI s (MiB) | geodiff s per field "
          "(MiB) | RMSE exact / local [degC] |\n|---|---|---|---|---|---|")
    by = {name: {r["n"]: r for r in obs[name]} for name in ("exact", "exact_mean", "local", "geodiff")}
    for n in sorted(by["local"]):
        def cell(name, key="seconds"):
            r = by[name].get(n)
            return "-" if r is None else f"{r[key]:.3g} ({r['peak_mib']:.0f})"
        e = by["exact"].get(n) or by["exact_mean"].get(n)
        accuracy = f"{e['rmse']:.3f} / {by['local'][n]['rmse']:.3f}" if e else f"- / {by['local'][n]['rmse']:.3f}"
        print(f"| {n} | {cell('exact')} | {cell('exact_mean')} | {cell('local')} | {cell('geodiff')} | {accuracy} |")
    print(f"\nexact OI fit: {cross['a']:.3g} n^3 + {cross['b']:.3g} cells n^2 s (mean only {cross['a_mean']:.3g} n^3);"
          f" geodiff per field {cross['geodiff_s']:.0f} s ({MEMBERS} members x {NFE} evaluations); crossover with "
          f"std at n = {cross['n_std'] and round(cross['n_std'])}, mean only at n = "
          f"{cross['n_mean'] and round(cross['n_mean'])}; exact OI memory {cross['mib_per_n2'] * 1e6:.1f} MiB per "
          f"1e6 n^2: 24 GB at n = {cross['n_24gb']:.0f}")
    print("\n| grid | ocean cells | exact OI s (MiB) | local OI s (MiB) | geodiff s per field (MiB) | geodiff s per "
          "member-evaluation | RMSE exact / local |\n|---|---|---|---|---|---|---|")
    for r in report["grid"]:
        print(f"| {r['grid']} | {r['ocean']} | {r['exact_s']:.3g} ({r['exact_mib']:.0f}) | {r['local_s']:.3g} "
              f"({r['local_mib']:.0f}) | {r['geodiff_s']:.0f} ({r['geodiff_mib']:.0f}) | {r['geodiff_per_nfe']:.2f} | "
              f"{r['exact_rmse']:.3f} / {r['local_rmse']:.3f} |")


def plot(report, path: Path) -> None:
    import matplotlib.pyplot as plt

    obs, cross = report["obs"], report["crossover"]
    fig, (ax_t, ax_m, ax_g) = plt.subplots(1, 3, figsize=(15, 4.6))
    n = np.logspace(2, 5, 200)
    cells = obs["ocean_cells"]
    for name, label, colour in (("exact", "exact OI (mean + std)", "C0"), ("exact_mean", "exact OI (mean)", "C9"),
                                ("local", f"local OI (k={obs['neighbours']}, mean + std)", "C1"),
                                ("geodiff", f"geodiff ({MEMBERS} members, {NFE} evaluations)", "C3")):
        rows = obs[name]
        ax_t.loglog([r["n"] for r in rows], [r["seconds"] for r in rows], "o-", color=colour, label=label)
        shown = [r for r in rows if r["peak_mib"] >= 1.0]  # (no rise: memory an earlier run had freed was reused)
        ax_m.loglog([r["n"] for r in shown], [r["peak_mib"] for r in shown], "o", color=colour, label=label)
    ax_t.loglog(n, cross["a"] * n**3 + cross["b"] * cells * n**2, "--", color="C0", lw=1, label="exact OI, extrapolated")
    ax_t.loglog(n, cross["a_mean"] * n**3, "--", color="C9", lw=1)
    ax_m.loglog(n, cross["mib_per_n2"] * n**2, "--", color="C9", lw=1, label="exact OI, extrapolated")
    ax_m.axhline(24 * 1024, color="k", lw=0.8, ls=":", label="24 GB")
    for key, colour in (("n_std", "C0"), ("n_mean", "C9")):
        if cross[key]:
            ax_t.axvline(cross[key], color=colour, lw=0.8, ls=":")
    ax_t.set(xlabel="observations per field", ylabel="seconds per field (1 thread)",
             title="1-degree global field: time")
    ax_m.set(xlabel="observations per field", ylabel="peak memory rise [MiB]", title="memory")
    grid = report["grid"]
    cells_g = [r["ocean"] for r in grid]
    ax_g.loglog(cells_g, [r["exact_s"] for r in grid], "o-", color="C0", label="exact OI")
    ax_g.loglog(cells_g, [r["local_s"] for r in grid], "o-", color="C1", label="local OI")
    ax_g.loglog(cells_g, [r["geodiff_s"] for r in grid], "o-", color="C3", label="geodiff")
    ax_g.set(xlabel="ocean cells (4, 2, 1 degree)", ylabel="seconds per field", title="grid size, 2000 observations")
    for ax in (ax_t, ax_m, ax_g):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller exact-OI runs")
    parser.add_argument("--plot", type=Path, default=Path(__file__).with_name("scaling.png"))
    parser.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    parser.add_argument("--replot", type=Path, default=None, help="only redraw the plot and tables from this JSON")
    args = parser.parse_args()
    if args.replot:
        report = json.loads(args.replot.read_text())
        tables(report)
        plot(report, args.plot)
        return
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", RuntimeWarning)  # nan means over all-land rows
    print(f"load average at start: {os.getloadavg()}", flush=True)
    report: dict = {}
    obs_sweep(args, report)
    grid_sweep(args, report)
    crossover(report)
    report["load_average_end"] = os.getloadavg()
    tables(report)
    print(f"\nload average at end: {report['load_average_end']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=float))
    plot(report, args.plot)


if __name__ == "__main__":
    main()
