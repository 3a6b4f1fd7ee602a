"""Small inputs for the reliability tests: a canonical ocean dataset, a tiny model bundle, observation tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import xarray as xr

from geodiff.backbones.unet import UNet
from geodiff.diffusion.denoiser import Denoiser
from geodiff.io import Codec, ModelBundle, Normalizer

LAT = np.linspace(-14.0, 14.0, 8)
LON = np.linspace(-170.0, 130.0, 16)  # 20 degree spacing, periodic
DEPTH = np.array([5.0, 50.0, 200.0])
TIMES = np.array(["2001-01-15", "2001-02-15", "2001-03-15"], dtype="datetime64[ns]")


def land() -> np.ndarray:
    """Land ``[depth, lat, lon]``: a continent in the west, a sea floor rising in the east."""
    mask = np.zeros((DEPTH.size, LAT.size, LON.size), bool)
    mask[:, 2:5, 1:4] = True
    mask[2, :, 12:] = True
    return mask


def ocean(times: int = 3, seed: int = 0) -> xr.Dataset:
    """Canonical ``thetao (time, depth, lat, lon)`` in degC (float32), NaN on land, CF attributes."""
    rng = np.random.default_rng(seed)
    field = 20.0 - 0.05 * DEPTH[:, None, None] + 2.0 * np.cos(np.deg2rad(LAT))[:, None]
    values = (field[None] + rng.normal(0.0, 0.5, (times, DEPTH.size, LAT.size, LON.size))).astype("float32")
    values[:, land()] = np.nan
    return xr.Dataset(
        {"thetao": (("time", "depth", "lat", "lon"), values,
                    {"units": "degC", "standard_name": "sea_water_potential_temperature",
                     "long_name": "Sea Water Potential Temperature"})},
        coords={"time": TIMES[:times],
                "depth": ("depth", DEPTH, {"units": "m", "positive": "down", "standard_name": "depth"}),
                "lat": ("lat", LAT, {"units": "degrees_north", "standard_name": "latitude"}),
                "lon": ("lon", LON, {"units": "degrees_east", "standard_name": "longitude"})},
        attrs={"title": "reliability test ocean", "history": "made by tests/reliability/helpers.py"},
    )


def bundle(seed: int = 0) -> ModelBundle:
    """An untrained tiny UNet prior (random weights, fixed seed) with the codec and fitted statistics of ``ocean``."""
    ds = ocean()
    codec = Codec.from_dataset(ds)
    torch.manual_seed(seed)
    backbone = UNet(codec.shape[0], base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(),
                    mid_attention=False, norm_groups=4, periodic_lon=True, mask_aware=True)
    denoiser = Denoiser(backbone, sigma_data=1.0, mask=codec.mask)
    return ModelBundle(denoiser.eval(), codec, Normalizer.fit(ds), {"trained_on": "nothing (reliability tests)"})


def observations(n: int = 12, seed: int = 0, times: np.ndarray | None = None) -> pd.DataFrame:
    """``n`` in-situ observations per time at ocean positions between grid nodes, values near the field's."""
    rng = np.random.default_rng(seed)
    times = TIMES[:2] if times is None else times
    rows = []
    for t in times:
        lat = rng.uniform(-13.0, 13.0, n)
        lon = rng.uniform(90.0, 125.0, n)  # east of the continent, above the shallow sea floor
        depth = rng.uniform(5.0, 50.0, n)
        rows.append(pd.DataFrame({"value": 20.0 - 0.05 * depth + rng.normal(0, 0.3, n), "error_std": 0.2,
                                  "lat": lat, "lon": lon, "depth": depth, "time": t}))
    frame = pd.concat(rows, ignore_index=True)
    frame["obs_id"] = np.arange(len(frame))
    return frame
