"""Data-loading share of a training step when a prior trains from a zarr store, in one process and under torchrun.

The series streams from the store one sample at a time, as :func:`geodiff.fit` does for a series larger than its
``max_memory`` (:class:`geodiff.training.fit.FieldStream`: read, anomaly-normalise, encode); the batches go
through the training loop of :func:`geodiff.train`, which reports the time it waited for them
(``TrainResult.data_seconds``) within the time of its steps (``seconds``).

Data: a daily series of ``--times`` fields on the Levitus 2-degree global grid, top 8 levels (8 x 90 x 180, 35 %
land; ``benchmarks/levitus.py``): the climatology plus anomalies smooth in space, written to a zarr store in
chunks of 8 times. Network and crops: :func:`geodiff.training.fit.default_architecture` (UNet base 32, 3
halvings, 64 x 64 crops), global batch 8. Runs: one process, then ``torchrun --nproc_per_node=2`` (gloo, 4 samples
per rank), each ``OMP_NUM_THREADS=1``. ``python benchmarks/training_io.py`` (about 3 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402

LEVELS, CHUNK = 8, 8


def write_store(path: Path, times: int) -> None:
    from scipy.ndimage import gaussian_filter

    from levitus import open_levitus

    clim = open_levitus(2).thetao.isel(time=0, depth=slice(0, LEVELS)).values  # [D, H, W]
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(times, LEVELS, *clim.shape[1:])).astype("float32")
    anomalies = gaussian_filter(noise, sigma=(0, 0, 3, 3), mode=("nearest", "nearest", "nearest", "wrap")) * 5.0
    levitus = open_levitus(2).isel(depth=slice(0, LEVELS))
    ds = xr.Dataset({"thetao": (("time", "depth", "lat", "lon"), (clim[None] + anomalies).astype("float32"),
                                levitus.thetao.attrs)},
                    coords={"time": pd.date_range("2001-01-01", periods=times, freq="D"), "depth": levitus.depth,
                            "lat": levitus.lat, "lon": levitus.lon})
    ds.chunk({"time": CHUNK}).to_zarr(path, mode="w")


def child(store: Path, steps: int, batch: int, out: Path | None) -> None:
    import torch

    import geodiff
    from geodiff.backbones.unet import UNet
    from geodiff.diffusion.denoiser import Denoiser
    from geodiff.io import Codec
    from geodiff.io.anomaly import AnomalyNormalizer
    from geodiff.training.fit import FieldStream, default_architecture

    torch.set_num_threads(1)
    ds = xr.open_zarr(store)
    normalizer = AnomalyNormalizer.fit(ds, climatology="none")
    codec = Codec.from_dataset(ds.isel(time=[0]))
    stream = FieldStream(ds, codec, normalizer, range(ds.sizes["time"]))
    arch = default_architecture(codec.shape)
    patch = tuple(arch.pop("patch_size"))
    torch.manual_seed(0)
    denoiser = Denoiser(UNet(**arch), sigma_data=1.0)
    result = geodiff.train(denoiser, stream, mask=codec.mask, steps=steps, batch_size=batch, patch_size=patch,
                           seed=0, progress=False, ema_decay=0.999)
    rank = int(os.environ.get("RANK", 0))
    record = {"rank": rank, "world_size": int(os.environ.get("WORLD_SIZE", 1)), "steps": steps,
              "seconds": result.seconds, "data_seconds": result.data_seconds,
              "share": result.data_seconds / result.seconds}
    if out is not None:
        Path(f"{out}.{rank}").write_text(json.dumps(record))


def read_times(store: Path, batch: int, rounds: int = 5) -> tuple[float, float]:
    """Seconds per sample reading ``batch`` random samples one at a time and as one batch (``__getitems__``)."""
    from geodiff.io import Codec
    from geodiff.io.anomaly import AnomalyNormalizer
    from geodiff.training.fit import FieldStream

    ds = xr.open_zarr(store)
    stream = FieldStream(ds, Codec.from_dataset(ds.isel(time=[0])), AnomalyNormalizer.fit(ds, climatology="none"),
                         range(ds.sizes["time"]))
    rng = np.random.default_rng(0)
    single = batched = 0.0
    for _ in range(rounds):
        items = rng.choice(len(stream), batch, replace=False).tolist()
        start = time.perf_counter()
        [stream[i] for i in items]
        single += time.perf_counter() - start
        start = time.perf_counter()
        stream.__getitems__(items)
        batched += time.perf_counter() - start
    return single / (rounds * batch), batched / (rounds * batch)


def launch(store: Path, steps: int, batch: int, processes: int, out: Path) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                          *filter(None, [os.environ.get("PYTHONPATH")])])}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    script = [__file__, "--child", "--store", str(store), "--steps", str(steps), "--batch", str(batch), "--out",
              str(out)]
    if processes == 1:
        command = [sys.executable, *script]
    else:
        from tests.training.test_training_ddp import free_port

        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                   f"--master_port={free_port()}", *script]
    subprocess.run(command, env=env, check=True)
    return [json.loads(Path(f"{out}.{rank}").read_text()) for rank in range(processes)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--times", type=int, default=400)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--store", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.store, args.steps, args.batch, args.out)
        return
    with tempfile.TemporaryDirectory(prefix="geodiff-training-io-") as folder:
        store = Path(folder) / "series.zarr"
        write_store(store, args.times)
        print(f"store: {args.times} times of {LEVELS} x 90 x 180, chunks of {CHUNK} times; "
              f"load average {os.getloadavg()}", flush=True)
        single, batched = read_times(store, args.batch)
        print(f"reading a sample: {single * 1000:.1f} ms one at a time, {batched * 1000:.1f} ms in batches of "
              f"{args.batch}")
        print("\n| processes | steps | seconds per step | loading per step | loading share | load average |")
        print("|---|---|---|---|---|---|")
        for processes in (1, 2):
            records = launch(store, args.steps, args.batch, processes, Path(folder) / f"run{processes}")
            for r in records:
                print(f"| {processes} (rank {r['rank']}) | {r['steps']} | {r['seconds'] / r['steps']:.3f} s | "
                      f"{r['data_seconds'] / r['steps'] * 1000:.1f} ms | {100 * r['share']:.1f} % | "
                      f"{os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
