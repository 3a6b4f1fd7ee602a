"""Observation operators: exact adjoints, exact bilinear/linear interpolation of linear fields, periodic
longitude, land-aware weights, and clear errors for positions that cannot be interpolated."""

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from geodiff import operators
from geodiff.errors import CoordinateError, GridError, ObservationError
from geodiff.operators import GridPointOperator, PointOperator, StackedOperator, channel_layout, is_periodic

LAT = np.array([-30.0, -20.0, -5.0, 0.0, 12.0, 30.0])  # uneven spacing
LON_REGIONAL = np.array([100.0, 110.0, 115.0, 130.0, 150.0])
LON_GLOBAL = np.arange(0.0, 360.0, 10.0)
DEPTH = np.array([5.0, 15.0, 50.0, 200.0])
CHANNELS = [("tos", None)] + [("thetao", d) for d in DEPTH]  # a 2-D and a 3-D variable: C = 5


def random_obs(n, rng, lon=LON_REGIONAL):
    return {
        "lat": rng.uniform(LAT[0], LAT[-1], n),
        "lon": rng.uniform(lon[0], lon[-1], n),
        "depth": rng.uniform(DEPTH[0], DEPTH[-1], n),
        "variable": rng.choice(["tos", "thetao"], n),
    }


def inner(a, b):
    return float((a * b).sum())


@pytest.mark.parametrize("periodic", [False, True])
def test_adjoint_identity(periodic):
    rng = np.random.default_rng(0)
    lon = LON_GLOBAL if periodic else LON_REGIONAL
    obs = random_obs(40, rng, lon=np.array([lon[0] - 20, lon[-1] + 5]) if periodic else lon)
    mask = rng.random((5, LAT.size, lon.size)) > 0.2
    op = PointOperator(LAT, lon, **obs, channels=CHANNELS, mask=mask, on_invalid="drop")
    assert op.periodic == periodic
    x = torch.randn(3, 5, LAT.size, lon.size, dtype=torch.float64)
    r = torch.randn(3, op.n_obs, dtype=torch.float64)
    assert inner(op(x), r) == pytest.approx(inner(x, op.adjoint(r)), rel=1e-12)
    # the adjoint is also what autograd gives: A is differentiable and linear
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(op(x), x, r)
    assert torch.allclose(grad, op.adjoint(r))


def test_adjoint_identity_grid_and_stacked_operators():
    grid = GridPointOperator(torch.tensor([0, 7, 7, 20]), (2, 3, 4))  # a repeated point is fine for A / A^T
    point = PointOperator.from_weights(torch.tensor([[1, 2], [5, 23]]), torch.tensor([[0.3, 0.7], [1.0, 0.0]]),
                                       (2, 3, 4))
    stacked = StackedOperator([grid, point])
    x = torch.randn(2, 2, 3, 4, dtype=torch.float64)
    for op in (grid, point, stacked):
        r = torch.randn(2, op.n_obs, dtype=torch.float64)
        assert inner(op(x), r) == pytest.approx(inner(x, op.adjoint(r)), rel=1e-12)
    dense = torch.cat([grid.adjoint(torch.eye(4, dtype=torch.float64)).reshape(4, -1),
                       point.to_sparse().to_dense()])
    assert torch.allclose(stacked.gram_diagonal(), (dense**2).sum(1))


def test_interpolation_is_exact_for_fields_linear_in_lat_lon_depth():
    rng = np.random.default_rng(1)
    obs = random_obs(200, rng)
    op = PointOperator(LAT, LON_REGIONAL, **obs, channels=CHANNELS)
    lat, lon = np.meshgrid(LAT, LON_REGIONAL, indexing="ij")
    surface = 2.0 + 0.3 * lat - 0.1 * lon
    levels = [1.0 - 0.2 * lat + 0.05 * lon + 0.01 * d for d in DEPTH]
    x = torch.from_numpy(np.stack([surface, *levels]))[None]
    expected = np.where(
        obs["variable"] == "tos",
        2.0 + 0.3 * obs["lat"] - 0.1 * obs["lon"],
        1.0 - 0.2 * obs["lat"] + 0.05 * obs["lon"] + 0.01 * obs["depth"],
    )
    assert np.allclose(op(x)[0].numpy(), expected, rtol=0, atol=1e-10)
    assert np.allclose(op.weight.sum(1).numpy(), 1.0)


