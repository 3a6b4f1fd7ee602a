"""geodiff.grid against exact answers: checks, longitude wrap and periodicity, stencils, channel layout, refined and
coarsened coordinates."""

import numpy as np
import pytest
import xarray as xr

from geodiff import grid
from geodiff.errors import CoordinateError, GridError, ObservationError

LAT = np.array([-10.0, 0.0, 10.0])
LON = np.arange(0.0, 360.0, 90.0)  # periodic: 270 E and 0 E are neighbours
DEPTH = np.array([5.0, 15.0])


@pytest.mark.parametrize("values, message", [
    ([], "non-empty 1-D"), ([[0.0, 1.0]], "non-empty 1-D"), ([0.0, np.nan], "non-finite"),
    ([0.0, 0.0], "strictly ascending"), ([1.0, 0.0], "strictly ascending"),
])  # fmt: skip
def test_ascending_names_the_coordinate_and_what_is_wrong(values, message):
    with pytest.raises(CoordinateError, match=f"'lat'.*{message}|{message}.*"):
        grid.ascending(values, "lat")
    assert grid.ascending([1, 2], "lat").dtype == np.float64


def test_regular_spacing_and_refined_and_coarsened_coordinates():
    assert grid.regular_spacing([0.5, 1.5, 2.5], "lat") == 1.0
    for bad in ([0.0], [0.0, 1.0, 3.0], [2.0, 1.0]):
        with pytest.raises(CoordinateError, match="'lat'"):
            grid.regular_spacing(bad, "lat")
    assert grid.refine_coords([0.0, 2.0], 2, "lat").tolist() == [-0.5, 0.5, 1.5, 2.5]
    assert grid.coarse_coords([-0.5, 0.5, 1.5, 2.5], 2, "lat").tolist() == [0.0, 2.0]
    assert grid.coarse_coords(grid.refine_coords(LAT, 4), 4).tolist() == LAT.tolist()
    with pytest.raises(GridError, match="not a multiple of the factor 2"):
        grid.coarse_coords([0.0, 1.0, 2.0], 2, "lon")


def test_periodic_longitude_test():
    assert grid.is_periodic(LON) and grid.is_periodic(np.arange(-180.0, 180.0, 2.5))
    assert grid.is_periodic([0.0, 100.0, 200.0, 250.0])  # closing gap 110 <= 1.5 * 100
    assert not grid.is_periodic([0.0, 100.0, 200.0])  # closing gap 160 > 1.5 * 100
    assert not grid.is_periodic(np.arange(-30.0, 30.0, 1.0)) and not grid.is_periodic([10.0])


def test_longitude_wrap_conventions_and_western_bounds():
    lon = np.array([-540.0, -180.0, -0.5, 0.0, 179.5, 180.0, 359.5, 360.0, 380.0])
    assert grid.wrap_longitude(lon, "-180..180").tolist() == [-180.0, -180.0, -0.5, 0.0, 179.5, -180.0, -0.5, 0.0,
                                                              20.0]
    assert grid.wrap_longitude(lon, "0..360").tolist() == [180.0, 180.0, 359.5, 0.0, 179.5, 180.0, 359.5, 0.0, 20.0]
    assert grid.wrap_longitude(lon, 20.5).tolist() == [180.0, 180.0, 359.5, 360.0, 179.5, 180.0, 359.5, 360.0, 380.0]
    assert grid.wrap_longitude(-90.0, "0..360") == 270.0 and isinstance(grid.wrap_longitude(-90.0, "0..360"), float)
    da = xr.DataArray([-90.0, 90.0], dims="lon")
    assert grid.wrap_longitude(da, "0..360").values.tolist() == [270.0, 90.0]
    with pytest.raises(CoordinateError, match="unknown longitude convention"):
        grid.wrap_longitude(0.0, "east")


def test_wrap_into_grid_keeps_values_in_range_and_the_east_edge_exactly():
    lon = np.array([0.0, 30.0, 60.0])
    values = np.array([0.1, -300.0, 60.0 + 1e-12, 60.0 - 360.0, 420.0])
    assert grid.wrap_into_grid(lon, values).tolist() == [0.1, 60.0, 60.0, 60.0, 60.0]


def test_linear_stencil_exact_neighbours_and_weights():
    levels = np.array([0.0, 10.0, 20.0])
    i0, i1, t, inside = grid.linear_stencil(levels, np.array([0.0, 2.5, 10.0, 20.0, 25.0, -1.0, np.nan]))
    assert i0.tolist() == [0, 0, 1, 1, 1, 0, 0] and i1.tolist() == [1, 1, 2, 2, 2, 1, 1]
    assert t.tolist() == [0.0, 0.25, 0.0, 1.0, 1.0, 0.0, 0.0]
    assert inside.tolist() == [True, True, True, True, False, False, False]
    _, _, t, inside = grid.linear_stencil(levels, np.array([-1.0, np.nan]), extrapolate_below=True)
    assert t.tolist() == [0.0, 0.0] and inside.tolist() == [True, False]
    i0, i1, t, inside = grid.linear_stencil(np.array([5.0]), np.array([5.0, 6.0, 1.0]), extrapolate_below=True)
    assert i0.tolist() == i1.tolist() == [0, 0, 0] and inside.tolist() == [True, False, True]


