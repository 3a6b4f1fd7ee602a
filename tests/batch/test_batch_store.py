"""Batch output store: equals a direct call, all-land chunks, parts, status, layout and job mismatches,
corrupted or missing chunks found by finalise."""

import json
import shutil

import numpy as np
import pytest
import xarray as xr
import zarr

import geodiff
from geodiff.batch import OutputStore, finalise, run_batch, status
from geodiff.errors import ConfigError, StoreError
from tests.batch.conftest import assert_same_store
from tests.batch.helpers import LAND_LON, RUN, TIMES, VARIABLE, FlakyJob, observations, reconstruct_job


def test_batch_output_equals_one_direct_reconstruct_call(bundle, reference):
    direct = geodiff.reconstruct(geodiff.load(bundle), observations(TIMES), members=2, seed=3, steps=4, max_normalized=None,
                                 progress=False)
    stored = xr.open_zarr(reference, consolidated=True)
    xr.testing.assert_equal(stored[VARIABLE].load(), direct[VARIABLE])
    for key in ("units", "standard_name", "long_name"):
        assert stored[VARIABLE].attrs[key] == direct[VARIABLE].attrs[key]
    lines = stored.attrs["history"].splitlines()
    assert lines[0] == "made by geodiff.testing.datasets.synthetic_ocean"  # the input's history is kept, lines are appended
    assert "geodiff.batch.run_batch" in lines[1] and "finalise" in lines[2]
    assert json.loads(stored.attrs["geodiff_job"])["seed"] == 3
    assert stored.attrs["geodiff_model_sha256"] == geodiff.load(bundle).sha256
    assert stored[VARIABLE].encoding["chunks"] == (2, 1, 2, 8, LAND_LON)


def test_all_land_chunks_are_not_stored_but_their_regions_are_done(reference):
    chunk_files = {p.relative_to(reference / VARIABLE).parts for p in (reference / VARIABLE).rglob("*") if p.is_file()
                   and p.name != "zarr.json"}
    lon_chunks = {parts[-1] for parts in chunk_files}
    assert lon_chunks == {"1"}  # chunk 0 along lon is all land: never written (NaN = fill value)
    state = status(reference)
    assert state.complete and state.done == TIMES and not state.missing
    entry = OutputStore(reference).entries()[0]
    assert set(entry["sha256"]) == {VARIABLE} and entry["observations"]["kept"] == 12
    land = xr.open_zarr(reference, consolidated=True)[VARIABLE].isel(lon=slice(0, LAND_LON))
    assert bool(land.isnull().all())


def test_parts_together_equal_one_run(bundle, reference, tmp_path):
    path = tmp_path / "parts.zarr"
    run_batch(reconstruct_job(bundle), path, part="2/3", **RUN)
    state = status(path)
    assert state.done == TIMES // 3 and [m[0] for m in state.missing] == [i for i in range(TIMES) if i % 3 != 1]
    with pytest.raises(StoreError, match="region 0 .* is not done"):
        finalise(path)
    run_batch(reconstruct_job(bundle), path, part="1/3", **RUN)
    run_batch(reconstruct_job(bundle), path, part="3/3", **RUN)
    finalise(path)
    assert_same_store(path, reference)


@pytest.mark.parametrize("part", ["0/2", "3/2", "x"])
def test_bad_part_is_a_config_error(tmp_path, part):
    with pytest.raises(ConfigError, match="part"):
        run_batch(FlakyJob(str(tmp_path)), tmp_path / "s.zarr", part=part, progress=False)


def test_existing_store_of_another_chunking_grid_or_job_is_refused(bundle, reference, tmp_path):
    store = tmp_path / "copy.zarr"
    shutil.copytree(reference, store)
    with pytest.raises(StoreError, match=r"chunking of variable 'thetao' is \[2, 1, 2, 8, 8\] in the store, "
                                         r"\[2, 2, 2, 8, 8\] in this job"):
        run_batch(reconstruct_job(bundle), store, **{**RUN, "time_chunk": 2})
    with pytest.raises(StoreError, match="dimension 'time' has size 12 in the store, 6 in this job"):
        run_batch(reconstruct_job(bundle, times=6), store, **RUN)
    other_seed = reconstruct_job(bundle)
    other_seed.seed = 4
    with pytest.raises(StoreError, match="job setting 'seed' is 3 in the store, 4 here"):
        run_batch(other_seed, store, **RUN)
    with pytest.raises(StoreError, match="dimension 'lat' has size 8 in the store, None in this job"):
        run_batch(FlakyJob(str(tmp_path)), store, progress=False)
    foreign = tmp_path / "foreign.zarr"
    xr.Dataset({"a": ("x", np.zeros(3))}).to_zarr(foreign, zarr_format=3, consolidated=False)
    with pytest.raises(StoreError, match="no geodiff ledger"):
        run_batch(FlakyJob(str(tmp_path)), foreign, progress=False)
    (tmp_path / "file.zarr").write_text("not a store")
    with pytest.raises(StoreError, match="is not a zarr store"):
        run_batch(FlakyJob(str(tmp_path)), tmp_path / "file.zarr", progress=False)


def _chunk(store, time_index):
    return store / VARIABLE / "c" / "0" / str(time_index) / "0" / "0" / "1"


def test_finalise_finds_garbled_altered_and_missing_chunks(reference, tmp_path):
    store = tmp_path / "damaged.zarr"
    shutil.copytree(reference, store)
    finalise(store)  # a faithful copy passes
    _chunk(store, 3).write_bytes(b"\x00garbage" * 10)  # does not decode
    _chunk(store, 7).unlink()  # reads back as NaN
    array = zarr.open_array(store / VARIABLE, mode="r+")  # decodes, other values
    array[0, 10, 0, 0, LAND_LON] = array[0, 10, 0, 0, LAND_LON] + 1.0
    with pytest.raises(StoreError) as err:
        finalise(store)
    message = str(err.value)
    assert "region 3 (times 3:4) cannot be read" in message
    assert "variable 'thetao' in region 7 (times 7:8) differs from what was written" in message
    assert "region 10 (times 10:11) differs" in message
    assert "region 0 " not in message and "region 5 " not in message


def test_region_output_that_does_not_fit_the_store_is_refused(tmp_path):
    class Shifted(FlakyJob):
        def run(self, times):
            return self._values(np.asarray(times) + 100)  # wrong time values

    with pytest.raises(StoreError, match="region 0 .* coordinate 'time' has other values"):
        run_batch(Shifted(str(tmp_path)), tmp_path / "s.zarr", progress=False)