def test_periodic_longitude_across_the_dateline():
    x = torch.zeros(1, 1, 2, 36, dtype=torch.float64)
    x[0, 0, :, 35] = 1.0  # 350 E
    x[0, 0, :, 0] = 3.0  # 0 E
    op = PointOperator([0.0, 1.0], LON_GLOBAL, lat=[0.5, 0.5, 0.5, 0.5], lon=[357.0, -3.0, 360.0, 715.0])
    assert op(x)[0].tolist() == pytest.approx([0.3 * 1 + 0.7 * 3, 0.3 * 1 + 0.7 * 3, 3.0, 0.5 * 1 + 0.5 * 3])
    # a grid in the -180..180 convention: 175 E lies between 170 E and -180 E
    grid = np.arange(-180.0, 180.0, 10.0)
    op = PointOperator([0.0, 1.0], grid, lat=[0.0], lon=[175.0])
    assert sorted(op.index[0, op.weight[0] > 0].tolist()) == [0, 35]
    assert is_periodic(grid) and not is_periodic(LON_REGIONAL)


def test_regional_grid_does_not_wrap():
    with pytest.raises(ObservationError, match="1 of 2 observations cannot be interpolated: 1 outside the grid"):
        PointOperator(LAT, LON_REGIONAL, lat=[0.0, 0.0], lon=[120.0, 155.0])
    op = PointOperator(LAT, LON_REGIONAL, lat=[0.0, 0.0], lon=[120.0, 120.0 - 360.0])  # other convention: fine
    assert op.n_obs == 2


def test_land_corners_are_dropped_and_weights_renormalised():
    lat, lon = np.array([0.0, 1.0]), np.array([0.0, 1.0])
    mask = np.ones((2, 2), dtype=bool)
    mask[1, 1] = False  # land at (lat 1, lon 1)
    op = PointOperator(lat, lon, lat=[0.5, 0.0], lon=[0.5, 0.5], mask=mask, periodic=False)
    weights = torch.zeros(2, 4, dtype=torch.float64).scatter_add(1, op.index, op.weight)
    assert weights[0].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0.0])
    assert weights[1].tolist() == pytest.approx([0.5, 0.5, 0.0, 0.0])
    constant = torch.full((1, 1, 2, 2), 7.0, dtype=torch.float64)
    assert op(constant)[0].tolist() == pytest.approx([7.0, 7.0])  # renormalisation keeps constants


def test_observation_with_every_corner_on_land_is_reported():
    lat, lon = np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 2.0])
    mask = np.ones((3, 3), dtype=bool)
    mask[1:, 1:] = False
    kwargs = {"lat": [0.2, 1.5, 1.0], "lon": [0.2, 1.5, 1.0], "mask": mask, "periodic": False}
    with pytest.raises(ObservationError, match="2 with every interpolation corner on land"):
        PointOperator(lat, lon, **kwargs)
    op = PointOperator(lat, lon, **kwargs, on_invalid="drop")
    assert op.kept.tolist() == [0] and op.dropped["land"].tolist() == [1, 2] and op.n_obs == 1


