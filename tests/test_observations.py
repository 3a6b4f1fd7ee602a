"""The observation table: structure checks, and validation against a grid that accounts for every record."""

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from geodiff import observations
from geodiff.errors import ObservationError
from geodiff.observations import ObservationReport, ObservationTable, as_observations, validate_observations
from geodiff.operators import PointOperator

TIME = pd.Timestamp("2020-01-15")
LAT = np.array([-10.0, -5.0, 0.0, 5.0, 10.0])
LON = np.arange(0.0, 360.0, 30.0)
DEPTH = np.array([5.0, 20.0, 100.0])


def table(**columns):
    base = {"value": [10.0, 11.0, 12.0], "error_std": [0.1, 0.2, 0.3], "lat": [0.0, 1.0, 2.0],
            "lon": [10.0, 20.0, 30.0], "time": TIME}
    base.update(columns)
    return pd.DataFrame({k: v for k, v in base.items() if v is not None})


def counted(report: ObservationReport) -> int:
    return (report.kept + report.missing_value + report.missing_position + report.missing_error_std
            + sum(report.unknown_variable.values()) + report.outside_grid + report.on_land + report.duplicates_merged)


def test_dataframe_becomes_the_standard_dataset():
    obs = as_observations(table(depth=[5.0, 10.0, 50.0], variable="thetao", source=["argo", "xbt", "ctd"]))
    assert dict(obs.sizes) == {"obs": 3}
    assert set(obs.data_vars) == {"value", "error_std"}
    assert set(obs.coords) == {"lat", "lon", "time", "depth", "variable", "source", "obs_id"}
    assert obs.obs_id.values.tolist() == [0, 1, 2] and "generated" in obs.attrs["obs_id"]
    again = as_observations(obs)
    xr.testing.assert_identical(again, obs)


def test_dataset_with_scalar_time_is_broadcast_and_extra_columns_kept():
    ds = xr.Dataset({"value": ("obs", [1.0, 2.0]), "error_std": ("obs", [0.1, 0.1]), "qc": ("obs", [1, 2])},
                    coords={"lat": ("obs", [0.0, 1.0]), "lon": ("obs", [0.0, 1.0]), "time": TIME,
                            "obs_id": ("obs", ["a", "b"])})
    ds["value"].attrs = {"units": "degC", "standard_name": "sea_water_temperature"}
    ds["lat"].attrs = {"units": "degrees_north"}
    obs = as_observations(ds)
    assert obs.time.dims == ("obs",) and obs.qc.values.tolist() == [1, 2]
    assert obs.value.attrs["units"] == "degC" and obs.lat.attrs["units"] == "degrees_north"  # attributes kept
    ds["lon"].attrs = {"units": "degrees_east"}
    clean, _ = validate_observations(as_observations(ds), LAT, LON)
    assert clean.value.attrs["units"] == "degC" and clean.lon.attrs["units"] == "degrees_east"


@pytest.mark.parametrize("column", ["value", "lat", "lon", "time", "error_std"])
def test_missing_required_column_is_named(column):
    with pytest.raises(ObservationError, match=f"missing column.*'{column}'"):
        as_observations(table(**{column: None}))


@pytest.mark.parametrize(
    ("columns", "match"),
    [
        ({"value": ["a", "b", "c"]}, "'value' must be numeric"),
        ({"lat": [0.0, 95.0, 1.0]}, "'lat' must lie in \\[-90, 90\\] degrees north; obs_id 1 has 95.0"),
        ({"depth": [5.0, -1.0, 3.0]}, "'depth' is in metres, positive down; obs_id 1"),
        ({"error_std": [0.1, -2.0, 0.1]}, "'error_std' must be finite and >= 0; obs_id 1"),
        ({"error_std": [0.1, np.inf, 0.1]}, "'error_std' must be finite and >= 0"),
        ({"value": [1.0, np.inf, 2.0]}, "'value' is infinite at obs_id 1"),
        ({"obs_id": ["x", "y", "x"]}, "'obs_id' has duplicates, e.g. 'x'"),
    ],
)
def test_malformed_columns_raise_naming_the_column(columns, match):
    with pytest.raises(ObservationError, match=match):
        as_observations(table(**columns))


def test_wrong_dimensions_are_named():
    frame = table()
    with pytest.raises(ObservationError, match="found dimension\\(s\\) \\['index'\\]"):
        as_observations(frame.to_xarray())
    ds = as_observations(frame).assign(profile=(("obs", "level"), np.zeros((3, 2))))
    with pytest.raises(ObservationError, match="dimension\\(s\\) \\['level'\\]"):
        as_observations(ds)
    with pytest.raises(ObservationError, match="xr.Dataset or pandas.DataFrame"):
        as_observations({"value": [1.0]})


