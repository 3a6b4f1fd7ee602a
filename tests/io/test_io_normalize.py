"""Normaliser: lazy dask fit equals numpy, round trips, tensor order, fixed maps, storage, clear errors."""

import dask
import dask.array
import numpy as np
import pytest
import torch
import xarray as xr
from dask.callbacks import Callback
from tests.io.io_datasets import make_ocean

from geodiff.errors import ConfigError, CoordinateError, DataError, GridError
from geodiff.io.codec import Codec
from geodiff.io.normalize import NORMALIZED_ATTR, Normalizer

torch.set_num_threads(1)


class CountComputes(Callback):
    """Counts dask graph executions (``dask.compute`` / ``.values`` calls on dask data)."""

    def __init__(self):
        super().__init__()
        self.runs = 0

    def _start(self, dsk):
        self.runs += 1


def big_lazy_ocean() -> xr.Dataset:
    """A dask-backed dataset built from chunks made on demand: only ever materialised chunk by chunk."""
    times, depths, lats, lons = 24, 3, 16, 20
    chunks = (4, depths, lats, lons)
    base = dask.array.random.default_rng(7).normal(10.0, 3.0, (times, depths, lats, lons), chunks=chunks)
    level_offset = dask.array.from_array(np.array([0.0, -4.0, -8.0])[None, :, None, None])
    land = np.zeros((depths, lats, lons), bool)
    land[:, :3, :5] = True
    land[2, -4:, -6:] = True
    thetao = dask.array.where(land, np.nan, base + level_offset)
    sst = dask.array.where(land[0], np.nan, base[:, 0] * 0.5 + 2.0).astype("float32")
    return xr.Dataset(
        {
            "thetao": (("time", "depth", "lat", "lon"), thetao, {"units": "degC"}),
            "tos": (("time", "lat", "lon"), sst, {"units": "degC"}),
        },
        coords={"time": np.arange(times), "depth": [5.0, 50.0, 500.0], "lat": np.linspace(-30, 30, lats),
                "lon": np.linspace(0, 95, lons)},
    )


