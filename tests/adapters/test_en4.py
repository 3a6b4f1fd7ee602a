"""EN4: analyses (gridded, kelvin with contradictory valid range) and profiles (observation table, QC counted)."""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest
import xarray as xr

from geodiff.adapters import en4
from geodiff.testing import products
from geodiff.errors import DataError, GeodiffWarning, ObservationError


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("en4")
    return products.write_en4_analysis(folder), products.write_en4_profiles(folder, n_prof=80, seed=3)


def test_analysis_fixture_layout(files):
    analysis, _ = files
    assert analysis.name == "EN.4.2.2.f.analysis.g10.200001.nc"
    with netCDF4.Dataset(analysis) as nc:
        assert nc["temperature"].dimensions == ("time", "depth", "lat", "lon")
        assert nc["temperature"].shape == (1, 42, 173, 360)
        assert nc["temperature"].units == "kelvin" and nc["temperature"].valid_max == 45.0
        assert nc["depth"].positive == "down" and nc["depth"].units == "metres"
        assert float(nc["lat"][0]) == -83.0 and float(nc["lon"][0]) == 1.0 and float(nc["lon"][-1]) == 360.0
        assert nc["time"].units.startswith("days since 1800-01-01")


def test_open_analysis_is_canonical_and_warns_once_about_the_valid_range(files):
    analysis, _ = files
    with pytest.warns(GeodiffWarning, match="'temperature'.*valid_max=45"):
        ds = en4.open_analysis(analysis)
    assert ds.temperature.dims == ("time", "depth", "lat", "lon")
    assert ds.temperature.attrs["units"] == "degC" and ds.salinity.attrs["units"] == "1e-3"
    assert ds.depth.attrs == {**ds.depth.attrs, "units": "m", "positive": "down"}
    assert float(ds.lon[0]) == -180.0 and bool((ds.lon.diff("lon") > 0).all())
    assert ds.attrs["geodiff_lon_convention"] == "-180..180"
    raw = xr.open_dataset(analysis)
    # never masked by the (wrong) valid range: NaN only where the file has its fill value
    assert int(ds.temperature.isnull().sum()) == int(raw.temperature.isnull().sum())
    lat, lon = ds.lat.values[:, None], ds.lon.values[None, :]
    truth = products.ocean_temperature(lat, lon, float(ds.depth[0]), 1)
    surface = ds.temperature.isel(time=0, depth=0).values
    np.testing.assert_allclose(surface[np.isfinite(surface)], truth[np.isfinite(surface)], atol=1e-4)
    assert "valid_max" not in ds.temperature.attrs and "contradictory" in ds.attrs["history"]


def test_open_analysis_missing_variable(files):
    with pytest.raises(DataError, match="'oxygen'"):
        en4.open_analysis(files[0], variables=("oxygen",))


def test_profile_fixture_layout(files):
    _, profiles = files
    with netCDF4.Dataset(profiles) as nc:
        assert nc["POTM_CORRECTED"].dimensions == ("N_PROF", "N_LEVELS")
        assert nc["POTM_CORRECTED"]._FillValue == np.float32(99999.0)
        for name in ("POSITION_QC", "JULD_QC", "PROFILE_POTM_QC", "PROFILE_PSAL_QC"):
            assert nc[name].dimensions == ("N_PROF",) and nc[name].dtype == "S1"
        assert nc["POTM_CORRECTED_QC"].dimensions == ("N_PROF", "N_LEVELS") and nc["POTM_CORRECTED_QC"].dtype == "S1"
        assert nc["JULD"].units.startswith("days since 1950-01-01")


def _independent_count(path):
    """Values a careful reader keeps, computed straight from the file with netCDF4 (the oracle)."""
    with netCDF4.Dataset(path) as nc:
        nc.set_auto_mask(True)
        depth = nc["DEPH_CORRECTED"][:]
        out = {}
        for var, prof in (("POTM_CORRECTED", "PROFILE_POTM_QC"), ("PSAL_CORRECTED", "PROFILE_PSAL_QC")):
            values = nc[var][:]
            present = ~np.ma.getmaskarray(values) & ~np.ma.getmaskarray(depth)
            bad = np.zeros(present.shape, bool)
            for flag in ("POSITION_QC", "JULD_QC", prof):
                bad |= (nc[flag][:] == b"4")[:, None]
            bad |= nc[f"{var}_QC"][:] == b"4"
            bad |= nc["DEPH_CORRECTED_QC"][:] == b"4"
            out[var] = (int(present.sum()), int((present & bad).sum()), int((present & ~bad).sum()))
    return out


