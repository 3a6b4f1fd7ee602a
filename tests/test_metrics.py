"""geodiff.metrics: analytic values, estimator identities, the ReconMOST split identity, guidance masks."""

import math

import numpy as np
import pytest
import xarray as xr

from geodiff import metrics
from geodiff.errors import ConfigError, CoordinateError, GeodiffError, GridError


def _field(values, lat=(0.0, 60.0)):
    values = np.asarray(values, dtype=float)
    return xr.DataArray(values, dims=("lat", "lon"), coords={"lat": list(lat), "lon": np.arange(values.shape[1])})


def test_rmse_mae_bias_analytic():
    truth = _field(np.zeros((2, 2)))
    estimate = _field([[1.0, -1.0], [2.0, 4.0]])
    assert float(metrics.mse(truth, estimate)) == pytest.approx((1 + 1 + 4 + 16) / 4)
    assert float(metrics.rmse(truth, estimate)) == pytest.approx(math.sqrt(22 / 4))
    assert float(metrics.mae(truth, estimate)) == pytest.approx(8 / 4)
    assert float(metrics.bias(truth, estimate)) == pytest.approx(6 / 4)
    # cos(lat) weights: row at 60N counts half
    expected = (1 * (1 + 1) + 0.5 * (4 + 16)) / (2 * 1 + 2 * 0.5)
    assert float(metrics.mse(truth, estimate, weights="coslat")) == pytest.approx(expected)
    # explicit weights equal to coslat give the same
    w = metrics.lat_weights(truth.lat)
    assert float(metrics.mse(truth, estimate, weights=w)) == pytest.approx(expected)
    # reduce over one dim only
    per_lat = metrics.mse(truth, estimate, dim="lon")
    assert per_lat.dims == ("lat",)
    np.testing.assert_allclose(per_lat.values, [1.0, 10.0])
    # `where` keeps only the selected cells
    where = xr.DataArray([[True, False], [False, False]], dims=("lat", "lon"))
    assert float(metrics.rmse(truth, estimate, where=where)) == pytest.approx(1.0)


def test_nan_cells_are_skipped_and_datasets_work():
    truth = _field([[0.0, np.nan], [0.0, 0.0]])
    estimate = _field([[2.0, 100.0], [np.nan, 2.0]])
    assert float(metrics.rmse(truth, estimate)) == pytest.approx(2.0)
    ds_t = xr.Dataset({"a": truth, "b": truth * 0})
    ds_e = xr.Dataset({"a": estimate, "b": estimate * 0 + 1})
    out = metrics.rmse(ds_t, ds_e)
    assert isinstance(out, xr.Dataset)
    assert float(out.a) == pytest.approx(2.0) and float(out.b) == pytest.approx(1.0)


def test_metrics_stay_lazy_with_dask():
    pytest.importorskip("dask")
    rng = np.random.default_rng(0)
    truth = xr.DataArray(rng.normal(size=(4, 6, 8)), dims=("time", "lat", "lon"),
                         coords={"lat": np.linspace(-50, 50, 6)})
    estimate = truth + rng.normal(size=truth.shape)
    eager = metrics.rmse(truth, estimate, weights="coslat")
    lazy = metrics.rmse(truth.chunk({"time": 1}), estimate.chunk({"time": 2}), weights="coslat")
    assert lazy.chunks is not None or hasattr(lazy.data, "dask")
    assert float(lazy.compute()) == pytest.approx(float(eager))
    ens = (truth + xr.DataArray(rng.normal(size=(3, *truth.shape)), dims=("member", *truth.dims))).chunk({"time": 2})
    crps_lazy = metrics.crps_ensemble(truth.chunk({"time": 2}), ens)
    assert hasattr(crps_lazy.data, "dask")
    assert float(crps_lazy) == pytest.approx(float(metrics.crps_ensemble(truth, ens.compute())))


