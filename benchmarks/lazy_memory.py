"""Lazy reconstruction: peak memory of a dask-backed 100-time series against a 10-time one, eager for contrast.

The observation table (40 observations per time) is written to a zarr store and opened with
:func:`geodiff.io.paths.open_dataset` (dask-backed), so :func:`geodiff.reconstruct` returns a lazy result; it is
written with ``.to_zarr()`` (one block of one time at a time). The prior is the untrained benchmark prior of
``batch_throughput.py`` (4 levels, 32 x 64, land): memory does not depend on the weights. Each run is a fresh
process; it reports the peak of Python/numpy allocations during reconstruct + write (``tracemalloc``) and the
growth of the peak RSS above the RSS before the call (``ru_maxrss``). The eager runs pass the table in memory and
write the same store. The lazy and eager stores are compared bit for bit.

Run: ``OMP_NUM_THREADS=1 python benchmarks/lazy_memory.py [--members 4] [--steps 2]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, when geodiff is not installed

import numpy as np  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402

import geodiff  # noqa: E402
from benchmarks.batch_throughput import _env, _rss_mib, make_bundle, make_job  # noqa: E402
from geodiff.io.paths import open_dataset  # noqa: E402


def child(args: argparse.Namespace) -> None:
    """Subprocess mode: reconstruct ``--times`` times lazily (or eagerly) into ``--store``; print a JSON report."""
    torch.set_num_threads(1)
    table = make_job(Path(args.bundle), args.times).inputs["observations"]
    source = Path(args.store).with_suffix(".observations.zarr")
    table.to_zarr(source, mode="w", consolidated=False)
    observations = open_dataset(source) if args.mode == "lazy" else table
    model = geodiff.load(args.bundle)
    start_rss = _rss_mib()
    tracemalloc.start()
    t0 = time.perf_counter()
    result = geodiff.reconstruct(model, observations, members=args.members, steps=args.steps, seed=0,
                                 max_normalized=None, progress=False)
    lazy = result["thetao"].chunks is not None
    result.to_zarr(args.store, mode="w", consolidated=False)
    seconds = time.perf_counter() - t0
    _, traced_peak = tracemalloc.get_traced_memory()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"lazy_result": lazy, "traced_peak_mib": traced_peak / 2**20, "rss_growth_mib": peak - start_rss,
                      "peak_rss_mib": peak, "seconds": seconds}))


def run(bundle: Path, store: Path, times: int, mode: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", "--bundle", str(bundle), "--store", str(store), "--times",
           str(times), "--mode", mode, "--members", str(args.members), "--steps", str(args.steps)]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bundle"), parser.add_argument("--store")
    parser.add_argument("--times", type=int, default=10)
    parser.add_argument("--mode", choices=["lazy", "eager"], default="lazy")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        make_bundle(work / "bundle")
        reports = {(mode, times): run(work / "bundle", work / f"{mode}-{times}.zarr", times, mode, args)
                   for mode in ("lazy", "eager") for times in (10, 100)}
        same = all(np.array_equal(*(xr.open_zarr(work / f"{mode}-{t}.zarr", consolidated=False)["thetao"].values
                                    for mode in ("lazy", "eager")), equal_nan=True) for t in (10, 100))
    print(f"members {args.members}, Heun {args.steps} steps, 4 x 32 x 64 grid, one time per block\n")
    print("| mode | times | result lazy | traced peak (MiB) | RSS growth (MiB) | peak RSS (MiB) | seconds |")
    print("|---|---|---|---|---|---|---|")
    for (mode, times), r in reports.items():
        print(f"| {mode} | {times} | {r['lazy_result']} | {r['traced_peak_mib']:.1f} | {r['rss_growth_mib']:.0f} | "
              f"{r['peak_rss_mib']:.0f} | {r['seconds']:.1f} |")
    for mode in ("lazy", "eager"):
        traced = reports[(mode, 100)]["traced_peak_mib"] / reports[(mode, 10)]["traced_peak_mib"]
        rss = reports[(mode, 100)]["peak_rss_mib"] / reports[(mode, 10)]["peak_rss_mib"]
        print(f"\n{mode}: 100 vs 10 times: traced peak x{traced:.2f}, peak RSS x{rss:.2f}"
              + (f" ({'within' if max(traced, rss) <= 1.5 else 'NOT within'} 1.5x)" if mode == "lazy" else ""))
    print(f"\nlazy and eager stores bitwise equal: {same}")


if __name__ == "__main__":
    main()