def test_default_error_std_fills_with_a_record():
    obs = as_observations(table(error_std=[0.1, np.nan, np.nan]), default_error_std=0.5)
    assert obs.error_std.values.tolist() == [0.1, 0.5, 0.5]
    assert obs.attrs["error_std_default"] == 0.5 and obs.attrs["error_std_filled"] == 2
    per_variable = as_observations(table(error_std=None, variable=["tos", "thetao", "so"]),
                                   default_error_std={"tos": 0.3, "thetao": 0.5})
    assert np.isnan(per_variable.error_std.values[2]) and per_variable.error_std.values[:2].tolist() == [0.3, 0.5]
    clean, report = validate_observations(table(error_std=[0.1, np.nan, 0.2]), LAT, LON, default_error_std=0.4)
    assert report.error_std_filled == 1 and report.default_error_std == 0.4
    assert "error_std filled with the default 0.4: 1" in str(report)


def test_every_record_is_accounted_for():
    frame = pd.DataFrame({
        "value": [1.0, np.nan, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 9.0],
        "error_std": [0.1, 0.1, 0.1, np.nan, 0.1, 0.1, 0.1, 0.1, 0.2, 0.2],
        "lat": [0.0, 0.0, np.nan, 0.0, 20.0, 0.0, 9.0, 1.0, 2.0, 2.0],
        "lon": [10.0, 10.0, 10.0, 10.0, 10.0, -170.0, 100.0, 10.0, 50.0, 50.0],
        "depth": [10.0, 10.0, 10.0, 10.0, 10.0, 2.0, 10.0, 500.0, 30.0, 30.0],
        "variable": ["thetao"] * 6 + ["so", "thetao", "thetao", "thetao"],
        "time": TIME,
    })
    mask = np.ones((3, LAT.size, LON.size), dtype=bool)
    clean, report = validate_observations(frame, LAT, LON, DEPTH, ocean_mask=mask, variables=["thetao"])
    assert report.total == 10 and counted(report) == 10
    assert (report.missing_value, report.missing_position, report.missing_error_std) == (1, 1, 1)
    assert (report.outside_grid, report.unknown_variable, report.duplicates_merged) == (2, {"so": 1}, 1)
    assert report.kept == clean.sizes["obs"] == 3
    assert report.lon_converted == 1 and float(clean.lon[1]) == 190.0
    assert report.depth_above_first_level == 1
    assert clean.attrs["geodiff_validation"] == str(report)
    text = str(report)
    assert "10 in, 3 kept" in text and "unknown variable 'so': 1" in text and "outside the grid: 2" in text


def test_the_validated_table_hands_the_operator_its_stencil():
    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame({"value": 1.0, "error_std": 0.1, "lat": rng.uniform(-12, 12, n),
                          "lon": rng.uniform(-360, 360, n), "depth": rng.uniform(0, 120, n),
                          "time": pd.to_datetime(rng.choice(["2020-01-15", "2020-02-15"], n))})
    frame.loc[:9, "lat"] = 0.0  # a few exactly on grid rows / levels
    frame.loc[:4, "depth"] = 20.0
    table = ObservationTable.validate(frame, LAT, LON, DEPTH)
    inside = (np.abs(frame.lat) <= 10) & (frame.depth <= 100)
    assert table.size == inside.sum() == table.report.kept and table.stencil.index.shape == (table.size, 8)
    # a field linear in depth and latitude (constant in longitude) is interpolated exactly
    field = torch.from_numpy(DEPTH[:, None, None] + 2.0 * LAT[None, :, None] + 0.0 * LON)[None]
    depth = np.maximum(table.data.depth.values, DEPTH[0])  # shallower than 5 m takes the first level
    op = PointOperator.from_table(table)
    np.testing.assert_allclose(op(field)[0].numpy(), depth + 2.0 * table.data.lat.values, rtol=0, atol=1e-12)
    at_time = table.at_time(np.datetime64("2020-02-15"))
    assert at_time.size == (table.data.time.values == np.datetime64("2020-02-15")).sum()
    assert PointOperator.from_table(at_time).n_obs == at_time.size and at_time.report is table.report
    np.testing.assert_array_equal(at_time.stencil.lon, at_time.data.lon.values)
    # the operator from the stencil is the operator of the clean positions, to the bit
    again = PointOperator.from_columns(table.data, LAT, LON, grid_depth=DEPTH)
    assert torch.equal(op.index, again.index) and torch.equal(op.weight, again.weight)


