"""What land costs: a reconstruction of a land-heavy real grid, whole domain against tiles that skip all-land tiles.

Grids: the deep levels of the Levitus 1-degree global climatology (``benchmarks/levitus.py``): the 5000 m level
alone (11 % ocean) and the 3000, 4000 and 5000 m levels together (45 % of the cells are ocean on at least one
of them). Prior: an untrained mask-aware UNet (base 32, 3 halvings; cost, not accuracy). Each case runs
``geodiff.reconstruct`` (MMPS, 2 members, Heun 2 steps = 3 network evaluations per member, 5 % of the ocean cells
observed) in one call over the whole domain and, for each ``--patches`` size ``p``, in ``p x p`` tiles (overlap
``p / 4``) computing every tile, and skipping the tiles without an ocean cell (the default), interleaved over
``--repeats`` rounds (median seconds). Skipping does not change the result (checked here: the two tiled
ensembles are identical). One thread. ``python benchmarks/land_tiles.py`` (about 10 minutes on a quiet machine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402

from levitus import open_levitus  # noqa: E402



def make_bundle(ds: xr.Dataset):
    from geodiff.backbones.unet import UNet
    from geodiff.diffusion.denoiser import Denoiser
    from geodiff.io import Codec, ModelBundle, Normalizer

    torch.manual_seed(0)
    codec = Codec.from_dataset(ds)
    net = UNet(in_channels=ds.sizes["depth"], base_channels=32, channel_mults=(1, 2, 2, 2), num_res_blocks=1,
               attention_levels=(), mid_attention=True, mask_aware=True)
    torch.nn.init.normal_(net.output[-1].weight, std=1e-3)  # untrained, but not a fresh UNet's zero output layer
    denoiser = Denoiser(net, sigma_data=1.0)
    denoiser.set_mask(codec.mask)
    return ModelBundle(denoiser.eval(), codec, Normalizer.fit(ds), {"name": "untrained (cost only)"})


def observations(ds: xr.Dataset, fraction: float, seed: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    values = ds.thetao.values[0]
    k, i, j = np.nonzero(np.isfinite(values))
    pick = rng.choice(k.size, max(1, int(fraction * k.size)), replace=False)
    k, i, j = k[pick], i[pick], j[pick]
    return xr.Dataset({"value": ("obs", values[k, i, j]), "error_std": ("obs", np.full(k.size, 0.1))},
                      coords={"lat": ("obs", ds.lat.values[i]), "lon": ("obs", ds.lon.values[j]),
                              "depth": ("obs", ds.depth.values[k]),
                              "time": ("obs", np.repeat(ds.time.values[:1], k.size))})


def run_case(name: str, ds: xr.Dataset, repeats: int, patches: list[int]) -> dict:
    import geodiff
    import geodiff.pipelines.reconstruct as module

    bundle = make_bundle(ds)
    obs = observations(ds, 0.05)
    options = dict(members=2, steps=2, seed=0, progress=False, max_normalized=None, runaway_factor=None,
                   on_runaway="keep")
    patched = module._patched

    def every_window(*args):
        denoiser = patched(*args)
        denoiser.skip_masked = False
        return denoiser

    def tiled(size: int, skip: bool):
        module._patched = patched if skip else every_window
        try:
            return geodiff.reconstruct(bundle, obs, patch=(size, size), overlap=(size // 4, size // 4), **options)
        finally:
            module._patched = patched

    runs = {"whole": lambda: geodiff.reconstruct(bundle, obs, **options)}
    for size in patches:
        runs[(size, False)] = lambda size=size: tiled(size, False)
        runs[(size, True)] = lambda size=size: tiled(size, True)
    seconds = {key: [] for key in runs}
    outputs = {}
    for _ in range(repeats):
        for key, fn in runs.items():
            start = time.perf_counter()
            outputs[key] = fn()
            seconds[key].append(time.perf_counter() - start)
    ocean = np.isfinite(ds.thetao.values[0])
    rows = []
    for size in patches:
        tiles = json.loads(outputs[(size, True)].attrs["geodiff_guidance"])["patch"]
        rows.append({"case": name, "levels": int(ds.sizes["depth"]), "ocean_cells": float(ocean.mean()),
                     "ocean_columns": float(ocean.any(axis=0).mean()), "patch": size, "tiles": tiles,
                     "whole": float(np.median(seconds["whole"])), "every": float(np.median(seconds[(size, False)])),
                     "skipped": float(np.median(seconds[(size, True)])),
                     "identical": bool(outputs[(size, False)].thetao.equals(outputs[(size, True)].thetao))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--patches", type=int, nargs="+", default=[16, 32, 64], help="tile sizes (cells)")
    parser.add_argument("--cases", nargs="+", default=["5000", "3000-5000"], choices=["5000", "3000-5000"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    levitus = open_levitus()
    cases = {"5000": ("5000 m", levitus.sel(depth=[5000.0])),
             "3000-5000": ("3000-5000 m", levitus.sel(depth=[3000.0, 4000.0, 5000.0]))}
    rows = [row for key in args.cases for row in run_case(*cases[key], args.repeats, args.patches)]
    print("\n| grid (180 x 360) | ocean cells | ocean columns | tile (overlap) | tiles computed | whole domain s | "
          "every tile s | land tiles skipped s | skipped vs whole | identical |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} ({r['levels']} levels) | {100 * r['ocean_cells']:.0f} % | {100 * r['ocean_columns']:.0f} % "
              f"| {r['patch']} ({r['patch'] // 4}) | {r['tiles']['windows']} of {r['tiles']['of']} | {r['whole']:.1f} | "
              f"{r['every']:.1f} | {r['skipped']:.1f} | {r['skipped'] / r['whole']:.2f}x | {r['identical']} |")
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
