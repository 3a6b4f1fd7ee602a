"""geodiff.adapters.woa: the shipped World Ocean Atlas sample, Ferret conversion, and the hold-out protocol."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from geodiff import tutorial
from geodiff.adapters import woa
from geodiff.errors import CalendarError, ConfigError, DataError, GeodiffError, UnitsError

ROOT = Path(__file__).resolve().parents[2]


def _ferret_source() -> Path | None:
    """The original Ferret file, if installed (GEODIFF_FERRET_DATA or the Debian path)."""
    for folder in (os.environ.get("GEODIFF_FERRET_DATA"), "/usr/share/ferret-vis/data"):
        if folder and (Path(folder) / "ocean_atlas_subset.nc").is_file():
            return Path(folder) / "ocean_atlas_subset.nc"
    return None


@pytest.fixture(scope="module")
def sample():
    return woa.open_sample()


# ----------------------------------------------------------------------------------------------- sample
def test_sample_is_canonical(sample):
    ds = sample
    assert dict(ds.sizes) == {"time": 12, "depth": 19, "lat": 90, "lon": 180}
    temp = ds[woa.VARIABLE]
    assert temp.dims == ("time", "depth", "lat", "lon")
    assert temp.attrs["units"] == "degC"
    assert temp.attrs["standard_name"] == "sea_water_temperature"
    assert temp.attrs["long_name"]
    assert np.all(np.diff(ds.lat.values) > 0)
    assert np.all(np.diff(ds.lon.values) > 0) and ds.lon.min() >= -180 and ds.lon.max() < 180
    assert ds.attrs["geodiff_lon_convention"] == "-180..180"
    assert ds.depth.attrs["units"] == "m" and ds.depth.attrs["positive"] == "down"
    assert ds.depth.values[0] == 0 and ds.depth.values[-1] == 1000 and np.all(np.diff(ds.depth.values) > 0)
    assert np.issubdtype(ds.time.dtype, np.datetime64)
    assert ds.time.dt.month.values.tolist() == list(range(1, 13))
    assert set(ds.time.dt.year.values.tolist()) == {2000}
    assert "placeholder" in ds.time.attrs["comment"]
    for key in ("source", "license", "history", "references", "source_file_sha256"):
        assert ds.attrs[key]
    assert "public domain" in ds.attrs["license"]
    # NaN exactly where the sea mask is False, at every month
    values = temp.values
    mask = ds.sea_mask.values
    assert ds.sea_mask.dtype == bool
    assert np.array_equal(np.isfinite(values), np.broadcast_to(mask, values.shape))
    assert 0.5 < mask[0].mean() < 0.8  # about 2/3 of the surface grid is ocean
    ocean = values[np.isfinite(values)]
    assert -3.5 < ocean.min() < -1.5 and 28 < ocean.max() < 35
    # warm tropics, cold deep water
    assert float(temp.sel(depth=0).sel(lat=slice(-10, 10)).mean()) > 25
    assert float(temp.sel(depth=1000).mean()) < 8


def test_sample_opens_lazily():
    assert hasattr(woa.open_sample(chunks={})[woa.VARIABLE].data, "dask")
    assert not woa.open_sample()[woa.VARIABLE].variable._in_memory


def test_manifest_matches_file_and_packaged_copy():
    entry = woa.load_manifest()[woa.SAMPLE_NAME]
    path = woa.sample_path()
    assert path.parent == ROOT / "geodiff" / "data"
    assert woa.file_sha256(path) == entry["sha256"]
    assert path.stat().st_size == entry["size_bytes"] < 3_000_000
    packaged = (ROOT / "geodiff" / "data" / "samples.yaml").read_text()
    assert (ROOT / "data_catalog" / "samples.yaml").read_text() == packaged
    source = entry["source"]
    assert source["package"] == "ferret-datasets" and source["package_version"] == "7.6.0-5"
    assert len(source["package_sha256"]) == 64 and len(source["file_sha256"]) == 64
    assert "public domain" in entry["licence"]
    ds = woa.open_sample()
    assert ds[woa.VARIABLE].attrs["packing_max_abs_error"] == pytest.approx(entry["packing"]["max_abs_error_degC"])
    assert entry["packing"]["max_abs_error_degC"] <= 0.5 * entry["packing"]["scale_factor_degC"] + 1e-5
    assert ds.attrs["source_file_sha256"] == source["file_sha256"]


def test_tampered_or_unknown_sample_raises(tmp_path, monkeypatch):
    entry = woa.load_manifest()[woa.SAMPLE_NAME]
    copy = tmp_path / entry["file"]
    shutil.copyfile(woa.sample_path(), copy)
    with open(copy, "r+b") as handle:
        handle.seek(-100, os.SEEK_END)
        handle.write(b"\x00" * 10)
    monkeypatch.setattr(tutorial, "_DATA_DIR", tmp_path)
    with pytest.raises(DataError, match="sha256"):
        woa.open_sample()
    copy.unlink()
    with pytest.raises(DataError, match="missing"):
        woa.open_sample()
    with pytest.raises(DataError, match="no sample named"):
        woa.open_sample("no_such_sample")


# ------------------------------------------------------------------------------------ Ferret conversion
def _ferret_like(path: Path, offset: float = 0.0, **overrides) -> Path:
    """A small file with the quirks of Ferret's ocean_atlas_subset.nc (20.5..380 E, hours since 0000-01-01)."""
    hours = (np.arange(12) + 0.5) * 365.2425 / 12 * 24
    lon = np.arange(20.5, 380.0, 60.0)  # 20.5, 80.5, ..., 320.5
    lat = np.array([-60.5, 0.5, 40.5])
    depth = np.array([0.0, 10.0])
    values = (offset + np.arange(12)[:, None, None, None] + depth[None, :, None, None] / 10
              + lat[None, None, :, None] / 100 + lon[None, None, None, :] / 1000).astype("float32")
    values[:, 1, 0, 0] = np.nan  # below the sea floor
    values[:, :, 2, 1] = np.nan  # land
    temp_attrs = {"long_name": "Temperature", "history": "From ocean_atlas_monthly"}
    temp_attrs.update(overrides.pop("temp_attrs", {}))
    time_attrs = {"units": "hour since 0000-01-01 00:00:00", "axis": "T", "modulo": " "}
    time_attrs.update(overrides.pop("time_attrs", {}))
    ds = xr.Dataset(
        {"TEMP": (("TIME", "ZAXLEVIT19", "YAX_SUBSET", "XAX_SUBSET"), values, temp_attrs)},
        coords={
            "TIME": ("TIME", hours, time_attrs),
            "ZAXLEVIT19": ("ZAXLEVIT19", depth, {"units": "METERS", "positive": "down", "axis": "Z"}),
            "YAX_SUBSET": ("YAX_SUBSET", lat, {"units": "degrees_north", "axis": "Y"}),
            "XAX_SUBSET": ("XAX_SUBSET", lon, {"units": "degrees_east", "axis": "X", "modulo": 360.0}),
        },
        attrs={"history": "FERRET V6.08   28-Nov-07", "Conventions": "CF-1.0"},
    )
    encoding = {"TEMP": {"_FillValue": np.float32(-1e34), "missing_value": np.float32(-1e34)}}
    ds.to_netcdf(path, encoding=encoding)
    return path


