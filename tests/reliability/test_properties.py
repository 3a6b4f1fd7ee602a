"""Properties that must hold for every input (hypothesis): exact codec round trip, standardize idempotence,
exact operator adjoints, interpolation and coarsening consistent with the grid they act on."""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from geodiff.adapters.standardize import standardize
from geodiff.io import Codec
from geodiff.operators import CoarsenOperator, PointOperator

EXAMPLES = settings(max_examples=40, deadline=None, derandomize=True, database=None)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------------------------
# codec


@st.composite
def ocean_datasets(draw) -> xr.Dataset:
    """A canonical dataset: a 3-D and a 2-D float32 variable, NaN land fixed over time, random sizes and values."""
    times, levels = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    height, width = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    rng = _rng(draw(st.integers(0, 2**32 - 1)))
    land = rng.random((levels, height, width)) < draw(st.floats(0.0, 0.6))
    land[:, 0, 0] = False  # at least one ocean cell
    scale = draw(st.sampled_from([1e-3, 1.0, 1e4]))
    thetao = (rng.normal(0, scale, (times, levels, height, width))).astype("float32")
    thetao[:, land] = np.nan
    zos = rng.normal(0, 1, (times, height, width)).astype("float32")
    zos[:, land[0]] = np.nan
    lat = np.sort(rng.choice(np.arange(-89.0, 90.0, 0.5), height, replace=False))
    lon = np.sort(rng.choice(np.arange(-180.0, 180.0, 0.25), width, replace=False))
    return xr.Dataset(
        {"thetao": (("time", "depth", "lat", "lon"), thetao,
                    {"units": "degC", "standard_name": "sea_water_temperature"}),
         "zos": (("time", "lat", "lon"), zos, {"units": "m"})},
        coords={"time": (np.datetime64("2000-01-01", "D") + np.arange(times)).astype("datetime64[ns]"),
                "depth": ("depth", np.cumsum(rng.uniform(1, 100, levels)), {"units": "m", "positive": "down"}),
                "lat": ("lat", lat, {"units": "degrees_north"}), "lon": ("lon", lon, {"units": "degrees_east"})},
        attrs={"title": "random ocean", "history": "hypothesis"},
    )


@EXAMPLES
@given(ocean_datasets())
def test_codec_round_trip_is_exact(ds: xr.Dataset) -> None:
    codec = Codec.from_dataset(ds)
    x, mask = codec.encode(ds)
    assert torch.equal(mask, torch.from_numpy(~np.isnan(np.concatenate(
        [ds.thetao.values[0], ds.zos.values[0][None]]))))
    assert bool((x[:, ~mask] == 0).all())  # land is zero in the tensor
    xr.testing.assert_identical(codec.decode(x), ds)
    again = Codec.from_dict(codec.to_dict(), codec.mask)  # through the JSON spec, as in a bundle
    xr.testing.assert_identical(again.decode(x, time=ds.time), ds)


# ---------------------------------------------------------------------------------------------------------------
# standardize


@st.composite
def messy_datasets(draw) -> xr.Dataset:
    """Any layout standardize accepts: lat either way, lon in either convention and rolled, K or degC, depth in m
    or cm, positive up or down, dims in any order."""
    rng = _rng(draw(st.integers(0, 2**32 - 1)))
    height, width, levels = draw(st.integers(2, 5)), draw(st.integers(2, 7)), draw(st.integers(1, 3))
    lat = np.sort(rng.choice(np.arange(-80.0, 81.0, 2.0), height, replace=False))
    if draw(st.booleans()):
        lat = lat[::-1]
    lon = np.sort(rng.choice(np.arange(0.0, 360.0, 5.0), width, replace=False))
    if draw(st.booleans()):
        lon = np.roll(lon, draw(st.integers(0, width - 1)))
    if draw(st.booleans()):
        lon = np.where(lon >= 180.0, lon - 360.0, lon)
    depth = np.cumsum(rng.uniform(1.0, 50.0, levels))
    depth_attrs = {"units": "m", "positive": "down"}
    if draw(st.booleans()):
        depth, depth_attrs = depth * 100.0, {"units": "cm", "positive": "down"}
    if draw(st.booleans()):
        depth, depth_attrs = -depth, {**depth_attrs, "positive": "up"}
    if draw(st.booleans()):
        depth = depth[::-1]
    kelvin = draw(st.booleans())
    values = rng.uniform(-2.0, 30.0, (2, levels, height, width)) + (273.15 if kelvin else 0.0)
    values[:, :, 0, 0] = np.nan
    ds = xr.Dataset(
        {"thetao": (("time", "z", "latitude", "longitude"), values,
                    {"units": "K" if kelvin else "degC", "standard_name": "sea_water_potential_temperature"})},
        coords={"time": np.array(["2000-01-15", "2000-02-15"], dtype="datetime64[ns]"),
                "z": ("z", depth, depth_attrs),
                "latitude": ("latitude", lat, {"units": "degrees_north"}),
                "longitude": ("longitude", lon, {"units": "degrees_east"})},
    )
    order = draw(st.permutations(["time", "z", "latitude", "longitude"]))
    return ds.transpose(*order)


