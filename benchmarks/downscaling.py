"""Downscaling quality at 4x on real held-out fields: conditional diffusion against bilinear, bicubic and a
regression network with the same backbone, with source ablations and a large-domain (seam) check.

Data (:mod:`data_catalog.make_downscaling_sample`): Met Office UM A1B annual-mean 1.5 m air temperature over
North America (iris-sample-data; 36 x 48 cells of 1.25 x 1.875 deg) with ETOPO5 topography averaged onto a grid
2x finer (ferret-datasets). Years 1860-2059 train every model; 2060-2099 are held out. The coarse field is the
cos-lat area mean over 4 x 4 blocks (9 x 12 cells of 5 x 7.5 deg).

Sources of the conditional model: ``coarse`` (the coarse field, ratio 1/4), ``topography`` (orography + land
fraction, ratio 2, real) and ``satellite`` -- **a proxy, not a satellite product**: no satellite data can be
downloaded here, so it is derived from the truth itself, the 2x area mean of the air temperature plus Gaussian
noise of 0.5 K (ratio 1/2), standing in for an infrared brightness temperature at intermediate resolution.
Headline numbers use the real sources only (coarse + topography); rows with the proxy are marked.

The models are trained by this script (``--train``, one thread, a wall-time budget per model) on 16 x 16 patches
and sample the 36 x 48 domain with overlapping blended windows. Everything in the tables is measured in this run.

    python benchmarks/downscaling.py --iris DIR/sample_data --etopo DIR/etopo5.cdf --train --out /tmp/ds_bench

Scores over the held-out years (``--years``), all cells: RMSE of the ensemble mean, CRPS (fair, members), the
high-wavenumber power ratio (members' power above 1/8 cycles per cell -- scales the coarse grid cannot hold --
over the truth's), spread/skill, MAE at 60 held-out station positions (bilinear at random points, never used as
guidance), and the coarse-consistency error (RMSE of the area mean of each member against the coarse field).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from geodiff import metrics
from geodiff.backbones.conditional import ConditionalUNet
from geodiff.baselines.interpolation import bicubic, bilinear
from geodiff.baselines.regression import RegressionModel
from geodiff.diffusion.denoiser import Denoiser
from geodiff.diffusion.patches import PatchDenoiser
from geodiff.io import Codec, ModelBundle, Normalizer
from geodiff.io.bundle import load
from geodiff.operators import PointOperator
from geodiff.pipelines.downscale import coarsen, downscale, downscaling_metadata
from geodiff.training import train
from geodiff.training.pairs import DownscalingPairs
from geodiff.training.regression import train_regression

ROOT = Path(__file__).resolve().parents[1]
FACTOR = 4
PATCH = (16, 16)
PROXY_NOISE = 0.5  # K
SOURCES = {"coarse": 1, "topography": 2, "satellite": 1}


def _prep_module():
    spec = importlib.util.spec_from_file_location("make_downscaling_sample",
                                                  ROOT / "data_catalog" / "make_downscaling_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def satellite_proxy(fields: xr.Dataset, seed: int) -> xr.Dataset:
    """The proxy source (module docstring): 2x area mean of ``tas`` + N(0, 0.5 K), variable ``tb_proxy``."""
    mean = coarsen(fields["tas"], 2)
    noise = np.random.default_rng(seed).normal(0.0, PROXY_NOISE, mean.shape).astype("float32")
    proxy = (mean + noise).rename("tb_proxy")
    proxy.attrs = {"units": "K", "long_name": "proxy brightness temperature (2x area mean of tas + 0.5 K noise)"}
    return proxy.to_dataset()


def normalizer(train_fields: xr.Dataset, topography: xr.Dataset) -> Normalizer:
    mean, std = float(train_fields["tas"].mean()), float(train_fields["tas"].std())
    return Normalizer.affine({"tas": (mean, std), "tb_proxy": (mean, std),
                              "orog": (float(topography["orog"].mean()), float(topography["orog"].std())),
                              "land_fraction": (0.5, 0.5)})


def tensor(norm: Normalizer, ds: xr.Dataset, variables: list[str]) -> torch.Tensor:
    arrays = [np.asarray(norm.normalize(ds[v]).transpose(..., "lat", "lon").values, dtype=np.float32)
              for v in variables]
    out = torch.from_numpy(np.stack(arrays, axis=-3))
    return out if out.ndim == 4 else out[None]


def net(dropout: float, sources: dict[str, int] = SOURCES) -> ConditionalUNet:
    return ConditionalUNet(1, sources=sources, base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=1,
                           attention_levels=(), mid_attention=False, source_channels=16, source_dropout=dropout)


def pairs(norm, fields, topography, proxy, seed=0) -> DownscalingPairs:
    sources = {"topography": tensor(norm, topography, ["orog", "land_fraction"])}
    if proxy is not None:
        sources["satellite"] = tensor(norm, proxy, ["tb_proxy"])
    return DownscalingPairs(tensor(norm, fields, ["tas"]), FACTOR, grid_lat=fields["lat"].values, patch=PATCH,
                            sources=sources, patches_per_field=64, seed=seed)


def timed_steps(step_fn, minutes: float, probe: int = 20) -> int:
    start = time.perf_counter()
    step_fn(probe)
    rate = probe / (time.perf_counter() - start)
    return max(probe + 1, int(rate * minutes * 60))


def train_models(args, fields, topography, proxy) -> None:
    torch.manual_seed(0)
    train_fields = _prep_module().training(fields)
    train_proxy = proxy.sel(time=train_fields["time"])
    norm = normalizer(train_fields, topography)
    data = pairs(norm, train_fields, topography, train_proxy)
    codec = Codec.from_dataset(train_fields[["tas"]].isel(time=slice(0, 1)))
    metadata = {"downscaling": downscaling_metadata(
        FACTOR, PATCH, ["tas"], {"topography": (["orog", "land_fraction"], 2), "satellite": (["tb_proxy"], "1/2")}),
        "trained_on": "UM A1B annual-mean tas over North America 1860-2059 (iris-sample-data), ETOPO5 topography; "
                      "'satellite' is a proxy derived from tas (2x area mean + 0.5 K noise)",
        "made_by": "benchmarks/downscaling.py --train"}
    denoiser = Denoiser(net(0.2), sigma_data=1.0)
    print(f"diffusion model: {sum(p.numel() for p in denoiser.parameters())} parameters")
    probe_start = time.perf_counter()
    result = train(denoiser, data, steps=20, batch_size=args.batch, lr=1e-3, warmup_steps=20, seed=0,
                   progress=False, checkpoint_dir=None)
    rate = 20 / (time.perf_counter() - probe_start)
    steps = max(40, int(rate * args.minutes * 60))
    print(f"diffusion: {rate:.2f} steps/s -> {steps} steps")
    result = train(Denoiser(net(0.2), sigma_data=1.0), data, steps=steps, batch_size=args.batch, lr=1e-3,
                   warmup_steps=200, ema_decay=0.999, seed=0, progress=args.progress)
    print(f"diffusion: final loss (mean of last 200) {np.mean(result.losses[-200:]):.4f}")
    bundle = ModelBundle(result.ema, codec, norm, {**metadata, "train_steps": steps, "train_batch": args.batch})
    bundle.save(Path(args.out) / "diffusion", overwrite=True)


def train_regression_model(args, fields, topography) -> None:
    """The regression baseline on the real sources (coarse + topography), no source dropout."""
    torch.manual_seed(0)
    train_fields = _prep_module().training(fields)
    data = pairs(normalizer(train_fields, topography), train_fields, topography, None)
    real = {"coarse": 1, "topography": 2}
    regression = RegressionModel(net(0.0, real))
    start = time.perf_counter()
    train_regression(regression, data, steps=20, batch_size=args.batch, progress=False)
    rate = 20 / (time.perf_counter() - start)
    steps = max(40, int(rate * args.regression_minutes * 60))
    print(f"regression: {rate:.2f} steps/s -> {steps} steps")
    regression = RegressionModel(net(0.0, real))
    losses = train_regression(regression, data, steps=steps, batch_size=args.batch, progress=args.progress)
    print(f"regression: final loss (mean of last 200) {np.mean(losses[-200:]):.4f}")
    regression.save_pretrained(Path(args.out) / "regression")


# ---------------------------------------------------------------------------------------------------------------


def stations(lat: np.ndarray, lon: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(lat[1], lat[-2], n), rng.uniform(lon[1], lon[-2], n)


def scores(truth: xr.DataArray, estimate: xr.DataArray, coarse: xr.DataArray, station_op) -> dict[str, float]:
    ensemble = "member" in estimate.dims
    mean = estimate.mean("member") if ensemble else estimate
    out = {"rmse": float(metrics.rmse(truth, mean)),
           "crps": float(metrics.crps_ensemble(truth, estimate)) if ensemble else float(metrics.mae(truth, mean)),
           "power_ratio": metrics.high_wavenumber_power_ratio(truth, estimate, cutoff=1 / (2 * FACTOR)),
           "spread_skill": float(metrics.spread_skill_ratio(truth, estimate)) if ensemble else float("nan")}
    at = lambda field: station_op(torch.from_numpy(np.asarray(field.transpose("time", "lat", "lon").values,
                                                              dtype=np.float64))[:, None]).numpy()
    out["station_mae"] = float(np.abs(at(mean) - at(truth)).mean())
    back = coarsen(estimate.rename("tas").to_dataset(), FACTOR)["tas"]
    out["coarse_rmse"] = float(metrics.rmse(coarse, back))
    return out


def seam_ratio(field: xr.DataArray, patch: tuple[int, int], overlap: tuple[int, int]) -> float:
    """Mean |difference| between neighbouring columns/rows at window borders over that elsewhere (1 = no seam)."""
    height, width = field.sizes["lat"], field.sizes["lon"]
    blender = PatchDenoiser(lambda x, s, c=None: x, patch=patch, overlap=overlap)
    windows = list(blender.windows(height, width, align=FACTOR))
    cols = sorted({j for _, _, j0, j1 in windows for j in (j0, j1) if 0 < j < width})
    rows = sorted({i for i0, i1, _, _ in windows for i in (i0, i1) if 0 < i < height})
    values = np.asarray(field.transpose(..., "lat", "lon").values)
    dx = np.abs(np.diff(values, axis=-1))  # between column j-1 and j at index j-1
    dy = np.abs(np.diff(values, axis=-2))
    at_border = np.concatenate([dx[..., [c - 1 for c in cols]].ravel(), dy[..., [r - 1 for r in rows], :].ravel()])
    other_cols = [j for j in range(width - 1) if j + 1 not in cols]
    other_rows = [i for i in range(height - 1) if i + 1 not in rows]
    elsewhere = np.concatenate([dx[..., other_cols].ravel(), dy[..., other_rows, :].ravel()])
    return float(at_border.mean() / elsewhere.mean())


def evaluate(args, fields, topography, proxy) -> None:
    prep = _prep_module()
    held = prep.heldout(fields)
    years = held.isel(time=slice(0, args.years * args.stride, args.stride))
    truth = years["tas"]
    coarse = coarsen(years[["tas"]], FACTOR)
    proxy_years = proxy.sel(time=years["time"])
    lat, lon = truth["lat"].values, truth["lon"].values
    slat, slon = stations(lat, lon, 60, seed=1)
    station_op = PointOperator(lat, lon, slat, slon)
    bundle = load(Path(args.out) / "diffusion")
    regression = RegressionModel.from_pretrained(Path(args.out) / "regression")
    rows = []

    def record(name, estimate, seconds, note=""):
        row = {"method": name, **scores(truth, estimate, coarse["tas"], station_op), "seconds": seconds, "note": note}
        rows.append(row)
        print(json.dumps(row), flush=True)

    for name, fn in (("bilinear", bilinear), ("bicubic", bicubic)):
        start = time.perf_counter()
        record(name, fn(coarse, FACTOR)["tas"], time.perf_counter() - start)

    norm = bundle.normalizer
    mean_t, std_t = float(norm.tensors(bundle.codec)[0][0]), float(norm.tensors(bundle.codec)[1][0])
    coarse_n = tensor(norm, coarse, ["tas"])
    topo_n = tensor(norm, topography, ["orog", "land_fraction"])
    proxy_n = tensor(norm, proxy_years, ["tb_proxy"])
    for label, keys in (("regression (coarse + topography, MSE)", ("coarse", "topography")),):
        start = time.perf_counter()
        predictions = []
        blender = PatchDenoiser(regression, patch=PATCH, overlap=(4, 4))
        with torch.no_grad():
            for t in range(coarse_n.shape[0]):
                cond = {"coarse": coarse_n[t:t + 1], "topography": topo_n, "satellite": proxy_n[t:t + 1]}
                cond = {k: v for k, v in cond.items() if k in keys}
                predictions.append(blender(torch.zeros(1, 1, lat.size, lon.size), 0.0, cond)[0, 0].numpy())
        estimate = truth.copy(data=np.stack(predictions) * std_t + mean_t)
        record(label, estimate, time.perf_counter() - start, "")

    topo_ds = topography
    sat_ds = proxy_years
    configs = [
        ("diffusion, coarse + topography, coarse guidance", {"topography": topo_ds}, {}, ""),
        ("diffusion, coarse only (topography left out)", {}, {}, "ablation"),
        ("diffusion, coarse + topography, no guidance", {"topography": topo_ds}, {"guidance": None}, "ablation"),
        ("diffusion, topography only + coarse guidance (coarse source left out)", {"topography": topo_ds},
         {"condition_on_coarse": False}, "ablation"),
        ("diffusion, coarse + topography + proxy, coarse guidance", {"topography": topo_ds, "satellite": sat_ds}, {},
         "proxy"),
        ("diffusion, coarse + proxy (topography left out)", {"satellite": sat_ds}, {}, "proxy, ablation"),
    ]
    if args.quick:
        configs = configs[:2]
    figure_member = None
    for label, sources, options, note in configs:
        start = time.perf_counter()
        out = downscale(bundle, coarse, sources=sources, members=args.members, steps=args.steps, seed=0,
                        coarse_error_std=args.coarse_error, progress=False, **options)
        record(label, out["tas"], time.perf_counter() - start, note)
        if figure_member is None:
            figure_member = out
    # stations as guidance: another 60 positions, values from the truth with 0.3 K noise
    glat, glon = stations(lat, lon, 60, seed=2)
    guide_op = PointOperator(lat, lon, glat, glon)
    values = guide_op(torch.from_numpy(np.asarray(truth.values, dtype=np.float64))[:, None]).numpy()
    rng = np.random.default_rng(3)
    table = xr.Dataset(
        {"value": ("obs", (values + rng.normal(0, 0.3, values.shape)).ravel()),
         "error_std": ("obs", np.full(values.size, 0.3))},
        coords={"lat": ("obs", np.tile(glat, values.shape[0])), "lon": ("obs", np.tile(glon, values.shape[0])),
                "time": ("obs", np.repeat(truth["time"].values, values.shape[1]))})
    start = time.perf_counter()
    out = downscale(bundle, coarse, sources={"topography": topo_ds}, stations=table, members=args.members,
                    steps=args.steps, seed=0, coarse_error_std=args.coarse_error, progress=False)
    record("diffusion, coarse + topography, coarse + 60 stations guidance", out["tas"], time.perf_counter() - start,
           "stations")

    seam = seam_ratio(figure_member["tas"], PATCH, (4, 4))
    truth_seam = seam_ratio(truth, PATCH, (4, 4))
    print(f"\nseam ratio (|neighbour difference| at window borders / elsewhere): diffusion {seam:.3f}, "
          f"truth {truth_seam:.3f}")
    print_table(rows, args, seam, truth_seam)
    figure(args, truth, coarse, figure_member, bicubic(coarse, FACTOR)["tas"], topography)


def print_table(rows, args, seam, truth_seam) -> None:
    print(f"\n## Downscaling 4x (held-out {args.years} years, {args.members} members, Heun {args.steps} steps)\n")
    print("| method | RMSE [K] | CRPS [K] | high-k power ratio | spread/skill | station MAE [K] | coarse RMSE [K] "
          "| seconds | note |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['rmse']:.3f} | {r['crps']:.3f} | {r['power_ratio']:.3f} | "
              f"{r['spread_skill']:.2f} | {r['station_mae']:.3f} | {r['coarse_rmse']:.3f} | {r['seconds']:.1f} | "
              f"{r['note']} |")
    print(f"\nSeam ratio of member 0 over the 36 x 48 domain (16 x 16 windows, overlap 4): {seam:.3f} "
          f"(truth: {truth_seam:.3f})")


def figure(args, truth, coarse, ensemble, cubic, topography) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8), constrained_layout=True)
    t = 0
    vmin, vmax = float(truth.isel(time=t).min()), float(truth.isel(time=t).max())
    panels = [(coarse["tas"].isel(time=t), "coarse input (4x area mean)"),
              (cubic.isel(time=t), "bicubic"),
              (truth.isel(time=t), "truth (held out)"),
              (ensemble["tas"].isel(member=0, time=t), "diffusion member 0 (36 x 48, 16 x 16 windows)"),
              (ensemble["tas"].isel(time=t).mean("member"), "diffusion ensemble mean"),
              (topography["orog"], "topography source [m]")]
    blender = PatchDenoiser(lambda x, s, c=None: x, patch=PATCH, overlap=(4, 4))
    windows = list(blender.windows(truth.sizes["lat"], truth.sizes["lon"], align=FACTOR))
    for ax, (da, title) in zip(axes.ravel(), panels):
        kwargs = {} if "topography" in title else {"vmin": vmin, "vmax": vmax}
        da.plot(ax=ax, cmap="terrain" if "topography" in title else "RdYlBu_r", **kwargs)
        ax.set_title(title)
    lat, lon = truth["lat"].values, truth["lon"].values
    dy, dx = lat[1] - lat[0], lon[1] - lon[0]
    for i0, i1, j0, j1 in windows:
        axes[1, 0].add_patch(plt.Rectangle((lon[j0] - dx / 2, lat[i0] - dy / 2), (j1 - j0) * dx, (i1 - i0) * dy,
                                           fill=False, lw=0.6, ls="--", color="k"))
    fig.suptitle(f"4x downscaling of held-out annual-mean air temperature, year {truth['time'].values[t]}")
    path = Path(args.figure)
    fig.savefig(path, dpi=80)
    print(f"figure: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iris", required=True)
    parser.add_argument("--etopo", required=True)
    parser.add_argument("--out", default="/tmp/ds_bench")
    parser.add_argument("--train", action="store_true", help="train the diffusion and regression models")
    parser.add_argument("--train-regression", action="store_true", help="train the regression model only")
    parser.add_argument("--minutes", type=float, default=9.0)
    parser.add_argument("--regression-minutes", type=float, default=6.0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--years", type=int, default=10)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--coarse-error", type=float, default=0.1)
    parser.add_argument("--figure", default=str(ROOT / "benchmarks" / "downscaling_large_domain.png"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--skip-eval", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    fields, topography = _prep_module().north_america(args.iris, args.etopo)
    proxy = satellite_proxy(fields, seed=0)
    if args.train:
        train_models(args, fields, topography, proxy)
    if args.train or args.train_regression:
        train_regression_model(args, fields, topography)
    if not args.skip_eval:
        evaluate(args, fields, topography, proxy)


if __name__ == "__main__":
    main()
