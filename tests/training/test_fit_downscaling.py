"""fit_downscaling: regression, direct and residual models from Datasets through the one training loop, with a
validation period, early stopping, masks and saved bundles that geodiff.downscale uses."""

from __future__ import annotations

import json
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

import geodiff
from geodiff.diffusion.residual import RegressionModel, ResidualDenoiser
from geodiff.errors import ConfigError, GridError
from geodiff.pipelines.downscale import coarsen, downscale
from geodiff.training.fit_downscaling import fit_downscaling

H, W, T = 16, 16, 12
SMALL = dict(patch_size=(8, 8), base_channels=8, channel_mults=(1, 2), source_channels=8, patches_per_field=2,
             batch_size=4, progress=False)


def series() -> tuple[xr.Dataset, xr.Dataset]:
    rng = np.random.default_rng(0)
    lat, lon = 40.0 + np.arange(H) + 0.5, 10.0 + np.arange(W) + 0.5
    hill = np.exp(-((lat[:, None] - 48) ** 2 + (lon[None] - 18) ** 2) / 10.0)
    tas = 280.0 - 6.0 * hill[None] + rng.normal(size=(T, H, W)).cumsum(-1) * 0.2
    ds = xr.Dataset({"tas": (("time", "lat", "lon"), tas.astype("float32"), {"units": "K"})},
                    coords={"time": pd.date_range("2000", periods=T, freq="YS"), "lat": lat, "lon": lon})
    topo = xr.Dataset({"orog": (("lat", "lon"), 1000.0 * hill, {"units": "m"})}, coords={"lat": lat, "lon": lon})
    return ds, topo


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    ds, topo = series()
    folder = tmp_path_factory.mktemp("fit_downscaling")
    regression = fit_downscaling(ds, 4, mode="regression", sources={"topography": topo}, steps=6, **SMALL)
    residual = fit_downscaling(ds, 4, mode="residual", regression=regression, sources={"topography": topo}, steps=4,
                               **SMALL)
    regression.save(folder / "regression")
    residual.save(folder / "residual")
    return ds, topo, folder, regression, residual


def test_modes_build_their_models_and_record_the_run(models):
    ds, topo, folder, regression, residual = models
    assert isinstance(regression.denoiser, RegressionModel) and isinstance(residual.denoiser, ResidualDenoiser)
    info = residual.metadata["training"]
    assert info["mode"] == "residual" and info["regression"]["mode"] == "regression"
    assert info["training_times"] == T - 2 and info["validation_times"] == 2  # 15 % of 12 times, rounded up
    assert info["sigma_data"] > 0 and residual.denoiser.sigma_data == info["sigma_data"]  # the residual std
    history = [h["score"] for h in info["validation_history"]]
    assert [h["step"] for h in info["validation_history"]] == [0, 1, 2, 3, 4]
    best = info["best_step"]
    assert history[best] == min(history)  # the weights returned are those of the best validation score
    # the regression mean inside the residual model was not trained further
    inner = residual.denoiser.mean.state_dict()
    for name, value in regression.denoiser.state_dict().items():
        assert torch.equal(inner[name], value), name


def test_residual_denoiser_is_mean_plus_denoised_residual(models):
    *_, regression, residual = models
    torch.manual_seed(0)
    x = torch.randn(2, 1, 8, 8)
    cond = {"coarse": torch.randn(2, 1, 2, 2), "topography": torch.randn(2, 1, 8, 8)}
    model = residual.denoiser
    with torch.no_grad():
        mu = regression.denoiser(x, None, cond)
        out = model(x, 0.7, cond)
        plain = super(ResidualDenoiser, model).forward(x - mu, 0.7, cond)
    assert torch.allclose(out, mu + plain, atol=1e-6)
    assert not any(p.requires_grad for p in model.mean.parameters())
    model.train()
    assert not model.mean.training  # the mean stays in eval mode
    model.eval()


def test_saved_models_downscale(models):
    ds, topo, folder, regression, residual = models
    coarse = coarsen(ds.isel(time=[T - 1]), 4)
    reg = geodiff.load(folder / "regression")
    deterministic = downscale(reg, coarse, sources={"topography": topo}, progress=False)
    assert deterministic.tas.sizes["member"] == 1
    assert downscale(regression, coarse, sources={"topography": topo}, progress=False).tas.equals(deterministic.tas)
    ensemble = downscale(geodiff.load(folder / "residual"), coarse, sources={"topography": topo}, members=2, steps=2,
                         progress=False)
    assert ensemble.tas.shape == (2, 1, H, W) and np.isfinite(ensemble.tas.values).all()
    config = ensemble.attrs["geodiff_config"] if "geodiff_config" in ensemble.attrs else ""
    assert "coarse_error_std" in str(ensemble.attrs) or config
    with pytest.raises(ConfigError, match="station"):
        downscale(reg, coarse, sources={"topography": topo}, stations=pd.DataFrame(
            {"value": [280.0], "error_std": [0.1], "lat": [45.0], "lon": [15.0]}), progress=False)


