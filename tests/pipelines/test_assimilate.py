"""assimilate(): output layout and metadata, reproducibility, save/load, cycling, twin observation tables."""

import numpy as np
import pytest
import torch
import xarray as xr

import geodiff
from geodiff.dynamics import BarotropicModel
from geodiff.errors import ConfigError, GridError, ObservationError, UnitsError
from geodiff.pipelines.assimilate import (
    AssimilationModel,
    assimilate,
    cycle,
    sample_analysis,
    twin_dataset,
    twin_observations,
)

ERRORS = {"z": 5.0, "u": 1.0, "v": 1.0}


@pytest.fixture(scope="module")
def twin():
    return BarotropicModel(nx=16, ny=16)


@pytest.fixture(scope="module")
def truth(twin):
    states = twin.random_state(3, generator=torch.Generator().manual_seed(0))
    ds = twin_dataset(twin, states, np.array(["2000-01-01", "2000-01-02", "2000-01-03"], dtype="datetime64[ns]"))
    ds.attrs["history"] = "made by the test"
    return ds


@pytest.fixture(scope="module")
def model(truth):
    torch.manual_seed(0)
    model = AssimilationModel.untrained(truth, latent_channels=2, base_channels=8)
    for p in model.denoiser.parameters():  # an untrained UNet outputs 0; give the test a non-trivial network
        torch.nn.init.normal_(p, std=0.02)
    return model


@pytest.fixture(scope="module")
def obs(truth):
    return twin_observations(truth, [40.0, 45.0, 50.0], [-5.0, 0.0, 5.0], error_std=ERRORS, seed=1)


def test_output_layout_attributes_history_and_provenance(model, truth, obs):
    out = assimilate(model, truth.isel(time=[0, 1]), obs, members=3, steps=3, seed=4, guidance="mmps", progress=False)
    assert set(out.data_vars) == {"z", "u", "v"}
    assert out.z.dims == ("member", "time", "lat", "lon") and out.sizes["member"] == 3
    np.testing.assert_array_equal(out.time.values, truth.time.values[:2])
    for name in ("z", "u", "v"):
        assert out[name].attrs == truth[name].attrs
        assert bool(np.isfinite(out[name]).all())
    assert out.attrs["history"].startswith("made by the test\n") and "geodiff.assimilate(" in out.attrs["history"]
    assert out.attrs["geodiff_version"] == geodiff.__version__
    assert out.attrs["geodiff_model_sha256"] == model.sha256 and len(model.sha256) == 64
    assert out.attrs["geodiff_seed"] == 4 and '"guidance": "mmps"' in out.attrs["geodiff_guidance"]
    assert '"used_per_time"' in out.attrs["geodiff_observations"]
    assert out.attrs["Conventions"] == "CF-1.8"
    assert geodiff.assimilate is assimilate


def test_seeded_reproducibility_and_time_independence(model, truth, obs):
    a = assimilate(model, truth.isel(time=[0, 1]), obs, members=2, steps=2, seed=7, guidance="dps", progress=False)
    b = assimilate(model, truth.isel(time=[1]), obs, members=2, steps=2, seed=7, guidance="dps", progress=False)
    c = assimilate(model, truth.isel(time=[1]), obs, members=2, steps=2, seed=8, guidance="dps", progress=False)
    xr.testing.assert_identical(a.isel(time=[1]).z, b.z)
    assert not np.allclose(b.z.values, c.z.values)


def test_observations_move_the_analysis(model, truth, obs):
    guided = assimilate(model, truth.isel(time=[0]), obs, members=2, steps=3, seed=1, guidance="mmps", progress=False)
    free = assimilate(model, truth.isel(time=[0]), obs, members=2, steps=3, seed=1, guidance="none", progress=False)
    assert not np.allclose(guided.z.values, free.z.values)


