"""geodiff.baselines.dineof and eof_projection: exact low-rank recovery, EOF span recovery, errors."""

import numpy as np
import pytest
import xarray as xr

from geodiff.baselines import dineof, eof_projection
from geodiff.errors import ConfigError, GeodiffError, GridError, ObservationError


def _low_rank(rank=3, n_time=15, depth=(0.0, 50.0), ny=8, nx=10, seed=0, months=None):
    rng = np.random.default_rng(seed)
    space = rng.normal(size=(len(depth) * ny * nx, rank)) * np.array([3.0, 2.0, 1.0, 0.7, 0.5][:rank])
    time = rng.normal(size=(n_time, rank))
    values = (time @ space.T).reshape(n_time, len(depth), ny, nx) + 10.0
    values[:, :, 0, :3] = np.nan  # land
    values[:, 1, -1, -1] = np.nan  # below the sea floor
    return xr.DataArray(values, dims=("time", "depth", "lat", "lon"), name="t", attrs={"units": "degC"},
                        coords={"time": months(n_time), "depth": list(depth), "lat": np.arange(ny) * 2.0,
                                "lon": np.arange(nx) * 2.0})


def _observe(truth, fraction, seed=1, error_std=0.0):
    rng = np.random.default_rng(seed)
    table = truth.stack(obs=truth.dims).reset_index("obs").to_dataset(name="value")
    keep = np.isfinite(table.value.values) & (rng.random(table.sizes["obs"]) < fraction)
    table = table.isel(obs=np.flatnonzero(keep))
    return table.assign(error_std=("obs", np.full(table.sizes["obs"], error_std)))


def test_dineof_recovers_low_rank_field_from_30_percent_missing(months):
    truth = _low_rank(months=months)
    obs = _observe(truth, 0.7)
    background = xr.full_like(truth, 10.0)
    out = dineof(obs, truth, background=background, tol=1e-12, max_iter=5000)
    assert int(out.attrs["dineof_modes"]) == 3
    ocean = truth.notnull()
    assert bool((out.t.isnull() == ~ocean).all())
    assert float(abs(out.t - truth).max()) < 1e-6
    assert out.t.attrs["units"] == "degC"
    # without a background the per-level mean of the observations is removed instead (the constant offset left
    # over is one more mode)
    plain = dineof(obs, truth, tol=1e-10, max_iter=5000)
    assert "mean of the observations" in plain.attrs["dineof_background"]
    assert float(np.sqrt(((plain.t - truth) ** 2).mean())) < 0.1 * float(truth.std())


def test_dineof_keep_observed_and_determinism(months):
    truth = _low_rank(months=months, seed=2)
    noisy = _observe(truth, 0.6, seed=3)
    noisy["value"] = noisy.value + np.random.default_rng(4).normal(scale=0.1, size=noisy.sizes["obs"])
    kept = dineof(noisy, truth, background=truth * 0 + 10.0, seed=5)
    again = dineof(noisy, truth, background=truth * 0 + 10.0, seed=5)
    xr.testing.assert_identical(kept, again.assign_attrs(history=kept.attrs["history"]))  # history lines carry the time
    pick = dict(time=noisy.time, depth=noisy.depth, lat=noisy.lat, lon=noisy.lon)
    np.testing.assert_allclose(kept.t.sel(**pick).values, noisy.value.values, rtol=1e-6)
    smooth = dineof(noisy, truth, background=truth * 0 + 10.0, seed=5, keep_observed=False)
    residual = smooth.t.sel(**pick).values - noisy.value.values
    assert 0.02 < np.std(residual) < 0.1  # the truncated reconstruction does not follow the noise


