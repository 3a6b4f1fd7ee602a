"""The Gaussian part of geodiff's hybrid prior on the real-data benchmark sets, solved exactly.

``geodiff.fit`` builds a hybrid prior: an exact Gaussian prior (the training period's anomalies mixed with a
stationary covariance and a uniform shift, the mix chosen on the validation period) plus a learned correction. This
script fits that prior on each training period of ``benchmarks/reconstruction_real.py`` (its cache from
``prepare``/``baselines``) with one training step of the network (the Gaussian part does not depend on it), and
computes the Gaussian part's exact posterior mean and standard deviation for every test field
and observation set: the limit that guided sampling with the hybrid prior reaches when its solve is exact (MMPS
with enough CG iterations; ``tests/training/test_fit.py`` checks the sampler against this posterior). Scores as in
``reconstruction_real.py`` (held-out cells, Gaussian CRPS, spread/skill, 90 % coverage), with ratios to its OI.

    python benchmarks/hybrid_gaussian_limit.py --cache CACHE [--sets ostia_sst,na_tas,glosea4_ts,woa_temp]
"""
import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr
from scipy.stats import norm

import geodiff

warnings.simplefilter("ignore")
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--cache", type=Path, required=True)
parser.add_argument("--sets", default="ostia_sst,na_tas,glosea4_ts,woa_temp")
args = parser.parse_args()
out = {}
for name in args.sets.split(","):
    meta = json.load(open(f"{args.cache}/{name}/meta.json")); var = meta["variable"]
    train = xr.open_dataset(f"{args.cache}/{name}/train.nc")
    train = train.drop_vars([c for c in train.coords if c not in train.dims])
    test = xr.open_dataset(f"{args.cache}/{name}/test.nc")[var]
    sp = meta["split"]
    t0 = time.time()
    bundle = geodiff.fit(train, variables=[var], steps=1, validate_every=1, base_channels=4, progress=False,
                         validation=sp["n_validation"] / sp["n_train"])
    fit_s = time.time() - t0
    rep = bundle.metadata["training"]["gaussian_prior"]
    cov = bundle.denoiser.covariance()
    mask = bundle.codec.mask.numpy()
    flat = np.flatnonzero(mask.reshape(-1))
    C_, H, W = mask.shape
    lat, lon = bundle.codec.lat, bundle.codec.lon
    levels = bundle.codec.levels(var) if bundle.codec.level_dim(var) else None
    oi = {r["coverage"]: r for r in json.load(open(f"{args.cache}/{name}/scores_baselines.json")) if r.get("method") == "optimal interpolation"}
    res = {}
    for cv in ("02", "05", "10"):
        obs = xr.open_dataset(f"{args.cache}/{name}/obs_{cv}.nc")
        sq, crps, var_sum, n, inside = 0.0, 0.0, 0.0, 0, 0
        t1 = time.time()
        for t in test.time.values:
            o = obs.isel(obs=np.flatnonzero(obs.time.values == t))
            mean_c, std_c = bundle.statistics(t)
            m = mean_c.reshape(-1)[flat]; s = std_c.reshape(-1)[flat]
            ch = np.zeros(o.sizes["obs"], int) if levels is None else np.array([int(np.flatnonzero(np.isclose(levels, d))[0]) for d in o.depth.values])
            j = np.array([int(np.flatnonzero(np.isclose(lat, a, atol=1e-3))[0]) for a in o.lat.values])
            i = np.array([int(np.flatnonzero(np.isclose(lon, b, atol=1e-3))[0]) for b in o.lon.values])
            cell = ch * H * W + j * W + i
            where = np.searchsorted(flat, cell)
            y = (o.value.values - m[where]) / s[where]
            r = (o.error_std.values.astype(float) / s[where]) ** 2
            K = cov[np.ix_(where, where)] + np.diag(r)
            G = np.linalg.solve(K, cov[where]).T
            z = G @ y
            pvar = np.clip(np.diag(cov) - np.einsum("ij,ji->i", G, cov[where]), 0, None)
            mean = m + s * z; sd = s * np.sqrt(pvar)
            truth = test.sel(time=t).values.reshape(-1)[flat]
            hidden = np.ones(flat.size, bool); hidden[where] = False
            e = (mean - truth)[hidden]; sdh = sd[hidden]
            sq += (e ** 2).sum(); var_sum += (sdh ** 2).sum(); n += hidden.sum()
            zz = e / sdh
            crps += (sdh * (zz * (2 * norm.cdf(zz) - 1) + 2 * norm.pdf(zz) - 1 / np.sqrt(np.pi))).sum()
            inside += (np.abs(zz) <= 1.645).sum()
        rmse = np.sqrt(sq / n); c = float(cv) / 100
        res[cv] = {"rmse": rmse, "crps": crps / n, "spread_skill": np.sqrt(var_sum / n) / rmse, "coverage90": inside / n,
                   "rmse_vs_oi": rmse / oi[c]["rmse"], "crps_vs_oi": (crps / n) / oi[c]["crps"],
                   "seconds_per_field": (time.time() - t1) / test.sizes["time"]}
        print(name, cv, {k: round(float(v), 3) for k, v in res[cv].items()}, flush=True)
    out[name] = {"alpha": rep["alpha"], "model": rep["model"], "fit_seconds": fit_s, "scores": res}
    print(name, "alpha", rep["alpha"], "offset", rep.get("offset"), "inflation", rep.get("inflation"), rep["model"], "fit s", round(fit_s, 1), flush=True)
(args.cache / "hybrid_gaussian_limit.json").write_text(json.dumps(out, indent=1, default=float))
