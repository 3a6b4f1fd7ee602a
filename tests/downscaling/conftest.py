"""Tiny downscaling fixtures: a smooth synthetic high-resolution field with a topography-like source, and an
untrained conditional model bundle around it."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from geodiff.backbones.conditional import ConditionalUNet
from geodiff.diffusion.denoiser import Denoiser
from geodiff.io import Codec, ModelBundle, Normalizer
from geodiff.pipelines.downscale import coarsen, downscaling_metadata

FACTOR = 4
H, W = 16, 24  # high-resolution grid of the fixtures


def tiny_net(**kwargs) -> ConditionalUNet:
    options = dict(sources={"coarse": 1, "topography": 1}, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                   attention_levels=(), mid_attention=False, source_channels=8, source_dropout=0.2)
    options.update(kwargs)
    return ConditionalUNet(1, **options)


def make_fine_dataset() -> xr.Dataset:
    lat = 40.0 + 0.25 * (np.arange(H) + 0.5)
    lon = 10.0 + 0.25 * (np.arange(W) + 0.5)
    yy, xx = np.meshgrid(lat, lon, indexing="ij")
    orog = 800.0 * np.exp(-((yy - 42.0) ** 2 + (xx - 13.0) ** 2) / 2.0)
    times = np.array(["2000-01-01", "2000-02-01"], dtype="datetime64[ns]")
    tas = np.stack([285.0 - 0.0065 * orog + k + np.sin(xx) for k in range(2)]).astype("float32")
    attrs = {"units": "K", "standard_name": "air_temperature", "long_name": "near-surface air temperature"}
    return xr.Dataset(
        {"tas": (("time", "lat", "lon"), tas, attrs),
         "orog": (("lat", "lon"), orog.astype("float32"), {"units": "m", "standard_name": "surface_altitude"})},
        coords={"time": times, "lat": ("lat", lat, {"units": "degrees_north"}),
                "lon": ("lon", lon, {"units": "degrees_east"})},
        attrs={"title": "tiny downscaling fixture", "history": "made by the test fixture"},
    )


def make_bundle(fine_dataset: xr.Dataset, **net) -> ModelBundle:
    codec = Codec.from_dataset(fine_dataset[["tas"]])
    normalizer = Normalizer.affine({"tas": (285.0, 5.0), "orog": (400.0, 400.0)})
    metadata = {"downscaling": downscaling_metadata(FACTOR, (8, 8), ["tas"], {"topography": (["orog"], 1)})}
    return ModelBundle(Denoiser(tiny_net(**net)), codec, normalizer, metadata)


@pytest.fixture
def fine_dataset() -> xr.Dataset:
    return make_fine_dataset()


@pytest.fixture
def tiny_bundle(fine_dataset) -> ModelBundle:
    return make_bundle(fine_dataset)


@pytest.fixture
def coarse_dataset(fine_dataset) -> xr.Dataset:
    return coarsen(fine_dataset[["tas"]], FACTOR)