def test_depth_interpolation_and_limits():
    field = torch.from_numpy(np.broadcast_to(DEPTH[:, None, None], (4, 2, 2)).copy())[None]
    op = PointOperator([0.0, 1.0], [0.0, 1.0], lat=[0.5] * 3, lon=[0.5] * 3, depth=[1.0, 10.0, 200.0],
                       grid_depth=DEPTH, periodic=False)
    assert op(field)[0].tolist() == pytest.approx([5.0, 10.0, 200.0])  # 1 m takes the first level (5 m)
    with pytest.raises(ObservationError, match="outside the grid"):
        PointOperator([0.0, 1.0], [0.0, 1.0], lat=[0.5], lon=[0.5], depth=[1.0], grid_depth=DEPTH,
                      extrapolate_above=False)
    with pytest.raises(ObservationError, match="outside the grid"):
        PointOperator([0.0, 1.0], [0.0, 1.0], lat=[0.5], lon=[0.5], depth=[250.0], grid_depth=DEPTH)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lat": [95.0], "lon": [0.0]}, ObservationError, "'lat'"),
        ({"lat": [0.0], "lon": [0.0], "depth": [-3.0], "grid_depth": DEPTH}, ObservationError, "'depth'"),
        ({"lat": [0.0], "lon": [0.0], "grid_depth": DEPTH}, ObservationError, "'depth'"),
        ({"lat": [0.0], "lon": [0.0], "channels": CHANNELS}, ObservationError, "'variable'"),
        ({"lat": [0.0], "lon": ["east"]}, ObservationError, "'lon'"),
        ({"lat": [0.0], "lon": [0.0, 1.0]}, ObservationError, "'lon' has 2 entries"),
        ({"lat": [0.0], "lon": [float("nan")]}, ObservationError, "missing"),
        ({"lat": [0.0], "lon": [0.0], "variable": ["so"], "channels": CHANNELS}, ObservationError, "not a channel"),
        ({"lat": [0.0], "lon": [0.0], "mask": np.ones((3, 3), bool)}, GridError, "mask"),
        ({"lat": [0.0], "lon": [0.0], "on_invalid": "ignore"}, ObservationError, "on_invalid"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        PointOperator(LAT, LON_REGIONAL, **kwargs)


def test_bad_grids_raise_coordinate_errors():
    with pytest.raises(CoordinateError, match="'lat' must be strictly ascending"):
        PointOperator(LAT[::-1], LON_REGIONAL, lat=[0.0], lon=[120.0])
    with pytest.raises(CoordinateError, match="'lon' spans 360"):
        PointOperator(LAT, np.arange(0.0, 361.0, 10.0), lat=[0.0], lon=[120.0])
    with pytest.raises(GridError, match="mixes"):
        channel_layout([("thetao", 5.0), ("thetao", None)])
    op = PointOperator(LAT, LON_REGIONAL, lat=[0.0], lon=[120.0])
    with pytest.raises(GridError, match=r"\(C, H, W\) = \(1, 6, 5\)"):
        op(torch.zeros(1, 2, 6, 5))
    with pytest.raises(GridError, match="N = 1"):
        op.adjoint(torch.zeros(1, 3))


def test_grid_point_operator_needs_positions_on_the_grid():
    op = GridPointOperator.from_positions(LAT, LON_GLOBAL, lat=[0.0, -30.0], lon=[20.0, -10.0])
    assert op.index.tolist() == [3 * 36 + 2, 35]
    assert op.observed_mask().sum() == 2
    with pytest.raises(ObservationError, match="not on grid points"):
        GridPointOperator.from_positions(LAT, LON_GLOBAL, lat=[0.1], lon=[20.0])  # no snapping
    with pytest.raises(GridError, match="index values"):
        GridPointOperator(torch.tensor([10]), (1, 2, 2))


def test_to_normalized_keeps_the_observation_equation():
    """``(y - A field) / s == y' - A' x`` for ``x = (field - mean) / std``: the same residual, whitened."""
    rng = np.random.default_rng(2)
    obs = random_obs(30, rng)
    op = PointOperator(LAT, LON_REGIONAL, **obs, channels=CHANNELS)
    mean, std = rng.normal(size=5), rng.uniform(0.5, 3.0, size=5)
    field = torch.randn(2, 5, LAT.size, LON_REGIONAL.size, dtype=torch.float64)
    x = (field - torch.from_numpy(mean)[:, None, None]) / torch.from_numpy(std)[:, None, None]
    y, error = rng.normal(size=30), np.full(30, 0.2)
    op_n, y_n, e_n = op.to_normalized(y, error, mean, std)
    scale = torch.from_numpy(error) / e_n
    assert torch.allclose((torch.from_numpy(y) - op(field)) / scale, y_n - op_n(x))


def test_from_columns_accepts_datasets_and_dataframes():
    table = pd.DataFrame({"lat": [0.0, 10.0], "lon": [120.0, 140.0], "depth": [10.0, 60.0], "variable": "thetao"})
    from_frame = PointOperator.from_columns(table, LAT, LON_REGIONAL, channels=CHANNELS)
    from_dataset = PointOperator.from_columns(xr.Dataset.from_dataframe(table.rename_axis("obs")), LAT,
                                              LON_REGIONAL, channels=CHANNELS)
    assert torch.equal(from_frame.weight, from_dataset.weight) and from_frame.n_obs == 2


def test_operators_module_does_not_import_xarray():
    tree = ast.parse(Path(operators.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert {"torch", "numpy"} <= imported and not imported & {"xarray", "pandas"}