def test_read_profiles_honours_and_counts_qc(files):
    _, profiles = files
    obs = en4.read_profiles(profiles)
    expected = _independent_count(profiles)
    present = sum(v[0] for v in expected.values())
    rejected = sum(v[1] for v in expected.values())
    kept = sum(v[2] for v in expected.values())
    assert obs.attrs["qc_present"] == present and obs.attrs["qc_rejected"] == rejected and obs.attrs["qc_kept"] == kept
    assert obs.sizes["obs"] == kept and rejected > 0
    assert obs.attrs["qc_thetao_rejected"] == expected["POTM_CORRECTED"][1]
    assert obs.attrs["qc_rejected_POSITION_QC"] > 0 and obs.attrs["n_profiles"] == 80
    # the fixture made rejected values wrong on purpose: every kept value is the truth
    theta = obs.where(obs.variable == "thetao", drop=True)
    month = 1
    truth = products.ocean_temperature(theta.lat.values, theta.lon.values, theta.depth.values, month)
    np.testing.assert_allclose(theta.value.values, truth, atol=1e-3)
    assert "rejected by QC" in obs.attrs["history"]


def test_observation_table_schema(files):
    obs = en4.read_profiles(files[1])
    assert set(obs.data_vars) == {"value", "error_std"} and obs.value.dims == ("obs",)
    for name in ("lat", "lon", "time", "depth", "variable", "source", "obs_id", "units"):
        assert name in obs.coords and obs[name].dims == ("obs",)
    assert obs.time.dtype == np.dtype("datetime64[ns]") and (obs.depth >= 0).all()
    assert set(obs.units.values.tolist()) == {"degC", "1e-3"}
    assert len(set(obs.obs_id.values.tolist())) == obs.sizes["obs"]
    assert float(obs.lon.min()) >= -180.0 and float(obs.lon.max()) < 180.0
    np.testing.assert_allclose(obs.error_std.where(obs.variable == "thetao", drop=True), 0.5)


def test_obs_table_round_trip_keeps_attributes(files, tmp_path):
    obs = en4.read_profiles(files[1], variables=("POTM_CORRECTED",), error_std={"POTM_CORRECTED": 0.3})
    obs.to_netcdf(tmp_path / "obs.nc")
    back = xr.open_dataset(tmp_path / "obs.nc")
    assert back.attrs == obs.attrs
    xr.testing.assert_identical(back.load(), obs)


def test_max_depth_and_bad_inputs(files):
    shallow = en4.read_profiles(files[1], max_depth=100.0)
    assert float(shallow.depth.max()) <= 100.0 and shallow.attrs["qc_too_deep"] > 0
    with pytest.raises(DataError, match="unknown EN4 profile variables"):
        en4.read_profiles(files[1], variables=("DOXY",))
    with pytest.raises(ObservationError, match="no EN4 observation passed"):
        en4.read_profiles(files[1], reject=("0", "1", "4"))
    with pytest.raises(DataError, match="do not exist"):
        en4.read_profiles(files[1].with_name("missing.nc"))


def test_table_is_accepted_by_geodiff_observations(files):
    from geodiff import observations
    from geodiff.adapters.regrid import en4_grid

    obs = en4.read_profiles(files[1], variables=("POTM_CORRECTED",))
    assert observations.as_observations(obs).sizes["obs"] == obs.sizes["obs"]
    grid = en4_grid()
    clean, _ = observations.validate_observations(obs, grid_lat=grid.lat.values, grid_lon=grid.lon.values,
                                                  grid_depth=grid.depth.values)
    assert clean.sizes["obs"] > 0.9 * obs.sizes["obs"]