def test_open_ferret_woa_rolls_longitude_and_decodes_months(tmp_path):
    ds = woa.open_ferret_woa(_ferret_like(tmp_path / "f.nc"))
    assert ds.lon.values.tolist() == [-159.5, -99.5, -39.5, 20.5, 80.5, 140.5]
    temp = ds[woa.VARIABLE]
    # the value that sat at 200.5 E now sits at -159.5
    assert float(temp.isel(time=3, depth=0, lat=1).sel(lon=-159.5)) == pytest.approx(3 + 0.005 + 0.2005, abs=1e-5)
    assert ds.time.dt.month.values.tolist() == list(range(1, 13))
    assert str(ds.time.values[1])[:10] == "2000-02-15"
    assert ds.depth.attrs["units"] == "m"
    assert np.isnan(temp.sel(depth=10.0, lat=-60.5, lon=20.5)).all()
    assert not bool(ds.sea_mask.sel(depth=10.0, lat=-60.5, lon=20.5))
    assert bool(ds.sea_mask.sel(depth=0.0, lat=-60.5, lon=20.5))
    assert "FERRET" in ds.attrs["history"] and "open_ferret_woa" in ds.attrs["history"]
    assert "units not in the source file" in temp.attrs["comment"]


def test_open_ferret_woa_converts_kelvin(tmp_path):
    kelvin = woa.open_ferret_woa(_ferret_like(tmp_path / "k.nc", offset=273.15, temp_attrs={"units": "K"}))
    celsius = woa.open_ferret_woa(_ferret_like(tmp_path / "c.nc", temp_attrs={"units": "DEG C"}))
    np.testing.assert_allclose(kelvin[woa.VARIABLE].values, celsius[woa.VARIABLE].values, atol=1e-4)
    assert "converted" in kelvin[woa.VARIABLE].attrs["comment"]
    assert kelvin[woa.VARIABLE].attrs["units"] == "degC"


