"""Point-wise statistical forecast models (persistence, persistence + trend, AR(1)) used to cycle real fields."""

import numpy as np
import pytest
import torch
import xarray as xr

from geodiff.dynamics import ForecastModel
from geodiff.dynamics.autoregression import PointwiseAutoregression
from geodiff.errors import ConfigError, DataError, GridError

YEAR = 360 * 86400.0


def ar1_series(a, c, start, steps):
    """Noiseless x(t+1) = a x(t) + c from x(0) = start ([C, H, W] each)."""
    out = [start]
    for _ in range(steps - 1):
        out.append(a * out[-1] + c)
    return torch.stack(out)


def test_registered_as_forecast_plugin():
    from geodiff import registry
    from geodiff.dynamics import PointwiseAutoregression as exported

    assert registry.get("forecast", "autoregression") is PointwiseAutoregression is exported


def test_protocol_and_persistence_is_identity():
    model = PointwiseAutoregression.fit(torch.randn(5, 2, 3, 4), step_s=YEAR, variables=("a", "b"), kind="persistence")
    assert isinstance(model, ForecastModel)
    state = torch.randn(3, 2, 3, 4, dtype=torch.float64)
    assert torch.equal(model.forecast(state, 4 * YEAR), state)
    assert torch.equal(model.forecast(state, 0.0), state)


def test_persistence_trend_reproduces_a_linear_trend_exactly():
    slope = torch.linspace(-0.5, 2.0, 12, dtype=torch.float64).reshape(1, 3, 4)
    years = torch.arange(10.0, dtype=torch.float64)[:, None, None, None]
    series = torch.randn(1, 3, 4, dtype=torch.float64) + years * slope
    model = PointwiseAutoregression.fit(series, step_s=YEAR, variables=("t",), kind="persistence_trend")
    torch.testing.assert_close(model.offset, slope, rtol=0, atol=1e-12)
    torch.testing.assert_close(model.forecast(series[:7], 3 * YEAR), series[3:], rtol=0, atol=1e-12)


def test_persistence_trend_is_the_least_squares_slope():
    rng = np.random.default_rng(2)
    series = rng.normal(size=(30, 1, 2, 3)) + 0.05 * np.arange(30)[:, None, None, None]
    model = PointwiseAutoregression.fit(torch.from_numpy(series), step_s=1.0, variables=("x",))
    slopes = np.polyfit(np.arange(30), series.reshape(30, -1), 1)[0].reshape(1, 2, 3)
    np.testing.assert_allclose(model.offset.numpy(), slopes, rtol=1e-10)
    assert torch.equal(model.coefficient, torch.ones(1, 2, 3, dtype=torch.float64))


