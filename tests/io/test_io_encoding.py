"""What geodiff writes: compressed, checksummed, chunked netCDF written atomically; a full disk is a named error."""

import errno

import numpy as np
import pytest
import xarray as xr

from geodiff.errors import StoreError
from geodiff.io.encoding import CHUNK_BYTES, chunk_shape, netcdf_encoding, write_netcdf


def _field(times=3):
    lat, lon = np.meshgrid(np.linspace(-1, 1, 40), np.linspace(0, 6, 60), indexing="ij")
    values = np.broadcast_to(15 + 3 * np.sin(lat) * np.cos(lon), (2, times, 3, 40, 60)).astype("float32").copy()
    values += np.arange(times, dtype="float32")[None, :, None, None, None]  # a smooth field, as geodiff writes
    values[..., :10] = np.nan
    return xr.Dataset({"thetao": (("member", "time", "depth", "lat", "lon"), values, {"units": "degC"})},
                      coords={"time": np.arange(times).astype("datetime64[D]").astype("datetime64[ns]"),
                              "depth": [5.0, 10.0, 20.0], "lat": np.linspace(-10, 10, 40), "lon": np.arange(60.0)},
                      attrs={"history": "test"})


def test_chunks_are_split_outermost_first_and_stay_below_the_target():
    assert chunk_shape(("time", "lat", "lon"), (10, 2000, 4000), 4, {"time": 1}) == (1, 250, 4000)
    assert chunk_shape(("member", "time", "x"), (3, 5, 7), 8, {"time": 2}) == (3, 2, 7)
    for shape in [(16, 1, 42, 180, 360), (1, 1, 1, 3000, 3000), (7, 1, 5, 1, 1)]:
        chunks = chunk_shape(("member", "time", "depth", "lat", "lon"), shape, 4, {"time": 1})
        assert np.prod(chunks) * 4 <= max(CHUNK_BYTES, shape[-1] * 4), (shape, chunks)


def test_netcdf_is_compressed_checksummed_and_equal_to_what_was_given(tmp_path):
    ds = _field()
    path = write_netcdf(ds, tmp_path / "out.nc")
    back = xr.open_dataset(path).load()
    xr.testing.assert_identical(back, ds)
    encoding = back["thetao"].encoding
    assert encoding["zlib"] and encoding["shuffle"] and encoding["fletcher32"] and encoding["complevel"] == 4
    assert encoding["chunksizes"] == (2, 1, 3, 40, 60)
    plain = tmp_path / "plain.nc"
    ds.to_netcdf(plain)
    assert path.stat().st_size < plain.stat().st_size / 2
    plain.unlink()
    assert [p.name for p in tmp_path.iterdir()] == ["out.nc"]


def test_a_flipped_byte_in_a_written_netcdf_chunk_does_not_read_back_silently(tmp_path):
    path = write_netcdf(_field(), tmp_path / "out.nc")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises((RuntimeError, OSError, ValueError)):
        xr.open_dataset(path)["thetao"].values


def test_existing_packing_and_fill_values_are_kept():
    ds = _field()
    ds["thetao"].encoding = {"dtype": "int16", "scale_factor": 0.01, "_FillValue": -32767, "chunksizes": (9, 9),
                             "source": "elsewhere.nc"}
    encoding = netcdf_encoding(ds)["thetao"]
    assert encoding["dtype"] == "int16" and encoding["scale_factor"] == 0.01 and encoding["_FillValue"] == -32767
    assert "source" not in encoding and encoding["chunksizes"] == (2, 1, 3, 40, 60)


def test_disk_full_is_a_store_error_and_leaves_no_file(tmp_path, monkeypatch):
    def full(self, path, *args, **kwargs):
        open(path, "wb").write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", full)
    with pytest.raises(StoreError, match=r"no space left on the device while writing a netCDF file to .*out\.nc"):
        write_netcdf(_field(), tmp_path / "out.nc")
    assert list(tmp_path.iterdir()) == []
