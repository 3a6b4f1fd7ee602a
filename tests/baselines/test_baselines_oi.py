"""geodiff.baselines.optimal_interpolation: analytic kriging, recovery from dense data, covariance fit, errors."""

import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from geodiff.baselines import fit_covariance, optimal_interpolation
from geodiff.covariance import great_circle_km
from geodiff.baselines.optimal_interpolation import correlation
from geodiff.errors import ConfigError, CoordinateError, GeodiffError, GridError, ObservationError


def _grid(lat, lon, *, times=None, depth=None, name="t"):
    dims, coords, shape = [], {}, []
    if times is not None:
        dims.append("time"), shape.append(len(times))
        coords["time"] = times
    if depth is not None:
        dims.append("depth"), shape.append(len(depth))
        coords["depth"] = depth
    dims += ["lat", "lon"]
    shape += [len(lat), len(lon)]
    coords.update(lat=lat, lon=lon)
    return xr.DataArray(np.zeros(shape), dims=dims, coords=coords, name=name, attrs={"units": "degC"})


def _cov(variance=1.0, length=500.0, nugget=0.0, time_scale=np.inf, model="matern32"):
    return xr.Dataset({"variance": variance, "length_scale": length, "nugget": nugget, "time_scale": time_scale},
                      attrs={"model": model})


# ------------------------------------------------------------------------------------------- covariance fit
@pytest.mark.parametrize("model, length", [("exponential", 800.0), ("matern32", 600.0)])
def test_fit_recovers_known_length_scale(gp, months, model, length):
    lat = np.arange(-30.0, 31.0, 2.0)
    lon = np.arange(0.0, 90.0, 2.0)
    draws = gp(lat, lon, model=model, length_scale=length, variance=2.0, nugget=0.02, n=16, seed=1)
    anomalies = xr.DataArray(draws, dims=("time", "lat", "lon"), name="a",
                             coords={"time": months(16), "lat": lat, "lon": lon})
    cov = fit_covariance(anomalies, model=model, max_distance_km=3000.0)
    assert float(cov.length_scale) == pytest.approx(length, rel=0.15)
    assert float(cov.variance + cov.nugget) == pytest.approx(2.02, rel=0.15)
    # independent draws 30 days apart: the fitted time correlation at 30 days is negligible
    assert math.exp(-30.0 / float(cov.time_scale)) < 0.1
    assert cov.length_scale.attrs["units"] == "km"


def test_fit_recovers_time_scale(gp, months):
    lat = np.arange(-20.0, 21.0, 2.0)
    lon = np.arange(0.0, 60.0, 2.0)
    eps = gp(lat, lon, model="exponential", length_scale=500.0, n=24, seed=2)
    phi = math.exp(-30.0 / 90.0)  # AR(1) at 30-day steps with a 90-day e-folding time
    series = np.empty_like(eps)
    series[0] = eps[0]
    for t in range(1, 24):
        series[t] = phi * series[t - 1] + math.sqrt(1 - phi**2) * eps[t]
    da = xr.DataArray(series, dims=("time", "lat", "lon"), coords={"time": months(24), "lat": lat, "lon": lon},
                      name="a")
    cov = fit_covariance(da, model="exponential", max_distance_km=2500.0)
    assert float(cov.time_scale) == pytest.approx(90.0, rel=0.35)  # 24 steps of a spatially correlated field
    assert float(cov.length_scale) == pytest.approx(500.0, rel=0.2)


def test_fit_per_depth_level(gp, months):
    lat = np.arange(0.0, 30.0, 2.0)
    lon = np.arange(0.0, 40.0, 2.0)
    a = gp(lat, lon, model="exponential", length_scale=400.0, n=8, seed=3)
    b = 0.5 * gp(lat, lon, model="exponential", length_scale=900.0, n=8, seed=4)
    da = xr.DataArray(np.stack([a, b], axis=1), dims=("time", "depth", "lat", "lon"), name="a",
                      coords={"time": months(8), "depth": [0.0, 500.0], "lat": lat, "lon": lon})
    cov = fit_covariance(da, model="exponential", max_distance_km=2500.0)
    assert cov.length_scale.dims == ("depth",)
    assert float(cov.length_scale[0]) < float(cov.length_scale[1])
    assert float(cov.variance[0]) > 2 * float(cov.variance[1])


