"""Small pieces shared by the batch and CLI tests: a synthetic ocean with an all-land block, a tiny trained
model bundle, observation tables over many times."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

import geodiff
from geodiff.batch import PipelineJob
from geodiff.backbones.unet import UNet
from geodiff.diffusion.denoiser import Denoiser
from geodiff.io import Codec, ModelBundle, Normalizer
from geodiff.testing.datasets import DEPTHS, LAND_LON, LON, VARIABLE, synthetic_ocean

def tiny_bundle(folder: Path, steps: int = 3) -> Path:
    """Train a tiny mask-aware UNet prior for a few steps and save its bundle to ``folder``."""
    torch.manual_seed(0)
    ds = synthetic_ocean(8)
    normalizer = Normalizer.fit(ds)
    data, mask = Codec.from_dataset(ds).encode(normalizer.normalize(ds))
    denoiser = Denoiser(UNet(in_channels=data.shape[1], base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                             attention_levels=()), sigma_data=1.0)
    result = geodiff.train(denoiser, data, mask=mask, steps=steps, batch_size=4, seed=0, progress=False)
    codec = Codec.from_dataset(ds.isel(time=[0]))
    result.ema.set_mask(codec.mask)
    ModelBundle(result.ema, codec, normalizer, metadata={"name": "tiny test prior"}).save(folder)
    return folder


def observations(times: int, per_time: int = 12, seed: int = 1) -> xr.Dataset:
    """An observation table with ``per_time`` ocean observations at each of ``times`` daily times."""
    rng = np.random.default_rng(seed)
    n = times * per_time
    stamps = np.repeat(pd.date_range("2001-01-01", periods=times, freq="D").values, per_time)
    return xr.Dataset(
        {"value": ("obs", rng.normal(18.0, 1.0, n)), "error_std": ("obs", np.full(n, 0.2))},
        coords={"lat": ("obs", rng.uniform(-14.0, 14.0, n)), "lon": ("obs", rng.uniform(LON[LAND_LON] + 0.5, 30.5, n)),
                "depth": ("obs", rng.choice(DEPTHS, n)), "time": ("obs", stamps)},
    )


TIMES = 12  # time steps of the test batch
RUN = dict(time_chunk=1, chunks={"lon": LAND_LON}, progress=False)  # lon chunk 0 is all land


def reconstruct_job(bundle: str | Path, times: int = TIMES) -> PipelineJob:
    """The test batch: reconstruct ``times`` daily fields, 2 members, 4 Heun steps."""
    return PipelineJob("reconstruct", str(bundle), {"observations": observations(times)}, members=2, seed=3,
                       options={"steps": 4, "max_normalized": None})  # untrained model


class FlakyJob:
    """A toy job (value = time index + member) whose first attempt at every region fails (a marker file per
    region in ``folder`` records the attempt): stands in for a worker dying or a transient I/O error."""

    def __init__(self, folder: str, times: int = 6):
        self.folder, self.n = folder, times

    def describe(self):
        return {"job": "flaky", "seed": 0}

    def times(self):
        return xr.Variable("time", np.arange(self.n))

    def sample(self):
        return self._values(np.arange(1))

    def _values(self, times):
        data = (times[None, :, None] + np.arange(2)[:, None, None] + np.zeros((1, 1, 3))).astype("float32")
        return xr.Dataset({"v": (("member", "time", "x"), data)},
                          coords={"member": [0, 1], "time": times, "x": [0.0, 1.0, 2.0]})

    def run(self, times):
        marker = Path(self.folder) / f"attempt-{int(times[0])}"
        if not marker.exists():
            marker.write_text("failed once")
            raise OSError(f"transient failure at time {int(times[0])}")
        return self._values(np.asarray(times))