def test_longitude_stencil_across_the_seam_and_on_a_regional_grid():
    i0, i1, t, inside, wrapped = grid.longitude_stencil(LON, np.array([315.0, -45.0, 0.0, 270.0, np.nan]), True)
    assert i0.tolist() == [3, 3, 0, 3, 0] and i1.tolist() == [0, 0, 1, 0, 1]
    assert t.tolist() == [0.5, 0.5, 0.0, 0.0, 0.0] and inside.tolist() == [True] * 4 + [False]
    assert wrapped[:4].tolist() == [315.0, 315.0, 0.0, 270.0]
    regional = np.array([-20.0, -10.0, 0.0])
    i0, i1, t, inside, wrapped = grid.longitude_stencil(regional, np.array([345.0, 5.0]), False)
    assert (i0.tolist(), i1.tolist(), t.tolist(), inside.tolist()) == ([0, 1], [1, 2], [0.5, 1.0], [True, False])
    assert wrapped.tolist() == [-15.0, 5.0]


def test_channel_layout_and_mask():
    layout = grid.channel_layout([("tos", None), ("thetao", 5.0), ("thetao", 15.0)])
    assert list(layout) == ["tos", "thetao"] and layout["tos"][0].tolist() == [0]
    assert layout["thetao"][0].tolist() == [1, 2] and layout["thetao"][1].tolist() == [5.0, 15.0]
    single = grid.channel_layout(grid_depth=DEPTH)
    assert single[None][0].tolist() == [0, 1] and single[None][1].tolist() == [5.0, 15.0]
    assert grid.channel_layout()[None][1] is None
    for channels, message in (([("a", None), ("a", None)], "2 channels without levels"),
                              ([("a", 5.0), ("a", None)], "mixes channels"), ([("a",)], r"channels\[0\]"),
                              ([("a", 15.0), ("a", 5.0)], "strictly ascending")):
        with pytest.raises(GridError, match=message):
            grid.channel_layout(channels)
    with pytest.raises(GridError, match="not both"):
        grid.channel_layout([("a", None)], DEPTH)
    assert grid.channel_mask(np.ones((3, 4)), (2, 3, 4)).shape == (2, 3, 4)
    with pytest.raises(GridError, match=r"ocean_mask must be \[C, H, W\] = \[2, 3, 4\]"):
        grid.channel_mask(np.ones((4, 3)), (2, 3, 4), "ocean_mask")


def test_point_stencil_exact_corners_and_weights():
    layout = grid.channel_layout(grid_depth=DEPTH)
    s = grid.point_stencil(LAT, LON, layout, lat=[5.0], lon=[-45.0], depth=np.array([7.5]))
    # channels 0/1 (5 m, 15 m), rows 1/2 (0, 10 N), columns 3/0 (270 E, 0 E); plane H * W = 12
    assert s.index[0].tolist() == [7, 4, 11, 8, 19, 16, 23, 20]
    assert s.weight[0].tolist() == [0.75 * 0.25] * 4 + [0.25 * 0.25] * 4
    assert s.lon.tolist() == [315.0] and s.reason.tolist() == [""] and s.field_shape == (2, 3, 4) and s.periodic
    s = grid.point_stencil(LAT, LON, layout, lat=[0.0, np.nan, 20.0, 0.0, 0.0], lon=[0.0, 0.0, 0.0, 0.0, 0.0],
                           depth=np.array([1.0, 5.0, 5.0, 30.0, np.nan]))
    assert s.reason.tolist() == ["", "missing", "outside", "outside", "missing"]
    assert s.above.tolist() == [True, False, False, False, False]
    assert s.weight[1:].sum() == 0.0 and s.index[1:].sum() == 0 and s.weight[0].sum() == 1.0
    s = grid.point_stencil(LAT, LON, layout, lat=[0.0], lon=[0.0], depth=np.array([1.0]), extrapolate_above=False)
    assert s.reason.tolist() == ["outside"]


def test_point_stencil_land_corners_are_dropped_and_the_rest_renormalised():
    mask = np.ones((LAT.size, LON.size), dtype=bool)
    mask[1, 0] = False  # (0 N, 0 E) is land
    s = grid.point_stencil(LAT, LON, grid.channel_layout(), lat=[5.0, 0.0], lon=[45.0, 0.0], mask=mask)
    assert s.index[0, :4].tolist() == [4, 5, 8, 9]
    assert s.weight[0, :4].tolist() == [0.0, 1 / 3, 1 / 3, 1 / 3] and s.reason.tolist() == ["", "land"]
    assert s.rows([1]).weight.tolist() == [[0.0] * 8]


def test_point_stencil_variables():
    layout = grid.channel_layout([("tos", None), ("thetao", 5.0), ("thetao", 15.0)])
    s = grid.point_stencil(LAT, LON, layout, lat=[0.0, 0.0, 0.0], lon=[90.0, 90.0, 90.0],
                           depth=np.array([np.nan, 15.0, 5.0]), variable=np.array(["tos", "thetao", "so"]))
    assert s.reason.tolist() == ["", "", "variable"]
    assert s.index[0, 0] == 0 * 12 + 1 * 4 + 1 and s.index[1, 0] == 1 * 12 + 5 and s.weight[1, 4] == 1.0
    with pytest.raises(ObservationError, match="'variable' column"):
        grid.point_stencil(LAT, LON, layout, lat=[0.0], lon=[0.0])
    with pytest.raises(ObservationError, match="'depth' column"):
        grid.point_stencil(LAT, LON, layout, lat=[0.0], lon=[0.0], variable=np.array(["thetao"]))
    with pytest.raises(CoordinateError, match="360 degrees or more"):
        grid.point_stencil(LAT, np.arange(0.0, 361.0, 90.0), grid.channel_layout(), lat=[0.0], lon=[0.0])
