"""Bring any gridded ``xr.Dataset`` to geodiff's canonical form, with a record of every change.

Canonical form (the README, "Conventions"): coordinates named ``time``, ``depth`` (ocean, metres, ``positive="down"``,
increasing) or ``level`` (pressure, hPa, surface first), ``lat`` (ascending) and ``lon`` (one declared
convention, ``"-180..180"`` by default or ``"0..360"``, recorded in ``attrs["geodiff_lon_convention"]``);
data variables ordered ``(time, depth|level, lat, lon)`` and converted to a declared unit per variable.

Units are parsed and converted with pint through cf_xarray's unit registry (which knows the CF spellings),
never guessed: a variable without parseable units is a :class:`~geodiff.errors.UnitsError` naming it.
Axes are found from CF attributes (``standard_name``, ``axis``, ``units``, ``positive``) with cf_xarray plus a
short list of names used by common products; a missing or ambiguous axis is a
:class:`~geodiff.errors.CoordinateError` naming the candidates.

Every change (renamed axis, flipped latitude, wrapped longitude, converted units, ...) is appended to the
``history`` attribute (never overwritten) and to the JSON list ``attrs["geodiff_standardize"]``.
Standardizing twice changes nothing the second time.

Example
-------
>>> import numpy as np, xarray as xr
>>> from geodiff.adapters.standardize import standardize
>>> ds = xr.Dataset(
...     {"thetao": (("lev", "latitude", "longitude"), np.full((2, 3, 4), 285.0),
...                 {"units": "K", "standard_name": "sea_water_potential_temperature"})},
...     coords={"lev": ("lev", [500.0, 1500.0], {"units": "cm", "positive": "down"}),
...             "latitude": ("latitude", [10.0, 0.0, -10.0], {"units": "degrees_north"}),
...             "longitude": ("longitude", [0.0, 90.0, 180.0, 270.0], {"units": "degrees_east"})})
>>> out = standardize(ds, variables={"thetao": "degC"}, lon="-180..180")
>>> out.thetao.dims, out.thetao.attrs["units"], float(out.thetao[0, 0, 0])
(('depth', 'lat', 'lon'), 'degC', 11.85)
>>> out.depth.values.tolist(), out.lat.values.tolist(), out.lon.values.tolist()
([5.0, 15.0], [-10.0, 0.0, 10.0], [-180.0, -90.0, 0.0, 90.0])
>>> xr.testing.assert_identical(standardize(out, variables={"thetao": "degC"}), out)
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from geodiff.adapters.files import check_netcdf
from geodiff.errors import CalendarError, CoordinateError, DataError, GeodiffWarning, UnitsError
from geodiff.grid import LON_CONVENTIONS, wrap_longitude
from geodiff.provenance import append_history

__all__ = [
    "CANONICAL_UNITS",
    "LON_CONVENTIONS",
    "calendar_of",
    "check_units_against_values",
    "check_calendars",
    "convert_units",
    "find_axes",
    "parse_units",
    "record",
    "select_bbox",
    "standardize",
    "unit_conversion",
    "wrap_longitude",
]

#: Canonical unit per CF ``standard_name``, used when ``standardize(variables=None)``.
CANONICAL_UNITS: dict[str, str] = {
    "sea_water_potential_temperature": "degC",
    "sea_water_conservative_temperature": "degC",
    "sea_water_temperature": "degC",
    "sea_surface_temperature": "degC",
    "sea_surface_foundation_temperature": "degC",
    "sea_water_salinity": "1e-3",
    "sea_water_practical_salinity": "1e-3",
    "air_temperature": "K",
    "toa_brightness_temperature": "K",
    "geopotential": "m2 s-2",
    "geopotential_height": "m",
    "air_pressure_at_mean_sea_level": "Pa",
    "surface_air_pressure": "Pa",
    "toa_outgoing_longwave_flux": "W m-2",
    "height_above_mean_sea_level": "m",
    "height_above_reference_ellipsoid": "m",
    "sea_floor_depth_below_geoid": "m",
}

#: Values at or beyond this magnitude in a coordinate are fill values (CMIP's 1e20), not positions.
SENTINEL = 1e19
#: Standard gravity used to turn geopotential (m2 s-2) into geopotential height (m) (WMO; pint's ``g_0``).
_G0_UNIT = "standard_gravity"

# Spellings pint reads wrongly or not at all (e.g. "degrees C" parses as degree * delta_degC).
_UNIT_ALIASES: dict[str, str] = {
    "degrees c": "degC",
    "degree c": "degC",
    "deg c": "degC",
    "degrees_c": "degC",
    "degree_c": "degC",
    "degrees celsius": "degC",
    "degree celsius": "degC",
    "celsius_scale": "degC",
    "°c": "degC",
    "degrees k": "K",
    "degree k": "K",
    "deg k": "K",
    "degrees kelvin": "K",
    "gpm": "m",
    "m of water equivalent": "m",
}
# Salinity scales that are numerically the same number for practical purposes (PSS-78 value ~ g/kg ~ 1e-3).
_SALINITY_UNITS = frozenset({"psu", "pss", "pss-78", "pss78", "0.001", "1e-3", "1.e-3", "g/kg", "g kg-1", "g kg**-1",
                             "ppt", "‰", "practical_salinity_unit"})
_BOUNDS_DIMS = frozenset({"bnds", "bounds", "nv", "nv4", "vertices", "nvertex", "d2", "axis_nbounds", "nbnd", "two"})

_LAT_NAMES = ("lat", "latitude", "nav_lat", "LATITUDE", "Latitude")
_LON_NAMES = ("lon", "longitude", "nav_lon", "LONGITUDE", "Longitude")
_TIME_NAMES = ("time", "valid_time", "TIME", "Time")
_VERTICAL_NAMES = ("depth", "lev", "olevel", "deptht", "depth_coord", "DEPTH", "z", "level", "plev", "pressure_level",
                   "isobaricInhPa", "pressure")
_DEPTH_LIKE = frozenset({"depth", "lev", "olevel", "deptht", "depth_coord", "DEPTH", "z", "deptho", "zt", "z_t"})
_LAT_UNITS = frozenset({"degrees_north", "degree_north", "degree_n", "degrees_n", "degreen", "degreesn"})
_LON_UNITS = frozenset({"degrees_east", "degree_east", "degree_e", "degrees_e", "degreee", "degreese"})

CANONICAL_NAMES = {"time": "time", "lat": "lat", "lon": "lon", "depth": "depth", "level": "level"}


# ---------------------------------------------------------------------------------------------------------------
# records


def _version() -> str:
    import geodiff

    return geodiff.__version__


def record(ds: xr.Dataset, changes: Sequence[str], *, step: str = "standardize") -> xr.Dataset:
    """Append ``changes`` to ``history`` (timestamped) and to the JSON list ``geodiff_standardize``.

    Nothing is written when ``changes`` is empty, so a step that changes nothing leaves the attributes as they are.

    >>> import xarray as xr
    >>> ds = record(xr.Dataset(attrs={"history": "made by hand"}), ["renamed 'latitude' to 'lat'"])
    >>> ds.attrs["history"].splitlines()[0], json.loads(ds.attrs["geodiff_standardize"])
    ('made by hand', ["standardize: renamed 'latitude' to 'lat'"])
    """
    if not changes:
        return ds
    ds = ds.copy()
    attrs = append_history(ds.attrs, f"geodiff {_version()} {step}: " + "; ".join(changes))
    try:
        previous = json.loads(attrs.get("geodiff_standardize", "[]"))
        if not isinstance(previous, list):
            previous = [str(previous)]
    except (TypeError, ValueError):
        previous = [str(attrs["geodiff_standardize"])]
    attrs["geodiff_standardize"] = json.dumps(previous + [f"{step}: {c}" for c in changes])
    ds.attrs = attrs
    return ds


# ---------------------------------------------------------------------------------------------------------------
# units


def _registry() -> Any:
    from cf_xarray.units import units  # pint registry with the CF spellings (degrees_north, psu, ...)

    return units


def _clean_units(units: str) -> str:
    text = str(units).strip()
    return _UNIT_ALIASES.get(text.lower(), text)


def parse_units(units: Any, where: str) -> Any:
    """``units`` as a pint unit; :class:`UnitsError` naming ``where`` when it cannot be parsed.

    >>> parse_units("m**2 s**-2", "variable 'z'")
    <Unit('meter ** 2 / second ** 2')>
    >>> parse_units("degrees C", "variable 'sst'")
    <Unit('degree_Celsius')>
    """
    if units is None or (isinstance(units, str) and not units.strip()):
        raise UnitsError(f"{where} has no 'units' attribute; expected a unit such as 'degC', 'K', 'm' or '1e-3'")
    text = _clean_units(units)
    reg = _registry()
    try:
        quantity = reg.Quantity(text)
    except Exception as err:  # pint raises several unrelated exception types on bad strings
        raise UnitsError(
            f"{where} has units {units!r}, which cannot be parsed ({err}); expected a CF/UDUNITS unit"
        ) from err
    if not isinstance(quantity, reg.Quantity):
        raise UnitsError(f"{where} has units {units!r}, which is not a unit")
    if quantity.magnitude != 1:  # "1e-3", "0.001": a scaled dimensionless unit
        return reg.Unit("dimensionless") * quantity.magnitude
    return quantity.units


def _is_salinity_units(units: Any) -> bool:
    return str(units).strip().lower() in _SALINITY_UNITS


def _affine(src: Any, dst: Any) -> tuple[float, float]:
    reg = _registry()
    q0 = reg.Quantity(0.0, src).to(dst).magnitude
    q1 = reg.Quantity(1.0, src).to(dst).magnitude
    return float(q1 - q0), float(q0)


def _dimensionality(unit: Any) -> Any:
    return _registry().Quantity(1.0, unit).dimensionality


def _unit_factor(unit: Any) -> Any:
    """(pint unit, scale) for a parsed unit that may be a scaled dimensionless quantity."""
    if hasattr(unit, "magnitude"):
        return unit.units, float(unit.magnitude)
    return unit, 1.0


def _conversion(src_text: Any, dst_text: str, where: str) -> tuple[float, float, str]:
    """(scale, offset, kind) so that ``value_dst = scale * value_src + offset``; kind names special cases."""
    if _is_salinity_units(src_text) and _is_salinity_units(dst_text):
        return 1.0, 0.0, "salinity"
    src_unit, src_scale = _unit_factor(parse_units(src_text, where))
    dst_unit, dst_scale = _unit_factor(parse_units(dst_text, f"the target unit of {where}"))
    src_dim, dst_dim = _dimensionality(src_unit), _dimensionality(dst_unit)
    reg = _registry()
    length, geopotential = reg.Quantity(1.0, "m").dimensionality, reg.Quantity(1.0, "m2 s-2").dimensionality
    if src_dim == geopotential and dst_dim == length:
        g0 = reg.Quantity(1.0, _G0_UNIT)
        scale = (reg.Quantity(src_scale, src_unit) / g0).to(dst_unit).magnitude / dst_scale
        return float(scale), 0.0, "geopotential->height"
    if src_dim == length and dst_dim == geopotential:
        g0 = reg.Quantity(1.0, _G0_UNIT)
        scale = (reg.Quantity(src_scale, src_unit) * g0).to(dst_unit).magnitude / dst_scale
        return float(scale), 0.0, "height->geopotential"
    if src_dim != dst_dim:
        raise UnitsError(
            f"{where} has units {src_text!r} ({src_dim}), which cannot be converted to {dst_text!r} ({dst_dim})"
        )
    scale, offset = _affine(src_unit, dst_unit)
    return scale * src_scale / dst_scale, offset / dst_scale, "units"


def check_units_against_values(units: str, lo: float, hi: float, where: str, standard_name: str = "") -> None:
    """:class:`UnitsError` naming ``where`` when values spanning ``lo..hi`` are impossible in ``units``: a
    temperature in kelvin below 100 (degC values, or degC mixed in) or in degC above 250 (kelvin values, or kelvin
    mixed in). Anomalies and uncertainties (by ``standard_name``) are not checked.

    >>> check_units_against_values("degC", 2.0, 291.0, "variable 'sst'")
    Traceback (most recent call last):
    ...
    geodiff.errors.UnitsError: variable 'sst' says units 'degC' but its values reach 291, impossible in degC ...
    """
    if any(w in str(standard_name) for w in ("anomaly", "standard_error", "uncertainty")):
        return
    if _is_salinity_units(units):
        return
    unit = parse_units(units, where)
    if _is_kelvin(unit) and lo < 100.0:
        raise UnitsError(
            f"{where} says units {units!r} but its values span {lo:.4g}..{hi:.4g}, impossible in kelvin "
            "(they look like degC); fix the 'units' attribute"
        )
    if _is_celsius(unit) and hi > 250.0:
        raise UnitsError(
            f"{where} says units {units!r} but its values reach {hi:.4g}, impossible in degC "
            "(they look like kelvin); fix the 'units' attribute"
        )


def unit_conversion(src: str, dst: str, where: str) -> tuple[float, float]:
    """``(scale, offset)`` with ``value_dst = scale * value_src + offset`` (pint); :class:`UnitsError` naming
    ``where`` when ``src`` cannot be parsed or converted to ``dst``. A spread or error in ``src`` converts by
    ``abs(scale)`` alone.

    >>> scale, offset = unit_conversion("degF", "degC", "observation 'value'")
    >>> round(scale * 212.0 + offset, 9)
    100.0
    """
    scale, offset, _ = _conversion(src, dst, where)
    return scale, offset


def _is_kelvin(unit: Any) -> bool:
    reg = _registry()
    unit = _unit_factor(unit)[0]
    return unit == reg.Unit("kelvin")


def _is_celsius(unit: Any) -> bool:
    reg = _registry()
    unit = _unit_factor(unit)[0]
    return unit == reg.Unit("degC")


def _finite_range(da: xr.DataArray) -> tuple[float, float] | None:
    import dask

    if da.size == 0:
        return None
    lo, hi = dask.compute(da.min(skipna=True), da.max(skipna=True))
    lo, hi = float(lo), float(hi)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    return lo, hi


_RANGE_ATTRS = ("valid_min", "valid_max", "valid_range", "actual_range")
_PACKING_KEYS = ("scale_factor", "add_offset")


def _range_attrs(da: xr.DataArray) -> dict[str, np.ndarray]:
    """valid_min / valid_max / valid_range / actual_range in *unpacked* units (CF: packed when the data are)."""
    out = {}
    scale = float(da.encoding.get("scale_factor", 1.0))
    offset = float(da.encoding.get("add_offset", 0.0))
    packed = "scale_factor" in da.encoding or "add_offset" in da.encoding
    for key in _RANGE_ATTRS:
        if key not in da.attrs:
            continue
        value = np.atleast_1d(np.asarray(da.attrs[key], dtype="float64"))
        if packed and key != "actual_range":
            value = value * scale + offset
        out[key] = value
    return out


def _range_contradiction(key: str, value: np.ndarray, lo: float, hi: float) -> str | None:
    span = max(hi - lo, abs(hi), abs(lo), 1.0)
    tol = 0.01 * span
    if key == "valid_min" and lo < value[0] - tol:
        return f"{key}={value[0]:g} but values go down to {lo:g}"
    if key == "valid_max" and hi > value[0] + tol:
        return f"{key}={value[0]:g} but values reach {hi:g}"
    if key in ("valid_range", "actual_range") and value.size == 2:
        if lo < value[0] - tol or hi > value[1] + tol:
            return f"{key}=[{value[0]:g}, {value[1]:g}] but values span {lo:g}..{hi:g}"
    return None


def convert_units(
    da: xr.DataArray, to: str, *, name: Hashable | None = None, check_values: bool = True
) -> tuple[xr.DataArray, list[str]]:
    """``da`` converted to unit ``to`` with pint, and the list of changes made (empty when nothing changed).

    Geopotential (m2 s-2) converts to geopotential height (m) by dividing by standard gravity, and back.
    Salinity scales (psu, PSS-78, 1e-3, 0.001, g/kg) are taken as the same number. Valid-range attributes that
    agree with the values are converted too; ones that contradict the values are dropped with a
    :class:`~geodiff.errors.GeodiffWarning` (never used to mask). Temperatures whose values contradict their units
    (kelvin below 100, degC above 250) raise :class:`~geodiff.errors.UnitsError`.

    >>> import xarray as xr
    >>> z = xr.DataArray([9806.65], dims="x", attrs={"units": "m**2 s**-2", "standard_name": "geopotential"})
    >>> zh, changes = convert_units(z, "m", name="z")
    >>> float(zh[0]), zh.attrs["standard_name"], len(changes)
    (1000.0, 'geopotential_height', 1)
    """
    label = name if name is not None else da.name
    where = f"variable {label!r}"
    src = da.attrs.get("units")
    if src is None or (isinstance(src, str) and not src.strip()):
        raise UnitsError(f"{where} has no 'units' attribute; expected units convertible to {to!r}")
    if isinstance(src, bytes):
        src = src.decode()
    scale, offset, kind = _conversion(src, to, where)
    changes: list[str] = []
    stats: tuple[float, float] | None = None
    ranges = _range_attrs(da)
    standard_name = str(da.attrs.get("standard_name", ""))
    is_delta = any(w in standard_name for w in ("anomaly", "standard_error", "uncertainty")) or "delta" in str(to)
    src_unit = parse_units(src, where) if kind == "units" else None
    temperature = src_unit is not None and (_is_kelvin(src_unit) or _is_celsius(src_unit)) and not is_delta
    if check_values and (temperature or ranges):
        stats = _finite_range(da)
    if check_values and temperature and stats is not None:
        check_units_against_values(src, *stats, where, standard_name)
    attrs = dict(da.attrs)
    for key, value in ranges.items():
        problem = _range_contradiction(key, value, *stats) if stats is not None else None
        if problem is not None:
            warnings.warn(
                f"{where} (units {src!r}) has contradictory metadata: {problem}; the attribute is not used to "
                "mask and is dropped",
                GeodiffWarning,
                stacklevel=3,
            )
            attrs.pop(key, None)
            changes.append(f"dropped contradictory attribute {key} of {label!r} ({problem})")
    identity = scale == 1.0 and offset == 0.0
    out = da
    if not identity:
        out = da * scale + offset if offset else da * scale
        out.encoding = {k: v for k, v in da.encoding.items() if k not in _PACKING_KEYS}
        if np.dtype(out.encoding.get("dtype", out.dtype)).kind in "iu":
            for key in ("dtype", "_FillValue", "missing_value"):
                out.encoding.pop(key, None)
        for key in list(attrs):
            if key in _RANGE_ATTRS and key in ranges:
                attrs[key] = _attr_like(ranges[key] * scale + offset, da.attrs[key])
        verb = {"geopotential->height": "geopotential -> geopotential height (divided by g0=9.80665 m s-2)",
                "height->geopotential": "geopotential height -> geopotential (multiplied by g0=9.80665 m s-2)"}
        detail = verb.get(kind, f"x * {scale:.10g} + {offset:.10g}" if offset else f"x * {scale:.10g}")
        changes.append(f"converted {label!r} from {src!r} to {to!r} ({detail})")
    elif str(src) != str(to):
        changes.append(f"relabelled units of {label!r} from {src!r} to {to!r} (same quantity)")
    if kind == "geopotential->height" and standard_name == "geopotential":
        attrs["standard_name"] = "geopotential_height"
    if kind == "height->geopotential" and standard_name == "geopotential_height":
        attrs["standard_name"] = "geopotential"
    attrs["units"] = to
    out = out.copy(deep=False)
    out.attrs = attrs
    out.name = da.name
    return out, changes


def _attr_like(values: np.ndarray, original: Any) -> Any:
    values = np.asarray(values, dtype="float64")
    if np.ndim(original) == 0:
        return float(values[0])
    return values


# ---------------------------------------------------------------------------------------------------------------
# axes


def _bounds_names(ds: xr.Dataset) -> set[Hashable]:
    names = set()
    for var in ds.variables.values():
        for key in ("bounds", "climatology"):
            if isinstance(var.attrs.get(key), str):
                names.add(var.attrs[key])
    return names


def _is_candidate_source(name: Hashable, var: xr.Variable, bounds: set[Hashable]) -> bool:
    if name in bounds or var.ndim == 0:
        return False
    if any(str(d) in _BOUNDS_DIMS for d in var.dims):
        return False
    text = str(name).lower()
    return not any(tag in text for tag in ("bnds", "bounds", "vertices", "_bnd"))


def _units_text(var: xr.Variable) -> str:
    units = var.attrs.get("units", var.encoding.get("units", ""))
    return str(units).strip().lower()


def _is_time(name: Hashable, var: xr.Variable) -> bool:
    if var.dtype.kind == "M" or (var.dtype == object and var.size and _is_cftime(var.values.flat[0])):
        return True
    if var.attrs.get("standard_name") == "time" or str(var.attrs.get("axis", "")).upper() == "T":
        return True
    units = _units_text(var)
    return " since " in units and name in _TIME_NAMES


def _is_cftime(value: Any) -> bool:
    try:
        import cftime
    except ImportError:  # pragma: no cover - cftime is a dependency
        return False
    return isinstance(value, cftime.datetime)


def _is_lat(name: Hashable, var: xr.Variable) -> bool:
    if var.attrs.get("standard_name") == "latitude":
        return True
    if _units_text(var) in _LAT_UNITS:
        return True
    return name in _LAT_NAMES and var.dtype.kind in "iuf"


def _is_lon(name: Hashable, var: xr.Variable) -> bool:
    if var.attrs.get("standard_name") == "longitude":
        return True
    if _units_text(var) in _LON_UNITS:
        return True
    return name in _LON_NAMES and var.dtype.kind in "iuf"


def _is_vertical(name: Hashable, var: xr.Variable) -> bool:
    if var.ndim != 1 or var.dtype.kind not in "iuf":
        return False
    if str(var.attrs.get("axis", "")).upper() == "Z" or "positive" in var.attrs:
        return True
    if var.attrs.get("standard_name") in ("depth", "air_pressure", "height", "altitude", "model_level_number",
                                          "ocean_sigma_coordinate", "atmosphere_hybrid_sigma_pressure_coordinate"):
        return True
    if name in _VERTICAL_NAMES:
        return True
    units = _units_text(var)
    if units in ("hpa", "pa", "millibars", "millibar", "mbar", "mb"):
        return name in var.dims
    return False


def find_axes(
    ds: xr.Dataset, coords: Mapping[str, Hashable] | None = None, *, exclude: Iterable[Hashable] = ()
) -> dict[str, Hashable | None]:
    """Names of the ``time``, ``lat``, ``lon`` and ``vertical`` coordinates of ``ds`` (None when absent).

    Candidates come from CF attributes (via cf_xarray and ``standard_name``/``axis``/``units``/``positive``) and
    common names; bounds variables are ignored. ``coords`` names an axis explicitly (``{"lat": "nav_lat"}``).
    More than one candidate for an axis raises :class:`~geodiff.errors.CoordinateError` naming them.

    >>> import xarray as xr
    >>> ds = xr.Dataset(coords={"latitude": ("latitude", [0.0], {"units": "degrees_north"}),
    ...                         "longitude": ("longitude", [0.0], {"units": "degrees_east"})})
    >>> find_axes(ds)
    {'time': None, 'lat': 'latitude', 'lon': 'longitude', 'vertical': None}
    """
    coords = dict(coords or {})
    unknown = set(coords) - {"time", "lat", "lon", "vertical"}
    if unknown:
        raise CoordinateError(f"unknown axis keys {sorted(unknown)} in coords; expected time, lat, lon, vertical")
    for axis, name in coords.items():
        if name is not None and name not in ds.variables:
            raise CoordinateError(f"coords[{axis!r}] names {name!r}, which is not in the dataset")
    bounds = _bounds_names(ds)
    exclude = set(exclude)
    pool = {
        name: var.variable
        for name, var in {**dict(ds.coords), **dict(ds.data_vars)}.items()
        if name not in exclude and _is_candidate_source(name, var.variable, bounds)
    }
    try:  # cf_xarray's view of the axes, merged with ours
        cf_coords = ds.cf.coordinates
        cf_axes = ds.cf.axes
    except Exception:  # cf_xarray can fail on exotic attributes; our own criteria still apply
        cf_coords, cf_axes = {}, {}
    tests = {"time": _is_time, "lat": _is_lat, "lon": _is_lon, "vertical": _is_vertical}
    cf_keys = {"time": ("time", "T"), "lat": ("latitude",), "lon": ("longitude",), "vertical": ("vertical", "Z")}
    found: dict[str, Hashable | None] = {}
    for axis, test in tests.items():
        if axis in coords:
            found[axis] = coords[axis]
            continue
        names = [n for n, v in pool.items() if test(n, v)]
        for key in cf_keys[axis]:
            for n in list(cf_coords.get(key, [])) + list(cf_axes.get(key, [])):
                if n in pool and n not in names and (axis != "vertical" or pool[n].ndim == 1):
                    names.append(n)
        if axis in ("lat", "lon"):
            names = [n for n in names if pool[n].dtype.kind in "iuf"]
        if axis == "time" and len(names) > 1:  # the time dimension wins over auxiliary times
            dims = [n for n in names if n in ds.dims]
            names = dims if len(dims) == 1 else names
        if len(names) > 1:
            raise CoordinateError(
                f"ambiguous {axis} axis: candidates {sorted(map(str, names))}; name the one to use with "
                f"coords={{{axis!r}: <name>}}"
            )
        found[axis] = names[0] if names else None
    used = [n for n in found.values() if n is not None]
    if len(set(used)) != len(used):
        raise CoordinateError(f"one coordinate serves two axes: {found}; name them with coords=")
    return found


# ---------------------------------------------------------------------------------------------------------------
# calendars


_CALENDAR_ALIASES = {"gregorian": "standard", "365_day": "noleap", "366_day": "all_leap", "none": "standard"}


def _normal_calendar(name: str) -> str:
    name = str(name).strip().lower()
    return _CALENDAR_ALIASES.get(name, name)


def calendar_of(obj: xr.Dataset | xr.DataArray, time: Hashable = "time") -> str | None:
    """The calendar of ``obj[time]`` ("standard", "noleap", "360_day", ...), or None without a time axis.

    >>> import xarray as xr, cftime
    >>> ds = xr.Dataset(coords={"time": [cftime.DatetimeNoLeap(2000, 1, 15)]})
    >>> calendar_of(ds)
    'noleap'
    """
    if time not in obj.coords:
        return None
    coord = obj[time]
    for source in (coord.encoding, coord.attrs):
        if "calendar" in source:
            return _normal_calendar(source["calendar"])
    if coord.dtype == object and coord.size:
        first = coord.values.flat[0]
        if _is_cftime(first):
            return _normal_calendar(first.calendar or "standard")
    if coord.dtype.kind == "M":
        return "proleptic_gregorian"
    return None


def _same_calendar(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return True
    pair = {_normal_calendar(a), _normal_calendar(b)}
    return len(pair) == 1 or pair == {"standard", "proleptic_gregorian"}


def check_calendars(*objs: xr.Dataset | xr.DataArray, names: Sequence[str] | None = None) -> str | None:
    """The common calendar of ``objs``; :class:`~geodiff.errors.CalendarError` naming both when they differ.

    "standard" and "proleptic_gregorian" are taken as the same (they agree after 1582).

    >>> import xarray as xr, cftime
    >>> a = xr.Dataset(coords={"time": [cftime.DatetimeNoLeap(2000, 1, 15)]})
    >>> b = xr.Dataset(coords={"time": [cftime.Datetime360Day(2000, 1, 15)]})
    >>> check_calendars(a, a)
    'noleap'
    >>> check_calendars(a, b, names=["CESM2", "UKESM1-0-LL"])
    Traceback (most recent call last):
    ...
    geodiff.errors.CalendarError: calendars differ: 'CESM2' uses 'noleap' but 'UKESM1-0-LL' uses '360_day'; ...
    """
    labels = list(names) if names is not None else [f"dataset {i}" for i in range(len(objs))]
    first, first_label = None, None
    for obj, label in zip(objs, labels):
        cal = calendar_of(obj)
        if cal is None:
            continue
        if first is None:
            first, first_label = cal, label
        elif not _same_calendar(first, cal):
            raise CalendarError(
                f"calendars differ: {first_label!r} uses {first!r} but {label!r} uses {cal!r}; "
                "convert one with xarray's Dataset.convert_calendar or keep them apart"
            )
    return first


# ---------------------------------------------------------------------------------------------------------------
# longitude


def _lon_convention_of(values: np.ndarray) -> str:
    """"0..360" when some longitude exceeds 180, else "-180..180" (both agree on 0..180)."""
    return "0..360" if np.nanmax(values) > 180.0 else "-180..180"


def select_bbox(ds: xr.Dataset, bbox: Sequence[float], *, lat: str = "lat", lon: str = "lon") -> xr.Dataset:
    """The part of a canonical ``ds`` inside ``bbox = (west, south, east, north)`` (degrees), lazily.

    ``west > east`` (after wrapping both into the dataset's longitude convention) is a box that crosses the
    dateline (or, on a 0..360 grid, the prime meridian): the two pieces are joined so that longitude stays
    increasing, and the longitudes of the result are given in the convention that makes them continuous
    (recorded in ``geodiff_lon_convention`` and ``history``). Only the selected cells are ever read.

    >>> import xarray as xr
    >>> ds = xr.Dataset({"h": (("lat", "lon"), np.arange(12.0).reshape(2, 6))},
    ...                 coords={"lat": [0.0, 1.0], "lon": [-150.0, -90.0, -30.0, 30.0, 90.0, 150.0]})
    >>> select_bbox(ds, (120.0, -5.0, -120.0, 5.0)).lon.values.tolist()
    [150.0, 210.0]
    """
    if len(bbox) != 4:
        raise CoordinateError(f"bbox must be (west, south, east, north); got {bbox!r}")
    west, south, east, north = map(float, bbox)
    if south > north:
        raise CoordinateError(f"bbox south={south} is north of north={north}; expected (west, south, east, north)")
    for name in (lat, lon):
        if name not in ds.coords or ds[name].ndim != 1:
            raise CoordinateError(f"select_bbox needs a 1-D coordinate {name!r}; standardize the dataset first")
    lat_values = np.asarray(ds[lat].values, dtype="float64")
    lon_values = np.asarray(ds[lon].values, dtype="float64")
    if lat_values.size > 1 and np.any(np.diff(lat_values) <= 0):
        raise CoordinateError(f"coordinate {lat!r} is not ascending; standardize the dataset first")
    if lon_values.size > 1 and np.any(np.diff(lon_values) <= 0):
        raise CoordinateError(f"coordinate {lon!r} is not increasing; standardize the dataset first")
    (rows,) = np.nonzero((lat_values >= south) & (lat_values <= north))
    if rows.size == 0:
        raise CoordinateError(
            f"bbox latitudes {south}..{north} select no cell of {lat!r} ({lat_values[0]}..{lat_values[-1]})"
        )
    out = ds.isel({lat: slice(int(rows[0]), int(rows[-1]) + 1)})
    convention = ds.attrs.get("geodiff_lon_convention") or _lon_convention_of(lon_values)
    if convention not in LON_CONVENTIONS:
        convention = _lon_convention_of(lon_values)
    full_circle = east - west >= 360.0
    w, e = float(wrap_longitude(west, convention)), float(wrap_longitude(east, convention))
    if full_circle or (w <= e and not (w == e and west != east)):
        keep = np.ones_like(lon_values, bool) if full_circle else (lon_values >= w) & (lon_values <= e)
        (cols,) = np.nonzero(keep)
        if cols.size == 0:
            raise CoordinateError(f"bbox longitudes {west}..{east} select no cell of {lon!r}")
        return out.isel({lon: slice(int(cols[0]), int(cols[-1]) + 1)})
    (first,) = np.nonzero(lon_values >= w)
    (second,) = np.nonzero(lon_values <= e)
    if first.size == 0 and second.size == 0:
        raise CoordinateError(f"bbox longitudes {west}..{east} select no cell of {lon!r}")
    a = out.isel({lon: slice(int(first[0]), None)}) if first.size else None
    b = out.isel({lon: slice(0, int(second[-1]) + 1)}) if second.size else None
    if convention == "-180..180":  # continue past +180: the eastern piece moves up by 360
        new_convention = "0..360"
        if b is not None:
            b = b.assign_coords({lon: b[lon] + 360.0})
    else:  # a 0..360 grid cut at the prime meridian: the western piece moves down by 360
        new_convention = "-180..180"
        if a is not None:
            a = a.assign_coords({lon: a[lon] - 360.0})
    pieces = [p for p in (a, b) if p is not None]
    joined = xr.concat(pieces, dim=lon, data_vars="minimal", coords="minimal", compat="override",
                       join="override", combine_attrs="override") if len(pieces) > 1 else pieces[0]
    joined[lon].attrs = dict(ds[lon].attrs)
    joined.attrs["geodiff_lon_convention"] = new_convention
    seam = "dateline" if convention == "-180..180" else "prime meridian"
    change = f"selected bbox {tuple(bbox)} across the {seam}; longitudes given as {new_convention} (increasing)"
    return record(joined, [change], step="select_bbox")


# ---------------------------------------------------------------------------------------------------------------
# coordinate checks


def _values(var: xr.Variable | xr.DataArray) -> np.ndarray:
    return np.asarray(var.values)


def _check_sentinels(name: Hashable, values: np.ndarray, role: str) -> None:
    if values.dtype.kind not in "iuf":
        return
    values = values.astype("float64", copy=False)
    bad = ~np.isfinite(values) | (np.abs(values) >= SENTINEL)
    if np.any(bad):
        example = values[bad][0]
        raise CoordinateError(
            f"{role} coordinate {name!r} holds {int(bad.sum())} fill/sentinel or non-finite values "
            f"(e.g. {example:g}); expected real positions (mask the data, not the coordinate)"
        )


def _check_1d_order(name: Hashable, values: np.ndarray, role: str) -> str:
    """'ascending', 'descending' or a CoordinateError for duplicates / non-monotonic values."""
    if values.size < 2:
        return "ascending"
    if values.dtype.kind in "iufM":
        diffs = np.diff(values.astype("float64") if values.dtype.kind != "M" else values.astype("int64"))
    else:  # cftime objects
        diffs = np.array([(b - a).total_seconds() for a, b in zip(values[:-1], values[1:])])
    uniq, counts = np.unique(values, return_counts=True)
    if np.any(counts > 1):
        dup = uniq[counts > 1][:3]
        raise CoordinateError(
            f"{role} coordinate {name!r} has duplicate values {[str(d) for d in dup]}; expected unique values"
        )
    if np.all(diffs > 0):
        return "ascending"
    if np.all(diffs < 0):
        return "descending"
    k = int(np.argmax(diffs <= 0) if np.sum(diffs > 0) >= np.sum(diffs < 0) else np.argmax(diffs >= 0))
    raise CoordinateError(
        f"{role} coordinate {name!r} is not monotonic (at index {k + 1}: {values[k]} then {values[k + 1]}); "
        "expected strictly increasing or decreasing values"
    )


def _cyclic_order(name: Hashable, values: np.ndarray) -> None:
    """Longitudes must increase (or decrease) around the circle, crossing the seam at most once, without repeats."""
    if values.size < 2:
        return
    wrapped = np.round(wrap_longitude(values, "0..360"), 9)
    uniq, counts = np.unique(wrapped, return_counts=True)
    if np.any(counts > 1):
        raise CoordinateError(
            f"longitude coordinate {name!r} has duplicate positions {uniq[counts > 1][:3].tolist()} "
            "(modulo 360); expected unique longitudes"
        )
    for sign in (1.0, -1.0):
        steps = sign * np.diff(values)
        seams = np.flatnonzero(steps <= 0)
        if seams.size == 0:
            return
        if seams.size == 1:
            unrolled = sign * values.copy()
            unrolled[seams[0] + 1:] += 360.0
            if np.all(np.diff(unrolled) > 0) and unrolled[-1] - unrolled[0] < 360.0:
                return
    raise CoordinateError(
        f"longitude coordinate {name!r} is not monotonic (values {values[:6].tolist()}...); "
        "expected increasing longitudes (possibly rolled once across the seam)"
    )


def _transform_bounds(ds: xr.Dataset, coord: Hashable, func: Any) -> xr.Dataset:
    bname = ds[coord].attrs.get("bounds") or ds[coord].encoding.get("bounds")
    if bname and bname in ds.variables:
        bvar = ds[bname]
        ds = ds.assign({bname: bvar.copy(data=func(np.asarray(bvar.values)))}) if bname in ds.data_vars else (
            ds.assign_coords({bname: bvar.copy(data=func(np.asarray(bvar.values)))}))
    return ds


def _set_coord_values(ds: xr.Dataset, name: Hashable, values: np.ndarray, attrs: dict | None = None) -> xr.Dataset:
    var = ds[name].variable
    new = xr.Variable(var.dims, values, dict(var.attrs) if attrs is None else attrs, dict(var.encoding))
    if name in ds.indexes or name in ds.dims:
        return ds.assign_coords({name: new})
    return ds.assign_coords({name: new}) if name in ds.coords else ds.assign({name: new})


# ---------------------------------------------------------------------------------------------------------------
# the whole step


def _decode_time(ds: xr.Dataset, name: Hashable, changes: list[str]) -> xr.Dataset:
    var = ds[name]
    if var.dtype.kind in "iuf" and " since " in _units_text(var.variable):
        decoded = xr.decode_cf(xr.Dataset(coords={name: var}), decode_times=xr.coders.CFDatetimeCoder(use_cftime=None))
        ds = ds.assign_coords({name: decoded[name]})
        changes.append(f"decoded time coordinate {name!r} ({_units_text(var.variable)})")
    return ds


def _vertical_kind(var: xr.Variable) -> str:
    units = var.attrs.get("units")
    if not units:
        return "other"
    try:
        unit, _ = _unit_factor(parse_units(units, "vertical coordinate"))
    except UnitsError:
        return "other"
    dim = _dimensionality(unit)
    reg = _registry()
    if dim == reg.Quantity(1.0, "m").dimensionality:
        return "length"
    if dim == reg.Quantity(1.0, "Pa").dimensionality:
        return "pressure"
    return "other"


def _standardize_vertical(ds: xr.Dataset, name: Hashable, changes: list[str]) -> tuple[xr.Dataset, Hashable]:
    """Vertical axis: pressure -> ``level`` in hPa (surface first); ocean depth -> ``depth`` in m, positive down,
    increasing; heights (positive up, >= 0) stay heights in m; other vertical axes are only checked."""
    var = ds[name]
    values = _values(var).astype("float64")
    _check_sentinels(name, values, "vertical")
    kind = _vertical_kind(var.variable)
    attrs = dict(var.attrs)
    where = f"vertical coordinate {name!r}"
    if kind == "other":
        if name == "depth" or attrs.get("standard_name") == "depth":  # called depth, so it must be a length
            raise UnitsError(
                f"depth coordinate {name!r} has units {attrs.get('units')!r}; expected a length such as 'm' or 'cm'"
            )
        _check_1d_order(name, values, "vertical")
        return ds, name
    positive = str(attrs.get("positive", "")).strip().lower()
    if positive not in ("", "up", "down"):
        raise CoordinateError(f"{where} has positive={attrs['positive']!r}; expected 'up' or 'down'")
    if kind == "pressure":
        target_units, target, flip_sign = "hPa", "level", False
    elif positive == "up" and (attrs.get("standard_name") in ("height", "altitude")
                               or (np.all(values >= 0) and name not in _DEPTH_LIKE)):
        target_units, target, flip_sign = "m", name, False
    else:
        target_units, target, flip_sign = "m", "depth", positive == "up"
        if positive == "up" and np.any(values > 0):
            raise CoordinateError(
                f"{where} has positive='up' and positive values; expected ocean z <= 0 or positive='down'"
            )
        if positive == "":
            if np.all(values >= 0) and (attrs.get("standard_name") == "depth" or name in _DEPTH_LIKE):
                changes.append(f"{where} had no 'positive' attribute; its values are >= 0 and its name says depth, "
                               "so it is taken as positive down")
            else:
                raise CoordinateError(
                    f"{where} has no 'positive' attribute and values {values[:4].tolist()}...; cannot tell depth "
                    "from height: set positive='down' (depth) or positive='up' (height / z)"
                )
    scale, offset, _ = _conversion(attrs["units"], target_units, where)
    if flip_sign:
        scale, offset = -scale, -offset
    new_attrs = dict(attrs, units=target_units)
    if target == "depth":
        new_attrs.update(positive="down")
        new_attrs.setdefault("standard_name", "depth")
        new_attrs.setdefault("axis", "Z")
    if scale != 1.0 or offset != 0.0:
        values = values * scale + offset
        ds = _transform_bounds(ds, name, lambda b: b * scale + offset)
        changes.append(f"{where} from {attrs['units']!r}" + (" positive up" if flip_sign else "")
                       + f" to {target_units!r}" + (" positive down" if target == "depth" else ""))
    elif attrs["units"] != target_units:
        changes.append(f"relabelled units of {where} from {attrs['units']!r} to {target_units!r}")
    if new_attrs != attrs or scale != 1.0 or offset != 0.0:
        if new_attrs != attrs and scale == 1.0 and offset == 0.0 and attrs["units"] == target_units:
            changes.append(f"completed the attributes of {where} ({', '.join(sorted(set(new_attrs) - set(attrs)))})")
        dtype = var.dtype if var.dtype.kind == "f" else np.dtype("float64")
        ds = _set_coord_values(ds, name, values.astype(dtype), new_attrs)
    if target == "depth" and np.any(values < 0):
        raise CoordinateError(f"depth coordinate {name!r} has negative depths {values[values < 0][:3].tolist()}")
    order = _check_1d_order(name, values, "vertical")
    surface_last = order == "descending" if target == "depth" else order == "ascending" and target == "level"
    if surface_last and values.size > 1 and name in ds.dims:
        ds = ds.isel({name: slice(None, None, -1)})
        changes.append(f"reversed {where} so that the surface comes first")
    return ds, target


def _standardize_lat(ds: xr.Dataset, name: Hashable, changes: list[str]) -> xr.Dataset:
    values = _values(ds[name])
    _check_sentinels(name, values, "latitude")
    bad = np.abs(values.astype("float64")) > 90.0
    if np.any(bad):
        raise CoordinateError(
            f"latitude coordinate {name!r} has {int(bad.sum())} values outside -90..90 (e.g. {values[bad][0]:g}); "
            "expected degrees_north"
        )
    if ds[name].ndim == 1:
        order = _check_1d_order(name, values, "latitude")
        if order == "descending" and name in ds.dims:
            ds = ds.isel({name: slice(None, None, -1)})
            changes.append(f"flipped latitude {name!r} to ascending")
    return ds


def _standardize_lon(
    ds: xr.Dataset, name: Hashable, convention: str, wrap_out_of_range: bool, changes: list[str]
) -> xr.Dataset:
    values = _values(ds[name]).astype("float64")
    _check_sentinels(name, values, "longitude")
    bad = (values < -180.0) | (values > 360.0)
    if np.any(bad):
        if not wrap_out_of_range:
            raise CoordinateError(
                f"longitude coordinate {name!r} has {int(bad.sum())} values outside -180..360 "
                f"(e.g. {values[bad][0]:g}); expected degrees_east (pass wrap_out_of_range=True for grids such as "
                "Ferret's 20.5..380)"
            )
        changes.append(f"longitude {name!r} had values outside -180..360 ({values.min():g}..{values.max():g})")
    var = ds[name]
    if var.ndim == 1:
        _cyclic_order(name, values)
    wrapped = wrap_longitude(values, convention)
    if not np.array_equal(wrapped, values):
        ds = _set_coord_values(ds, name, wrapped.astype(var.dtype if var.dtype.kind == "f" else "float64"))
        ds = _transform_bounds(ds, name, lambda b: _wrap_bounds(b, values, wrapped))
        changes.append(f"wrapped longitude {name!r} to {convention}")
    if var.ndim == 1 and name in ds.dims and wrapped.size > 1 and np.any(np.diff(wrapped) <= 0):
        if np.all(np.diff(wrapped) < 0):
            ds = ds.isel({name: slice(None, None, -1)})
        else:
            order = np.argsort(wrapped, kind="stable")
            ds = ds.isel({name: order})
        changes.append(f"reordered longitude {name!r} to increase from {float(ds[name][0]):g}")
    return ds


def _wrap_bounds(bounds: np.ndarray, old: np.ndarray, new: np.ndarray) -> np.ndarray:
    shift = (new - old).reshape(old.shape + (1,) * (bounds.ndim - old.ndim))
    return bounds + shift


def _canonical_order(dims: Sequence[Hashable], canonical: Sequence[Hashable]) -> list[Hashable]:
    bounds = [d for d in dims if str(d) in _BOUNDS_DIMS]
    lead = [d for d in dims if d not in canonical and d not in bounds]
    return lead + [d for d in canonical if d in dims] + bounds


def standardize(
    ds: xr.Dataset,
    variables: Mapping[Hashable, str] | None = None,
    *,
    lon: str = "-180..180",
    coords: Mapping[str, Hashable] | None = None,
    calendar: str | None = None,
    check_values: bool = True,
    wrap_out_of_range: bool = False,
) -> xr.Dataset:
    """``ds`` in canonical form (see the module docstring), every change recorded in ``history``.

    Parameters
    ----------
    ds
        A gridded dataset, rectilinear (1-D lat/lon) or curvilinear (2-D lat/lon: values checked and longitudes
        wrapped, nothing reordered).
    variables
        ``{name: canonical unit}``; those variables are converted with pint. ``None`` converts the variables whose
        ``standard_name`` has an entry in :data:`CANONICAL_UNITS` and leaves the others as they are.
    lon
        Longitude convention, ``"-180..180"`` or ``"0..360"``; recorded in ``attrs["geodiff_lon_convention"]``.
    coords
        Explicit axis names, e.g. ``{"lat": "nav_lat", "vertical": "olevel"}`` (when the axes are ambiguous).
    calendar
        Expected calendar; a different one raises :class:`~geodiff.errors.CalendarError`. The calendar itself is
        kept (never converted).
    check_values
        Compare temperature values with their units and valid-range attributes with the values.
    wrap_out_of_range
        Accept (and wrap, with a record) longitudes outside -180..360 instead of raising.

    Raises
    ------
    CoordinateError
        missing or ambiguous lat/lon, ``|lat| > 90``, longitudes outside -180..360, fill values (1e20) in a
        coordinate, duplicate or non-monotonic coordinates, a vertical axis that cannot be told depth from height.
    UnitsError
        missing/unparseable units on a variable to convert, impossible conversions, values contradicting units.
    CalendarError
        a calendar other than ``calendar``.
    DataError
        the file ``ds`` was opened from (``ds.encoding["source"]``) is incomplete or corrupt
        (:func:`~geodiff.adapters.files.check_netcdf`).

    Example
    -------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"z": (("latitude", "longitude"), np.full((2, 2), 9806.65), {"units": "m**2 s**-2"})},
    ...                 coords={"latitude": [90.0, 89.75], "longitude": [0.0, 359.75]})
    >>> out = standardize(ds, variables={"z": "m"})
    >>> out.z.attrs["units"], float(out.z[0, 0]), out.lon.values.tolist(), out.attrs["geodiff_lon_convention"]
    ('m', 1000.0, [-0.25, 0.0], '-180..180')
    """
    if not isinstance(ds, xr.Dataset):
        raise DataError(f"standardize expects an xarray.Dataset, got {type(ds).__name__}")
    if lon not in LON_CONVENTIONS:
        raise CoordinateError(f"unknown longitude convention lon={lon!r}; expected one of {LON_CONVENTIONS}")
    source = ds.encoding.get("source")
    if isinstance(source, str) and Path(source).is_file():
        check_netcdf(source)  # a file cut short by a killed writer reads as zeros: refuse it before any value
    ds = ds.copy()
    changes: list[str] = []
    if variables is None:
        variables = {
            name: CANONICAL_UNITS[str(var.attrs.get("standard_name"))]
            for name, var in ds.data_vars.items()
            if str(var.attrs.get("standard_name")) in CANONICAL_UNITS and "units" in var.attrs
        }
    missing = [name for name in variables if name not in ds.data_vars]
    if missing:
        raise DataError(f"variables {missing} are not in the dataset; data variables are {list(ds.data_vars)}")
    axes = find_axes(ds, coords, exclude=variables)
    for axis in ("lat", "lon"):
        if axes[axis] is None:
            raise CoordinateError(
                f"no {'latitude' if axis == 'lat' else 'longitude'} coordinate found (looked for "
                f"standard_name={'latitude' if axis == 'lat' else 'longitude'!r}, units "
                f"{'degrees_north' if axis == 'lat' else 'degrees_east'!r}, names "
                f"{_LAT_NAMES if axis == 'lat' else _LON_NAMES}); name it with coords={{{axis!r}: <name>}}"
            )
    lat_name, lon_name = axes["lat"], axes["lon"]
    if ds[lat_name].ndim != ds[lon_name].ndim:
        raise CoordinateError(
            f"latitude {lat_name!r} is {ds[lat_name].ndim}-D but longitude {lon_name!r} is {ds[lon_name].ndim}-D"
        )
    # -- time
    renames: dict[Hashable, Hashable] = {}
    if axes["time"] is not None:
        tname = axes["time"]
        ds = _decode_time(ds, tname, changes)
        if ds[tname].ndim == 1:
            order = _check_1d_order(tname, _values(ds[tname]), "time")
            if order == "descending" and tname in ds.dims:
                ds = ds.isel({tname: slice(None, None, -1)})
                changes.append(f"reversed time {tname!r} to increase")
        if calendar is not None:
            found = calendar_of(ds, tname)
            if found is not None and not _same_calendar(found, calendar):
                raise CalendarError(f"time coordinate {tname!r} uses calendar {found!r}; expected {calendar!r}")
        renames[tname] = "time"
    # -- vertical
    if axes["vertical"] is not None:
        ds, target = _standardize_vertical(ds, axes["vertical"], changes)
        renames[axes["vertical"]] = target
    # -- horizontal
    ds = _standardize_lat(ds, lat_name, changes)
    ds = _standardize_lon(ds, lon_name, lon, wrap_out_of_range, changes)
    renames[lat_name], renames[lon_name] = "lat", "lon"
    # -- renames
    renames = {old: new for old, new in renames.items() if old != new}
    for old, new in renames.items():
        if new in ds.variables and new not in renames:
            raise CoordinateError(
                f"cannot rename {old!r} to {new!r}: the dataset already has a variable {new!r}; "
                "name the axes with coords="
            )
    if renames:
        ds = ds.rename({old: new for old, new in renames.items()})
        changes.append("renamed " + ", ".join(f"{old!r} -> {new!r}" for old, new in renames.items()))
    for name, attrs in (("lat", {"standard_name": "latitude", "units": "degrees_north"}),
                        ("lon", {"standard_name": "longitude", "units": "degrees_east"})):
        current = dict(ds[name].attrs)
        wanted = {**current, **attrs}
        if wanted != current:
            ds[name].attrs = wanted
    variables = {renames.get(k, k): v for k, v in variables.items()}
    # -- variables
    horizontal = ["lat", "lon"] if ds["lat"].ndim == 1 else list(ds["lat"].dims)
    canonical = [d for d in ("time", "depth", "level") if d in ds.dims] + [d for d in horizontal if d in ds.dims]
    for name, target in variables.items():
        converted, var_changes = convert_units(ds[name], target, name=name, check_values=check_values)
        if var_changes:
            ds[name] = converted
            changes.extend(var_changes)
    for name in list(ds.data_vars):
        dims = ds[name].dims
        order = _canonical_order(dims, canonical)
        if list(order) != list(dims):
            ds[name] = ds[name].transpose(*order)
            changes.append(f"transposed {name!r} to {tuple(order)}")
    if ds.attrs.get("geodiff_lon_convention") != lon:
        ds.attrs["geodiff_lon_convention"] = lon
    return record(ds, changes)