def test_masks_keep_land_out_of_the_model_and_the_output():
    ds, _ = series()
    land = np.zeros((H, W), dtype=bool)
    land[5:7, 5:7] = True  # land under one coarse ocean cell: the coarse cell stays valid
    bundle = fit_downscaling(ds, 4, mode="regression", steps=2, mask=~land, area_weights=None, **SMALL)
    assert bundle.codec.mask[0].numpy().tolist() == (~land).tolist()
    assert bundle.metadata["downscaling"]["area_weights"] is None  # downscale's coarse guidance uses the same
    coarse = coarsen(ds.isel(time=[T - 1]).where(xr.DataArray(~land, dims=("lat", "lon"))), 4)
    assert np.isfinite(coarse.tas.values).all()
    out = downscale(bundle, coarse, progress=False)  # the model's own mask: its grid
    assert np.isnan(out.tas.values[0, 0][land]).all() and np.isfinite(out.tas.values[0, 0][~land]).all()
    numpy_mask = np.ones((H, W), dtype=bool)
    numpy_mask[0, 0] = False
    masked = downscale(bundle, coarse, mask=numpy_mask, progress=False)
    assert np.isnan(masked.tas.values[0, 0, 0, 0]) and np.isfinite(masked.tas.values[0, 0, 8, 8])


def test_time_budget_sets_the_steps():
    ds, _ = series()
    bundle = fit_downscaling(ds, 4, mode="regression", time_budget=1.0, **SMALL)
    info = bundle.metadata["training"]
    assert info["planned_steps"] >= 12 and info["time_budget"] == 1.0 and "seconds_per_step" in info
    assert 1 <= info["steps"] <= info["planned_steps"]
    assert info["stopped_by_budget"] == (info["steps"] < info["planned_steps"])


def test_time_budget_is_a_wall_clock_limit():
    ds, _ = series()
    bundle = fit_downscaling(ds, 4, mode="regression", steps=100_000, time_budget=2.0, validate_every=5, **SMALL)
    info = bundle.metadata["training"]
    assert info["stopped_by_budget"] and 1 <= info["steps"] < 100_000 and info["planned_steps"] == 100_000
    assert info["best_step"] <= info["steps"]


def test_a_run_the_probe_planned_too_short_is_lengthened_once(tmp_path, monkeypatch):
    import geodiff.training.fit_downscaling as module

    ds, _ = series()
    measure = module._probe_speed

    def slow_probe(*args):  # the probe misjudges the speed 20x too slow, as on a machine busy at the start
        seconds_per_step, one_score = measure(*args)
        return 20 * seconds_per_step, one_score

    monkeypatch.setattr(module, "_probe_speed", slow_probe)
    bundle = fit_downscaling(ds, 4, mode="regression", time_budget=10.0, checkpoint_dir=tmp_path, **SMALL)
    info = bundle.metadata["training"]
    assert info["replanned_from"] is not None and info["planned_steps"] > info["replanned_from"]
    assert info["steps"] > info["replanned_from"]  # it ran past the probe's plan
    assert json.loads((tmp_path / module.RUN_STATE).read_text())["replanned"]  # a resumed run does not re-plan


def test_bad_input_is_refused(models):
    ds, topo, _, regression, _ = models
    with pytest.raises(ConfigError, match="mode"):
        fit_downscaling(ds, 4, mode="gan", steps=1, **SMALL)
    shifted = topo.assign_coords(lat=topo.lat + 0.3)
    with pytest.raises(GridError, match="topography"):
        fit_downscaling(ds, 4, sources={"topography": shifted}, steps=1, **SMALL)
    with pytest.raises(ConfigError, match="other variables, factor or sources"):
        fit_downscaling(ds, 4, mode="residual", regression=regression, steps=1, **SMALL)
    with pytest.raises(GridError, match="mask"):
        fit_downscaling(ds, 4, mode="regression", steps=1, mask=np.ones((3, 3), bool), **SMALL)