@pytest.mark.parametrize("estimator", ["fair", "nrg"])
def test_crps_of_constant_ensemble_is_mae(estimator):
    rng = np.random.default_rng(1)
    truth = xr.DataArray(rng.normal(size=50), dims="x")
    constant = xr.DataArray(rng.normal(size=50), dims="x")
    ens = constant.expand_dims(member=4).transpose("x", "member")
    crps = metrics.crps_ensemble(truth, ens, estimator=estimator)
    assert float(crps) == pytest.approx(float(metrics.mae(truth, constant)), rel=1e-12)


def test_fair_crps_is_unbiased_and_energy_form_is_not():
    # Members and truth i.i.d. N(0, 1): E[fair CRPS] = E[CRPS(N(0,1), y)] = 1/sqrt(pi); the energy ("nrg")
    # estimator is higher by E|X - X'| / (2 M) = 1 / (M sqrt(pi)).
    rng = np.random.default_rng(2)
    n, m = 40000, 4
    truth = xr.DataArray(rng.normal(size=n), dims="x")
    ens = xr.DataArray(rng.normal(size=(n, m)), dims=("x", "member"))
    fair = float(metrics.crps_ensemble(truth, ens))
    nrg = float(metrics.crps_ensemble(truth, ens, estimator="nrg"))
    assert fair == pytest.approx(1 / math.sqrt(math.pi), rel=0.02)
    assert nrg - fair == pytest.approx(1 / (m * math.sqrt(math.pi)), rel=0.03)


def test_crps_gaussian_closed_form_and_zero_std():
    y = xr.DataArray([0.0, 1.0, -2.0], dims="x")
    mu = xr.DataArray([0.0, 0.0, 0.0], dims="x")
    one = xr.DataArray([1.0, 1.0, 1.0], dims="x")
    per_point = metrics.crps_gaussian(y, mu, one, dim=[])
    from scipy.stats import norm

    z = y.values
    expected = z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / math.sqrt(math.pi)
    np.testing.assert_allclose(per_point.values, expected, rtol=1e-10)
    assert float(metrics.crps_gaussian(y, mu, 0 * one)) == pytest.approx(float(metrics.mae(y, mu)))


def test_spread_skill_ratio_of_calibrated_and_overdispersed_ensembles():
    # truth and members i.i.d. around a common centre: calibrated. Expected ratio 1; the standard error at
    # n = 40000 is ~0.4 %, the tolerance 3 %.
    rng = np.random.default_rng(3)
    n, m = 40000, 5
    centre = rng.normal(size=n) * 3
    truth = xr.DataArray(centre + rng.normal(size=n), dims="x")
    ens = xr.DataArray(centre[:, None] + rng.normal(size=(n, m)), dims=("x", "member"))
    assert float(metrics.spread_skill_ratio(truth, ens)) == pytest.approx(1.0, abs=0.03)
    # the (M + 1) / M correction matters: without it the ratio would be sqrt(M / (M + 1)) ~ 0.913
    wide = xr.DataArray(centre[:, None] + 2 * rng.normal(size=(n, m)), dims=("x", "member"))
    # spread 2, error variance 1 + 4 / M -> ratio sqrt((M+1)/M) * 2 / sqrt(1 + 4/M)
    expected = math.sqrt((m + 1) / m) * 2 / math.sqrt(1 + 4 / m)
    assert float(metrics.spread_skill_ratio(truth, wide)) == pytest.approx(expected, rel=0.03)


