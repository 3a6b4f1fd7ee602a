"""Lazy pipelines: a dask-backed input gives a dask-backed result that samples nothing until computed, equals the
eager result bit for bit, and shares its per-block function with the batch runner."""

import numpy as np
import pytest
import xarray as xr

import geodiff
from geodiff.batch import PipelineJob, run_batch
from geodiff.diffusion.engine import SamplingEngine
from geodiff.pipelines.blocks import PipelineBlock, lazy_over_time
from geodiff.errors import ConfigError
from tests.batch.helpers import VARIABLE, observations, tiny_bundle

OPTIONS = dict(members=2, seed=3, steps=2, max_normalized=None, progress=False)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return geodiff.load(tiny_bundle(tmp_path_factory.mktemp("lazy") / "bundle"))


@pytest.fixture
def draws(monkeypatch):
    """Counts the fields the sampling engine draws."""
    calls = []
    original = SamplingEngine.draw

    def counted(self, *args, **kwargs):
        calls.append(kwargs.get("where"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SamplingEngine, "draw", counted)
    return calls


def test_a_dask_backed_table_gives_a_lazy_result_equal_to_the_eager_one(model, draws, tmp_path):
    table = observations(5)
    eager = geodiff.reconstruct(model, table, **OPTIONS)
    assert len(draws) == 5
    draws.clear()
    lazy = geodiff.reconstruct(model, table.chunk(obs=16), time_chunk=2, **OPTIONS)
    assert draws == []  # nothing sampled yet
    assert lazy[VARIABLE].chunks == ((2,), (2, 2, 1), (2,), (8,), (16,))
    assert lazy[VARIABLE].dims == eager[VARIABLE].dims and lazy[VARIABLE].dtype == eager[VARIABLE].dtype
    xr.testing.assert_identical(lazy[VARIABLE].compute(), eager[VARIABLE])  # bit for bit, same coords and attrs
    assert len(draws) == 5
    lazy.to_zarr(tmp_path / "lazy.zarr", consolidated=False)
    written = xr.open_zarr(tmp_path / "lazy.zarr", consolidated=False)[VARIABLE].load()
    np.testing.assert_array_equal(written.values, eager[VARIABLE].values)
    expected = {key: value for key, value in eager.attrs.items() if key not in ("geodiff_observations",
                                                                               "geodiff_runaway", "history",
                                                                               "geodiff_guidance")}
    assert {key: lazy.attrs[key] for key in expected} == expected
    assert '"lazy": true' in lazy.attrs["geodiff_guidance"] and "geodiff.reconstruct(" in lazy.attrs["history"]


def test_laziness_can_be_forced_either_way(model):
    table = observations(2)
    assert geodiff.reconstruct(model, table, lazy=True, **OPTIONS)[VARIABLE].chunks is not None
    eager = geodiff.reconstruct(model, table.chunk(obs=5), lazy=False, **OPTIONS)
    assert eager[VARIABLE].chunks is None and "geodiff_observations" in eager.attrs
    picked = geodiff.reconstruct(model, table, lazy=True, times=np.unique(table["time"].values)[1:], **OPTIONS)
    np.testing.assert_array_equal(picked[VARIABLE].values, eager[VARIABLE].isel(time=[1]).values)


def test_the_batch_runner_computes_the_same_blocks(model, tmp_path):
    table = observations(3).chunk(obs=10)
    job = PipelineJob("reconstruct", model, {"observations": table}, members=2, seed=3,
                      options={"steps": 2, "max_normalized": None})
    assert isinstance(job.block(), PipelineBlock) and job.block().pipeline is geodiff.reconstruct
    run_batch(job, tmp_path / "batch.zarr", time_chunk=1, progress=False)
    lazy = geodiff.reconstruct(model, table, **OPTIONS)
    stored = xr.open_zarr(tmp_path / "batch.zarr", consolidated=False)[VARIABLE].load()
    np.testing.assert_array_equal(stored.values, lazy[VARIABLE].values)


def test_lazy_over_time_checks_its_layout():
    template = xr.Dataset({"v": ("x", [1.0])})
    with pytest.raises(ConfigError, match="output variable 'v' has no time dimension"):
        lazy_over_time(lambda times: template, template, np.arange(3))
    with pytest.raises(ConfigError, match="time_chunk must be an integer >= 1"):
        lazy_over_time(lambda times: template, template, np.arange(3), time_chunk=0)


def test_a_dask_backed_coarse_field_downscales_lazily_like_the_eager_path(draws):
    from geodiff.pipelines.downscale import coarsen, downscale, open_sample, sample_paths

    fields, topography = open_sample()
    coarse = coarsen(fields.isel(time=[0, 1, 2]), 4)
    coarse["tas"][1, 3, 5] = np.nan  # a coarse cell missing at one time only: invalid at every time, both ways
    model = geodiff.load(sample_paths()["model"])
    options = dict(sources={"topography": topography}, members=2, steps=2, progress=False)
    eager = downscale(model, coarse, **options)
    draws.clear()
    lazy = downscale(model, coarse.chunk(time=1), time_chunk=2, **options)
    assert draws == [] and lazy["tas"].chunks == ((2,), (2, 1), (36,), (48,))
    xr.testing.assert_identical(lazy["tas"].compute(), eager["tas"])
    assert bool(lazy["tas"][:, 0, 12:16, 20:24].isnull().all())  # under the missing coarse cell, at time 0 too
    assert lazy.attrs["geodiff_sources"] == eager.attrs["geodiff_sources"]