@pytest.mark.parametrize(
    "overrides, error, words",
    [
        ({"time_attrs": {"units": "days since 1990-01-01"}}, CalendarError, "0000-01-01"),
        ({"temp_attrs": {"units": "furlongs"}}, UnitsError, "furlongs"),
    ],
)
def test_open_ferret_woa_bad_input(tmp_path, overrides, error, words):
    path = _ferret_like(tmp_path / "bad.nc", **overrides)
    with pytest.raises(error, match=words):
        woa.open_ferret_woa(path)


def test_open_ferret_woa_missing_file_or_variable(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        woa.open_ferret_woa(tmp_path / "nothing.nc")
    path = _ferret_like(tmp_path / "f.nc")
    with pytest.raises(DataError, match="SALT"):
        woa.open_ferret_woa(path, variable="SALT")
    (tmp_path / "junk.nc").write_bytes(b"not a netcdf file")
    with pytest.raises(GeodiffError):
        woa.open_ferret_woa(tmp_path / "junk.nc")


@pytest.mark.skipif(_ferret_source() is None, reason="ferret-datasets not installed (set GEODIFF_FERRET_DATA)")
def test_sample_reproduces_from_the_ferret_file(tmp_path, sample):
    source = _ferret_source()
    full = woa.open_ferret_woa(source)
    entry = woa.load_manifest()[woa.SAMPLE_NAME]
    diff = np.abs(full[woa.VARIABLE].values - sample[woa.VARIABLE].values)
    assert np.nanmax(diff) <= entry["packing"]["max_abs_error_degC"] + 1e-6
    xr.testing.assert_equal(full.sea_mask, sample.sea_mask)
    sys.path.insert(0, str(ROOT / "data_catalog"))
    try:
        import make_woa_sample
    finally:
        sys.path.pop(0)
    out = tmp_path / "again.nc"
    assert make_woa_sample.main(["--source", str(source), "--output", str(out), "--no-manifest"]) == 0
    assert woa.file_sha256(out) == entry["sha256"]


# ------------------------------------------------------------------------------------ hold-out protocol
def test_default_holdout_box(sample):
    split = woa.holdout_split(sample)
    held = split.heldout[woa.VARIABLE]
    assert dict(split.heldout.sizes) == {"time": 12, "depth": 19, "lat": 32, "lon": 64}
    assert split.patch_size == (32, 64)
    assert held.lat.values[0] == 0.5 and held.lat.values[-1] == 62.5
    # the box crosses 180: longitudes continue eastwards in [0, 360)
    assert held.lon.values[0] == 130.5 and held.lon.values[-1] == 256.5 and np.all(np.diff(held.lon.values) == 2)
    assert split.heldout.attrs["geodiff_lon_convention"] == "0..360"
    # held-out values are the sample's values
    ref = sample[woa.VARIABLE].sel(lat=held.lat, lon=((held.lon + 180) % 360) - 180)
    np.testing.assert_array_equal(held.values, ref.values)
    # training data: NaN in the box at every time and depth, untouched elsewhere
    train = split.train[woa.VARIABLE]
    box = train.isel(lat=split.lat_index, lon=split.lon_index)
    assert bool(box.isnull().all())
    assert not bool(split.train.sea_mask.isel(lat=split.lat_index, lon=split.lon_index).any())
    outside = train.isel(lat=slice(0, 40))
    xr.testing.assert_equal(outside, sample[woa.VARIABLE].isel(lat=slice(0, 40)))
    # about 80 % of the box is ocean
    assert 0.75 < float(split.heldout.sea_mask.isel(depth=0).mean()) < 0.9
    # the template carries no held-out values
    assert float(np.nanmax(np.abs(split.target[woa.VARIABLE].values))) == 0.0


def test_patches_never_touch_the_box(sample):
    split = woa.holdout_split(sample, patch_size=(16, 32))
    windows = split.patch_windows(stride=(8, 16))
    assert windows
    box_rows, box_cols = set(split.lat_index.tolist()), set(split.lon_index.tolist())
    for i, j in windows:
        rows = set(range(i, i + 16))
        cols = {c % 180 for c in range(j, j + 32)}
        assert not (rows & box_rows and cols & box_cols)
    patches = split.training_patches(stride=(16, 32), anomalies=True)
    assert patches[woa.VARIABLE].dims == ("patch", "time", "depth", "y", "x")
    assert patches.sizes["y"] == 16 and patches.sizes["x"] == 32
    # a patch lon row increases eastwards even across 180
    assert np.all(np.diff(patches.lon.values, axis=1) > 0)
    # anomalies: zonal mean of the training data removed
    n = 0
    i, j = int(patches.row[n]), int(patches.column[n])
    raw = split.train[woa.VARIABLE]
    zonal = raw.mean("lon")
    expected = raw.isel(lat=slice(i, i + 16), lon=np.arange(j, j + 32) % 180) - zonal.isel(lat=slice(i, i + 16))
    np.testing.assert_allclose(patches[woa.VARIABLE].isel(patch=n).values, expected.values, atol=1e-5)


def test_custom_box_and_bad_boxes(sample):
    split = woa.holdout_split(sample, lat=(-40.0, -20.0), lon=(-20.0, 20.0))
    assert split.heldout.sizes["lat"] == 10 and split.heldout.sizes["lon"] == 20
    assert split.heldout.attrs["geodiff_lon_convention"] == "-180..180"
    with pytest.raises(ConfigError, match="lat"):
        woa.holdout_split(sample, lat=(10.0, -10.0))
    with pytest.raises(ConfigError, match="no grid point"):
        woa.holdout_split(sample, lat=(10.1, 10.2))
    with pytest.raises(ConfigError, match="patch_size"):
        woa.holdout_split(sample, patch_size=(100, 10))


def test_holdout_observations(sample):
    split = woa.holdout_split(sample)
    obs, mask = woa.holdout_observations(split, 0.05, seed=3)
    truth = split.heldout[woa.VARIABLE]
    assert obs.sizes["obs"] == int(mask.sum())
    counts = mask.sum(("lat", "lon"))
    np.testing.assert_array_equal(counts.values, np.rint(0.05 * truth.notnull().sum(("lat", "lon"))).values)
    for name in ("value", "error_std"):
        assert name in obs
    for name in ("lat", "lon", "time", "depth", "variable", "source", "obs_id"):
        assert name in obs.coords
    picked = truth.sel(time=obs.time, depth=obs.depth, lat=obs.lat, lon=obs.lon)
    np.testing.assert_array_equal(picked.values, obs.value.values)
    noisy, mask2 = woa.holdout_observations(split, 0.05, seed=3, error_std=0.1)
    xr.testing.assert_identical(mask, mask2)
    assert float((noisy.value - obs.value).std()) == pytest.approx(0.1, rel=0.1)
    with pytest.raises(ConfigError):
        woa.holdout_observations(split, 0.05, error_std=-1.0)