def test_global_grids_wrap_in_training_and_sampling():
    ds, _ = series()
    lon = (np.arange(W) + 0.5) * 360.0 / W
    ds = ds.assign_coords(lon=lon)
    bundle = fit_downscaling(ds, 4, mode="regression", steps=1, **SMALL)
    assert bundle.metadata["training"]["architecture"]["periodic_lon"] is True
    out = downscale(bundle, coarsen(ds.isel(time=[T - 1]), 4), progress=False)
    assert np.isfinite(out.tas.values).all()


def test_regression_with_coarse_skip_adds_the_bilinear_interpolation():
    class Silent(torch.nn.Module):  # a backbone whose output is zero
        def forward(self, x, noise_label, *, mask=None, cond=None):
            return torch.zeros_like(x)

    coarse = torch.arange(4.0).reshape(1, 1, 2, 2)
    out = RegressionModel(Silent(), coarse_skip=True)(torch.zeros(1, 1, 4, 4), None, {"coarse": coarse})
    assert out[0, 0].tolist() == [[0.0, 0.25, 0.75, 1.0], [0.5, 0.75, 1.25, 1.5], [1.5, 1.75, 2.25, 2.5],
                                  [2.0, 2.25, 2.75, 3.0]]
    assert torch.equal(RegressionModel(Silent())(torch.zeros(1, 1, 4, 4), None, {"coarse": coarse}),
                       torch.zeros(1, 1, 4, 4))
    with pytest.raises(ConfigError, match="coarse"):
        RegressionModel(Silent(), coarse_skip=True)(torch.zeros(1, 1, 4, 4), None, {})


def test_residual_training_target_is_the_prediction_downscale_makes(models):
    """The residual model learns the fields minus the regression's prediction as geodiff.downscale makes it
    (whole fields, blended windows), not a per-patch prediction with its own edges."""
    from geodiff.training import fit_downscaling as module
    from geodiff.training.pairs import DownscalingPairs

    ds, topo, _, regression, _ = models
    times = ds.isel(time=[0, 5])
    fields = torch.from_numpy(regression.normalizer.normalize(times.tas).values.astype("float32"))[:, None]
    orog = torch.from_numpy(regression.normalizer.normalize(topo.orog).values.astype("float32"))[None, None]
    pairs = DownscalingPairs(fields, 4, sources={"topography": orog}, grid_lat=ds.lat.values)
    predicted = module._predict(regression.denoiser, pairs, (8, 8), periodic=False)
    made = downscale(regression, coarsen(times, 4), sources={"topography": topo}, progress=False)
    made = regression.normalizer.normalize(made.tas.squeeze("member", drop=True)).values
    np.testing.assert_allclose(predicted[:, 0].numpy(), made, atol=2e-5)


def test_out_of_fold_regressions_never_predict_times_they_trained_on(models, monkeypatch):
    from geodiff.training import fit_downscaling as module

    ds, topo, _, regression, _ = models
    seen = []
    real_fit = module.fit_downscaling

    def recording_fit(fold_ds, factor, **kwargs):
        n = fold_ds.sizes["time"]
        held = int(np.ceil(kwargs["validation"] * n))
        seen.append((fold_ds.time.values[: n - held], fold_ds.time.values[n - held:]))
        return real_fit(fold_ds, factor, **kwargs)

    predicted = []
    real_predict = module._predict

    def recording_predict(model, pairs, patch, periodic, batch=8):
        predicted.append(pairs.fields.shape[0])
        return real_predict(model, pairs, patch, periodic, batch)

    monkeypatch.setattr(module, "fit_downscaling", recording_fit)
    monkeypatch.setattr(module, "_predict", recording_predict)
    bundle = real_fit(ds, 4, mode="residual", regression=regression, residual_folds=3, sources={"topography": topo},
                      steps=2, **SMALL)
    train_times, validation_times = ds.time.values[:-2], ds.time.values[-2:]
    assert len(seen) == 3
    blocks = np.array_split(train_times, 3)
    for (trained, held), block in zip(seen, blocks):
        np.testing.assert_array_equal(held, validation_times)  # early stopping on the same validation times
        assert not np.isin(block, trained).any()  # the block it predicts is left out
        np.testing.assert_array_equal(np.sort(np.concatenate([trained, block])), train_times)
    # three blocks predicted by their fold regressions, then the validation times by the regression itself
    assert predicted[:3] == [b.size for b in blocks] and sum(predicted[:3]) == train_times.size
    info = bundle.metadata["training"]
    assert info["residual_folds"] == 3 and info["residual_rms_normalised"]["training"][0] > 0
    inner = bundle.denoiser.mean.state_dict()  # the regression itself stays the mean
    for name, value in regression.denoiser.state_dict().items():
        assert torch.equal(inner[name], value), name