@EXAMPLES
@given(messy_datasets(), st.sampled_from(["-180..180", "0..360"]))
def test_standardize_is_idempotent_and_canonical(ds: xr.Dataset, convention: str) -> None:
    once = standardize(ds, variables={"thetao": "degC"}, lon=convention)
    twice = standardize(once, variables={"thetao": "degC"}, lon=convention)
    xr.testing.assert_identical(twice, once)  # nothing changes, not even history
    assert once.thetao.dims == ("time", "depth", "lat", "lon")
    for name in ("lat", "lon", "depth"):
        assert np.all(np.diff(once[name].values) > 0), name
    assert once.depth.attrs["units"] == "m" and once.depth.attrs["positive"] == "down"
    low, high = (-180.0, 180.0) if convention == "-180..180" else (0.0, 360.0)
    assert once.lon.min() >= low and once.lon.max() < high
    # the same values, only moved: every input cell is found at its standardized position
    source = ds.thetao.transpose("time", "z", "latitude", "longitude").values
    kelvin = ds.thetao.attrs["units"] == "K"
    expected = np.sort((source - 273.15 if kelvin else source)[np.isfinite(source)])
    np.testing.assert_allclose(np.sort(once.thetao.values[np.isfinite(once.thetao.values)]), expected, atol=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# operators


@st.composite
def point_problems(draw):
    rng = _rng(draw(st.integers(0, 2**32 - 1)))
    levels, height = draw(st.integers(1, 4)), draw(st.integers(2, 6))
    periodic = draw(st.booleans())
    width = draw(st.integers(2, 8))
    lat = np.sort(rng.choice(np.arange(-60.0, 61.0, 3.0), height, replace=False))
    lon = np.arange(width) * (360.0 / width) - 180.0 if periodic else np.sort(rng.uniform(0, 50, width))
    if not periodic:
        lon = np.unique(np.round(lon, 3))
        width = lon.size
        if width < 2:
            lon, width = np.array([0.0, 1.0]), 2
    depth = np.cumsum(rng.uniform(5.0, 100.0, levels)) if levels > 1 else None
    mask = rng.random((levels, height, width)) > draw(st.floats(0.0, 0.5))
    mask[:, 0, 0] = True
    n = draw(st.integers(1, 15))
    obs_lat = rng.uniform(lat[0], lat[-1], n)
    obs_lon = rng.uniform(-180.0, 180.0, n) if periodic else rng.uniform(lon[0], lon[-1], n)
    obs_depth = None if depth is None else rng.uniform(depth[0], depth[-1], n)
    return lat, lon, depth, mask, obs_lat, obs_lon, obs_depth, rng


@EXAMPLES
@given(point_problems())
def test_point_operator_adjoint_identity(problem) -> None:
    lat, lon, depth, mask, obs_lat, obs_lon, obs_depth, rng = problem
    op = PointOperator(lat, lon, lat=obs_lat, lon=obs_lon, depth=obs_depth, grid_depth=depth, mask=mask,
                       on_invalid="drop") if _any_ocean_corner(problem) else None
    if op is None:
        return
    x = torch.from_numpy(rng.normal(size=(2, *mask.shape)))
    r = torch.from_numpy(rng.normal(size=(2, op.n_obs)))
    lhs, rhs = (op(x) * r).sum(), (x * op.adjoint(r)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-12, atol=1e-12), (float(lhs), float(rhs))
    assert bool((op.adjoint(r)[:, ~torch.from_numpy(mask)] == 0).all())  # nothing flows onto land
    np.testing.assert_allclose(op.weight.sum(1).numpy(), 1.0, rtol=1e-12)  # renormalised on land


def _any_ocean_corner(problem) -> bool:
    lat, lon, depth, mask, obs_lat, obs_lon, obs_depth, _ = problem
    try:
        PointOperator(lat, lon, lat=obs_lat, lon=obs_lon, depth=obs_depth, grid_depth=depth, mask=mask,
                      on_invalid="drop")
    except Exception as err:  # all observations on land: a clear ObservationError, checked in the table
        from geodiff.errors import ObservationError

        assert isinstance(err, ObservationError), err
        return False
    return True


@EXAMPLES
@given(point_problems())
def test_interpolation_at_grid_nodes_returns_the_node_values(problem) -> None:
    lat, lon, depth, mask, _, _, _, rng = problem
    levels, height, width = mask.shape
    k, j, i = np.nonzero(mask)  # every valid node
    op = PointOperator(lat, lon, lat=lat[j], lon=lon[i], depth=None if depth is None else depth[k],
                       grid_depth=depth, mask=mask)
    x = torch.from_numpy(rng.normal(size=(1, levels, height, width)))
    np.testing.assert_allclose(op(x)[0].numpy(), x[0, k, j, i].numpy(), rtol=0, atol=1e-12)


@st.composite
def coarsen_problems(draw):
    rng = _rng(draw(st.integers(0, 2**32 - 1)))
    channels, fy, fx = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    hc, wc = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    mask = rng.random((channels, hc * fy, wc * fx)) > draw(st.floats(0.0, 0.7))
    mask[0, 0, 0] = True
    lat = np.linspace(-80.0, 80.0, hc * fy) if draw(st.booleans()) else None
    return channels, (fy, fx), (hc, wc), mask, lat, rng


@EXAMPLES
@given(coarsen_problems())
def test_coarsening_blockwise_constant_fields_returns_the_constants_and_is_adjoint(problem) -> None:
    channels, (fy, fx), (hc, wc), mask, lat, rng = problem
    op = CoarsenOperator((channels, hc * fy, wc * fx), (fy, fx), mask=mask, grid_lat=lat)
    coarse = rng.normal(size=(1, channels, hc, wc))
    fine = np.repeat(np.repeat(coarse, fy, axis=2), fx, axis=3)
    fine[:, ~mask] = 1e6  # land values must never leak into an area mean
    out = op.coarsen(torch.from_numpy(fine))[0].numpy()
    has_ocean = mask.reshape(channels, hc, fy, wc, fx).any(axis=(2, 4))
    np.testing.assert_allclose(out[has_ocean], coarse[0][has_ocean], rtol=1e-12, atol=1e-12)
    assert np.isnan(out[~has_ocean]).all()
    x = torch.from_numpy(rng.normal(size=(2, channels, hc * fy, wc * fx)))
    r = torch.from_numpy(rng.normal(size=(2, op.n_obs)))
    assert torch.allclose((op(x) * r).sum(), (x * op.adjoint(r)).sum(), rtol=1e-12, atol=1e-12)


def test_an_observation_on_the_east_edge_of_a_regional_grid_is_inside() -> None:
    """Wrapping 26.081 into [5.042, 365.042) gives 26.081000000000003 in floating point: it must stay on the grid."""
    from geodiff.observations import validate_observations

    lat, lon = np.array([-45.0, 0.0]), np.array([5.042, 20.833, 26.081])
    op = PointOperator(lat, lon, lat=[0.0], lon=[26.081])
    assert torch.equal(op(torch.arange(6.0, dtype=torch.float64).reshape(1, 1, 2, 3)), torch.tensor([[5.0]]).double())
    clean, report = validate_observations(_frame(26.081), lat, lon)
    assert report.outside_grid == 0 and report.lon_converted == 0 and float(clean.lon[0]) == 26.081


def _frame(lon: float):
    import pandas as pd

    return pd.DataFrame({"value": [1.0], "error_std": [0.1], "lat": [0.0], "lon": [lon], "time": [0]})
