"""Interpolation baselines, the regression baseline and the spectral metrics."""

import numpy as np
import pytest
import torch
import xarray as xr

from geodiff import metrics
from geodiff.baselines.interpolation import bicubic, bilinear
from geodiff.baselines.regression import RegressionModel
from geodiff.errors import GridError
from geodiff.training.pairs import DownscalingPairs
from geodiff.training.regression import train_regression

from .conftest import tiny_net


def coarse_field(values: np.ndarray) -> xr.Dataset:
    lat = 10.0 + 4.0 * np.arange(values.shape[-2])
    lon = 4.0 * np.arange(values.shape[-1])
    return xr.Dataset({"tas": (("lat", "lon"), values, {"units": "K"})}, coords={"lat": lat, "lon": lon},
                      attrs={"history": "made by a test"})


def test_interpolation_reproduces_linear_fields_inside_the_domain():
    lat = 10.0 + 4.0 * np.arange(6)
    lon = 4.0 * np.arange(7)
    linear = 280.0 + 0.5 * lat[:, None] - 0.2 * lon[None, :]
    for method in (bilinear, bicubic):
        fine = method(coarse_field(linear), 4)
        expected = 280.0 + 0.5 * fine["lat"].values[:, None] - 0.2 * fine["lon"].values[None, :]
        np.testing.assert_allclose(fine["tas"].values, expected, rtol=0, atol=1e-6)  # edges: exact extrapolation
        assert fine["tas"].attrs == {"units": "K"} and fine.attrs["history"].startswith("made by a test\n")


def test_interpolation_keeps_land_nan():
    values = np.full((4, 5), 280.0)
    values[0, 0] = np.nan
    fine = bicubic(coarse_field(values), 2)["tas"].values
    assert np.isnan(fine[:2, :2]).all() and np.isfinite(fine[2:]).all() and np.isfinite(fine).sum() == 80 - 4
    np.testing.assert_allclose(fine[np.isfinite(fine)], 280.0)


def test_power_spectrum_and_ratio():
    rng = np.random.default_rng(0)
    noise = xr.DataArray(rng.normal(size=(4, 32, 32)), dims=("member", "lat", "lon"))
    smooth = noise.rolling(lat=4, center=True, min_periods=1).mean().rolling(lon=4, center=True, min_periods=1).mean()
    assert metrics.high_wavenumber_power_ratio(noise, noise) == pytest.approx(1.0)
    assert metrics.high_wavenumber_power_ratio(noise, smooth) < 0.2
    spectrum = metrics.power_spectrum(noise, window=False)
    assert spectrum["wavenumber"].values[0] == 0.0 and spectrum["wavenumber"].values[-1] == pytest.approx(0.5)
    # white noise: flat spectrum, total power (Parseval) equals the variance per cell
    assert float(spectrum.isel(wavenumber=slice(1, None)).std() / spectrum.isel(wavenumber=slice(1, None)).mean()) < 0.3
    with pytest.raises(GridError, match="finite"):
        metrics.power_spectrum(noise.where(noise > 0))


def test_regression_baseline_learns_and_round_trips(tmp_path):
    g = torch.Generator().manual_seed(0)
    fields = torch.randn(8, 1, 2, 2, generator=g).repeat_interleave(4, -2).repeat_interleave(4, -1)
    pairs = DownscalingPairs(fields, 4)
    model = RegressionModel(tiny_net(sources={"coarse": 1}, source_dropout=0.0))
    losses = train_regression(model, pairs, steps=40, batch_size=4, lr=3e-3, progress=False)
    # block-constant truth: the coarse field says it all (measured: mean loss of the last 5 steps 0.64 of the
    # first 5 after 40 steps)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    model.save_pretrained(tmp_path)
    again = RegressionModel.from_pretrained(tmp_path)
    x, cond = pairs[0]
    assert torch.equal(again(x[None], None, {k: v[None] for k, v in cond.items()}),
                       model(x[None], None, {k: v[None] for k, v in cond.items()}))


def test_pairs_are_aligned_and_deterministic():
    fields = torch.randn(2, 1, 16, 24)
    topography = torch.randn(1, 1, 32, 48)
    pairs = DownscalingPairs(fields, 4, sources={"topography": topography}, patch=(8, 8), patches_per_field=3, seed=1)
    for index in range(len(pairs)):
        n, (i0, i1, j0, j1) = pairs.window(index)
        x, cond = pairs[index]
        assert i0 % 4 == 0 and j0 % 4 == 0 and torch.equal(x, fields[n, :, i0:i1, j0:j1])
        assert torch.allclose(cond["coarse"], x.reshape(1, 2, 4, 2, 4).mean((2, 4)), atol=1e-6)
        assert torch.equal(cond["topography"], topography[0, :, 2 * i0:2 * i1, 2 * j0:2 * j1])
    assert torch.equal(DownscalingPairs(fields, 4, patch=(8, 8), seed=1)[1][0], pairs[1][0])