def test_latent_clipping_bounds_the_latents_and_is_inert_above_their_range(model, truth):
    background = torch.as_tensor(np.stack([truth[v].values[0] for v in ("z", "u", "v")]), dtype=torch.float32)

    def run(clip):
        return sample_analysis(model, background, members=3, steps=3, guidance="none", clip_latent=clip,
                               generator=torch.Generator().manual_seed(3))  # fmt: skip

    states, latents = run(None)
    loose_states, loose_latents = run(float(latents.abs().max()) * 100.0)
    torch.testing.assert_close(loose_latents, latents, rtol=0.0, atol=0.0)  # a bound above every value: no change
    torch.testing.assert_close(loose_states, states, rtol=0.0, atol=0.0)
    bound = 0.5 * float(latents.abs().max())
    _, clipped = run(bound)
    assert float(clipped.abs().max()) <= bound  # samplers end on the (clamped) denoised latent
    assert float(clipped.abs().max()) == pytest.approx(bound)
    model.prior.metadata["latent_max_abs"] = bound / 1.25  # as AssimilationModel.fit records it
    try:
        assert model.latent_bound == pytest.approx(bound)
        torch.testing.assert_close(run("auto")[1], clipped, rtol=0.0, atol=0.0)
    finally:
        del model.prior.metadata["latent_max_abs"]
    assert model.latent_bound is None
    torch.testing.assert_close(run("auto")[1], latents, rtol=0.0, atol=0.0)  # no record: no clipping
    for bad in (0.0, -1.0, float("nan"), "always", [1.0]):
        with pytest.raises(ConfigError, match="clip_latent"):
            run(bad)
    station = twin_observations(truth.isel(time=[0]), [45.0], [0.0], error_std=ERRORS, seed=1)
    out = assimilate(model, truth.isel(time=[0]), station, members=2, steps=2, seed=1, clip_latent=bound,
                     progress=False)  # fmt: skip
    assert '"clip_latent": ' + repr(bound) in out.attrs["geodiff_guidance"]


def test_save_load_round_trip(model, truth, obs, tmp_path):
    model.save(tmp_path / "da")
    loaded = AssimilationModel.load(tmp_path / "da")
    assert loaded.sha256 == model.sha256
    a = assimilate(model, truth.isel(time=[0]), obs, members=2, steps=2, seed=3, progress=False)
    b = assimilate(loaded, truth.isel(time=[0]), obs, members=2, steps=2, seed=3, progress=False)
    c = assimilate(str(tmp_path / "da"), truth.isel(time=[0]), obs, members=2, steps=2, seed=3, progress=False)
    xr.testing.assert_identical(a, b.assign_attrs(history=a.attrs["history"]))
    xr.testing.assert_identical(b.z, c.z)


def test_cycle_forecasts_the_analysis_mean(model, twin, truth, obs):
    result = cycle(model, twin, truth.isel(time=[0]), obs, truth.time.values[:2], interval_s=6 * twin.dt,
                   members=2, steps=2, seed=0, progress=False)  # fmt: skip
    assert result.analysis.z.dims == ("member", "time", "lat", "lon") and result.analysis.sizes["time"] == 2
    mean = result.analysis.isel(time=0).mean("member")
    state = torch.from_numpy(np.stack([mean[v].values for v in ("z", "u", "v")])[None].astype(np.float64))
    expected = twin.forecast(state, 6 * twin.dt)[0].float()
    got = torch.from_numpy(np.stack([result.background[v].isel(time=1).values for v in ("z", "u", "v")]))
    torch.testing.assert_close(got, expected)
    xr.testing.assert_identical(result.background.isel(time=0).z, truth.isel(time=0).z)


def test_twin_observations_are_the_truth_at_grid_points(truth):
    lat, lon = truth.lat.values[[3, 7]], truth.lon.values[[2, 9]]
    table = twin_observations(truth, lat, lon, error_std={"u": 0.0}, seed=0, times=truth.time.values[:1])
    np.testing.assert_allclose(table.value.values, truth.u.isel(time=0).values[[3, 7], [2, 9]], rtol=1e-6)
    assert set(table.variable.values) == {"u"} and table.sizes["obs"] == 2