# ------------------------------------------------------------------------------------------- analysis
def test_single_observation_matches_closed_form():
    lat = np.arange(0.0, 10.0, 2.0)
    lon = np.arange(0.0, 10.0, 2.0)
    grid = _grid(lat, lon)
    var, nug, err, y = 2.0, 0.1, 0.3, 1.5
    obs = xr.Dataset({"value": ("obs", [y]), "error_std": ("obs", [err])},
                     coords={"lat": ("obs", [4.0]), "lon": ("obs", [4.0])})
    out = optimal_interpolation(obs, grid, background=grid + 10.0, covariance=_cov(var, 400.0, nug))
    total = var + nug + err**2
    d = great_circle_km(lat[:, None], lon[None, :], 4.0, 4.0)
    cov_to = var * correlation("matern32", d / 400.0) + nug * (d < 1e-3)
    expected_mean = 10.0 + cov_to * (y - 10.0) / total
    expected_std = np.sqrt(var + nug - cov_to**2 / total)
    np.testing.assert_allclose(out.t.values, expected_mean, rtol=1e-6)
    np.testing.assert_allclose(out.t_std.values, expected_std, rtol=1e-6)
    assert out.t.attrs["units"] == "degC" and out.t_std.attrs["units"] == "degC"
    assert out.attrs["baseline"] == "optimal_interpolation"


def test_oi_recovers_a_field_drawn_from_its_own_covariance(gp, small_grid):
    lat, lon = small_grid
    grid = _grid(lat, lon)
    rng = np.random.default_rng(5)
    err = 0.05
    z_scores, unobserved_rmse, std_observed = [], [], []
    for seed in range(4):
        truth = gp(lat, lon, model="matern32", length_scale=600.0, n=1, seed=10 + seed)[0]
        observed = rng.random(truth.shape) < 0.5
        ii, jj = np.nonzero(observed)
        values = truth[ii, jj] + rng.normal(scale=err, size=ii.size)
        obs = xr.Dataset({"value": ("obs", values), "error_std": ("obs", np.full(ii.size, err))},
                         coords={"lat": ("obs", lat[ii]), "lon": ("obs", lon[jj])})
        out = optimal_interpolation(obs, grid, background=grid, covariance=_cov(1.0, 600.0))
        error = out.t.values - truth
        z_scores.append((error / out.t_std.values).ravel())
        unobserved_rmse.append(np.sqrt(np.mean(error[~observed] ** 2)))
        std_observed.append(out.t_std.values[observed])
    # dense data (half the cells, 2-degree spacing vs 600 km correlation): small error where unobserved
    assert max(unobserved_rmse) < 0.45
    # the posterior std is calibrated
    assert np.std(np.concatenate(z_scores)) == pytest.approx(1.0, abs=0.2)
    # at observed cells the posterior std is about the observation error (a little less: the neighbours help)
    std_observed = np.concatenate(std_observed)
    assert np.all(std_observed <= err * 1.0001) and np.median(std_observed) > 0.6 * err