def test_lazy_dask_fit_matches_numpy_in_one_pass():
    lazy = big_lazy_ocean()
    with CountComputes() as counter:
        norm = Normalizer.fit(lazy)
    assert counter.runs == 1  # every statistic of every variable from one pass over the data
    eager = lazy.compute()
    thetao = eager.thetao.values
    np.testing.assert_allclose(norm.mean["thetao"].values, np.nanmean(thetao, axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(norm.std["thetao"].values, np.nanstd(thetao, axis=(0, 2, 3)), rtol=1e-10)
    tos = eager.tos.values.astype("float64")
    np.testing.assert_allclose(norm.mean["tos"].item(), np.nanmean(tos), rtol=1e-12)
    np.testing.assert_allclose(norm.std["tos"].item(), np.nanstd(tos), rtol=1e-10)
    from_numpy = Normalizer.fit(eager)
    xr.testing.assert_allclose(norm.stats, from_numpy.stats, rtol=1e-10)
    assert norm.stats["thetao"].attrs == {"kind": "fitted", "units": "degC"}
    assert list(norm.stats["thetao"].depth.values) == [5.0, 50.0, 500.0]


def test_normalize_round_trip_keeps_dtype_attrs_and_laziness():
    lazy = big_lazy_ocean()
    norm = Normalizer.fit(lazy)
    out = norm.normalize(lazy)
    assert isinstance(out.thetao.data, dask.array.Array)  # still lazy
    assert out.tos.dtype == np.float32 and out.thetao.dtype == np.float64
    assert NORMALIZED_ATTR in out.thetao.attrs and out.thetao.attrs["units"] == "degC"
    assert NORMALIZED_ATTR not in lazy.thetao.attrs
    values = out.compute()
    np.testing.assert_allclose(values.thetao.mean(["time", "lat", "lon"]).values, 0, atol=1e-12)
    np.testing.assert_allclose(values.thetao.std(["time", "lat", "lon"]).values, 1, rtol=1e-10)
    back = norm.denormalize(out).compute()
    xr.testing.assert_allclose(back, lazy.compute(), rtol=1e-6)
    assert back.thetao.attrs == lazy.thetao.attrs
    with pytest.raises(GridError, match="'thetao' is already normalised"):
        norm.normalize(out)


def test_normalize_keeps_encoding_and_coords(ocean_nc):
    norm = Normalizer.fit(ocean_nc)
    back = norm.denormalize(norm.normalize(ocean_nc))
    xr.testing.assert_allclose(back, ocean_nc, rtol=1e-6)
    assert back.attrs == ocean_nc.attrs and back.thetao.attrs.keys() == ocean_nc.thetao.attrs.keys()
    assert back.thetao.encoding == ocean_nc.thetao.encoding and "month" in back.coords
    one_level = norm.normalize(ocean_nc[["thetao"]].isel(depth=2))  # a scalar depth picks its statistics
    expected = (ocean_nc.thetao.isel(depth=2) - norm.mean.thetao[2]) / norm.std.thetao[2]
    np.testing.assert_allclose(one_level.thetao.values, expected.values, rtol=1e-5, atol=1e-6)


def test_tensors_follow_codec_channel_order(ocean):
    norm = Normalizer.fit(ocean)
    codec = Codec.from_dataset(ocean, variables=["zos", "thetao", "so"])
    mean, std = norm.tensors(codec)
    assert mean.dtype == torch.float32 and mean.shape == (9,)
    expected = np.concatenate([[norm.mean.zos.item()], norm.mean.thetao.values, norm.mean.so.values])
    np.testing.assert_allclose(mean.numpy(), expected, rtol=1e-6)
    x, mask = codec.encode(ocean)
    z, _ = codec.encode(norm.normalize(ocean))
    manual = (x - mean[:, None, None]) / std[:, None, None]
    torch.testing.assert_close(z[:, mask], manual[:, mask], rtol=1e-5, atol=1e-5)
    with pytest.raises(GridError, match="variable 'zos' has no normalisation statistics"):
        Normalizer.fit(ocean, ["thetao", "so"]).tensors(codec)
    shifted = Codec.from_dataset(ocean.assign_coords(depth=ocean.depth + 1))
    with pytest.raises(CoordinateError, match="depth=6.0 of variable 'thetao' has no normalisation statistics"):
        norm.tensors(shifted)


def test_reconmost_affine_map():
    norm = Normalizer.from_range({"thetao": (-5.0, 40.0)})
    ds = make_ocean()[["thetao"]]
    out = norm.normalize(ds)
    expected = 2 * (ds.thetao + 5) / 45 - 1
    np.testing.assert_allclose(out.thetao.values, expected.values, rtol=1e-6, atol=1e-6)
    ends = xr.Dataset({"thetao": ("x", np.array([-5.0, 40.0]))})
    assert norm.normalize(ends).thetao.values.tolist() == [-1.0, 1.0]
    mean, std = norm.tensors(Codec.from_dataset(ds))
    assert mean.tolist() == [17.5] * 4 and std.tolist() == [22.5] * 4
    assert Normalizer.affine({"thetao": (17.5, 22.5)}).stats.identical(norm.stats)


def test_save_load_json_and_netcdf(tmp_path, ocean):
    norm = Normalizer.fit(ocean)
    for name in ("stats.json", "stats.nc"):
        norm.save(tmp_path / name)
        again = Normalizer.load(tmp_path / name)
        xr.testing.assert_identical(again.stats, norm.stats)
        assert again.stats.depth.dtype == np.float32
    assert (tmp_path / "stats.json").read_text().lstrip().startswith("{")
    with pytest.raises(ConfigError, match="must end in .json or .nc"):
        norm.save(tmp_path / "stats.pkl")


def test_zero_std_and_bad_maps_are_clear_errors(ocean):
    flat = ocean.copy(deep=True)
    flat["so"][:, 1] = xr.where(np.isnan(flat.so[:, 1]), np.nan, 35.0)
    with pytest.raises(DataError, match="variable 'so' at depth=15.0 has standard deviation 0.0"):
        Normalizer.fit(flat)
    empty = ocean.copy(deep=True)
    empty["zos"][:] = np.nan
    with pytest.raises(DataError, match="variable 'zos' has non-finite statistics"):
        Normalizer.fit(empty)
    with pytest.raises(ConfigError, match="scale > 0"):
        Normalizer.affine({"thetao": (1.0, 0.0)})
    with pytest.raises(ConfigError, match="high > low"):
        Normalizer.from_range({"thetao": (3.0, 3.0)})
    norm = Normalizer.fit(ocean, ["thetao"])
    with pytest.raises(GridError, match="variable 'so' has no normalisation statistics"):
        norm.normalize(ocean)
