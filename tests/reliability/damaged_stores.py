"""Stores, ledgers, checkpoints and bundles damaged on disk, and a disk that fills up mid-write: builders for the
bad-input table (each returns what the call under test raises or records)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import xarray as xr

from geodiff.batch import finalise, run_batch, verify
from geodiff.io.encoding import write_netcdf
from geodiff.training.checkpoint import MANIFEST_NAME, read_checkpoint, write_checkpoint

TIMES = 4


class RampJob:
    """A toy batch job: the output at time t is t + member everywhere (no model needed)."""

    def describe(self):
        return {"job": "ramp", "seed": 0}

    def times(self):
        return xr.Variable("time", np.arange(TIMES))

    def sample(self):
        return self.run(np.arange(1))

    def run(self, times):
        data = (np.asarray(times)[None, :, None] + np.arange(2)[:, None, None] + np.zeros((1, 1, 3))).astype("float32")
        return xr.Dataset({"v": (("member", "time", "x"), data)},
                          coords={"member": [0, 1], "time": np.asarray(times), "x": [0.0, 1.0, 2.0]})


def _store(folder: Path) -> Path:
    path = folder / "ramp.zarr"
    run_batch(RampJob(), path, progress=False)
    return path


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def corrupted_chunk(folder: Path) -> None:
    """One bit flipped in the data chunk of region 2, then finalise."""
    store = _store(folder)
    _flip(store / "v" / "c" / "0" / "2" / "0")
    finalise(store)


def corrupted_ledger(folder: Path) -> None:
    """The ledger chunk of region 1 overwritten, then finalise."""
    store = _store(folder)
    (store / "geodiff_ledger" / "entries" / "c" / "1").write_bytes(b"garbage")
    finalise(store)


def repaired_region(folder: Path) -> str:
    """A corrupted region repaired and recomputed: the store then holds exactly the values of the job."""
    store = _store(folder)
    _flip(store / "v" / "c" / "0" / "2" / "0")
    record = "\n".join(verify(store, repair=True))
    run_batch(RampJob(), store, progress=False)
    values = finalise(store)["v"].load()
    xr.testing.assert_equal(values, RampJob().run(np.arange(TIMES))["v"])
    return record


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def disk_full_batch(folder: Path) -> None:
    """The disk fills up after the store's template is written: the next region write fails."""
    store = folder / "full.zarr"
    run_batch(RampJob(), store, part=(1, TIMES), progress=False)
    with mock.patch("zarr.storage._local._put", _no_space):
        run_batch(RampJob(), store, progress=False)


def disk_full_netcdf(folder: Path) -> None:
    with mock.patch.object(xr.Dataset, "to_netcdf", lambda self, path, **kwargs: _no_space()):
        write_netcdf(RampJob().run(np.arange(TIMES)), folder / "out.nc")


def disk_full_checkpoint(folder: Path) -> None:
    """The disk fills up while the weights of a training checkpoint are written."""
    with mock.patch.object(Path, "write_bytes", lambda self, data: _no_space()):
        _checkpoint(folder)


def disk_full_bundle(bundle, folder: Path) -> None:
    with mock.patch.object(Path, "write_bytes", lambda self, data: _no_space()):
        bundle.save(folder / "model")


def _checkpoint(folder: Path) -> Path:
    return write_checkpoint(folder / "run", 1, tensors={"ema": {"w": torch.ones(3)}}, meta={"step": 1})


def checkpoint_naming_outside(folder: Path) -> None:
    path = _checkpoint(folder)
    (folder / "run" / "secret.json").write_text("{}")
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    manifest["files"]["../secret.json"] = {"sha256": "0" * 64, "size": 2}
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))
    read_checkpoint(path)


def checkpoint_file_unlisted(folder: Path) -> None:
    path = _checkpoint(folder)
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    del manifest["files"]["ema/model.safetensors"]
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))
    read_checkpoint(path)


def padded_weights(bundle_folder: Path) -> Path:
    """The bundle's weights file grown to 4 GiB (sparse: nothing is written)."""
    os.truncate(bundle_folder / "model.safetensors", 4 * 2**30)
    return bundle_folder