def test_time_correlation_and_per_field_analysis(months):
    lat = np.array([0.0, 2.0])
    lon = np.array([0.0, 2.0])
    times = months(3)
    grid = _grid(lat, lon, times=times)
    obs = xr.Dataset({"value": ("obs", [1.0]), "error_std": ("obs", [0.0])},
                     coords={"lat": ("obs", [0.0]), "lon": ("obs", [0.0]), "time": ("obs", times[:1])})
    cov = _cov(1.0, 300.0, 0.0, time_scale=60.0)
    out = optimal_interpolation(obs, grid, background=grid, covariance=cov)
    at_obs = out.t.sel(lat=0.0, lon=0.0).values
    np.testing.assert_allclose(at_obs, [1.0, math.exp(-30 / 60), math.exp(-60 / 60)], rtol=1e-6)
    single = optimal_interpolation(obs, grid, background=grid, covariance=cov, time_correlation=False)
    np.testing.assert_allclose(single.t.sel(lat=0.0, lon=0.0).values, [1.0, 0.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(single.t_std.isel(time=1).values, 1.0)
    # a periodic climatological year: day 0 and day 360 of a 365-day period are 5 days apart
    grid2 = _grid(lat, lon, times=np.array(["2000-01-01", "2000-12-26"], dtype="datetime64[ns]"))
    obs2 = obs.assign_coords(time=("obs", grid2.time.values[:1]))
    periodic = optimal_interpolation(obs2, grid2, background=grid2, covariance=cov, time_period_days=365.0)
    assert float(periodic.t.isel(time=1).sel(lat=0.0, lon=0.0)) == pytest.approx(math.exp(-5 / 60), rel=1e-6)


def test_great_circle_distance_wraps_across_the_date_line():
    lon = np.arange(-179.0, 180.0, 2.0)
    grid = _grid(np.array([0.0]), lon)
    obs = xr.Dataset({"value": ("obs", [1.0]), "error_std": ("obs", [0.1])},
                     coords={"lat": ("obs", [0.0]), "lon": ("obs", [179.0])})
    out = optimal_interpolation(obs, grid, background=grid, covariance=_cov(1.0, 400.0))
    row = out.t.isel(lat=0)
    assert float(row.sel(lon=-179.0)) == pytest.approx(float(row.sel(lon=177.0)), rel=1e-9)
    assert float(row.sel(lon=-179.0)) > 0.5


def test_levels_land_and_dataframe_input(months):
    lat = np.arange(0.0, 8.0, 2.0)
    lon = np.arange(0.0, 8.0, 2.0)
    grid = _grid(lat, lon, depth=[0.0, 100.0])
    grid[1, 0, 0] = np.nan  # below the sea floor at 100 m
    cov = xr.Dataset({"variance": ("depth", [1.0, 0.25]), "length_scale": ("depth", [300.0, 300.0]),
                      "nugget": ("depth", [0.0, 0.0]), "time_scale": ("depth", [np.inf, np.inf])},
                     coords={"depth": [0.0, 100.0]})
    frame = pd.DataFrame({"value": [1.0, 1.0], "error_std": [0.0, 0.0], "lat": [2.0, 2.0], "lon": [2.0, 2.0],
                          "depth": [0.0, 100.0], "variable": ["t", "t"]})
    out = optimal_interpolation(frame, grid, background=grid.fillna(0.0), covariance=cov)
    assert np.isnan(float(out.t.sel(depth=100.0, lat=0.0, lon=0.0)))
    assert float(out.t.sel(depth=0.0, lat=2.0, lon=2.0)) == pytest.approx(1.0, abs=1e-6)
    assert float(out.t_std.sel(depth=100.0, lat=6.0, lon=6.0)) <= 0.5 + 1e-9
    assert float(out.t_std.sel(depth=0.0, lat=6.0, lon=6.0)) > float(out.t_std.sel(depth=0.0, lat=2.0, lon=4.0))


def test_default_background_and_covariance_from_training(gp, months):
    lat = np.arange(-20.0, 22.0, 2.0)
    lon = np.arange(0.0, 60.0, 2.0)
    field = gp(lat, lon, model="matern32", length_scale=700.0, n=6, seed=6) + lat[None, :, None] / 10
    train = xr.DataArray(field, dims=("time", "lat", "lon"), name="t", attrs={"units": "degC"},
                         coords={"time": months(6), "lat": lat, "lon": lon})
    box = (train.lat >= 0) & (train.lat < 10) & (train.lon >= 20) & (train.lon < 40)
    target = train.where(box, drop=True)
    obs_cells = target.isel(time=slice(0, 1)).stack(obs=("time", "lat", "lon")).reset_index("obs")
    obs = obs_cells.to_dataset(name="value").assign(error_std=lambda d: 0.0 * d.value).isel(obs=slice(None, None, 3))
    out = optimal_interpolation(obs, target, training=train.where(~box), time_correlation=False)
    assert "zonal" in out.attrs["oi_covariance"]
    rmse_oi = float(np.sqrt(((out.t - target) ** 2).isel(time=0).mean()))
    clim = out.t.isel(time=1)  # no observation at time 1: the background (zonal mean of the training data)
    rmse_clim = float(np.sqrt(((clim - target.isel(time=0)) ** 2).mean()))
    assert rmse_oi < 0.5 * rmse_clim


# ------------------------------------------------------------------------------------------- errors
def _simple():
    grid = _grid(np.arange(0.0, 6.0, 2.0), np.arange(0.0, 6.0, 2.0))
    obs = xr.Dataset({"value": ("obs", [1.0, 2.0]), "error_std": ("obs", [0.1, 0.1])},
                     coords={"lat": ("obs", [0.0, 2.0]), "lon": ("obs", [0.0, 2.0])})
    return grid, obs


@pytest.mark.parametrize(
    "mutate, error, words",
    [
        (lambda g, o: ((g, o), {"covariance": _cov()}), ConfigError, "training"),
        (lambda g, o: ((g, o), {"background": g}), ConfigError, "training"),
        (lambda g, o: ((g, o.drop_vars("error_std")), {"background": g, "covariance": _cov()}), ObservationError,
         "error_std"),
        (lambda g, o: ((g, o.assign(error_std=-o.error_std)), {"background": g, "covariance": _cov()}),
         ObservationError, "error_std. must be finite and >= 0"),
        (lambda g, o: ((g, o.assign(value=o.value * np.nan)), {"background": g, "covariance": _cov()}),
         ObservationError, "value"),
        (lambda g, o: ((g, o.assign_coords(lat=o.lat + 50)), {"background": g, "covariance": _cov()}),
         ObservationError, "outside the grid: 2"),
        (lambda g, o: ((g, o), {"background": g, "covariance": _cov(), "max_obs": 1}), ObservationError, "max_obs"),
        (lambda g, o: ((g, o), {"background": g, "covariance": _cov(length=-1.0)}), ConfigError, "invalid"),
        (lambda g, o: ((g, o), {"background": g, "covariance": _cov().drop_vars("nugget")}), ConfigError, "nugget"),
        (lambda g, o: ((g, o), {"background": g.isel(lat=[0]), "covariance": _cov()}), GridError, "shape"),
        (lambda g, o: ((g.rename(lat="y"), o), {"background": g, "covariance": _cov()}), CoordinateError, "lat"),
        (lambda g, o: ((g, o.drop_dims("obs")), {"background": g, "covariance": _cov()}), ObservationError, "obs"),
        (lambda g, o: ((g, o.assign_coords(variable=("obs", ["s", "s"]))), {"background": g, "covariance": _cov()}),
         ObservationError, "variable"),
        (lambda g, o: ((g, o), {"training": g.expand_dims(time=2), "model": "spherical"}), ConfigError, "spherical"),
    ],
)
def test_bad_input_raises(mutate, error, words):
    (grid, obs), kwargs = mutate(*_simple())
    with pytest.raises(error, match=words) as info:
        optimal_interpolation(obs, grid, **kwargs)
    assert isinstance(info.value, GeodiffError)


def test_depth_errors():
    grid = _grid(np.arange(0.0, 6.0, 2.0), np.arange(0.0, 6.0, 2.0), depth=[0.0, 10.0])
    obs = xr.Dataset({"value": ("obs", [1.0]), "error_std": ("obs", [0.1])},
                     coords={"lat": ("obs", [0.0]), "lon": ("obs", [0.0])})
    with pytest.raises(ObservationError, match="depth"):
        optimal_interpolation(obs, grid, background=grid, covariance=_cov())
    obs = obs.assign_coords(depth=("obs", [0.0]))
    cov = _cov().expand_dims(depth=[0.0, 20.0])
    with pytest.raises(GridError, match="10.0"):
        optimal_interpolation(obs, grid, background=grid, covariance=cov)
    with pytest.raises(GridError):
        fit_covariance(xr.DataArray(np.zeros((2, 2, 2)), dims=("time", "lat", "lon"), name="a",
                                    coords={"time": np.array(["2000-01-01", "2000-02-01"], "datetime64[ns]"),
                                            "lat": [0.0, 1.0], "lon": [0.0, 1.0]}))


# ------------------------------------------------------------------------------------------- local OI
def _scattered(gp, lat, lon, n, seed, err=0.05, times=None):
    truth = gp(lat, lon, model="matern32", length_scale=600.0, n=1, seed=seed)[0]
    rng = np.random.default_rng(seed)
    ii, jj = rng.integers(0, lat.size, n), rng.integers(0, lon.size, n)
    coords = {"lat": ("obs", lat[ii]), "lon": ("obs", lon[jj])}
    if times is not None:
        coords["time"] = ("obs", times[rng.integers(0, len(times), n)])
    obs = xr.Dataset({"value": ("obs", truth[ii, jj] + rng.normal(scale=err, size=n)),
                      "error_std": ("obs", np.full(n, err))}, coords=coords)
    return truth, obs


def test_local_oi_with_every_observation_is_the_exact_analysis(gp, months):
    lat, lon = np.arange(0.0, 20.0, 2.0), np.arange(170.0, 200.0, 2.0)  # across the date line
    lon = (lon + 180.0) % 360.0 - 180.0
    lon.sort()
    times = months(2)
    grid = _grid(lat, lon, times=times)
    _, obs = _scattered(gp, lat, lon, 30, seed=1, times=times)
    cov = _cov(1.0, 600.0, 0.05, time_scale=45.0)
    exact = optimal_interpolation(obs, grid, background=grid, covariance=cov)
    local = optimal_interpolation(obs, grid, background=grid, covariance=cov, neighbours=30)
    np.testing.assert_allclose(local.t.values, exact.t.values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(local.t_std.values, exact.t_std.values, rtol=1e-5, atol=1e-6)
    assert local.attrs["oi_neighbours"] == 30 and exact.attrs["oi_neighbours"] == "all"


def test_local_oi_approaches_the_exact_analysis_and_lifts_the_dense_limit(gp, small_grid):
    lat, lon = small_grid
    grid = _grid(lat, lon)
    truth, obs = _scattered(gp, lat, lon, 300, seed=2)
    cov = _cov(1.0, 600.0)
    exact = optimal_interpolation(obs, grid, background=grid, covariance=cov)
    gaps = []
    for k in (4, 16, 64):
        local = optimal_interpolation(obs, grid, background=grid, covariance=cov, neighbours=k, max_obs=10)
        gaps.append(float(np.sqrt(np.mean((local.t.values - exact.t.values) ** 2))))
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 0.02 * float(np.std(truth))
    with pytest.raises(ObservationError, match="max_obs"):
        optimal_interpolation(obs, grid, background=grid, covariance=cov, max_obs=10)
    with pytest.raises(ConfigError, match="neighbours"):
        optimal_interpolation(obs, grid, background=grid, covariance=cov, neighbours=0)
