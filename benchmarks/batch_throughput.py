"""Batch jobs at scale: resume after kill -9, peak memory vs series length, throughput with dask workers.

A small but complete problem: a mask-aware UNet prior (base 16 channels, untrained weights: speed and memory do
not depend on the weights) on a 4-level 32x64 grid with land, MMPS guidance, Heun 4 steps, 2 members, 40
observations per time, one time per region (zarr chunk), lon chunks of 16 (so some chunks are all land).

Sections (all by default):

- ``resume``: a 100-step batch killed twice with SIGKILL (in a subprocess, at random moments after 20 % and 55 % of
  the regions are recorded) and resumed, compared with ``xr.testing.assert_identical`` to an uninterrupted run.
- ``memory``: peak RSS (``ru_maxrss``) of a fresh process running a batch of 10 and of 100 time steps; also the
  growth of the peak above the RSS after start-up (imports, model loaded, template written).
- ``throughput``: regions per second in this process (serial), and on a dask ``LocalCluster`` with 1 and 2 worker
  processes (one thread each), same job; ratios against the serial run of the same session, with the load average
  (1, 5, 15 min) at the end of each run: other processes on the machine lower every ratio, so read them only next
  to a load below the number of cores.
- ``allocator``: seconds per region in this process and on one dask worker, with the allocator settings a dask
  nanny gives its workers and with those geodiff sets (:mod:`geodiff.batch.workers`), interleaved round by round:
  the comparison holds even on a busy machine.

Run: ``OMP_NUM_THREADS=1 python benchmarks/batch_throughput.py [--sections resume memory throughput]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, when geodiff is not installed

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402

from geodiff.backbones.unet import UNet
from geodiff.batch import PipelineJob, finalise, run_batch, status
from geodiff.diffusion.denoiser import Denoiser
from geodiff.io import Codec, ModelBundle, Normalizer

LEVELS, NLAT, NLON = 4, 32, 64
RUN = dict(time_chunk=1, chunks={"lon": 16}, progress=False)


def make_bundle(folder: Path) -> None:
    """An untrained mask-aware UNet prior on a synthetic 4-level grid with land (a continent over 20 % of lon)."""
    torch.manual_seed(0)
    lat, lon = np.linspace(-60, 60, NLAT), np.linspace(0, 357.5, NLON)
    values = 15.0 + np.random.default_rng(0).normal(0, 1, (2, LEVELS, NLAT, NLON)).astype("float32")
    values[..., : NLON // 5] = np.nan
    ds = xr.Dataset({"thetao": (("time", "depth", "lat", "lon"), values, {"units": "degC"})},
                    coords={"time": pd.date_range("2000-01-01", periods=2), "depth": [0.0, 10, 50, 100],
                            "lat": lat, "lon": lon})
    normalizer = Normalizer.fit(ds)
    codec = Codec.from_dataset(ds.isel(time=[0]))
    denoiser = Denoiser(UNet(in_channels=LEVELS, base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                             attention_levels=(), mid_attention=False, mask_aware=True), sigma_data=1.0)
    denoiser.set_mask(codec.mask)
    ModelBundle(denoiser, codec, normalizer, {"name": "benchmark prior (untrained)"}).save(folder, overwrite=True)


def make_job(bundle: Path, times: int) -> PipelineJob:
    rng = np.random.default_rng(1)
    n = 40 * times
    obs = xr.Dataset({"value": ("obs", rng.normal(15, 1, n)), "error_std": ("obs", np.full(n, 0.2))},
                     coords={"lat": ("obs", rng.uniform(-55, 55, n)), "lon": ("obs", rng.uniform(80, 350, n)),
                             "depth": ("obs", rng.choice([0.0, 10, 50, 100], n)),
                             "time": ("obs", np.repeat(pd.date_range("2001-01-01", periods=times).values, 40))})
    options = {"steps": 4, "max_normalized": None}  # an untrained model leaves the training range in 4 steps
    return PipelineJob("reconstruct", str(bundle), {"observations": obs}, members=2, seed=0, options=options)


def child(args: argparse.Namespace) -> None:
    """Subprocess mode: run one batch; with --report, print peak RSS (MiB) as JSON."""
    torch.set_num_threads(1)
    job = make_job(Path(args.bundle), args.times)
    job.sample()  # model loaded
    start_rss = _rss_mib()
    run_batch(job, args.store, **RUN)
    if args.report:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"peak_rss_mib": peak, "rss_after_startup_mib": start_rss}))


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024


def _child_cmd(bundle: Path, store: Path, times: int, report: bool = False) -> list[str]:
    cmd = [sys.executable, __file__, "--child", "--bundle", str(bundle), "--store", str(store), "--times", str(times)]
    return cmd + (["--report"] if report else [])


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": root}


def _kill_after(bundle: Path, store: Path, times: int, fraction: float, rng: random.Random) -> int:
    process = subprocess.Popen(_child_cmd(bundle, store, times), env=_env(), stderr=subprocess.PIPE)
    target = int(fraction * times)
    while process.poll() is None:
        if (store / "geodiff_ledger").exists() and status(store).done >= target:
            time.sleep(rng.uniform(0.0, 0.3))  # some random moment after the target: mid-region or mid-write
            break
        time.sleep(0.01)
    if process.poll() is not None:
        raise RuntimeError(f"the batch ended before it was killed: {process.stderr.read().decode()[-2000:]}")
    process.send_signal(signal.SIGKILL)
    process.wait()
    return status(store).done


def _load() -> str:
    """The load average over 1, 5 and 15 minutes: other processes competing for the cores lower every ratio."""
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def _without_history(path: Path) -> xr.Dataset:
    ds = xr.open_zarr(path, consolidated=True).load()
    history = ds.attrs.pop("history")
    ds.attrs["history_without_stamps"] = [re.sub(r"^\S+Z ", "", line) for line in history.splitlines()]
    return ds


def resume_section(bundle: Path, work: Path, times: int) -> list[str]:
    rng = random.Random(0)
    reference, resumed = work / "uninterrupted.zarr", work / "resumed.zarr"
    t0 = time.perf_counter()
    run_batch(make_job(bundle, times), reference, **RUN)
    finalise(reference)
    seconds = time.perf_counter() - t0
    first = _kill_after(bundle, resumed, times, 0.2, rng)
    second = _kill_after(bundle, resumed, times, 0.55, rng)
    run_batch(make_job(bundle, times), resumed, **RUN)
    finalise(resumed)
    try:
        xr.testing.assert_identical(_without_history(reference), _without_history(resumed))
        verdict = "identical (xr.testing.assert_identical; history equal up to time stamps)"
    except AssertionError as err:
        verdict = f"DIFFERENT: {str(err)[:300]}"
    return [f"| {times}-step batch, uninterrupted | {seconds:.1f} s | - |",
            f"| killed (SIGKILL) after | {first}/{times} regions | then {second}/{times} regions |",
            f"| resumed store vs uninterrupted | {verdict} | |"]


def memory_section(bundle: Path, work: Path) -> list[str]:
    rows, peaks = [], {}
    for times in (10, 100):
        store = work / f"memory-{times}.zarr"
        shutil.rmtree(store, ignore_errors=True)
        done = subprocess.run(_child_cmd(bundle, store, times, report=True), env=_env(), capture_output=True,
                              text=True, check=True)
        report = json.loads(done.stdout.strip().splitlines()[-1])
        peaks[times] = report
        rows.append(f"| {times} | {report['peak_rss_mib']:.0f} MiB | {report['rss_after_startup_mib']:.0f} MiB | "
                    f"{report['peak_rss_mib'] - report['rss_after_startup_mib']:.0f} MiB |")
    ratio = peaks[100]["peak_rss_mib"] / peaks[10]["peak_rss_mib"]
    rows.append(f"| 100 vs 10 | ratio {ratio:.3f} ({'within' if ratio <= 1.2 else 'NOT within'} 20 %) | | |")
    return rows


def throughput_section(bundle: Path, work: Path, times: int) -> list[str]:
    from distributed import Client, LocalCluster

    rows, rates, loads = [], {}, {}
    store = work / "serial.zarr"
    job = make_job(bundle, times)
    job.sample()  # load the model before timing
    t0 = time.perf_counter()
    run_batch(job, store, **RUN)
    rates["serial"] = times / (time.perf_counter() - t0)
    loads["serial"] = _load()
    finalise(store)
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            client.run(lambda: torch.set_num_threads(1))
            store = work / f"workers-{workers}.zarr"
            warm = work / f"warm-{workers}.zarr"  # workers import torch and load the model once
            run_batch(make_job(bundle, 2 * workers), warm, client=client, **RUN)
            t0 = time.perf_counter()
            run_batch(make_job(bundle, times), store, client=client, **RUN)
            rates[f"{workers} worker(s)"] = times / (time.perf_counter() - t0)
            loads[f"{workers} worker(s)"] = _load()
            print(f"  {workers} worker(s): {rates[f'{workers} worker(s)']:.2f} regions/s", flush=True)
        finalise(store)
        xr.testing.assert_identical(_without_history(store), _without_history(work / "serial.zarr"))
    for name, rate in rates.items():
        rows.append(f"| {name} | {rate:.2f} regions/s | {rate / rates['serial']:.2f} | "
                    f"{rate / rates.get('1 worker(s)', rate):.2f} | {loads[name]} |")
    return rows


def _seconds_per_region(job: PipelineJob, times: np.ndarray, repeats: int) -> list[float]:
    """Seconds of ``job.run`` for each of the first ``repeats`` times, one time each (in the calling process)."""
    seconds = []
    for k in range(repeats):
        t0 = time.perf_counter()
        job.run(times[k:k + 1])
        seconds.append(time.perf_counter() - t0)
    return seconds


def _dask_allocator_settings() -> None:
    """The allocator a dask nanny gives its workers (``MALLOC_TRIM_THRESHOLD_=65536``: fixed 128 KiB mmap threshold,
    64 KiB trim threshold), set again in a running process."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 65536)  # M_TRIM_THRESHOLD