def test_eof_projection_recovers_a_field_in_the_training_span():
    rng = np.random.default_rng(6)
    ny, nx, rank = 6, 9, 4
    modes = rng.normal(size=(2, rank, ny * nx))
    coefs = rng.normal(size=(300, 2, rank))
    samples = np.einsum("skr,krp->skp", coefs, modes).reshape(300, 2, ny, nx)
    training = xr.DataArray(samples, dims=("sample", "depth", "y", "x"))
    grid = xr.DataArray(np.zeros((2, ny, nx)), dims=("depth", "lat", "lon"), name="t",
                        coords={"depth": [0.0, 10.0], "lat": np.arange(ny) * 2.0, "lon": np.arange(nx) * 2.0})
    truth = np.einsum("kr,krp->kp", rng.normal(size=(2, rank)), modes).reshape(2, ny, nx)
    kk, ii, jj = np.nonzero(rng.random(truth.shape) < 0.25)
    obs = xr.Dataset({"value": ("obs", truth[kk, ii, jj] + 5.0), "error_std": ("obs", np.zeros(kk.size))},
                     coords={"depth": ("obs", grid.depth.values[kk]), "lat": ("obs", grid.lat.values[ii]),
                             "lon": ("obs", grid.lon.values[jj])})
    out = eof_projection(obs, grid, training, background=grid + 5.0, ridge=1e-9)
    assert int(out.attrs["eof_modes"]) == rank  # the training data have exactly `rank` modes per level
    np.testing.assert_allclose(out.t.values, truth + 5.0, atol=1e-4)
    assert np.all(out.t_std.values < 1e-2)
    # with a prior weight and noisy observations the std grows but stays finite and positive
    noisy = obs.assign(error_std=obs.error_std + 0.5)
    soft = eof_projection(noisy, grid, training, background=grid + 5.0, n_modes=2)
    assert np.all(np.isfinite(soft.t_std.values)) and np.all(soft.t_std.values > 0)
    assert int(soft.attrs["eof_modes"]) == 2


def test_eof_projection_on_patches_with_land():
    rng = np.random.default_rng(7)
    grid = xr.DataArray(np.zeros((2, 4, 5)), dims=("time", "lat", "lon"), name="t",
                        coords={"time": np.array(["2000-01-01", "2000-02-01"], "datetime64[ns]"),
                                "lat": np.arange(4.0), "lon": np.arange(5.0)})
    grid[:, 0, 0] = np.nan
    training = xr.DataArray(rng.normal(size=(20, 3, 4, 5)), dims=("patch", "time", "y", "x"))
    obs = xr.Dataset({"value": ("obs", [1.0, -1.0, 0.5]), "error_std": ("obs", [0.1] * 3)},
                     coords={"lat": ("obs", [1.0, 2.0, 3.0]), "lon": ("obs", [1.0, 2.0, 4.0]),
                             "time": ("obs", grid.time.values[[0, 0, 1]])})
    out = eof_projection(obs, grid, training, background=grid.fillna(0.0), folds=2)
    assert np.isnan(out.t.values[:, 0, 0]).all() and np.isfinite(out.t.values[:, 1:, :]).all()


def test_dineof_errors(months):
    truth = _low_rank(months=months, n_time=4)
    obs = _observe(truth, 0.5)
    with pytest.raises(GridError, match="time"):
        dineof(obs, truth.isel(time=0))
    with pytest.raises(ConfigError, match="cv_fraction"):
        dineof(obs, truth, cv_fraction=1.5)
    with pytest.raises(ConfigError, match="max_modes"):
        dineof(obs, truth, max_modes=0)
    with pytest.raises(ConfigError, match="tol"):
        dineof(obs, truth, tol=0.0)
    with pytest.raises(GridError, match="shape"):
        dineof(obs, truth, background=truth.isel(lat=[0]))
    with pytest.raises(ObservationError, match="inside"):
        dineof(obs.assign_coords(depth=obs.depth + 5.0), truth)
    with pytest.raises(ObservationError, match="at least 3"):
        dineof(obs.isel(obs=[0, 1]), truth)


def test_eof_projection_errors():
    grid = xr.DataArray(np.zeros((3, 4)), dims=("lat", "lon"), name="t",
                        coords={"lat": np.arange(3.0), "lon": np.arange(4.0)})
    training = xr.DataArray(np.random.default_rng(0).normal(size=(10, 3, 4)), dims=("s", "y", "x"))
    obs = xr.Dataset({"value": ("obs", [1.0]), "error_std": ("obs", [0.1])},
                     coords={"lat": ("obs", [1.0]), "lon": ("obs", [1.0])})
    with pytest.raises(GridError, match="shape"):
        eof_projection(obs, grid, training.isel(x=[0, 1]), background=grid)
    with pytest.raises(ConfigError, match="ridge"):
        eof_projection(obs, grid, training, background=grid, ridge=-1.0)
    with pytest.raises(ConfigError, match="folds"):
        eof_projection(obs, grid, training, background=grid, folds=1)
    with pytest.raises(ConfigError, match="n_modes"):
        eof_projection(obs, grid, training, background=grid, n_modes=0)
    with pytest.raises(GridError, match="all zero"):
        eof_projection(obs, grid, training * 0, background=grid)
    with pytest.raises(GeodiffError):
        eof_projection(obs, grid, np.zeros((10, 3, 4)), background=grid)
