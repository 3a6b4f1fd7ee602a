"""geodiff.downscale: output grid and metadata (CF attrs, member dim, history, provenance), sources and stations,
coarse consistency, reproducibility, bundle round trip and errors -- with a tiny untrained model."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

import geodiff
from geodiff.errors import ConfigError, CoordinateError, UnitsError
from geodiff.pipelines.downscale import coarsen

from .conftest import FACTOR, H, W

SETTINGS = dict(members=2, steps=4, progress=False)


def test_output_grid_and_metadata(tiny_bundle, fine_dataset, coarse_dataset):
    out = geodiff.downscale(tiny_bundle, coarse_dataset, sources={"topography": fine_dataset["orog"]}, seed=3,
                            **SETTINGS)
    assert out["tas"].dims == ("member", "time", "lat", "lon")
    assert out.sizes == {"member": 2, "time": 2, "lat": H, "lon": W}
    np.testing.assert_allclose(out["lat"].values, fine_dataset["lat"].values, atol=1e-9)
    np.testing.assert_allclose(out["lon"].values, fine_dataset["lon"].values, atol=1e-9)
    assert out["tas"].attrs == coarse_dataset["tas"].attrs and out["lat"].attrs["units"] == "degrees_north"
    assert out.attrs["title"] == "tiny downscaling fixture"
    history = out.attrs["history"].splitlines()
    assert history[:-1] == coarse_dataset.attrs["history"].splitlines() and "geodiff.downscale(" in history[-1]
    assert out.attrs["geodiff_model_sha256"] == tiny_bundle.sha256
    assert out.attrs["geodiff_seed"] == 3 and out.attrs["geodiff_version"] == geodiff.__version__
    config = json.loads(out.attrs["geodiff_guidance"])
    assert config["guidance"] == "coarse" and config["factor"] == FACTOR and config["members"] == 2
    assert json.loads(out.attrs["geodiff_sources"]) == ["coarse", "topography"]
    assert np.isfinite(out["tas"].values).all()
    np.testing.assert_array_equal(out["time"].values, coarse_dataset["time"].values)


def test_coarse_consistency_is_enforced(tiny_bundle, fine_dataset, coarse_dataset):
    """An untrained model (its denoiser shrinks towards the normalisation mean): without guidance the block means
    miss the coarse field by several kelvin, with coarse guidance (error 0.05 K) they follow it (measured, seeds
    0-2: max error 0.27-0.31 K guided, 4.6-5.6 K unguided)."""
    guided = geodiff.downscale(tiny_bundle, coarse_dataset, coarse_error_std=0.05, members=2, steps=8,
                               progress=False)
    unguided = geodiff.downscale(tiny_bundle, coarse_dataset, guidance=None, members=2, steps=8, progress=False)
    error = lambda out: float(np.abs(coarsen(out[["tas"]], FACTOR)["tas"] - coarse_dataset["tas"]).max())
    assert error(guided) < 0.6 and error(unguided) > 3.0


def test_sources_can_be_left_out_and_stations_guide(tiny_bundle, fine_dataset, coarse_dataset):
    out = geodiff.downscale(tiny_bundle, coarse_dataset, condition_on_coarse=False, **SETTINGS)
    assert json.loads(out.attrs["geodiff_sources"]) == []
    table = pd.DataFrame({"value": [290.0, 291.0], "error_std": 0.01, "lat": [41.0, 43.1], "lon": [11.2, 14.9],
                          "time": coarse_dataset["time"].values[[0, 1]]})
    settings = dict(members=2, steps=8, progress=False, seed=4)
    out = geodiff.downscale(tiny_bundle, coarse_dataset.isel(time=[0]), stations=table, **settings)
    report = json.loads(out.attrs["geodiff_observations"])
    assert report["total"] == 2 and report["kept"] == 2
    # 4 x 6 coarse cells + the one station at the sampled time (the other is at the other time)
    described = json.loads(out.attrs["geodiff_guidance"])["guidance_described"]
    assert described["n_obs"] == 24 + 1
    assert described["preconditioner"] == "diagonal"  # the joint solve's default with stations
    without = geodiff.downscale(tiny_bundle, coarse_dataset.isel(time=[0]), **settings)
    assert "preconditioner" not in json.loads(without.attrs["geodiff_guidance"])["guidance_described"]
    at_station = lambda ds: ds["tas"].interp(lat=41.0, lon=11.2).isel(time=0).values
    assert np.all(np.abs(at_station(out) - 290.0) < np.abs(at_station(without) - 290.0) - 0.5)
    plain = geodiff.downscale(tiny_bundle, coarse_dataset.isel(time=[0]), stations=table, **settings,
                              guidance_options={"preconditioner": "none"})
    assert "preconditioner" not in json.loads(plain.attrs["geodiff_guidance"])["guidance_described"]
    assert not np.allclose(plain["tas"].values, out["tas"].values)


def test_reproducible_with_seed(tiny_bundle, coarse_dataset):
    a = geodiff.downscale(tiny_bundle, coarse_dataset.isel(time=[1]), seed=1, **SETTINGS)
    b = geodiff.downscale(tiny_bundle, coarse_dataset, seed=1, **SETTINGS).isel(time=[1])
    c = geodiff.downscale(tiny_bundle, coarse_dataset.isel(time=[1]), seed=2, **SETTINGS)
    xr.testing.assert_identical(a["tas"], b["tas"])
    assert not np.allclose(a["tas"].values, c["tas"].values)


def test_bundle_round_trip(tmp_path, tiny_bundle, fine_dataset, coarse_dataset):
    with torch.no_grad():  # non-zero output layer so the weights matter
        for parameter in tiny_bundle.denoiser.parameters():
            parameter.add_(0.01 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(0)))
    tiny_bundle.save(tmp_path / "model")
    loaded = geodiff.load(tmp_path / "model")
    assert loaded.sha256 == tiny_bundle.sha256 and loaded.metadata == tiny_bundle.metadata
    for (name, a), (_, b) in zip(tiny_bundle.denoiser.state_dict().items(), loaded.denoiser.state_dict().items()):
        assert torch.equal(a, b), name
    sources = {"topography": fine_dataset["orog"]}
    a = geodiff.downscale(tiny_bundle, coarse_dataset, sources=sources, **SETTINGS)
    b = geodiff.downscale(str(tmp_path / "model"), coarse_dataset, sources=sources, **SETTINGS)
    xr.testing.assert_identical(a, b.assign_attrs(history=a.attrs["history"]))


def test_bad_inputs_raise(tiny_bundle, fine_dataset, coarse_dataset):
    with pytest.raises(ConfigError, match="unknown sources"):
        geodiff.downscale(tiny_bundle, coarse_dataset, sources={"radar": fine_dataset["orog"]}, **SETTINGS)
    shifted = fine_dataset["orog"].assign_coords(lat=fine_dataset["lat"] + 0.1)
    with pytest.raises(CoordinateError, match="topography"):
        geodiff.downscale(tiny_bundle, coarse_dataset, sources={"topography": shifted}, **SETTINGS)
    with pytest.raises(ConfigError, match="target variables"):
        geodiff.downscale(tiny_bundle, coarse_dataset.rename({"tas": "pr"}), **SETTINGS)
    with pytest.raises(ConfigError, match="on_runaway"):
        geodiff.downscale(tiny_bundle, coarse_dataset, on_runaway="drop", **SETTINGS)


def test_runaway_checks_are_recorded_and_the_absolute_bound_is_opt_in(tiny_bundle, coarse_dataset):
    """The untrained model with 2 steps leaves its training range as a whole (tens of standard deviations): no
    member is further out than the others, so only the opt-in absolute bound refuses the ensemble."""
    from geodiff.errors import SamplingError

    settings = dict(SETTINGS, steps=2, members=3)
    out = geodiff.downscale(tiny_bundle, coarse_dataset.isel(time=[0]), **settings)
    record = json.loads(out.attrs["geodiff_runaway"])
    assert record == {"policy": "resample", "factor": 5.0, "floor": 0.5, "bound": None, "max_resamples": 3,
                      "members": {}}
    assert float(np.abs(out["tas"] - 285.0).max()) > 10 * 5.0  # beyond 10 standard deviations of the normaliser
    with pytest.raises(SamplingError, match=r"member\(s\) \[0, 1, 2\] ran away"):
        geodiff.downscale(tiny_bundle, coarse_dataset.isel(time=[0]), max_normalized=10.0, on_runaway="raise",
                          **settings)


def test_coarse_units_are_converted_to_the_model_units_or_rejected(tiny_bundle, coarse_dataset):
    """A coarse field in degC for a kelvin model is converted (recorded); missing or wrong units are errors."""
    assert coarse_dataset["tas"].attrs["units"] == "K"
    reference = geodiff.downscale(tiny_bundle, coarse_dataset, **SETTINGS)
    celsius = coarse_dataset.copy(deep=True)
    celsius["tas"] = (coarse_dataset["tas"] - 273.15).assign_attrs(coarse_dataset["tas"].attrs, units="degC")
    converted = geodiff.downscale(tiny_bundle, celsius, **SETTINGS)
    np.testing.assert_allclose(converted["tas"].values, reference["tas"].values, atol=1e-3)
    assert "degC" in converted.attrs["history"]
    unitless = coarse_dataset.copy(deep=True)
    del unitless["tas"].attrs["units"]
    with pytest.raises(UnitsError, match="coarse: variable 'tas' has no 'units'"):
        geodiff.downscale(tiny_bundle, unitless, **SETTINGS)
    metres = coarse_dataset.copy(deep=True)
    metres["tas"].attrs["units"] = "m"
    with pytest.raises(UnitsError, match="cannot be converted to 'K'"):
        geodiff.downscale(tiny_bundle, metres, **SETTINGS)