def test_ar1_recovers_coefficients_and_multi_step_is_the_closed_form():
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 4, generator=generator, dtype=torch.float64) * 1.6 - 0.8
    c = torch.randn(2, 3, 4, generator=generator, dtype=torch.float64)
    series = ar1_series(a, c, torch.randn(2, 3, 4, generator=generator, dtype=torch.float64) * 5, 6)
    model = PointwiseAutoregression.fit(series, step_s=YEAR, variables=("x", "y"), kind="ar1")
    torch.testing.assert_close(model.coefficient, a, rtol=0, atol=1e-8)
    torch.testing.assert_close(model.offset, c, rtol=0, atol=1e-8)
    state = torch.randn(2, 2, 3, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    n = 3
    closed = a**n * state + c * (1 - a**n) / (1 - a)
    out = model.forecast(state, n * YEAR)
    torch.testing.assert_close(out, closed, rtol=1e-10, atol=1e-10)
    (gradient,) = torch.autograd.grad(out.sum(), state)  # differentiable: d x(t+n) / d x(t) = a^n
    torch.testing.assert_close(gradient, (a**n).expand_as(gradient), rtol=1e-12, atol=1e-12)


def test_ar1_matches_numpy_least_squares_on_noisy_data():
    rng = np.random.default_rng(1)
    series = rng.normal(size=(40, 1, 2, 2)).cumsum(0) * 0.3 + rng.normal(size=(40, 1, 2, 2))
    model = PointwiseAutoregression.fit(torch.from_numpy(series), step_s=1.0, variables=("x",), kind="ar1")
    for i in range(2):
        for j in range(2):
            slope, intercept = np.polyfit(series[:-1, 0, i, j], series[1:, 0, i, j], 1)
            assert model.coefficient[0, i, j].item() == pytest.approx(slope, rel=1e-9)
            assert model.offset[0, i, j].item() == pytest.approx(intercept, rel=1e-9, abs=1e-12)


def test_errors_name_what_is_wrong():
    model = PointwiseAutoregression.fit(torch.randn(4, 1, 2, 2), step_s=YEAR, variables=("t",))
    with pytest.raises(ConfigError, match="multiple of step_s"):
        model.forecast(torch.zeros(1, 1, 2, 2), 1.5 * YEAR)
    with pytest.raises(ConfigError, match="multiple of step_s"):
        model.forecast(torch.zeros(1, 1, 2, 2), -YEAR)
    with pytest.raises(GridError, match=r"\[B, 1, 2, 2\]"):
        model.forecast(torch.zeros(1, 1, 2, 3), YEAR)
    with pytest.raises(ConfigError, match="kind"):
        PointwiseAutoregression.fit(torch.randn(4, 1, 2, 2), step_s=YEAR, variables=("t",), kind="ar2")
    with pytest.raises(GridError, match="T >= 3"):
        PointwiseAutoregression.fit(torch.randn(2, 1, 2, 2), step_s=YEAR, variables=("t",), kind="ar1")
    with pytest.raises(DataError, match="constant"):
        PointwiseAutoregression.fit(torch.ones(5, 1, 2, 2), step_s=YEAR, variables=("t",), kind="ar1")
    with pytest.raises(DataError, match="NaN"):
        PointwiseAutoregression.fit(torch.full((3, 1, 2, 2), float("nan")), step_s=YEAR, variables=("t",))
    with pytest.raises(GridError, match="variables"):
        PointwiseAutoregression(torch.ones(2, 2, 2), torch.zeros(2, 2, 2), step_s=YEAR, variables=("t",))
    with pytest.raises(ConfigError, match="step_s"):
        PointwiseAutoregression(torch.ones(1, 2, 2), torch.zeros(1, 2, 2), step_s=0.0, variables=("t",))


def test_cycle_uses_the_statistical_model_for_the_next_background():
    """cycle(): the background of year t+1 is the trend forecast of year t's analysis mean (annual steps)."""
    from geodiff.pipelines.assimilate import AssimilationModel, cycle, twin_observations

    rng = np.random.default_rng(0)
    times = np.array(["2060-06-01", "2061-06-01"], dtype="datetime64[ns]")
    lat, lon = np.linspace(20.0, 50.0, 16), np.linspace(230.0, 300.0, 16)
    truth = xr.Dataset({"tas": (("time", "lat", "lon"), rng.normal(size=(2, 16, 16)).astype(np.float32),
                                {"units": "K", "standard_name": "air_temperature_anomaly"})},
                      coords={"time": times, "lat": lat, "lon": lon})
    torch.manual_seed(0)
    model = AssimilationModel.untrained(truth, latent_channels=1, base_channels=8, periodic=False)
    trend = PointwiseAutoregression(torch.ones(1, 16, 16), torch.full((1, 16, 16), 0.25), step_s=YEAR,
                                    variables=("tas",), kind="persistence_trend")
    obs = twin_observations(truth, [30.0, 40.0], [250.0, 280.0], error_std={"tas": 0.5}, seed=0)
    result = cycle(model, trend, truth.isel(time=[0]), obs, times, interval_s=YEAR, members=2, steps=2,
                   progress=False)
    expected = result.analysis.tas.isel(time=0).mean("member") + 0.25
    np.testing.assert_allclose(result.background.tas.isel(time=1).values, expected.values, atol=1e-5)
