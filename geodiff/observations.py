"""The observation table: sparse in-situ / satellite observations as an ``xr.Dataset`` with dimension ``obs``.

Layout (this module is the one definition; readers, baselines and operators follow it):

===============  ===========  ===============================================================
name             kind         meaning
===============  ===========  ===============================================================
``value``        data (float) the observed value, in the units of the field's variable
``error_std``    data (float) observation error standard deviation (same units), >= 0 (0: exact)
``lat``          coord        degrees north, in [-90, 90]
``lon``          coord        degrees east, any convention (taken into the grid's one)
``time``         coord        observation time (datetime64, cftime or numeric)
``depth``        coord, opt.  metres, positive down (needed for 3-D variables)
``variable``     coord, opt.  name of the field variable observed (needed with several)
``source``       coord, opt.  platform / product (e.g. ``"argo"``, ``"xbt"``)
``obs_id``       coord        unique identifier (generated 0..N-1 when absent, with a record)
===============  ===========  ===============================================================

A ``pandas.DataFrame`` with these columns is accepted wherever a table is. :func:`as_observations` checks the
structure (malformed tables raise :class:`~geodiff.errors.ObservationError` naming the column);
:meth:`ObservationTable.validate` checks the table against a model grid and keeps the usable observations, an
:class:`ObservationReport` that accounts for every record dropped, merged, filled or converted, and each
observation's interpolation stencil (:func:`validate_observations` returns the first two).

This module uses xarray / pandas / numpy only (no torch); observation operators live in
:mod:`geodiff.operators`.

Example
-------
>>> import numpy as np, pandas as pd
>>> from geodiff.observations import validate_observations
>>> table = pd.DataFrame({"value": [1.0, np.nan, 2.0, 3.0], "error_std": 0.1, "lat": [0.5, 0.5, 5.0, 0.2],
...                       "lon": [0.5, 0.5, 0.5, -359.5], "time": pd.Timestamp("2020-01-15")})
>>> clean, report = validate_observations(table, grid_lat=[0.0, 1.0], grid_lon=[0.0, 1.0])
>>> clean.sizes["obs"], report.missing_value, report.outside_grid, report.lon_converted
(2, 1, 1, 1)
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from geodiff.errors import GridError, ObservationError
from geodiff.grid import Stencil, channel_layout, channel_mask, point_stencil

__all__ = ["ObservationTable", "ObservationReport", "as_observations", "validate_observations", "parse_times",
           "OBSERVATION_COLUMNS"]

#: every standard column of an observation table: data variables first, then coordinates
OBSERVATION_COLUMNS = ("value", "error_std", "lat", "lon", "time", "depth", "variable", "source", "obs_id")
_DATA = ("value", "error_std")
_COORDS = ("lat", "lon", "time", "depth", "variable", "source", "obs_id")
_REQUIRED = ("value", "lat", "lon", "time")
_NUMERIC = ("value", "error_std", "lat", "lon", "depth")
_DUPLICATE_POLICIES = ("average", "first", "error")
#: an observed value at or beyond this magnitude is a fill value (CMIP's 1e20, netCDF's 9.97e36), never data
FILL_VALUE_LIMIT = 1e15


# --------------------------------------------------------------------------------------------------------------
# the table


def _columns_from_dataframe(table: pd.DataFrame) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, dict]]:
    frame = table
    if any(name in OBSERVATION_COLUMNS for name in (frame.index.names or []) if name is not None):
        frame = frame.reset_index()
    columns = {str(name): frame[name].to_numpy() for name in frame.columns}
    return columns, dict(table.attrs), {}


def _columns_from_dataset(table: xr.Dataset) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, dict]]:
    dims = set(table.dims)
    if dims != {"obs"}:
        other = sorted(map(str, dims - {"obs"})) or ["(none)"]
        raise ObservationError(
            f"an observation table has the single dimension 'obs'; found dimension(s) {other} "
            f"(rename the record dimension to 'obs', e.g. ds.rename({{'{other[0]}': 'obs'}}))"
        )
    size = table.sizes["obs"]
    columns: dict[str, np.ndarray] = {}
    for name, array in {**dict(table.coords), **dict(table.data_vars)}.items():
        if array.dims == ("obs",):
            columns[str(name)] = array.to_numpy()
        elif array.dims == () and name in _COORDS:
            columns[str(name)] = np.full(size, array.to_numpy()[()])  # one time / variable / source for all
        elif array.dims == ():
            continue  # other scalar metadata is not per observation
        else:
            raise ObservationError(f"variable {name!r} has dims {array.dims}; every column must be along 'obs' only")
    attrs = {str(name): dict(array.attrs) for name, array in {**dict(table.coords), **dict(table.data_vars)}.items()}
    return columns, dict(table.attrs), attrs


def _plain(value: Any) -> Any:
    """A numpy scalar as a plain Python value (readable in messages)."""
    return value.item() if isinstance(value, np.generic) else value


def _first_id(ids: np.ndarray, bad: np.ndarray) -> Any:
    where = np.flatnonzero(bad)
    return _plain(ids[where[0]]) if where.size else None


def parse_times(values: Any, where: str, ids: Any = None) -> Any:
    """``values`` (strings or times) as ``datetime64[ns]``; :class:`ObservationError` naming ``where``, the entry
    (``ids[i]`` when given, else the row) and the value when one is not a time. Missing entries (empty, NaT) stay
    NaT (counted and dropped where the table is validated); time-zone-aware times are converted to UTC and
    returned naive.

    >>> parse_times(["2020-01-15", "soon"], "column 'time' of obs.csv")
    Traceback (most recent call last):
    ...
    geodiff.errors.ObservationError: column 'time' of obs.csv: row 1 holds 'soon', which is not a time; ...
    """
    series = pd.Series(np.asarray(values, dtype=object))
    if not len(series):
        return np.array([], dtype="datetime64[ns]")
    parsed = pd.to_datetime(series, errors="coerce", utc=True, format="mixed")
    bad = parsed.isna() & ~series.isna() & (series.astype(str).str.strip() != "")
    if bool(bad.any()):
        row = int(np.flatnonzero(bad.to_numpy())[0])
        entry = f"row {row}" if ids is None else f"obs_id {np.asarray(ids)[row].item()!r}"
        raise ObservationError(f"{where}: {entry} holds {series.iloc[row]!r}, which is not a time; write times "
                               "as ISO 8601 (e.g. 2020-01-15 or 2020-01-15T12:00Z)")
    return parsed.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")


def _time_column(values: np.ndarray, ids: np.ndarray, attrs: dict[str, Any]) -> np.ndarray:
    """The ``time`` column as datetime64[ns] (or cftime / numbers as given); strings parsed, time-zone-aware
    times converted to UTC (recorded in ``attrs["time_converted"]``); ObservationError naming the obs_id of an
    entry that is not a time. NaT stays (counted and dropped by the validation)."""
    if values.dtype.kind in "Mfiu":
        return values
    if values.dtype.kind != "O" and values.dtype.kind not in "US":
        raise ObservationError(f"observation column 'time' must hold times, got dtype {values.dtype}")
    present = [v for v in values if not (v is None or v is pd.NaT or (isinstance(v, float) and np.isnan(v)))]
    if present and all(hasattr(v, "calendar") for v in present):  # cftime dates
        return values
    zones = {str(v.tzinfo) for v in present if isinstance(v, datetime.datetime) and v.tzinfo is not None}
    parsed = parse_times(values, "observation column 'time'", ids)
    if zones:
        attrs["time_converted"] = f"time-zone-aware times ({', '.join(sorted(zones))}) converted to UTC"
    return parsed


def _default_for(default: float | Mapping[str, float], variables: np.ndarray | None, size: int) -> np.ndarray:
    """The default error of each record (NaN where a per-variable default does not cover the variable)."""
    if not isinstance(default, Mapping):
        return np.full(size, float(default))
    if variables is None:
        raise ObservationError("default_error_std given per variable needs a 'variable' column")
    return np.array([float(default.get(v, np.nan)) for v in variables], dtype=np.float64)


def as_observations(
    table: xr.Dataset | pd.DataFrame, *, default_error_std: float | Mapping[str, float] | None = None
) -> xr.Dataset:
    """A checked observation table (``xr.Dataset`` with dimension ``obs``) from a Dataset or DataFrame.

    Raises :class:`~geodiff.errors.ObservationError` naming the column when a required column (``value``, ``lat``,
    ``lon``, ``time``; ``error_std`` unless ``default_error_std`` is given) is missing, a numeric column is not
    numeric, ``lat`` is outside [-90, 90], ``lon`` is outside [-360, 720] (e.g. a fill value 1e20), ``depth`` is
    negative, ``error_std`` is negative or not finite (0 states an exact observation: optimal interpolation
    honours it exactly; guided sampling needs a positive error and refuses it), a ``value`` is infinite, ``obs_id`` has duplicates, or a
    column is not along ``obs``.

    ``default_error_std`` (a number, or ``{variable: number}``) fills a missing ``error_std`` column and NaN
    entries; the default and the number of entries filled are recorded in ``attrs`` (``error_std_default``,
    ``error_std_filled``). A missing ``obs_id`` is generated as 0..N-1 (recorded in ``attrs["obs_id"]``).
    NaN values and positions are kept: :func:`validate_observations` counts and drops them.

    Example
    -------
    >>> import pandas as pd
    >>> obs = as_observations(pd.DataFrame({"value": [14.2], "lat": [10.0], "lon": [200.0],
    ...                                     "time": [pd.Timestamp("2020-01-15")]}), default_error_std=0.5)
    >>> float(obs.error_std[0]), obs.attrs["error_std_filled"], list(obs.coords)
    (0.5, 1, ['lat', 'lon', 'time', 'obs_id'])
    """
    if isinstance(table, pd.DataFrame):
        columns, attrs, column_attrs = _columns_from_dataframe(table)
    elif isinstance(table, xr.Dataset):
        columns, attrs, column_attrs = _columns_from_dataset(table)
    else:
        raise ObservationError(f"an observation table is an xr.Dataset or pandas.DataFrame, got {type(table).__name__}")
    missing = [name for name in _REQUIRED if name not in columns]
    if "error_std" not in columns and default_error_std is None:
        missing.append("error_std")
    if missing:
        raise ObservationError(
            f"observation table is missing column(s) {missing}; expected {list(OBSERVATION_COLUMNS[:5])} "
            "(+ optional depth, variable, source, obs_id)"
            + ("; pass default_error_std= to use a stated default error" if "error_std" in missing else "")
        )
    size = len(columns["value"])
    for name in _NUMERIC:
        if name in columns:
            array = columns[name]
            if array.dtype.kind not in "fiu":
                raise ObservationError(f"observation column {name!r} must be numeric, got dtype {array.dtype}")
            columns[name] = array.astype(np.float64)
    if "obs_id" in columns:
        ids = columns["obs_id"]
        unique, counts = np.unique(ids.astype(str), return_counts=True)
        if np.any(counts > 1):
            example = _plain(unique[counts > 1][0])
            raise ObservationError(f"observation column 'obs_id' has duplicates, e.g. {example!r}")
    else:
        ids = np.arange(size)
        columns["obs_id"] = ids
        attrs["obs_id"] = "generated as 0..N-1 (the input had no obs_id)"
    lat = columns["lat"]
    if np.any(np.abs(lat) > 90):
        raise ObservationError(
            "observation column 'lat' must lie in [-90, 90] degrees north; "
            f"obs_id {_first_id(ids, np.abs(lat) > 90)!r} "
            f"has {_plain(lat[np.abs(lat) > 90][0])}"
        )
    lon = columns["lon"]
    bad = np.isinf(lon) | (lon > 720.0) | (lon < -360.0)
    if np.any(bad):
        raise ObservationError(
            "observation column 'lon' must lie in [-360, 720] degrees east (any convention; it is taken into the "
            f"grid's); obs_id {_first_id(ids, bad)!r} has {_plain(lon[bad][0])} (a fill value?)"
        )
    if "depth" in columns and np.any(columns["depth"] < 0):
        bad = columns["depth"] < 0
        raise ObservationError(
            f"observation column 'depth' is in metres, positive down; obs_id {_first_id(ids, bad)!r} has "
            f"{_plain(columns['depth'][bad][0])}"
        )
    if np.any(np.isinf(columns["value"])):
        first = _first_id(ids, np.isinf(columns["value"]))
        raise ObservationError(f"observation column 'value' is infinite at obs_id {first!r}")
    fill = np.abs(np.nan_to_num(columns["value"])) >= FILL_VALUE_LIMIT
    if np.any(fill):
        raise ObservationError(
            f"observation column 'value' holds {int(fill.sum())} fill value(s) (|value| >= {FILL_VALUE_LIMIT:g}), "
            f"e.g. {_plain(columns['value'][fill][0]):g} at obs_id {_first_id(ids, fill)!r}; set them to NaN"
        )
    columns["time"] = _time_column(columns["time"], ids, attrs)
    variables = columns.get("variable")
    if "error_std" not in columns:
        columns["error_std"] = np.full(size, np.nan)
    error_std = columns["error_std"]
    bad = ~np.isnan(error_std) & ~((error_std >= 0) & np.isfinite(error_std))
    if np.any(bad):
        raise ObservationError(
            f"observation column 'error_std' must be finite and >= 0; obs_id {_first_id(ids, bad)!r} has "
            f"{_plain(error_std[bad][0])}"
        )
    if default_error_std is not None:
        fill = _default_for(default_error_std, variables, size)
        if np.any(~np.isnan(fill) & ~((fill > 0) & np.isfinite(fill))):
            raise ObservationError(f"default_error_std must be positive and finite, got {default_error_std!r}")
        filled = np.isnan(error_std) & ~np.isnan(fill)
        columns["error_std"] = np.where(filled, fill, error_std)
        attrs["error_std_default"] = (
            str(dict(default_error_std)) if isinstance(default_error_std, Mapping) else float(default_error_std)
        )
        attrs["error_std_filled"] = int(attrs.get("error_std_filled", 0)) + int(filled.sum())
    def column(name: str) -> tuple[str, np.ndarray, dict]:
        return ("obs", columns.pop(name), column_attrs.get(name, {}))

    data_vars = {name: column(name) for name in _DATA}
    coords = {name: column(name) for name in _COORDS if name in columns}
    extra = {name: column(name) for name in list(columns)}
    return xr.Dataset({**data_vars, **extra}, coords=coords, attrs=attrs)


# --------------------------------------------------------------------------------------------------------------
# validation against a grid


@dataclass
class ObservationReport:
    """What :func:`validate_observations` did to each record. Every input record is either kept or counted in
    exactly one drop category: ``total == kept + missing_value + missing_position + missing_error_std +
    sum(unknown_variable.values()) + outside_grid + on_land + duplicates_merged``.

    ``duplicates_merged`` counts records removed by merging duplicates (each group keeps one record);
    ``conflicting_groups`` how many groups had different values. ``error_std_filled`` counts entries given
    ``default_error_std``; ``lon_converted`` longitudes taken into the grid's convention;
    ``depth_above_first_level`` observations shallower than the first level (they take the first level).
    """

    total: int = 0
    kept: int = 0
    missing_value: int = 0
    missing_position: int = 0
    missing_error_std: int = 0
    unknown_variable: dict[str, int] = field(default_factory=dict)
    outside_grid: int = 0
    on_land: int = 0
    duplicates_merged: int = 0
    duplicate_groups: int = 0
    conflicting_groups: int = 0
    duplicate_policy: str = "average"
    error_std_filled: int = 0
    default_error_std: float | str | None = None
    lon_converted: int = 0
    depth_above_first_level: int = 0
    variable_assigned: str | None = None

    @property
    def dropped(self) -> int:
        """Records not in the clean table (dropped or merged into another)."""
        return self.total - self.kept

    def as_dict(self) -> dict[str, Any]:
        """The counts as a plain dict (JSON-serialisable)."""
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"observations: {self.total} in, {self.kept} kept, {self.dropped} dropped or merged"]
        drops = [
            ("missing value (NaN)", self.missing_value),
            ("missing position or time (NaN)", self.missing_position),
            ("missing error_std and no default", self.missing_error_std),
            ("outside the grid", self.outside_grid),
            ("on land or below the sea floor", self.on_land),
            (f"duplicates merged (policy {self.duplicate_policy!r}, {self.duplicate_groups} groups, "
             f"{self.conflicting_groups} with conflicting values)", self.duplicates_merged),
        ]  # fmt: skip
        lines += [f"  dropped, {text}: {count}" for text, count in drops if count]
        lines += [f"  dropped, unknown variable {name!r}: {count}" for name, count in self.unknown_variable.items()]
        if self.error_std_filled:
            lines.append(f"  error_std filled with the default {self.default_error_std}: {self.error_std_filled}")
        if self.lon_converted:
            lines.append(f"  longitudes converted to the grid's convention: {self.lon_converted}")
        if self.depth_above_first_level:
            lines.append(f"  shallower than the first level (use the first level): {self.depth_above_first_level}")
        if self.variable_assigned is not None:
            lines.append(f"  no 'variable' column: all assigned to {self.variable_assigned!r}")
        return "\n".join(lines)


def _channels_of(
    variables: Sequence[str] | Mapping[str, Any] | None, grid_depth: Any, channels: Sequence[tuple[Any, Any]] | None
) -> Sequence[tuple[Any, Any]] | None:
    """The field's ``(variable, level)`` channel list from ``channels``, or from ``variables`` (names each on
    ``grid_depth``, or ``{name: levels or None}``); None for a single unnamed variable (on ``grid_depth``)."""
    if channels is not None:
        if variables is not None or grid_depth is not None:
            raise GridError("give channels (the codec's (variable, level) list) or variables/grid_depth, not both")
        return [tuple(item) for item in channels]
    if isinstance(variables, Mapping):
        pairs: list[tuple[Any, Any]] = []
        for name, levels in variables.items():
            pairs += [(name, None)] if levels is None else [(name, float(level)) for level in np.atleast_1d(levels)]
        return pairs
    if variables is None:
        return None
    names = [variables] if isinstance(variables, str) else list(variables)
    levels = [None] if grid_depth is None else np.asarray(grid_depth, dtype=np.float64).reshape(-1).tolist()
    return [(name, level) for name in names for level in levels]


def _ocean_mask(ocean_mask: Any, layout: dict, grid_lat: Any, grid_lon: Any) -> np.ndarray:
    shape = (sum(chans.size for chans, _ in layout.values()), np.size(grid_lat), np.size(grid_lon))
    return channel_mask(ocean_mask, shape, "ocean_mask")


@dataclass(frozen=True)
class ObservationTable:
    """Observations validated on a model grid: the clean table ``data`` (``xr.Dataset`` with dimension ``obs``, see
    :func:`as_observations`), the ``report`` that accounts for every input record, and the interpolation
    ``stencil`` of each kept record (:class:`geodiff.grid.Stencil`, rows in ``data``'s order, land corners
    renormalised), computed once by :meth:`validate`; :meth:`geodiff.operators.PointOperator.from_table` builds
    the observation operator from it.

    Example
    -------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"value": [1.0, 2.0], "error_std": 0.1, "lat": [0.5, 0.0], "lon": [0.5, -359.0],
    ...                       "time": pd.to_datetime(["2020-01-15", "2020-02-15"])})
    >>> table = ObservationTable.validate(frame, [0.0, 1.0], [0.0, 1.0])
    >>> table.size, table.report.lon_converted, table.at_time(pd.Timestamp("2020-02-15")).stencil.lon.tolist()
    (2, 1, [1.0])
    """

    data: xr.Dataset
    report: ObservationReport
    stencil: Stencil

    @classmethod
    def validate(
        cls,
        obs: xr.Dataset | pd.DataFrame,
        grid_lat: Any,
        grid_lon: Any,
        grid_depth: Any = None,
        ocean_mask: Any = None,
        variables: Sequence[str] | Mapping[str, Any] | None = None,
        *,
        channels: Sequence[tuple[Any, Any]] | None = None,
        periodic: bool | None = None,
        duplicates: str = "average",
        default_error_std: float | Mapping[str, float] | None = None,
        extrapolate_above: bool = True,
    ) -> ObservationTable:
        """Check an observation table against a model grid: the usable records, with their stencils.

        Parameters
        ----------
        obs: the table (``xr.Dataset`` with dimension ``obs`` or ``pandas.DataFrame``), see :func:`as_observations`.
        grid_lat, grid_lon: the field's ascending latitudes ``[H]`` and longitudes ``[W]`` (degrees).
        grid_depth: depth levels ``[L]`` (metres, positive down) of the 3-D variables, or None for 2-D fields.
        ocean_mask: bool ``[H, W]`` or ``[C, H, W]`` (channels as in the layout), True = ocean / valid.
        variables: the field's variables: names (each on ``grid_depth``) or ``{name: levels or None}``; None accepts
            a table of a single variable (or without a ``variable`` column).
        channels: alternatively the codec's ``(variable, level)`` list (:attr:`geodiff.io.Codec.channels`).
        periodic: longitude wraps around (None: decided from ``grid_lon``).
        duplicates: records with the same (variable, time, lat, lon, depth): identical ones are one record listed
            twice and are kept once; with conflicting values, ``"average"`` (default) merges them into one record with
            the mean value and ``error_std = sqrt(mean(error_std^2) / n + var(values))`` (error of the mean plus the
            spread of the conflicting values; the count goes to ``n_merged``), ``"first"`` keeps the first record,
            ``"error"`` raises :class:`~geodiff.errors.ObservationError` naming the ``obs_id`` involved.
        default_error_std: the stated error for missing ``error_std`` (number or ``{variable: number}``).
        extrapolate_above: observations shallower than the first level use the first level (counted); else they are
            outside the grid.

        Each record is dropped for the first reason that applies, in order: unknown variable, NaN value, NaN position
        (lat, lon, time, or depth of a 3-D variable), missing error_std, outside the grid (lat/lon range, deeper
        than the last level), on land (every interpolation corner -- bilinear in lat/lon, linear in depth -- is
        masked out: :func:`geodiff.grid.point_stencil`, whose stencils the operator uses); then duplicates are merged.
        Longitudes are converted to the grid's convention ``[lon0, lon0 + 360)`` (counted). The clean table's
        ``attrs["geodiff_validation"]`` holds the report text. Zero usable observations raise ObservationError.
        """
        if duplicates not in _DUPLICATE_POLICIES:
            raise ObservationError(f"duplicates must be one of {_DUPLICATE_POLICIES}, got {duplicates!r}")
        table = as_observations(obs, default_error_std=default_error_std)
        pairs = _channels_of(variables, grid_depth, channels)
        layout = channel_layout(pairs, None if pairs is not None else grid_depth)
        size = table.sizes["obs"]
        report = ObservationReport(total=size, duplicate_policy=duplicates)
        report.error_std_filled = int(table.attrs.get("error_std_filled", 0))
        report.default_error_std = table.attrs.get("error_std_default")
        reason = np.full(size, "", dtype=object)

        # variables
        named = list(layout) != [None]
        if "variable" in table.coords:
            variable = table["variable"].to_numpy().astype(object)
        else:
            variable = None
        if named:
            if variable is None:
                if len(layout) > 1:
                    raise ObservationError(
                        f"the field has variables {sorted(map(str, layout))}: the table needs a 'variable' column"
                    )
                report.variable_assigned = str(next(iter(layout)))
                variable = np.full(size, next(iter(layout)), dtype=object)
                table = table.assign_coords(variable=("obs", variable.astype(str)))
            known = pd.Series(variable).isin(list(layout)).to_numpy()
            for name in pd.unique(variable[~known]):
                report.unknown_variable[str(name)] = int(np.sum(variable[~known] == name))
            reason[~known] = "unknown_variable"
            three_d = np.array([layout[v][1] is not None if k else False for v, k in zip(variable, known)], dtype=bool)
        else:
            if variable is not None and len(pd.unique(variable)) > 1:
                names = sorted(map(str, pd.unique(variable)))
                raise ObservationError(f"the table has variables {names}; pass variables= (the field's names)")
            three_d = np.full(size, layout[None][1] is not None)
        if three_d.any() and "depth" not in table.coords:
            raise ObservationError("observations of 3-D variables need a 'depth' column (metres, positive down)")

        # where each record sits on the grid: bilinear in lat/lon, linear in depth, land-aware (geodiff.grid)
        stencil = point_stencil(
            grid_lat, grid_lon, layout, table["lat"].to_numpy(), table["lon"].to_numpy(),
            table["depth"].to_numpy() if "depth" in table.coords else None, variable if named else None,
            mask=None if ocean_mask is None else _ocean_mask(ocean_mask, layout, grid_lat, grid_lon),
            periodic=periodic, extrapolate_above=extrapolate_above,
        )  # fmt: skip

        # each record is dropped for the first reason that applies
        lon = table["lon"].to_numpy()
        no_position = (stencil.reason == "missing") | pd.isnull(table["time"].to_numpy())
        reason[(reason == "") & np.isnan(table["value"].to_numpy())] = "missing_value"
        reason[(reason == "") & no_position] = "missing_position"
        reason[(reason == "") & np.isnan(table["error_std"].to_numpy())] = "missing_error_std"
        reason[(reason == "") & (stencil.reason == "outside")] = "outside_grid"
        reason[(reason == "") & (stencil.reason == "land")] = "on_land"
        converted = ~np.isnan(lon) & ~np.isclose(stencil.lon, lon, rtol=0, atol=1e-12)
        above = stencil.above

        for key in ("missing_value", "missing_position", "missing_error_std", "outside_grid", "on_land"):
            setattr(report, key, int(np.sum(reason == key)))
        keep = np.flatnonzero(reason == "")
        report.lon_converted = int(np.sum(converted[keep]))
        report.depth_above_first_level = int(np.sum(above[keep]))
        if keep.size == 0:
            raise ObservationError(f"no usable observation on this grid\n{report}")
        clean = table.isel(obs=keep)
        clean = clean.assign_coords(lon=clean["lon"].copy(data=stencil.lon[keep]))
        clean, report, merged = _merge_duplicates(clean, report, duplicates)
        report.kept = clean.sizes["obs"]
        clean.attrs["geodiff_validation"] = str(report)
        return cls(clean, report, stencil.rows(keep[merged]))

    @property
    def size(self) -> int:
        """The number of observations ``N``."""
        return int(self.data.sizes["obs"])

    def isel(self, rows: Any) -> ObservationTable:
        """The observations ``rows`` (indices or a bool selection ``[N]``), with their stencils; same report."""
        rows = np.asarray(rows)
        return ObservationTable(self.data.isel(obs=rows), self.report, self.stencil.rows(rows))

    def at_time(self, time: Any) -> ObservationTable:
        """The observations at ``time`` (equal to the ``time`` coordinate)."""
        return self.isel(np.flatnonzero(self.data["time"].values == time))


def validate_observations(
    obs: xr.Dataset | pd.DataFrame, grid_lat: Any, grid_lon: Any, *args: Any, **options: Any
) -> tuple[xr.Dataset, ObservationReport]:
    """Check an observation table against a model grid: ``(clean table, report)``, the ``data`` and ``report`` of
    :meth:`ObservationTable.validate` (same arguments and rules).

    Example
    -------
    >>> import numpy as np, pandas as pd
    >>> table = pd.DataFrame({"value": [1.0, 3.0, 5.0], "error_std": [0.1, 0.1, np.nan], "lat": 0.5,
    ...                       "lon": 0.5, "time": pd.Timestamp("2020-01-15"), "depth": [5.0, 5.0, 700.0]})
    >>> clean, report = validate_observations(table, [0.0, 1.0], [0.0, 1.0], grid_depth=[5.0, 10.0],
    ...                                       default_error_std=0.3)
    >>> float(clean.value[0]), round(float(clean.error_std[0]), 3), report.outside_grid, report.duplicates_merged
    (2.0, 1.002, 1, 1)
    """
    table = ObservationTable.validate(obs, grid_lat, grid_lon, *args, **options)
    return table.data, table.report


def _merge_duplicates(
    table: xr.Dataset, report: ObservationReport, policy: str
) -> tuple[xr.Dataset, ObservationReport, np.ndarray]:
    """``(merged table, report, the row of the table each merged record comes from)``."""
    keys = [name for name in ("variable", "time", "lat", "lon", "depth") if name in table.coords]
    frame = pd.DataFrame({name: table[name].to_numpy() for name in keys})
    group = frame.groupby(keys, dropna=False, sort=False).ngroup().to_numpy()
    count = np.bincount(group)
    if count.max() == 1:
        return table, report, np.arange(table.sizes["obs"])
    value = table["value"].to_numpy()
    error = table["error_std"].to_numpy()
    n = count[group]
    mean = np.bincount(group, weights=value)[group] / n
    spread = np.bincount(group, weights=(value - mean) ** 2)[group] / n
    error_mean2 = np.bincount(group, weights=error**2)[group] / n
    error_spread = np.bincount(group, weights=(error**2 - error_mean2) ** 2)[group]
    conflicting = (spread > 0) | (error_spread > 0)
    report.duplicate_groups = int(np.sum(count > 1))
    report.conflicting_groups = int(np.unique(group[conflicting & (n > 1)]).size)
    if policy == "error" and report.conflicting_groups:
        first = group[np.flatnonzero(conflicting & (n > 1))[0]]
        ids = table["obs_id"].to_numpy()[group == first].tolist()
        raise ObservationError(
            f"{report.conflicting_groups} groups of observations share variable/time/position with different values, "
            f"e.g. obs_id {ids}; pass duplicates='average' or 'first' to resolve them"
        )
    _, first_index = np.unique(group, return_index=True)
    first_index = np.sort(first_index)
    merged = table.isel(obs=first_index)
    report.duplicates_merged = int(table.sizes["obs"] - first_index.size)
    if policy == "average":
        # identical records (no spread in value or error) are one record listed twice: error unchanged
        combined = np.where(conflicting, np.sqrt(error_mean2 / n + spread), error)
        merged["value"] = merged["value"].copy(data=mean[first_index])
        merged["error_std"] = merged["error_std"].copy(data=combined[first_index])
        merged["n_merged"] = ("obs", n[first_index])
    return merged, report, first_index
