"""The baselines on the real WOA hold-out (two depth levels, 5 % of the ocean points per level and month)."""

import numpy as np
import pytest

from geodiff import metrics
from geodiff.adapters import woa
from geodiff.baselines import climatology, dineof, eof_projection, optimal_interpolation


@pytest.fixture(scope="module")
def problem():
    ds = woa.open_sample().sel(depth=[0.0, 500.0]).load()
    split = woa.holdout_split(ds)
    obs, mask = woa.holdout_observations(split, 0.05, seed=0)
    return split, obs, mask


def _heldout_rmse(split, mask, out):
    return float(metrics.rmse(split.heldout.temperature, out.temperature, where=~mask))


def test_baselines_on_the_woa_holdout(problem):
    split, obs, mask = problem
    target = split.target
    clim = climatology(split.train, target, by="month")
    oi = optimal_interpolation(obs, target, training=split.train, by="month", time_period_days=366.0,
                               time_correlation=False)
    din = dineof(obs, target, background=clim)
    patches = split.training_patches(stride=(16, 32), anomalies=True)
    eof = eof_projection(obs, target, patches, background=clim, max_modes=24)
    ocean = split.heldout.temperature.notnull()
    for out in (clim, oi, din, eof):
        assert list(out.data_vars)[0] == "temperature"
        assert out.temperature.dims == ("time", "depth", "lat", "lon")
        assert bool((out.temperature.notnull() == ocean).all())
        assert out.temperature.attrs["units"] == "degC"
        assert "history" in out.attrs
    scores = {name: _heldout_rmse(split, mask, out) for name, out in
              [("climatology", clim), ("oi", oi), ("dineof", din), ("eof", eof)]}
    # the box is held out, so the climatology is the zonal mean: several degrees off in the North Pacific
    assert 2.0 < scores["climatology"] < 6.0
    assert scores["oi"] < 0.5 * scores["climatology"]
    assert scores["eof"] < scores["climatology"] and scores["dineof"] < scores["climatology"]
    # OI's posterior std is of the right size (the covariance is fitted globally, so not exactly calibrated)
    z = ((oi.temperature - split.heldout.temperature) / oi.temperature_std).where(~mask)
    assert 0.7 < float(z.std()) < 1.6
    assert np.isfinite(float(metrics.crps_gaussian(split.heldout.temperature, oi.temperature, oi.temperature_std)))
