"""geodiff.fit: one call from a Dataset to a bundle; strict input checks; lazy data; validation and resume."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

import geodiff
from geodiff.errors import CheckpointError, CoordinateError, DataError, UnitsError
from geodiff.io.anomaly import AnomalyNormalizer
from geodiff.training.fit import FieldStream, validation_loss


def monthly(times: int = 48, shape: tuple[int, int] = (12, 16), seed: int = 0) -> xr.Dataset:
    """A monthly SST-like series: seasonal cycle, a meridional gradient, noise, a land corner."""
    time = pd.date_range("1990-01-01", periods=times, freq="MS")
    rng = np.random.default_rng(seed)
    lat = np.linspace(-20.0, 20.0, shape[0])
    lon = np.linspace(120.0, 180.0, shape[1])
    season = 3 * np.cos(2 * np.pi * (time.month.values - 1) / 12)[:, None, None]
    values = 20 + 0.2 * lat[None, :, None] + season + rng.normal(size=(times, *shape))
    values[:, :2, :3] = np.nan
    attrs = {"units": "degC", "standard_name": "sea_surface_temperature", "long_name": "sea surface temperature"}
    return xr.Dataset({"sst": (("time", "lat", "lon"), values.astype("float32"), attrs)},
                      coords={"time": time, "lat": lat, "lon": lon})


def test_fit_returns_a_bundle_that_reconstructs(tmp_path):
    ds = monthly()
    bundle = geodiff.fit(ds, steps=6, validate_every=3, progress=False, base_channels=8)
    training = bundle.metadata["training"]
    assert training["steps"] == 6 and [h["step"] for h in training["history"]] == [0, 3, 6]
    assert training["best_step"] in (0, 3, 6)
    assert training["prior"] == "hybrid" and 0 < training["gaussian_prior"]["alpha"] < 1
    assert training["normalizer"] == "anomaly" and training["climatology"] == "month"
    assert training["training_times"] + training["validation_times"] == 48
    assert isinstance(bundle.normalizer, AnomalyNormalizer)
    bundle.save(tmp_path / "prior")
    loaded = geodiff.load(tmp_path / "prior")
    assert loaded.sha256 == bundle.sha256
    truth = ds.isel(time=[-1])
    valid = np.argwhere(np.isfinite(truth.sst.values[0]))[::7]
    obs = xr.Dataset(
        {"value": ("obs", truth.sst.values[0][tuple(valid.T)].astype(float)), "error_std": ("obs", np.full(len(valid), 0.1))},
        coords={"lat": ("obs", ds.lat.values[valid[:, 0]]), "lon": ("obs", ds.lon.values[valid[:, 1]]),
                "time": ("obs", np.repeat(truth.time.values, len(valid)))},
    )
    # a 6-step network is no prior: this checks the plumbing (range checks off), not the skill
    out = geodiff.reconstruct(loaded, obs, members=2, steps=4, progress=False, max_normalized=None)
    assert out.sst.dims == ("member", "time", "lat", "lon")
    # decoded in physical units around the month's climatology, not around zero
    assert 10 < float(out.sst.mean()) < 30
    assert np.isnan(out.sst.values[:, :, :2, :3]).all()


def test_best_weights_are_the_best_validated_ones(tmp_path):
    ds = monthly(times=36)
    bundle = geodiff.fit(ds, steps=4, validate_every=2, progress=False, base_channels=8, checkpoint_dir=tmp_path)
    history = bundle.metadata["training"]["history"]
    best = min(history, key=lambda h: h["validation"])
    assert bundle.metadata["training"]["best_step"] == best["step"]
    held_out = bundle.metadata["training"]["validation_times"]
    fields = FieldStream(ds, bundle.codec, bundle.normalizer, range(36 - held_out, 36))
    stacked = torch.stack([fields[i] for i in range(len(fields))])
    score = validation_loss(bundle.denoiser, stacked, bundle.codec.mask)
    assert score == pytest.approx(best["validation"], rel=1e-5)


def test_fit_resumes_to_the_same_weights(tmp_path):
    ds = monthly(times=30)
    options = dict(steps=4, validate_every=2, progress=False, base_channels=8)
    whole = geodiff.fit(ds, checkpoint_dir=tmp_path / "a", **options)
    geodiff.fit(ds, checkpoint_dir=tmp_path / "b", **{**options, "steps": 4, "validate_every": 2})
    again = geodiff.fit(ds, checkpoint_dir=tmp_path / "b", **options)  # finished run: resumes, trains nothing
    for (name, a), (_, b) in zip(whole.denoiser.state_dict().items(), again.denoiser.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(CheckpointError, match="steps"):
        geodiff.fit(ds, checkpoint_dir=tmp_path / "b", **{**options, "steps": 8})


@pytest.mark.parametrize(
    "spoil, error, match",
    [
        (lambda ds: ds.assign_coords(lat=ds.lat * 6), CoordinateError, r"'lat' has \d+ out-of-range value"),
        (lambda ds: ds.isel(time=[0, 1, 2, 2, 3]), CoordinateError, "duplicate times"),
        (lambda ds: ds.assign(sst=ds.sst.where(ds.time != ds.time[3], ds.sst + 273.15)), UnitsError,
         "impossible in degC"),
        (lambda ds: ds.assign(sst=ds.sst.where(ds.time != ds.time[2], np.inf)), DataError, "infinite"),
        (lambda ds: ds.assign_coords(lon=ds.lon.values[::-1].copy()), CoordinateError, "lon"),
        (lambda ds: ds.assign(sst=ds.sst.assign_attrs(units="")), UnitsError, "'sst'"),
        (lambda ds: ds.assign(sst=ds.sst.where(ds.sst.time != ds.time[5], 1e20)), DataError, "fill value"),
    ],
)
def test_bad_training_data_is_refused_before_training(spoil, error, match):
    with pytest.raises(error, match=match):
        geodiff.fit(spoil(monthly()), steps=2, progress=False, base_channels=8)


def test_descending_latitude_is_flipped_and_trains_as_ascending():
    options = dict(steps=2, validate_every=2, progress=False, base_channels=8, prior="network")
    ascending = geodiff.fit(monthly(times=12), **options)
    descending = geodiff.fit(monthly(times=12).isel(lat=slice(None, None, -1)), **options)
    assert np.all(np.diff(descending.codec.lat) > 0)
    for name, tensor in ascending.denoiser.state_dict().items():
        assert torch.equal(tensor, descending.denoiser.state_dict()[name]), name


def test_a_dask_backed_series_streams_without_loading_it(tmp_path):
    """Streaming (max_memory below the data): no dask task ever holds more than a few chunks of the series (a
    plain network prior; a hybrid prior also keeps up to MAX_PRIOR_TIMES fields of its valid cells, by design)."""
    from dask.callbacks import Callback

    class LargestResult(Callback):
        def __init__(self) -> None:
            super().__init__()
            self.largest = 0

        def _posttask(self, key, result, dsk, state, worker_id):  # noqa: ANN001 (dask's callback signature)
            self.largest = max(self.largest, int(getattr(result, "nbytes", 0)))

    warnings.simplefilter("ignore")  # zarr's consolidated-metadata notice
    path = tmp_path / "series.zarr"
    monthly(times=144, shape=(16, 16)).chunk({"time": 6}).to_zarr(path)
    lazy = xr.open_zarr(path)
    assert lazy.sst.chunks is not None
    series_bytes = lazy.sst.size * 8  # what loading it in float64 would take
    with LargestResult() as spy:
        bundle = geodiff.fit(lazy, steps=20, validate_every=20, progress=False, base_channels=4,
                             max_memory=lazy.sst.nbytes / 10, prior="network")
    assert bundle.metadata["training"]["steps"] == 20
    assert 0 < spy.largest < series_bytes / 8, (spy.largest, series_bytes)
    with LargestResult() as spy:  # the check can fail: reading the whole series is seen
        lazy.sst.astype("float64").values
    assert spy.largest >= series_bytes


def test_a_stream_reads_a_batch_at_once_with_the_fields_of_single_reads(tmp_path):
    """A batch read (one isel, each distinct time once, any order, repeats) gives exactly the single-item fields;
    the training loop reports the time it waited for batches."""
    from geodiff.backbones.unet import UNet
    from geodiff.diffusion.denoiser import Denoiser
    from geodiff.io import Codec

    warnings.simplefilter("ignore")  # zarr's consolidated-metadata notice
    monthly(times=24).chunk({"time": 5}).to_zarr(tmp_path / "series.zarr")
    lazy = xr.open_zarr(tmp_path / "series.zarr")
    codec = Codec.from_dataset(lazy.isel(time=[0]))
    stream = FieldStream(lazy, codec, AnomalyNormalizer.fit(lazy), range(3, 24))
    items = [7, 2, 7, 20, 0]
    batch = stream.__getitems__(items)
    assert len(batch) == len(items)
    for item, field in zip(items, batch):
        assert torch.equal(field, stream[item])
    assert not torch.equal(batch[0], batch[1])
    torch.manual_seed(0)
    net = Denoiser(UNet(in_channels=1, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=()))
    result = geodiff.train(net, stream, mask=codec.mask, steps=3, batch_size=4, seed=0, progress=False)
    assert isinstance(result.data_seconds, float) and isinstance(result.seconds, float)  # shares: benchmarks/


@pytest.mark.parametrize("options, method, start", [(None, "exact", "centred"), ({"cg_iterations": 8}, "cg", "noise")])
def test_an_untrained_hybrid_prior_reconstructs_the_exact_gaussian_posterior(options, method, start):
    """With the network's output at zero the bundle is exactly Gaussian: the whole pipeline (per-cell anomaly
    statistics, observation normalisation, guidance, sampler, decoding) must give the Kalman posterior, with the
    default exact solve (centred start) as with conjugate gradients through the network (plain start)."""
    ds = monthly(times=36, shape=(6, 8))
    bundle = geodiff.fit(ds, steps=1, validate_every=1, progress=False, base_channels=4, check_correction=False)
    output = bundle.denoiser.backbone.output[-1]
    with torch.no_grad():
        output.weight.zero_()
        output.bias.zero_()
    bundle.denoiser.correction = method == "cg"  # the CG path runs the (zero) network, the exact one the prior alone
    truth = ds.isel(time=[-1])
    valid_cells = np.argwhere(np.isfinite(truth.sst.values[0]))
    picked = valid_cells[np.random.default_rng(1).choice(len(valid_cells), 6, replace=False)]
    values = truth.sst.values[0][tuple(picked.T)].astype(float)
    obs = xr.Dataset({"value": ("obs", values), "error_std": ("obs", np.full(6, 0.2))},
                     coords={"lat": ("obs", ds.lat.values[picked[:, 0]]), "lon": ("obs", ds.lon.values[picked[:, 1]]),
                             "time": ("obs", np.repeat(truth.time.values, 6))})
    members = 128
    out = geodiff.reconstruct(bundle, obs, members=members, steps=24, seed=3, progress=False,
                              guidance_options=options)
    recorded = json.loads(out.attrs["geodiff_guidance"])
    assert recorded["guidance_described"]["method"] == method and recorded["start"] == start
    mean_cell, std_cell = (a[0] for a in bundle.statistics(truth.time.values[0]))
    valid = bundle.codec.mask.numpy()[0]
    flat = np.flatnonzero(valid.reshape(-1))
    cov = bundle.denoiser.covariance()
    where = [int(np.flatnonzero(flat == j * 8 + i)[0]) for j, i in picked]
    scale = std_cell.reshape(-1)[flat]
    y = (values - mean_cell.reshape(-1)[flat][where]) / scale[where]
    gram = cov[np.ix_(where, where)] + np.diag((0.2 / scale[where]) ** 2)
    gain = np.linalg.solve(gram, cov[where]).T
    post_mean = mean_cell.reshape(-1)[flat] + scale * (gain @ y)
    post_std = scale * np.sqrt(np.clip(np.diag(cov - gain @ cov[where]), 0, None))
    ens = out.sst.values[:, 0].reshape(members, -1)[:, flat]
    error = np.abs(ens.mean(0) - post_mean) / post_std
    assert np.median(error) < 0.15 and error.max() < 0.6, (np.median(error), error.max())
    ratio = ens.std(0).mean() / post_std.mean()
    assert 0.85 < ratio < 1.15, ratio


def test_a_time_budget_sizes_the_run():
    bundle = geodiff.fit(monthly(times=30, shape=(6, 8)), time_budget=20.0, progress=False, base_channels=4)
    training = bundle.metadata["training"]
    assert training["steps"] >= 25 and training["history"][1]["step"] == 25
    assert [h["step"] for h in training["history"]][-1] == training["steps"]


def test_a_run_the_probe_planned_too_short_is_lengthened_once(monkeypatch):
    import geodiff.training.fit as module

    measure = module._probe_speed
    monkeypatch.setattr(module, "_probe_speed", lambda *args: 20 * measure(*args))  # misjudged 20x too slow
    bundle = geodiff.fit(monthly(times=30, shape=(6, 8)), time_budget=6.0, progress=False, base_channels=4)
    training = bundle.metadata["training"]
    assert training["replanned_from"] is not None and training["planned_steps"] > training["replanned_from"]
    assert training["steps"] > training["replanned_from"]


def test_a_time_budget_stops_a_run_of_given_steps():
    bundle = geodiff.fit(monthly(times=30, shape=(6, 8)), steps=5000, time_budget=0.5, validate_every=10,
                         progress=False, base_channels=4)
    training = bundle.metadata["training"]
    assert training["stopped_by_budget"] and 10 <= training["steps"] < 5000
    assert [h["step"] for h in training["history"]][-1] == training["steps"]
    unlimited = geodiff.fit(monthly(times=30, shape=(6, 8)), steps=20, validate_every=10, progress=False,
                            base_channels=4).metadata["training"]
    assert unlimited["steps"] == 20 and not unlimited["stopped_by_budget"]


def test_the_default_prior_is_hybrid_where_it_fits_and_a_network_beyond(monkeypatch, caplog):
    ds = monthly(times=24, shape=(6, 8))
    hybrid = geodiff.fit(ds, steps=1, progress=False, base_channels=4, check_correction=False)
    assert hybrid.metadata["training"]["prior"] == "hybrid"
    assert hybrid.metadata["training"]["prior_choice"].startswith("hybrid: 42 valid cells")
    monkeypatch.setattr("geodiff.training.fit.MAX_PRIOR_CELLS", 40)  # as if the grid were too large for it
    with caplog.at_level("WARNING", logger="geodiff"):
        network = geodiff.fit(ds, steps=1, progress=False, base_channels=4)
    training = network.metadata["training"]
    assert training["prior"] == "network" and "at most 40" in training["prior_choice"]
    assert type(network.denoiser).__name__ == "Denoiser" and "network-only prior" in caplog.text
    with pytest.raises(geodiff.errors.ConfigError, match="prior must be"):
        geodiff.fit(ds, steps=1, prior="gaussian", progress=False)
