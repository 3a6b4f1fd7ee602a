"""The hybrid prior's learned correction is kept only where guided reconstructions of the validation period gain."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

import geodiff
from geodiff.errors import ConfigError
from geodiff.training.correction_check import _decide, check_correction, settle_correction, without_correction

from .test_fit import monthly


def scores(crps: float, spread_skill: float) -> dict[str, float]:
    return {"crps": crps, "rmse": 2 * crps, "spread_skill": spread_skill}


@pytest.mark.parametrize("corrected, gaussian, keep", [
    (scores(0.9, 1.0), scores(1.0, 1.0), True),  # better and calibrated
    (scores(1.0, 1.0), scores(1.0, 1.0), False),  # no gain
    (scores(0.995, 1.0), scores(1.0, 1.0), False),  # a gain within the noise
    (scores(1.1, 1.0), scores(1.0, 1.0), False),  # worse
    (scores(0.9, 0.6), scores(1.0, 1.1), False),  # sharper but over-confident where the Gaussian part is calibrated
    (scores(0.9, 0.6), scores(1.0, 0.5), True),  # over-confident, but less so than the Gaussian part
    (scores(0.9, 1.3), scores(1.0, 1.5), True),
])
def test_the_decision_needs_a_lower_crps_and_a_calibrated_ensemble(corrected, gaussian, keep):
    assert _decide(corrected, gaussian)[0] is keep


@pytest.fixture(scope="module")
def trained():
    ds = monthly(times=36, shape=(6, 8))
    bundle = geodiff.fit(ds, steps=2, validate_every=1, progress=False, base_channels=4, check_correction=False)
    return ds, bundle


def test_without_correction_is_the_gaussian_part_and_survives_a_round_trip(trained, tmp_path):
    _, bundle = trained
    with torch.no_grad():
        bundle.denoiser.backbone.output[-1].bias.fill_(0.5)  # a correction that is not zero
    gaussian = without_correction(bundle)
    x = torch.randn(3, *bundle.codec.shape)
    mask = bundle.codec.mask.to(x.dtype)
    assert torch.equal(gaussian.denoiser(x, 0.7), gaussian.denoiser.gaussian(x, 0.7))
    assert not torch.allclose(bundle.denoiser(x, 0.7) * mask, gaussian.denoiser(x, 0.7) * mask)
    assert bundle.denoiser.correction  # the original is unchanged
    gaussian.save(tmp_path / "prior")
    loaded = geodiff.load(tmp_path / "prior")
    assert loaded.denoiser.correction is False
    assert torch.equal(loaded.denoiser(x, 0.7), gaussian.denoiser(x, 0.7))


def test_a_harmful_correction_is_left_out(trained):
    ds, bundle = trained
    harmful = without_correction(bundle)
    harmful.denoiser.correction = True
    with torch.no_grad():  # shifts every estimate by 2 anomaly std: no guidance can hide that
        harmful.denoiser.backbone.output[-1].bias.fill_(2.0)
    check = check_correction(harmful, ds, coverage=0.1, members=4, steps=8, max_fields=2)
    assert not check.keep and "CRPS" in check.reason
    assert check.with_correction["crps"] > check.gaussian_part["crps"]
    assert check.fields == 2 and np.isfinite(check.gaussian_part["spread_skill"])


def test_fit_records_the_check_and_leaves_an_untrained_correction_out():
    ds = monthly(times=36, shape=(6, 8))
    bundle = geodiff.fit(ds, steps=2, validate_every=1, progress=False, base_channels=4)
    training = bundle.metadata["training"]
    note = training["correction_check"]
    assert bundle.denoiser.correction is note["keep"] is bundle.denoiser.config["correction"]
    if training["best_step"] == 0:
        assert not note["keep"] and "untrained" in note["reason"]
    else:
        assert {"with_correction", "gaussian_part", "reason"} <= set(note)


def test_the_check_refuses_another_dataset_and_a_network_prior(trained):
    ds, bundle = trained
    with pytest.raises(ConfigError, match="trained on"):
        check_correction(bundle, ds.isel(time=slice(0, 30)))
    network = geodiff.fit(ds, steps=1, prior="network", progress=False, base_channels=4)
    with pytest.raises(ConfigError, match="hybrid prior"):
        check_correction(network, ds)


def test_settling_twice_keeps_the_first_decision(trained):
    ds, bundle = trained
    gaussian = without_correction(bundle)
    gaussian.denoiser.correction = True
    assert gaussian.metadata["training"]["correction_check"]["reason"].startswith("not checked")  # fit's record
    del gaussian.metadata["training"]["correction_check"]
    gaussian.metadata["training"]["best_step"] = 0
    note = settle_correction(gaussian, ds)
    assert not note["keep"] and gaussian.denoiser.correction is False and "untrained" in note["reason"]
    gaussian.denoiser.correction = True  # a later call does not decide again
    assert settle_correction(gaussian, ds) is note and gaussian.denoiser.correction is True


def test_bad_start_and_correction_settings_are_refused(trained):
    ds, bundle = trained
    truth = ds.isel(time=[-1])
    obs = xr.Dataset({"value": ("obs", [float(truth.sst.values[0, 3, 4])]), "error_std": ("obs", [0.1])},
                     coords={"lat": ("obs", [ds.lat.values[3]]), "lon": ("obs", [ds.lon.values[4]]),
                             "time": ("obs", truth.time.values)})
    with pytest.raises(ConfigError, match="start must be"):
        geodiff.reconstruct(bundle, obs, members=2, steps=2, progress=False, start="zero")
    with pytest.raises(ConfigError, match="correction must be True or False"):
        type(bundle.denoiser).from_config({**bundle.denoiser.config, "correction": "yes"})