def test_bad_inputs_name_the_problem(model, truth, obs):
    with pytest.raises(GridError, match=r"lacks the model's variables \['v'\]"):
        assimilate(model, truth.drop_vars("v"), obs, members=1, steps=1, progress=False)
    with pytest.raises(ObservationError, match="'w'"):
        twin_observations(truth, [45.0], [0.0], error_std={"w": 1.0}, seed=0)


def test_background_units_are_converted_or_rejected(model, truth, obs):
    """Winds in km/h are converted to the model's m s-1 (recorded); a background without units is refused."""
    reference = assimilate(model, truth, obs, members=1, steps=2, seed=0, progress=False)
    kmh = truth.copy(deep=True)
    kmh["u"] = (truth["u"] * 3.6).assign_attrs(truth["u"].attrs, units="km h-1")
    converted = assimilate(model, kmh, obs, members=1, steps=2, seed=0, progress=False)
    np.testing.assert_allclose(converted["u"].values, reference["u"].values, rtol=1e-4, atol=1e-4)
    assert "km h-1" in converted.attrs["history"]
    unitless = truth.copy(deep=True)
    del unitless["z"].attrs["units"]
    with pytest.raises(UnitsError, match="background: variable 'z' has no 'units'"):
        assimilate(model, unitless, obs, members=1, steps=2, progress=False)


def test_fit_records_the_latent_range_that_sets_the_default_clipping(truth):
    fitted = AssimilationModel.fit(truth, truth.isel(time=[2, 0, 1]).assign_coords(time=truth.time), latent_channels=2,
                                   base_channels=8, autoencoder_steps=2, prior_steps=2, batch_size=2, progress=False)
    states = torch.as_tensor(np.stack([truth[v].values for v in ("z", "u", "v")], axis=1))
    largest = float(fitted.encode(states).abs().max())
    assert fitted.prior.metadata["latent_max_abs"] == pytest.approx(largest, rel=1e-6)
    assert fitted.latent_bound == pytest.approx(1.25 * largest, rel=1e-6)


class _MemberOneRunsAway(torch.nn.Module):
    """The model's denoiser, except that member 1 of a first draw (a batch of more than one) is pushed far out."""

    def __init__(self, denoiser):
        super().__init__()
        self.denoiser = denoiser

    def forward(self, x, sigma, cond=None):
        out = self.denoiser(x, sigma, cond)
        if x.shape[0] > 1:
            out = out.clone()
            out[1] += 30.0
        return out


def test_runaway_members_are_found_in_the_latents_redrawn_or_kept_and_recorded(model, truth, obs):
    """Member 1's latent runs away (its decoded state need not show it: the decoder normalises its activations)."""
    import json

    run = dict(members=4, steps=3, seed=2, guidance="none", clip_latent=None, progress=False,
               denoiser=_MemberOneRunsAway(model.denoiser))
    outputs = {}
    for policy in ("resample", "keep"):
        outputs[policy] = assimilate(model, truth.isel(time=[0]), obs, on_runaway=policy, **run)
        [(time, entries)] = json.loads(outputs[policy].attrs["geodiff_runaway"])["members"].items()
        assert [(e["member"], e["redraws"], e["kept"]) for e in entries] == (
            [(1, 1, False)] if policy == "resample" else [(1, 0, True)])
        assert entries[0]["reason"].startswith("sample RMS distance")
    others = [0, 2, 3]
    xr.testing.assert_identical(outputs["keep"].z.isel(member=others), outputs["resample"].z.isel(member=others))
    assert not np.array_equal(outputs["keep"].z.isel(member=1), outputs["resample"].z.isel(member=1))
    with pytest.raises(ConfigError, match="on_runaway"):
        assimilate(model, truth.isel(time=[0]), obs, on_runaway="average", **run)
