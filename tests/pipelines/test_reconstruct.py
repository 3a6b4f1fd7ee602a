"""geodiff.reconstruct on the shipped prior: output layout, CF attributes, provenance, determinism, bad input."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

import geodiff
from geodiff.adapters import woa
from geodiff.errors import ConfigError, ObservationError
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

    register_fake_guidance("test_exploding", lambda noise: noise * float("nan"))  # a diverging sampler
    with pytest.raises(SamplingError, match="diverged"):
        reconstruct(model, obs, guidance="test_exploding", members=1, steps=2, progress=False)


def test_finite_but_diverged_member_raises(setup):
    """A member far outside the training range (finite, e.g. hundreds of degrees) is not returned as a field."""
    from geodiff.errors import SamplingError

    model, _, obs = setup

    def last_member_off(noise):
        x = torch.zeros_like(noise)
        x[-1] = 50.0  # 50 standard deviations: the last member diverged
        return x

    register_fake_guidance("test_one_member_off", last_member_off)
    with pytest.raises(SamplingError, match=r"member\(s\) \[1\]"):
        reconstruct(model, obs, guidance="test_one_member_off", members=2, steps=2, progress=False)
    out = reconstruct(model, obs, guidance="test_one_member_off", members=2, steps=2, progress=False,
                      max_normalized=None)
    assert out[woa.VARIABLE].sizes["member"] == 2


def register_fake_guidance(name, draw):
    """Register guidance ``name`` whose samples are ``draw(noise)`` (no sampler, no observations)."""

    class Fake:
        def __init__(self, y, operator, error_std):
            pass

        def describe(self):
            return {"name": name}

        def sample(self, sampler, denoiser, noise, sigmas, **kwargs):
            return draw(noise)

    geodiff.registry.register("guidance", name, Fake, overwrite=True)


def member_two_runs_away(noise):
    """Member 2 of a first draw lands 4 standard deviations off (below the absolute bound of 10) while the others
    stay within 0.1 of the normalised mean; a redraw of one member is fine."""
    x = 0.1 * noise
    if noise.shape[0] > 2:
        x[2] += 4.0
    return x


@pytest.mark.parametrize("policy", ["resample", "keep", "raise"])
def test_a_member_that_runs_away_from_the_ensemble_is_resampled_kept_or_refused_and_recorded(setup, policy):
    from geodiff.errors import SamplingError

    model, _, obs = setup
    register_fake_guidance("test_member_two_runs_away", member_two_runs_away)
    run = dict(guidance="test_member_two_runs_away", members=4, steps=2, progress=False, on_runaway=policy)
    if policy == "raise":
        with pytest.raises(SamplingError, match=r"member\(s\) \[2\] ran away"):
            reconstruct(model, obs, **run)
        return
    out = reconstruct(model, obs, **run)
    record = json.loads(out.attrs["geodiff_runaway"])
    assert record["policy"] == policy and record["factor"] == 5.0 and record["bound"] == 10.0
    assert sorted(record["members"]) == sorted(str(t) for t in np.unique(obs["time"].values))
    for entries in record["members"].values():
        assert [(e["member"], e["redraws"], e["kept"]) for e in entries] == (
            [(2, 1, False)] if policy == "resample" else [(2, 0, True)])
    field = out[woa.VARIABLE]
    spread = np.abs(field - field.median("member")).mean(["time", "depth", "lat", "lon"]).values
    assert (spread[2] > 10 * np.median(spread)) == (policy == "keep")
    unchecked = reconstruct(model, obs, **{**run, "runaway_factor": None})
    assert json.loads(unchecked.attrs["geodiff_runaway"])["members"] == {}
    xr.testing.assert_identical(unchecked[woa.VARIABLE].isel(member=[0, 1, 3]), field.isel(member=[0, 1, 3]))


def test_time_generator_seed_is_stable():
    from geodiff.pipelines.reconstruct import time_generator_seed

    assert time_generator_seed(0, np.datetime64("2000-01-01")) == 6585446819066739505


def test_guidance_without_observations_is_refused_by_name(setup):
    model, _, obs = setup
    with pytest.raises(ConfigError, match="'reward' is not built from observations"):
        reconstruct(model, obs, guidance="reward", members=1, steps=2, progress=False)


def test_patches_skip_land_windows_with_the_result_of_computing_them(setup, monkeypatch):
    """``patch=``: the domain is denoised in windows; the all-land ones are not computed (recorded), and the
    ensemble is the one computing every window gives."""
    from geodiff.pipelines import reconstruct as module

    model, _, obs = setup
    one = obs.isel(obs=np.flatnonzero(obs["time"].values == obs["time"].values[0]))
    options = dict(members=2, steps=4, seed=2, progress=False, patch=(8, 8), on_runaway="keep")  # cost, not skill
    out = reconstruct(model, one, **options)
    windows = json.loads(out.attrs["geodiff_guidance"])["patch"]
    assert windows["overlap"] == [2, 2] and windows["windows"] < windows["of"]
    land = ~model.codec.mask.numpy()
    field = out[woa.VARIABLE].isel(time=0).values  # [member, depth, lat, lon]
    assert np.isnan(field[:, land]).all() and np.isfinite(field[:, ~land]).all()

    patched = module._patched
    monkeypatch.setattr(module, "_patched", lambda *a: setattr(p := patched(*a), "skip_masked", False) or p)
    every = reconstruct(model, one, **options)
    assert json.loads(every.attrs["geodiff_guidance"])["patch"]["windows"] == windows["of"]
    xr.testing.assert_equal(every[woa.VARIABLE], out[woa.VARIABLE])
    with pytest.raises(ConfigError, match="patch"):
        reconstruct(model, one, members=2, steps=2, progress=False, patch=(8,))
