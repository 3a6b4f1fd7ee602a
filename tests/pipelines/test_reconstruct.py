"""geodiff.reconstruct on the shipped prior: output layout, CF attributes, provenance, determinism, bad input."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

import geodiff
from geodiff.adapters import woa
from geodiff.errors import ObservationError
from geodiff.pipelines.demo import prior_path
from geodiff.pipelines.reconstruct import reconstruct


@pytest.fixture(scope="module")
def setup():
    model = geodiff.load(prior_path())
    split = woa.holdout_split(woa.open_sample())
    truth = split.heldout.isel(time=[2, 3]).drop_vars("sea_mask")
    obs, _ = woa.holdout_observations(truth, 0.05, seed=3, error_std=0.1)
    return model, truth, obs


def test_output_is_an_ensemble_on_the_model_grid_with_cf_attrs_and_provenance(setup):
    model, truth, obs = setup
    out = reconstruct(model, obs, members=2, steps=10, seed=1, progress=False)
    field = out[woa.VARIABLE]
    assert field.dims == ("member", "time", "depth", "lat", "lon")
    assert field.sizes["member"] == 2 and field.sizes["time"] == 2
    np.testing.assert_array_equal(out["time"].values, truth["time"].values)
    xr.testing.assert_equal(out["lat"], truth["lat"])
    # land stays NaN, ocean is finite
    land = truth[woa.VARIABLE].isel(time=0).isnull()
    assert bool(field.isel(member=0, time=0).where(land).isnull().all())
    assert bool(np.isfinite(field.isel(member=0, time=0).where(~land, 0.0)).all())
    for key in ("units", "standard_name", "long_name"):
        assert field.attrs[key] == truth[woa.VARIABLE].attrs[key]
    template_history = model.codec.to_dict()["attrs"]["history"]
    assert out.attrs["history"].startswith(template_history + "\n")  # appended, never overwritten
    assert "geodiff.reconstruct" in out.attrs["history"].splitlines()[-1]
    assert out.attrs["geodiff_model_sha256"] == model.sha256
    assert json.loads(out.attrs["geodiff_guidance"])["guidance"] == "mmps"
    assert out.attrs["geodiff_seed"] == 1
    assert json.loads(out.attrs["geodiff_observations"])["kept"] == obs.sizes["obs"]


def test_one_time_alone_equals_the_same_time_within_a_series(setup):
    model, _, obs = setup
    both = reconstruct(model, obs, members=2, steps=10, seed=5, progress=False)
    second_time = obs["time"].values[-1]
    alone = reconstruct(model, obs.isel(obs=np.flatnonzero(obs["time"].values == second_time)), members=2, steps=10,
                        seed=5, progress=False)
    xr.testing.assert_identical(both[woa.VARIABLE].isel(time=[1]), alone[woa.VARIABLE])


def test_dataframe_input_and_other_guidance(setup):
    model, _, obs = setup
    table = obs.isel(obs=slice(0, 40)).to_dataframe().reset_index()
    out = reconstruct(model, table, guidance="reconmost", sampler="ddpm", members=1, steps=3, progress=False)
    assert out[woa.VARIABLE].sizes["member"] == 1


def test_zero_valid_observations_is_an_error(setup):
    model, _, obs = setup
    bad = obs.isel(obs=slice(0, 5)).copy()
    bad["value"] = bad["value"] * np.nan
    with pytest.raises(ObservationError):
        reconstruct(model, bad, members=1, steps=2, progress=False)
    outside = pd.DataFrame({"value": [10.0], "error_std": [0.1], "lat": [-60.0], "lon": [0.0],
                            "depth": [0.0], "time": [obs["time"].values[0]]})
    with pytest.raises(ObservationError):
        reconstruct(model, outside, members=1, steps=2, progress=False)


def test_diverged_sampling_raises_instead_of_returning_nan(setup):
    from geodiff.errors import SamplingError

    model, _, obs = setup

    class Exploding:
        """A guidance that injects NaN, standing in for a diverging sampler."""

        name = "exploding"

        def __init__(self, y, operator, error_std):
            pass

        def describe(self):
            return {"name": self.name}

        def sample(self, sampler, denoiser, noise, sigmas, **kwargs):
            return noise * float("nan")

    geodiff.registry.register("guidance", "test_exploding", Exploding, overwrite=True)
    with pytest.raises(SamplingError, match="diverged"):
        reconstruct(model, obs, guidance="test_exploding", members=1, steps=2, progress=False)


def test_finite_but_diverged_member_raises(setup):
    """A member far outside the training range (finite, e.g. hundreds of degrees) is not returned as a field."""
    from geodiff.errors import SamplingError

    model, _, obs = setup

    class OneMemberOff:
        name = "one_member_off"

        def __init__(self, y, operator, error_std):
            pass

        def describe(self):
            return {"name": self.name}

        def sample(self, sampler, denoiser, noise, sigmas, **kwargs):
            x = torch.zeros_like(noise)
            x[-1] = 50.0  # 50 standard deviations: the last member diverged
            return x

    geodiff.registry.register("guidance", "test_one_member_off", OneMemberOff, overwrite=True)
    with pytest.raises(SamplingError, match=r"member\(s\) \[1\]"):
        reconstruct(model, obs, guidance="test_one_member_off", members=2, steps=2, progress=False)
    out = reconstruct(model, obs, guidance="test_one_member_off", members=2, steps=2, progress=False,
                      max_normalized=None)
    assert out[woa.VARIABLE].sizes["member"] == 2