def test_reconmost_split_identities():
    rng = np.random.default_rng(4)
    truth = xr.DataArray(rng.normal(size=(3, 10, 12)), dims=("depth", "lat", "lon"))
    truth = truth.where(rng.random(truth.shape) > 0.2)  # 20 % land
    estimate = truth + rng.normal(size=truth.shape)
    mask = metrics.random_guidance_mask(truth.notnull(), 0.1, seed=0)
    out = metrics.reconmost_mse_split(truth, estimate, mask)
    se = ((estimate - truth) ** 2).values
    valid = np.isfinite(truth.values)
    g = mask.values & valid
    h = valid & ~mask.values
    n = valid.sum()
    assert float(out.mse_guidance_paper) == pytest.approx(se[g].sum() / n)
    assert float(out.mse_heldout_paper) == pytest.approx(se[h].sum() / n)
    assert float(out.mse_guidance) == pytest.approx(se[g].mean())
    assert float(out.mse_heldout) == pytest.approx(se[h].mean())
    total = float(out.mse_total)
    assert total == pytest.approx(float(out.mse_guidance_paper + out.mse_heldout_paper))
    assert total == pytest.approx(float(out.heldout_share * out.mse_heldout + out.guidance_share * out.mse_guidance))
    assert int(out.n_valid) == n and int(out.n_guidance + out.n_heldout) == n
    per_level = metrics.reconmost_mse_split(truth, estimate, mask, dim=["lat", "lon"])
    assert per_level.mse_total.dims == ("depth",)
    # a NaN estimate at a valid cell is not skipped
    broken = estimate.copy()
    broken[tuple(np.argwhere(valid)[0])] = np.nan
    assert np.isnan(float(metrics.reconmost_mse_split(truth, broken, mask).mse_total))


def test_random_guidance_mask_counts_and_determinism():
    rng = np.random.default_rng(5)
    valid = xr.DataArray(rng.random((2, 3, 20, 30)) > 0.3, dims=("time", "depth", "lat", "lon"))
    mask = metrics.random_guidance_mask(valid, 0.05, seed=7)
    assert mask.dims == valid.dims and mask.dtype == bool
    assert not bool((mask & ~valid).any())
    expected = np.rint(0.05 * valid.sum(("lat", "lon"))).astype(int)
    np.testing.assert_array_equal(mask.sum(("lat", "lon")).values, expected.values)
    again = metrics.random_guidance_mask(valid, 0.05, seed=7)
    xr.testing.assert_identical(mask, again)
    other = metrics.random_guidance_mask(valid, 0.05, seed=8)
    assert not bool((mask == other).all())
    pooled = metrics.random_guidance_mask(valid, 0.05, seed=7, per_level=False)
    assert int(pooled.sum()) == int(np.rint(0.05 * int(valid.sum())))
    assert not bool((pooled & ~valid).any())


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda v: metrics.random_guidance_mask(v, 0.0), ConfigError),
        (lambda v: metrics.random_guidance_mask(v, 1.5), ConfigError),
        (lambda v: metrics.random_guidance_mask(v.astype(float), 0.1), ConfigError),
        (lambda v: metrics.random_guidance_mask(v.rename(lat="y"), 0.1), CoordinateError),
        (lambda v: metrics.rmse(v * 1.0, v * 1.0, weights="area"), ConfigError),
        (lambda v: metrics.rmse((v * 1.0).drop_vars("lat"), v * 1.0, weights="coslat"), CoordinateError),
        (lambda v: metrics.rmse(v * 1.0, v * 1.0, dim="depth"), CoordinateError),
        (lambda v: metrics.crps_ensemble(v * 1.0, v * 1.0), CoordinateError),
        (lambda v: metrics.spread_skill_ratio(v * 1.0, (v * 1.0).expand_dims(member=1)), GridError),
        (lambda v: metrics.reconmost_mse_split(v * 1.0, v * 1.0, v * 1.0), ConfigError),
        (lambda v: metrics.mse(np.zeros(3), v), ConfigError),
    ],
)
def test_bad_input_raises_named_errors(call, error):
    valid = xr.DataArray(np.ones((4, 5), bool), dims=("lat", "lon"), coords={"lat": np.arange(4.0)})
    with pytest.raises(error) as info:
        call(valid)
    assert isinstance(info.value, GeodiffError)
    assert str(info.value)