def test_bad_residual_folds_are_refused(models):
    ds, topo, _, regression, _ = models
    options = dict(mode="residual", regression=regression, sources={"topography": topo}, steps=1, **SMALL)
    for folds in (0, 1, True, 11, 2.0):
        with pytest.raises(ConfigError, match="residual_folds"):
            fit_downscaling(ds, 4, residual_folds=folds, **options)
    with pytest.raises(ConfigError, match="residual_folds is for mode='residual'"):
        fit_downscaling(ds, 4, mode="regression", residual_folds=2, steps=1, **SMALL)


def test_residual_scale_calibrates_the_residuals_on_the_validation_times(models):
    ds, topo, _, regression, _ = models
    options = dict(mode="residual", regression=regression, sources={"topography": topo}, steps=1, **SMALL)
    calibrated = fit_downscaling(ds, 4, residual_scale="validation", **options).metadata["training"]
    rms = calibrated["residual_rms_normalised"]
    assert rms["training"][0] > 0 and rms["validation"][0] > 0
    assert calibrated["residual_scale"][0] == pytest.approx(rms["validation"][0] / rms["training"][0], rel=1e-5)
    plain = fit_downscaling(ds, 4, residual_scale=None, **options).metadata["training"]
    doubled = fit_downscaling(ds, 4, residual_scale=2.0, **options).metadata["training"]
    assert plain["residual_scale"] is None and doubled["residual_scale"] == [2.0]
    assert plain["residual_rms_normalised"] == rms  # the residuals themselves do not depend on the scale
    # the model learns the scaled residuals: their std (sigma_data) scales with the factor
    assert doubled["sigma_data"] == pytest.approx(2 * plain["sigma_data"], rel=1e-5)
    assert calibrated["sigma_data"] == pytest.approx(calibrated["residual_scale"][0] * plain["sigma_data"], rel=1e-5)
    per_cell = fit_downscaling(ds, 4, **options).metadata["training"]  # the default: per cell
    summary = per_cell["residual_scale"][0]
    assert 0 < summary["min"] <= summary["mean"] <= summary["max"]
    for bad in (0.0, -1.0, float("nan"), "training", True):
        with pytest.raises(ConfigError, match="residual_scale"):
            fit_downscaling(ds, 4, residual_scale=bad, **options)
    with pytest.raises(ConfigError, match="residual_scale is for mode='residual'"):
        fit_downscaling(ds, 4, mode="regression", residual_scale=2.0, steps=1, **SMALL)


def test_per_cell_residual_scale_is_the_smoothed_ratio_of_mean_squares():
    from geodiff.training.fit_downscaling import _residual_scale

    rng = np.random.default_rng(0)
    valid = np.ones((1, 8, 12), dtype=bool)
    valid[0, :2, :3] = False  # land
    amplitude = torch.from_numpy(rng.uniform(0.5, 2.0, size=(1, 8, 12)).astype("float32"))
    signs = torch.from_numpy(rng.choice([-1.0, 1.0], size=(5, 1, 8, 12)).astype("float32"))
    train = signs * amplitude * torch.from_numpy(valid)
    validation = 3.0 * train[:2]  # three times the error everywhere: the factor is 3 on every valid cell
    for periodic in (False, True):
        factor = _residual_scale("validation_per_cell", train, validation, valid, periodic)
        assert factor.shape == (1, 8, 12)
        np.testing.assert_allclose(factor[0][torch.from_numpy(valid[0])].numpy(), 3.0, rtol=1e-5)
        assert (factor[0][~torch.from_numpy(valid[0])] == 1.0).all()  # land keeps 1 (its residual is 0)
    # where the validation errors grow only on the eastern half, so does the factor (smoothly)
    east = torch.ones(1, 8, 12)
    east[..., 6:] = 2.0
    factor = _residual_scale("validation_per_cell", train, train[:2] * east, valid, False)[0]
    assert float(factor[4, 0]) == pytest.approx(1.0, abs=0.02) and float(factor[4, 11]) == pytest.approx(2.0, abs=0.05)
    assert (factor[4, 1:] >= factor[4, :-1] - 1e-6).all()  # rising from west to east
    assert torch.allclose(_residual_scale("validation", train, validation, valid, False), torch.full((1, 8, 12), 3.0))