def allocator_section(bundle: Path, rounds: int = 3, repeats: int = 2) -> list[str]:
    """Seconds per region in this process and on one dask worker with dask's allocator settings and with
    geodiff's (:mod:`geodiff.batch.workers`), interleaved round by round so that the machine's load hits all alike."""
    from distributed import Client, LocalCluster

    from geodiff.batch.workers import tune_allocator

    job = make_job(bundle, repeats)
    times = np.asarray(job.times().values)
    job.sample()
    results: dict[str, list[float]] = {"this process (serial loop)": [], "1 worker, dask's allocator settings": [],
                                       "1 worker, geodiff's allocator settings": []}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.run(lambda: torch.set_num_threads(1))
        shared = client.scatter(job, broadcast=True, hash=False)
        client.submit(_seconds_per_region, shared, times, 1, pure=False).result()  # model loaded, warm
        for _ in range(rounds):
            results["this process (serial loop)"] += _seconds_per_region(job, times, repeats)
            for name, setting in (("1 worker, dask's allocator settings", _dask_allocator_settings),
                                  ("1 worker, geodiff's allocator settings", tune_allocator)):
                client.run(setting)
                results[name] += client.submit(_seconds_per_region, shared, times, repeats, pure=False).result()
    serial = float(np.median(results["this process (serial loop)"]))
    return [f"| {name} | {np.median(values):.3f} s | {serial / np.median(values):.2f} | {len(values)} | {_load()} |"
            for name, values in results.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=["resume", "memory", "throughput", "allocator"])
    parser.add_argument("--times", type=int, default=100, help="time steps of the resume benchmark")
    parser.add_argument("--throughput-times", type=int, default=40)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--report", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="geodiff-batch-bench-"))
    try:
        bundle = work / "bundle"
        make_bundle(bundle)
        print(f"grid {LEVELS}x{NLAT}x{NLON}, UNet base 16, MMPS + Heun 4 steps, 2 members, 1 time per region; "
              f"cores: {os.cpu_count()}, load average {_load()} (1 / 5 / 15 min)")
        if "resume" in args.sections:
            print("\n| resume | | |\n|---|---|---|")
            print("\n".join(resume_section(bundle, work, args.times)))
        if "memory" in args.sections:
            print("\n| time steps | peak RSS | RSS after start-up | growth |\n|---|---|---|---|")
            print("\n".join(memory_section(bundle, work)))
        if "throughput" in args.sections:
            print(f"\n| {args.throughput_times} regions | throughput | vs serial | vs 1 worker "
                  "| load average (1 / 5 / 15 min) |\n|---|---|---|---|---|")
            print("\n".join(throughput_section(bundle, work, args.throughput_times)))
        if "allocator" in args.sections:
            print("\n| one region (interleaved rounds) | median seconds | speed vs serial | regions timed "
                  "| load average (1 / 5 / 15 min) |\n|---|---|---|---|---|")
            print("\n".join(allocator_section(bundle)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
