"""Faults injected, and what survives them: files cut short by a killed writer (every adapter), a writer process
killed mid-write, an interrupted model save; kill-and-resume of training is tested where training lives.

``FAULTS`` counts every injected fault; each test asserts that nothing wrong comes back silently: either a
:class:`~geodiff.errors.GeodiffError` saying what is wrong with which file, or exactly the data that were
completely written.
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from geodiff.adapters import cmip6, en4, era5, gebco, gridsat, sounders, stations, woa
from geodiff.testing import products
from geodiff.adapters.files import INCOMPLETE, check_netcdf
from geodiff.adapters.standardize import standardize
from geodiff.errors import CheckpointError, DataError, GeodiffWarning
from geodiff.io.bundle import load
from tests.reliability import helpers

#: where the cut is made: a share of the file kept, or the number of bytes lost from its end
CUTS = (("keep 10%", 0.1), ("keep 50%", 0.5), ("keep 90%", 0.9), ("last byte lost", -1))


def _ferret_file(folder: Path) -> Path:
    hours = (np.arange(12) + 0.5) * 365.2425 / 12 * 24
    src = xr.Dataset(
        {"TEMP": (("T", "Z", "Y", "X"), np.full((12, 2, 4, 6), 10.0, "float32"),
                  {"units": "Deg C", "missing_value": np.float32(-1e34)})},
        coords={"T": ("T", hours, {"axis": "T", "units": "hour since 0000-01-01 00:00:00"}),
                "Z": ("Z", [0.0, 10.0], {"axis": "Z", "units": "METERS", "positive": "down"}),
                "Y": ("Y", [-3.0, -1.0, 1.0, 3.0], {"axis": "Y", "units": "degrees_north"}),
                "X": ("X", np.arange(20.5, 380.0, 60.0), {"axis": "X", "units": "degrees_east"})})
    path = folder / "ferret_woa.nc"
    src.to_netcdf(path, format="NETCDF3_CLASSIC")  # Ferret's own files are classic netCDF
    return path


#: adapter -> (write a valid file into a folder, open it)
ADAPTERS = {
    "cmip6": (lambda d: products.write_cmip6(d), cmip6.open_dataset),
    "en4 analysis": (lambda d: products.write_en4_analysis(d), en4.open_analysis),
    "en4 profiles": (lambda d: products.write_en4_profiles(d, n_prof=20), en4.read_profiles),
    "era5": (lambda d: products.write_era5(d, hours=1, step=10.0)[0], era5.open_dataset),
    "gridsat": (lambda d: products.write_gridsat(d, lat_range=(-1.0, 1.0)), gridsat.open_dataset),
    "sounders": (lambda d: products.write_sounder(d, months=1), sounders.open_dataset),
    "gebco": (lambda d: products.write_gebco(d / "gebco.nc", tile=(0.0, 0.0, 2.0, 2.0)), gebco.open_dataset),
    "stations": (lambda d: products.write_stations_netcdf(d / "stations.nc"),
                 lambda p: stations.read_stations(p, variable="tas", error_std=0.5)),
    "woa (Ferret)": (_ferret_file, woa.open_ferret_woa),
}


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("valid")
    files = {}
    for name, (write, _) in ADAPTERS.items():
        sub = folder / name.replace(" ", "_").replace("(", "").replace(")", "")
        sub.mkdir()
        files[name] = Path(write(sub))
    return files


def test_every_adapter_opens_its_valid_file(valid_files) -> None:
    """The fault tests below mean something only if the intact files open."""
    for name, (_, open_) in ADAPTERS.items():
        with warnings.catch_warnings():
            if name == "en4 analysis":  # the product's valid_max (degC) on kelvin data is reported, as it should be
                warnings.simplefilter("ignore", GeodiffWarning)
            opened = open_(valid_files[name])
        assert isinstance(opened, xr.Dataset) and opened.sizes, name


@pytest.mark.parametrize("cut", [c[0] for c in CUTS])
@pytest.mark.parametrize("adapter", list(ADAPTERS))
def test_a_file_cut_short_is_refused_by_its_adapter_naming_the_file(adapter, cut, valid_files, tmp_path) -> None:
    source = valid_files[adapter]
    data = source.read_bytes()
    share = dict(CUTS)[cut]
    size = len(data) + share if share < 0 else int(len(data) * share)
    path = tmp_path / source.name  # same name: the adapters recognise products by it
    path.write_bytes(data[:size])
    with pytest.raises(DataError) as info:
        ADAPTERS[adapter][1](path)
    message = str(info.value)
    assert INCOMPLETE in message and str(path) in message, message


# ---------------------------------------------------------------------------------------------------------------
# a writer process killed mid-write

WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np, netCDF4
    path, fmt, synced = sys.argv[1], sys.argv[2], int(sys.argv[3])
    nc = netCDF4.Dataset(path, "w", format=fmt)
    nc.createDimension("time", None)
    nc.createDimension("lat", 40)
    nc.createDimension("lon", 60)
    for name, size, units in (("lat", 40, "degrees_north"), ("lon", 60, "degrees_east")):
        var = nc.createVariable(name, "f8", (name,))
        var.units = units
        var[:] = np.linspace(-60, 60, size) if name == "lat" else np.arange(size) * 6.0 - 180.0
    t = nc.createVariable("time", "f8", ("time",))
    t.units = "days since 2000-01-01"
    v = nc.createVariable("tos", "f4", ("time", "lat", "lon"))
    v.units = "degC"
    for i in range(synced):
        t[i] = i
        v[i] = np.full((40, 60), i + 1.0, "f4")
        nc.sync()
    t[synced] = synced
    v[synced, :20] = np.full((20, 60), synced + 1.0, "f4")  # half a record, never synced
    print("READY", flush=True)
    time.sleep(600)
    """
)


