"""ReconMOST-size reconstruction on CPU: 42 depth levels on the 1-degree global grid, 16 members, 5 % of the cells.

The prior is an untrained mask-aware UNet with ReconMOST's field shape (42 x 180 x 360, periodic in longitude,
base 32 channels, 3 halvings, attention at the bottom; weights drawn at random, the output layer too, so every
layer costs what a trained one does): what is measured is cost, not accuracy. The land mask and the observed
values come from the Levitus 1-degree climatology (``benchmarks/levitus.py``; each of the 42 levels takes the
nearest of Levitus's 20 depths). 5 % of the ocean cells of every level are observed (0.1 degC noise) and the
field is reconstructed with ``geodiff.reconstruct`` (MMPS, Heun): members in chunks of ``--batch`` and gradient
checkpointing in the network, so the graph MMPS differentiates through is recomputed block by block instead of
held for a whole chunk. Runs in a fresh process so that the peak resident memory (``ru_maxrss``) is this job's.

``python benchmarks/reconmost_scale.py`` (one thread; ~15-30 minutes on a shared 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402

from levitus import open_levitus  # noqa: E402

LEVELS = 42
DEPTHS = np.round(np.geomspace(5.0, 5000.0, LEVELS), 1)


def reconmost_grid() -> xr.Dataset:
    """Levitus temperature on 42 levels (nearest Levitus depth), ``(time=1, depth=42, lat=180, lon=360)``."""
    levitus = open_levitus()
    nearest = np.abs(levitus.depth.values[None, :] - DEPTHS[:, None]).argmin(axis=1)
    ds = levitus.isel(depth=nearest).assign_coords(depth=("depth", DEPTHS, {"units": "m", "positive": "down"}))
    return ds


def make_bundle(ds: xr.Dataset, base_channels: int, checkpointing: bool):
    from geodiff.backbones.unet import UNet
    from geodiff.diffusion.denoiser import Denoiser
    from geodiff.io import Codec, ModelBundle, Normalizer

    torch.manual_seed(0)
    codec = Codec.from_dataset(ds)
    net = UNet(in_channels=LEVELS, base_channels=base_channels, channel_mults=(1, 2, 2, 2), num_res_blocks=1,
               attention_levels=(), mid_attention=True, mask_aware=True, periodic_lon=True,
               gradient_checkpointing=checkpointing)
    torch.nn.init.normal_(net.output[-1].weight, std=1e-3)  # untrained, but not the zero layer of a fresh UNet
    denoiser = Denoiser(net, sigma_data=1.0)
    denoiser.set_mask(codec.mask)
    return ModelBundle(denoiser.eval(), codec, Normalizer.fit(ds), {"name": "ReconMOST-size prior (untrained)"})


def observations(ds: xr.Dataset, fraction: float, seed: int) -> xr.Dataset:
    """``fraction`` of the ocean cells of every level, at cell centres, Levitus value + 0.1 degC noise."""
    rng = np.random.default_rng(seed)
    values = ds.thetao.values[0]  # [D, H, W]
    k, i, j = np.nonzero(np.isfinite(values))
    chosen = rng.choice(k.size, int(round(fraction * k.size)), replace=False)
    k, i, j = k[chosen], i[chosen], j[chosen]
    return xr.Dataset(
        {"value": ("obs", values[k, i, j] + rng.normal(0, 0.1, k.size)), "error_std": ("obs", np.full(k.size, 0.1))},
        coords={"lat": ("obs", ds.lat.values[i]), "lon": ("obs", ds.lon.values[j]), "depth": ("obs", DEPTHS[k]),
                "time": ("obs", np.repeat(ds.time.values[:1], k.size)), "variable": ("obs", ["thetao"] * k.size)})


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def run(args: argparse.Namespace) -> dict:
    import geodiff

    torch.set_num_threads(args.threads)
    ds = reconmost_grid()
    bundle = make_bundle(ds, args.base, not args.no_checkpointing)
    obs = observations(ds, args.fraction, args.seed)
    ocean = int(np.isfinite(ds.thetao.values).sum())
    start_rss = rss_mib()
    started = time.perf_counter()
    out = geodiff.reconstruct(bundle, obs, members=args.members, batch_size=args.batch, steps=args.steps,
                              guidance="mmps", seed=args.seed, progress=False, max_normalized=None,
                              runaway_factor=None, on_runaway="keep")
    seconds = time.perf_counter() - started
    nfe = json.loads(out.attrs["geodiff_guidance"])["nfe_per_member"]
    return {
        "grid": list(out.thetao.shape[1:]), "ocean_cells": ocean, "observations": int(obs.sizes["obs"]),
        "members": args.members, "batch": args.batch, "steps": args.steps, "nfe_per_member": nfe,
        "checkpointing": not args.no_checkpointing, "base_channels": args.base,
        "parameters_M": round(sum(p.numel() for p in bundle.denoiser.parameters()) / 1e6, 3),
        "seconds": round(seconds, 1), "seconds_per_member": round(seconds / args.members, 1),
        "seconds_per_member_nfe": round(seconds / args.members / nfe, 2),
        "seconds_per_member_at_47_nfe": round(seconds / args.members / nfe * 47, 1),
        "rss_before_sampling_mib": round(start_rss), "peak_rss_mib": round(resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss / 1024),
        "finite": bool(np.isfinite(out.thetao.values[:, 0][np.isfinite(ds.thetao.values[0])[None].repeat(
            args.members, 0)]).all()),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "threads": args.threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2, help="members sampled at once")
    parser.add_argument("--steps", type=int, default=2, help="Heun steps (2 * steps - 1 network evaluations)")
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--base", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-checkpointing", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}", flush=True)
    print(json.dumps(run(args), indent=1), flush=True)


if __name__ == "__main__":
    main()
