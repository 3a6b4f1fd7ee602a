"""Damage on disk: checksummed chunks, a corrupted chunk or ledger entry repaired by recomputing its region, a full
disk in the middle of a write; every repaired or resumed store is identical to an uninterrupted run."""

import errno
import json
import shutil

import numpy as np
import pytest
import xarray as xr
import zarr
from typer.testing import CliRunner

from geodiff.batch import OutputStore, finalise, run_batch, status, verify
from geodiff.batch.store import build_template
from geodiff.cli import app
from geodiff.errors import StoreError
from geodiff.io.encoding import CHUNK_BYTES
from tests.batch.conftest import assert_same_store, without_stamps
from tests.batch.helpers import RUN, VARIABLE, reconstruct_job


def assert_refinalised_same(store, reference):
    """``store``, a copy of the finalised ``reference`` repaired and finalised again, holds the same dataset; its
    history has one more finalise line."""
    left, right = (xr.open_zarr(p, consolidated=True).load() for p in (store, reference))
    left_history, right_history = (without_stamps(ds.attrs.pop("history")) for ds in (left, right))
    assert left_history == right_history + right_history[-1:]
    xr.testing.assert_identical(left, right)


def _codecs(path):
    return [codec["name"] for codec in json.loads((path / "zarr.json").read_text())["codecs"]]


def _data_chunk(store, time_index):
    return store / VARIABLE / "c" / "0" / str(time_index) / "0" / "0" / "1"


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_every_array_is_compressed_with_a_crc32c_checksum(reference):
    for array in (VARIABLE, "lat", "time", "geodiff_ledger/entries"):
        assert _codecs(reference / array)[-2:] == ["blosc", "crc32c"], array


def test_a_single_flipped_bit_is_caught_on_read(reference, tmp_path):
    store = tmp_path / "flipped.zarr"
    shutil.copytree(reference, store)
    _flip_byte(_data_chunk(store, 4))
    with pytest.raises(ValueError, match="checksum"):  # zarr's crc32c codec: never garbage values
        xr.open_zarr(store, consolidated=False)[VARIABLE].isel(time=4).values


def test_corrupted_chunk_is_repaired_by_recomputing_its_region(bundle, reference, tmp_path):
    store = tmp_path / "damaged.zarr"
    shutil.copytree(reference, store)
    _flip_byte(_data_chunk(store, 4))
    _data_chunk(store, 9).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(StoreError, match=r"region 4 \(times 4:5\) cannot be read \(corrupted chunk\).*--repair"):
        finalise(store)
    assert status(store).complete  # the ledger still says done: only a repair makes the job recompute them
    checked = CliRunner().invoke(app, ["batch", "verify", str(store)])
    assert checked.exit_code == 2 and "region 9 (times 9:10) cannot be read" in checked.output
    repaired = CliRunner().invoke(app, ["batch", "verify", "--repair", str(store)])
    assert repaired.exit_code == 0, repaired.output
    assert "marked regions [4, 9] not done: run the same batch job again" in repaired.output
    assert [m[0] for m in status(store).missing] == [4, 9]
    run_batch(reconstruct_job(bundle), store, **RUN)
    assert verify(store) == []
    finalise(store)
    assert_refinalised_same(store, reference)


def test_corrupted_ledger_chunk_counts_as_not_done_and_is_recomputed(bundle, reference, tmp_path):
    store = tmp_path / "ledger.zarr"
    shutil.copytree(reference, store)
    _flip_byte(store / "geodiff_ledger" / "entries" / "c" / "5")
    (store / "geodiff_ledger" / "entries" / "c" / "7").write_bytes(b"not a chunk")
    state = status(store)  # no traceback: the regions are simply not done
    assert [m[0] for m in state.missing] == [5, 7]
    assert any("ledger entry of region 5 (times 5:6) cannot be read" in line for line in verify(store))
    run_batch(reconstruct_job(bundle), store, **RUN)
    finalise(store)
    assert_refinalised_same(store, reference)


def _fail_writes_after(monkeypatch, allowed: int, half_written: bool) -> list[str]:
    """Make zarr's local writes raise ENOSPC after ``allowed`` of them (optionally leaving half a file behind, as a
    file system without atomic renames would); returns the list of keys written."""
    from zarr.storage import _local

    written: list[str] = []
    original = _local._put

    def put(path, value, *args, **kwargs):
        if len(written) >= allowed:
            if half_written:
                data = value.as_buffer_like()
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(bytes(data)[: max(1, len(data) // 2)])
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(str(path))
        return original(path, value, *args, **kwargs)

    monkeypatch.setattr(_local, "_put", put)
    return written


@pytest.mark.parametrize("allowed", [0, 1])  # a data chunk, then half a ledger entry
def test_disk_full_is_a_named_error_and_the_resumed_store_is_identical(bundle, reference, tmp_path, monkeypatch,
                                                                       allowed):
    store = tmp_path / "full.zarr"
    run_batch(reconstruct_job(bundle), store, part="1/2", **RUN)  # template and half of the regions written
    with monkeypatch.context() as patch:
        written = _fail_writes_after(patch, allowed, half_written=allowed % 2 == 1)
        with pytest.raises(StoreError, match=f"no space left on the device while writing .* to {store}"):
            run_batch(reconstruct_job(bundle), store, **RUN)
    assert len(written) == allowed
    run_batch(reconstruct_job(bundle), store, **RUN)  # space freed: the same call resumes
    finalise(store)
    assert_same_store(store, reference)


def test_disk_full_while_creating_the_store_leaves_nothing_behind(bundle, tmp_path, monkeypatch):
    store = tmp_path / "new.zarr"
    _fail_writes_after(monkeypatch, 3, half_written=True)
    with pytest.raises(StoreError, match="no space left on the device while writing the store's template"):
        run_batch(reconstruct_job(bundle), store, **RUN)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_large_fields_are_cut_into_chunks_of_a_few_megabytes():
    sample = xr.Dataset({"t": (("member", "time", "depth", "lat", "lon"), np.zeros((4, 1, 42, 90, 180), "float32"))})
    template = build_template(sample, xr.Variable("time", np.arange(3)), 1)
    chunks = template["t"].encoding["chunks"]
    assert chunks == (1, 1, 42, 90, 180)  # one member per chunk: 2.7 MB
    assert np.prod(chunks) * 4 <= CHUNK_BYTES
    assert template["t"].encoding["compressors"][-1].to_dict()["name"] == "crc32c"


def test_an_unreadable_ledger_metadata_file_is_a_store_error(reference, tmp_path):
    store = tmp_path / "meta.zarr"
    shutil.copytree(reference, store)
    (store / "geodiff_ledger" / "zarr.json").write_text("{ not json")
    (store / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
    with pytest.raises(StoreError, match="geodiff_ledger"):
        status(store)
    assert OutputStore(store).exists()
    assert zarr.open_group(store, mode="r") is not None


def test_an_unreadable_array_metadata_file_is_a_store_error(reference, tmp_path):
    store = tmp_path / "meta.zarr"
    shutil.copytree(reference, store)
    (store / VARIABLE / "zarr.json").write_text("{ not json")
    with pytest.raises(StoreError, match="metadata of the store .* cannot be read"):
        finalise(store)


def test_disk_full_while_finalising_is_a_store_error(reference, tmp_path, monkeypatch):
    store = tmp_path / "copy.zarr"
    shutil.copytree(reference, store)
    _fail_writes_after(monkeypatch, 0, half_written=False)
    with pytest.raises(StoreError, match="no space left on the device while writing the store's consolidated"):
        finalise(store)