@pytest.mark.parametrize("fmt", ["NETCDF3_CLASSIC", "NETCDF3_64BIT_OFFSET", "NETCDF4_CLASSIC", "NETCDF4"])
def test_a_writer_killed_mid_write_leaves_nothing_silently_wrong(fmt, tmp_path) -> None:
    path, synced = tmp_path / "tos.nc", 3
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(path), fmt, str(synced)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 60
        line = process.stdout.readline()
        assert line.strip() == "READY", process.stderr.read()[-2000:]
        assert time.monotonic() < deadline
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    try:
        with xr.open_dataset(path) as raw:
            ds = standardize(raw, variables={"tos": "degC"}).load()
    except DataError as err:
        assert INCOMPLETE in str(err) and str(path) in str(err)
        return
    except OSError as err:  # the netCDF library cannot open it at all: the adapters' wrapper names it (checked below)
        with pytest.raises(DataError, match=INCOMPLETE):
            cmip6.open_dataset(path, "tos")
        assert "HDF" in str(err) or "NetCDF" in str(err)
        return
    # readable: every record it shows must be a record that was completely written
    values = ds.tos.values
    assert synced <= values.shape[0] <= synced + 1
    for i in range(values.shape[0]):
        assert np.all(values[i] == i + 1.0) or (i == synced and np.all(np.isnan(values[i]))), (i, np.unique(values[i]))


# ---------------------------------------------------------------------------------------------------------------
# interrupted model save


class _Crash(Exception):
    pass


@pytest.mark.parametrize("crash_at", range(5))
def test_a_save_interrupted_at_any_file_never_loads_and_a_new_save_recovers(crash_at, tmp_path, monkeypatch) -> None:
    bundle = helpers.bundle()
    folder = tmp_path / "model"
    old = helpers.bundle(seed=1)
    old.save(folder)  # a previous bundle is being replaced
    written = []
    real_write = Path.write_bytes

    def crashing_write(self: Path, data: bytes) -> int:
        if len(written) == crash_at:
            real_write(self, data[: len(data) // 2])  # the process dies half way through this file
            raise _Crash(self.name)
        written.append(self.name)
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", crashing_write)
    with pytest.raises(_Crash):
        bundle.save(folder, overwrite=True)
    monkeypatch.undo()
    with pytest.raises(CheckpointError) as info:  # neither the old nor a half-new bundle loads
        load(folder)
    assert str(folder) in str(info.value)
    bundle.save(folder, overwrite=True)
    again = load(folder)
    assert again.sha256 == bundle.sha256
    for key, value in bundle.denoiser.state_dict().items():
        assert torch.equal(again.denoiser.state_dict()[key], value), key


# ---------------------------------------------------------------------------------------------------------------
# faults tested elsewhere (kept in the count; the test checks they still exist)

ELSEWHERE = {
    "training killed by SIGKILL, then resumed: bitwise the uninterrupted result":
        ("tests/training/test_training_resume.py", "test_sigkilled_run_resumes_to_the_uninterrupted_result"),
    "training interrupted at each checkpoint, then resumed: bitwise equal":
        ("tests/training/test_training_resume.py", "test_resume_equals_uninterrupted_run_bitwise"),
    "training checkpoint with a changed byte or left-over partial folders":
        ("tests/training/test_training_resume.py",
         "test_checkpoint_folders_load_as_denoisers_and_bad_resumes_are_refused"),
}


def test_faults_tested_elsewhere_still_have_their_tests() -> None:
    root = Path(__file__).resolve().parents[2]
    for fault, (file, function) in ELSEWHERE.items():
        tree = ast.parse((root / file).read_text())
        names = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        assert function in names, f"{fault}: {file}::{function} is gone"


def test_the_completeness_check_reads_only_the_header(tmp_path, monkeypatch) -> None:
    """check_netcdf never reads the data: a 100 MB classic file is checked from its first few hundred bytes."""
    path = tmp_path / "big.nc"
    xr.Dataset({"v": (("t", "x"), np.zeros((1, 10), "f4"))}).to_netcdf(path, format="NETCDF3_64BIT")
    with open(path, "r+b") as stream:  # grow the file to 100 MB the cheap way (sparse)
        stream.truncate(100 * 2**20)
    read = []
    real_open = Path.open

    class Counting:
        def __init__(self, stream):
            self.stream = stream

        def read(self, size=-1):
            data = self.stream.read(size)
            read.append(len(data))
            return data

        def __getattr__(self, name):
            return getattr(self.stream, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.stream.close()

    monkeypatch.setattr(Path, "open", lambda self, *a, **k: Counting(real_open(self, *a, **k)))
    assert check_netcdf(path) == "netCDF-3 (CDF-2)"
    assert 0 < sum(read) < 4096


FAULTS = {
    "files cut short, opened by each adapter": len(ADAPTERS) * len(CUTS),
    "writer processes killed mid-write": 4,
    "model saves interrupted at each file": 5,
    "tested elsewhere (training kill / resume / corrupt checkpoint)": len(ELSEWHERE),
}

if __name__ == "__main__":
    print(f"{sum(FAULTS.values())} faults injected:")
    for what, n in FAULTS.items():
        print(f"  {what}: {n}")