def test_land_records_are_counted_and_their_stencils_renormalised():
    mask = np.ones((DEPTH.size, LAT.size, LON.size), dtype=bool)
    mask[:, 2, 0] = False  # (0 N, 0 E) is land at every level
    frame = table(lat=[0.0, 0.0, 2.5], lon=[0.0, 360.0, 15.0], depth=[5.0, 50.0, 5.0])
    validated = ObservationTable.validate(frame, LAT, LON, DEPTH, ocean_mask=mask)
    assert validated.report.on_land == 2 and validated.size == 1
    # 2.5 N, 15 E: corners (0 N, 0 E) land, (0 N, 30 E), (5 N, 0 E), (5 N, 30 E) with 1/4 each, renormalised
    np.testing.assert_allclose(validated.stencil.weight[0, :4], [0.0, 1 / 3, 1 / 3, 1 / 3], rtol=0, atol=1e-15)


def test_duplicates_average_first_and_error():
    frame = table(value=[10.0, 12.0, 5.0, 5.0], error_std=[0.3, 0.4, 0.2, 0.2], lat=[0.0, 0.0, 1.0, 1.0],
                  lon=[10.0, 10.0, 20.0, 20.0], obs_id=["a", "b", "c", "d"])
    clean, report = validate_observations(frame, LAT, LON)
    assert (report.duplicate_groups, report.conflicting_groups, report.duplicates_merged) == (2, 1, 2)
    assert clean.value.values.tolist() == [11.0, 5.0] and clean.n_merged.values.tolist() == [2, 2]
    assert clean.error_std.values[0] == pytest.approx(np.sqrt((0.09 + 0.16) / 2 / 2 + 1.0))
    assert clean.error_std.values[1] == 0.2  # identical records: one observation listed twice
    first, _ = validate_observations(frame, LAT, LON, duplicates="first")
    assert first.value.values.tolist() == [10.0, 5.0] and first.obs_id.values.tolist() == ["a", "c"]
    with pytest.raises(ObservationError, match=r"obs_id \['a', 'b'\]"):
        validate_observations(frame, LAT, LON, duplicates="error")
    with pytest.raises(ObservationError, match="duplicates must be one of"):
        validate_observations(frame, LAT, LON, duplicates="drop")


def test_several_variables_need_a_variable_column_and_a_mapping_handles_2d_and_3d():
    frame = table(depth=[10.0, np.nan, 30.0], variable=["thetao", "tos", "thetao"])
    variables = {"tos": None, "thetao": DEPTH}
    clean, report = validate_observations(frame, LAT, LON, variables=variables)
    assert report.kept == 3  # the 2-D variable does not need a depth
    channels = [("tos", None)] + [("thetao", float(d)) for d in DEPTH]  # the codec's channel list
    mask = np.ones((4, LAT.size, LON.size), dtype=bool)
    mask[0] = False  # no valid 'tos' cell: the surface observation is on land
    _, report = validate_observations(frame, LAT, LON, channels=channels, ocean_mask=mask)
    assert (report.kept, report.on_land) == (2, 1)
    with pytest.raises(ObservationError, match="'variable' column"):
        validate_observations(table(depth=[10.0, 20.0, 30.0]), LAT, LON, variables=variables)
    with pytest.raises(ObservationError, match="pass variables="):
        validate_observations(frame, LAT, LON, DEPTH)
    single, report = validate_observations(table(), LAT, LON, variables=["tos"])
    assert report.variable_assigned == "tos" and set(single.variable.values) == {"tos"}
    with pytest.raises(ObservationError, match="'depth'"):
        validate_observations(table(), LAT, LON, DEPTH)


def test_zero_usable_observations_raise_with_the_report():
    with pytest.raises(ObservationError, match="no usable observation(.|\n)*outside the grid: 3"):
        validate_observations(table(lat=[50.0, 60.0, 70.0]), LAT, LON)


def test_bad_mask_shape_is_named():
    from geodiff.errors import GridError

    with pytest.raises(GridError, match="ocean_mask"):
        validate_observations(table(), LAT, LON, ocean_mask=np.ones((2, 2), bool))


def test_observations_module_does_not_import_torch():
    tree = ast.parse(Path(observations.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "torch" not in imported and "geodiff.operators" not in modules
