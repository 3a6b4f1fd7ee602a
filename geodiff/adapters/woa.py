"""World Ocean Atlas monthly temperature: the shipped sample, Ferret's original file, and the hold-out protocol.

The sample ``woa_monthly_temperature`` is the World Ocean Atlas (WOA) monthly climatology of in-situ sea water
temperature, 12 climatological months x 19 standard depths (0-1000 m) on a 2-degree grid, as distributed in
Debian's ``ferret-datasets`` package (``usr/share/ferret-vis/data/ocean_atlas_subset.nc``). It is remade by
``data_catalog/make_woa_sample.py``; its provenance, licence and sha256 are in ``data_catalog/samples.yaml``; :mod:`geodiff.tutorial` opens
it (``open_sample`` here is :func:`geodiff.tutorial.open_dataset`).

Canonical form (what :func:`open_sample` and :func:`open_ferret_woa` return):

* dims ``(time, depth, lat, lon)`` = ``(12, 19, 90, 180)``; variable ``temperature`` (``degC``,
  ``standard_name = sea_water_temperature``: WOA analyses in-situ temperature, not potential temperature);
* ``lat`` ascending (-89.5 .. 88.5), ``lon`` in the ``[-180, 180)`` convention (-179.5 .. 178.5; Ferret's
  20.5 .. 378.5 axis rolled; ``attrs["geodiff_lon_convention"] = "-180..180"`` as in
  :mod:`geodiff.adapters.standardize`), ``depth`` in m, ``positive = "down"``;
* ``time``: the 12 months of a climatological year, stamped at mid-month of the placeholder year 2000
  (the source axis is "hours since 0000-01-01" at mid-months of a 365.2425-day year);
* land and below-seafloor cells NaN, plus the explicit coordinate ``sea_mask(depth, lat, lon)`` (bool).

Hold-out protocol (used by the demo and the benchmarks): :func:`holdout_split` holds out one geographic box
for all 12 months (default: the North Pacific, 0-64 N x 130 E-102 W, 32 x 64 cells); everything outside the
box is training data (for the diffusion prior: patches that do not touch the box, see
:meth:`HoldoutSplit.patch_windows`; for the baselines: the climatology, the OI covariance and the EOFs).
:func:`holdout_observations` draws the guidance points from the held-out fields: the same fraction of ocean
points at every depth level and month (5 % by default, :func:`geodiff.metrics.random_guidance_mask`).
Box and patch size are arguments. Why this box: at 2 degrees a 32 x 64 box is as large as an ocean basin, and the
North Pacific is the one basin where such a box is mostly ocean (about 82 % of its surface cells) and holds both
a western boundary current (Kuroshio) and an eastern one (California Current); nothing from inside it reaches
training, so climatology, OI and EOFs only know the box through the observations drawn from it.

Example
-------
>>> from geodiff.adapters import woa
>>> ds = woa.open_sample()
>>> dict(ds.sizes)
{'time': 12, 'depth': 19, 'lat': 90, 'lon': 180}
>>> ds.temperature.attrs["units"], float(ds.lon.min()), float(ds.lon.max())
('degC', -179.5, 178.5)
>>> split = woa.holdout_split(ds)
>>> dict(split.heldout.sizes)
{'time': 12, 'depth': 19, 'lat': 32, 'lon': 64}
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from geodiff.adapters.files import INCOMPLETE, check_netcdf
from geodiff.errors import CalendarError, ConfigError, CoordinateError, DataError, GridError, UnitsError
from geodiff.grid import wrap_longitude
from geodiff.provenance import append_history
from geodiff.tutorial import WOA_SAMPLE, file_sha256, load_manifest, manifest_path, sample_path
from geodiff.tutorial import open_dataset as open_sample

__all__ = [
    "DEFAULT_BOX",
    "SAMPLE_NAME",
    "VARIABLE",
    "HoldoutSplit",
    "file_sha256",
    "holdout_observations",
    "holdout_split",
    "load_manifest",
    "manifest_path",
    "open_ferret_woa",
    "open_sample",
    "sample_path",
]

SAMPLE_NAME = WOA_SAMPLE
VARIABLE = "temperature"
#: Default held-out box: North Pacific, latitude 0..64 N, longitude 130 E eastwards to 102 W (32 x 64 cells).
DEFAULT_BOX: dict[str, tuple[float, float]] = {"lat": (0.0, 64.0), "lon": (130.0, -102.0)}

_PLACEHOLDER_YEAR = 2000
_DEGC_SPELLINGS = {"degc", "deg c", "deg_c", "degree_c", "degrees_c", "celsius", "degree_celsius",
                   "degrees_celsius", "celsius_scale", "°c"}
_KELVIN_SPELLINGS = {"k", "kelvin", "degk", "deg k"}

WOA_SOURCE = (
    "World Ocean Atlas monthly objectively analysed climatology of in-situ sea water temperature "
    "(NOAA National Oceanographic Data Center, now NCEI), upper 1000 m, as subset by NOAA/PMEL for Ferret "
    "(ocean_atlas_subset.nc, source history 'From ocean_atlas_monthly'); the WOA edition is not recorded in "
    "the file"
)
WOA_LICENCE = (
    "World Ocean Atlas: work of the US Government (NOAA), public domain in the United States "
    "(17 U.S.C. 105), no restrictions on use; redistributed by Debian package ferret-datasets under the Ferret "
    "License Agreement (public-domain notice, see /usr/share/doc/ferret-datasets/copyright)"
)
WOA_REFERENCES = (
    "https://www.ncei.noaa.gov/products/world-ocean-atlas; monthly 0-1000 m analyses on 19 standard levels as "
    "introduced in Levitus, S. and T. P. Boyer (1994) World Ocean Atlas 1994, Vol. 4: Temperature, NOAA Atlas "
    "NESDIS 4; Ferret: https://ferret.pmel.noaa.gov/Ferret/"
)
TIME_NOTE = (
    "climatological months; the year 2000 is a placeholder stamped at mid-month (source axis: hours since "
    "0000-01-01 at mid-months of a 365.2425-day year)"
)


# ------------------------------------------------------------------------------------ Ferret conversion
def _axis_name(ds: xr.Dataset, var: str, axis: str, path: Path) -> Hashable:
    for dim in ds[var].dims:
        if dim in ds.coords and str(ds[dim].attrs.get("axis", "")).upper() == axis:
            return dim
    raise CoordinateError(f"{str(path)!r}: variable {var!r} has no dimension with attribute axis={axis!r}")


def _months_from_ferret_time(time: xr.DataArray, path: Path) -> np.ndarray:
    units = str(time.attrs.get("units", ""))
    match = re.fullmatch(r"\s*(hour|hours|day|days)\s+since\s+0+-0?1-0?1(?:[ T]0+:0+(?::0+)?)?\s*", units)
    if match is None:
        raise CalendarError(
            f"{str(path)!r}: time coordinate {time.name!r} has units {units!r}; expected a climatological axis "
            "'hour since 0000-01-01 00:00:00' (or days since 0000-01-01)"
        )
    days = np.asarray(time.values, dtype=np.float64) / (24.0 if match.group(1).startswith("hour") else 1.0)
    month_length = 365.2425 / 12.0
    position = days / month_length - 0.5  # 0 at mid-January
    months = np.rint(position).astype(int)
    if np.any(np.abs(position - months) > 0.25) or sorted(months.tolist()) != list(range(12)):
        raise CalendarError(
            f"{str(path)!r}: time coordinate {time.name!r} ({days.tolist()} days since 0000-01-01) is not the 12 "
            "mid-months of one climatological year"
        )
    return months + 1


def _mid_month(months: np.ndarray, year: int = _PLACEHOLDER_YEAR) -> np.ndarray:
    starts = np.array([np.datetime64(f"{year:04d}-{m:02d}-01", "ns") for m in months])
    ends = np.array([np.datetime64(f"{year + (m == 12):04d}-{m % 12 + 1:02d}-01", "ns") for m in months])
    return starts + (ends - starts) // 2


def _temperature_in_degc(temp: xr.DataArray, path: Path) -> tuple[xr.DataArray, str]:
    units = temp.attrs.get("units")
    if units is None:
        # Ferret's ocean_atlas_subset.nc carries no units; WOA temperature is documented in degrees Celsius.
        note = "units not in the source file; degC is the documented unit of World Ocean Atlas temperature"
        result = temp
    elif str(units).strip().lower() in _DEGC_SPELLINGS:
        note = f"source units {units!r} read as degC"
        result = temp
    elif str(units).strip().lower() in _KELVIN_SPELLINGS:
        note = f"converted from source units {units!r} to degC (minus 273.15)"
        result = temp - 273.15
    else:
        raise UnitsError(f"{str(path)!r}: variable {temp.name!r} has units {units!r}; expected degrees Celsius or K")
    return result, note


def open_ferret_woa(path: str | Path, *, variable: str = "TEMP") -> xr.Dataset:
    """Convert an original Ferret World Ocean Atlas file (e.g. ``ocean_atlas_subset.nc``) to the canonical form.

    Axes are found by their ``axis`` attribute; the Ferret 20.5..380 E longitude axis is rolled to
    ``[-180, 180)``; the climatological time axis (hours since 0000-01-01, read with ``decode_times=False``) becomes
    mid-months of the placeholder year 2000; depth ``METERS`` becomes ``m``; missing values (-1e34) become NaN.
    Values are not changed otherwise (in particular WOA's few below-freezing values, down to -3.0 degC near
    Antarctica, are kept). The result is float32 and fully loaded (the original file is 15 MB).

    Example
    -------
    >>> import numpy as np, xarray as xr, tempfile, os
    >>> from geodiff.adapters.woa import open_ferret_woa
    >>> hours = (np.arange(12) + 0.5) * 365.2425 / 12 * 24
    >>> src = xr.Dataset(
    ...     {"TEMP": (("T", "Z", "Y", "X"), np.full((12, 1, 2, 3), 10.0, "float32"))},
    ...     coords={"T": ("T", hours, {"axis": "T", "units": "hour since 0000-01-01 00:00:00"}),
    ...             "Z": ("Z", [0.0], {"axis": "Z", "units": "METERS", "positive": "down"}),
    ...             "Y": ("Y", [1.0, -1.0], {"axis": "Y", "units": "degrees_north"}),
    ...             "X": ("X", [20.5, 200.5, 340.5], {"axis": "X", "units": "degrees_east"})})
    >>> path = os.path.join(tempfile.mkdtemp(), "ferret.nc")
    >>> src.to_netcdf(path)
    >>> ds = open_ferret_woa(path)
    >>> ds.lon.values.tolist(), ds.lat.values.tolist(), str(ds.time.values[0])[:10]
    ([-159.5, -19.5, 20.5], [-1.0, 1.0], '2000-01-16')
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Ferret WOA file {str(path)!r} does not exist")
    check_netcdf(path)
    try:
        src = xr.open_dataset(path, decode_times=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{str(path)!r} is not a readable netCDF file ({INCOMPLETE} or not netCDF): {err}") from err
    with src:
        if variable not in src.data_vars:
            raise DataError(f"{str(path)!r} has no variable {variable!r}; variables: {sorted(map(str, src.data_vars))}")
        names = {axis: _axis_name(src, variable, axis, path) for axis in "TZYX"}
        if len(src[variable].dims) != 4:
            raise GridError(
                f"{str(path)!r}: variable {variable!r} has dims {src[variable].dims}; expected (T, Z, Y, X)")
        source_sha = file_sha256(path)
        src = src[[variable]].load()
    months = _months_from_ferret_time(src[names["T"]], path)
    depth_units = str(src[names["Z"]].attrs.get("units", "")).strip().lower()
    if depth_units not in {"m", "meter", "meters", "metre", "metres"}:
        raise UnitsError(f"{str(path)!r}: depth coordinate {names['Z']!r} has units {depth_units!r}; expected metres")
    if str(src[names["Z"]].attrs.get("positive", "down")).lower() != "down":
        raise CoordinateError(f"{str(path)!r}: depth coordinate {names['Z']!r} is not positive down")

    temp = src[variable].transpose(names["T"], names["Z"], names["Y"], names["X"])
    temp, units_note = _temperature_in_degc(temp, path)
    lon = wrap_longitude(np.asarray(src[names["X"]].values, dtype=np.float64), "-180..180")
    if np.unique(lon).size != lon.size:
        raise CoordinateError(
            f"{str(path)!r}: longitude {names['X']!r} has duplicate points after wrapping to [-180, 180)")
    temp = xr.DataArray(
        np.asarray(temp.values, dtype=np.float32),
        dims=("time", "depth", "lat", "lon"),
        coords={
            "time": _mid_month(months),
            "depth": np.asarray(src[names["Z"]].values, dtype=np.float64),
            "lat": np.asarray(src[names["Y"]].values, dtype=np.float64),
            "lon": lon,
        },
    ).sortby(["time", "lat", "lon"])
    valid = np.isfinite(temp.values)
    if not np.all(valid == valid[:1]):
        raise DataError(f"{str(path)!r}: the land mask of {variable!r} changes with time; expected a fixed mask")
    values = temp.values[valid]
    if values.size == 0 or values.min() < -5.0 or values.max() > 40.0:
        raise UnitsError(
            f"{str(path)!r}: {variable!r} ranges over [{values.min() if values.size else np.nan}, "
            f"{values.max() if values.size else np.nan}] after conversion; expected ocean temperatures in degC"
        )
    below_freezing = int((values < -1.9).sum())
    temp.attrs = {
        "standard_name": "sea_water_temperature",
        "long_name": "sea water temperature (in situ), World Ocean Atlas monthly climatology",
        "units": "degC",
        "comment": (
            f"{units_note}; values kept as in the source ({below_freezing} values below -1.9 degC, minimum "
            f"{float(values.min()):.4f} degC, as analysed by WOA)"
        ),
    }
    ds = temp.to_dataset(name=VARIABLE)
    ds.coords["sea_mask"] = (
        ("depth", "lat", "lon"),
        valid[0],
        {"long_name": "sea mask: True where the ocean has data at this depth (land and below seafloor: False)"},
    )
    ds.time.attrs = {"standard_name": "time", "long_name": "climatological month", "axis": "T", "comment": TIME_NOTE}
    ds.time.encoding = {"units": f"days since {_PLACEHOLDER_YEAR}-01-01 00:00:00", "calendar": "proleptic_gregorian",
                        "dtype": "float64"}
    ds.depth.attrs = {"standard_name": "depth", "long_name": "depth below sea surface", "units": "m",
                      "positive": "down", "axis": "Z"}
    ds.lat.attrs = {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north", "axis": "Y"}
    ds.lon.attrs = {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east", "axis": "X",
                    "comment": "convention [-180, 180); the Ferret source axis runs 20.5..380 E"}
    step = (f"geodiff.adapters.woa.open_ferret_woa: {path.name} (sha256 {source_sha}) -> canonical "
            "(time, depth, lat, lon), lon rolled to [-180, 180), lat ascending, climatological months -> "
            f"mid-months of placeholder year {_PLACEHOLDER_YEAR}, units degC")
    previous = str(src.attrs.get("history", "")).strip()
    ds.attrs = append_history({
        "title": "World Ocean Atlas monthly sea water temperature climatology, 0-1000 m, 2 degree",
        "Conventions": "CF-1.8",
        "source": WOA_SOURCE,
        "institution": "NOAA National Centers for Environmental Information (formerly NODC); subset by NOAA/PMEL",
        "references": WOA_REFERENCES,
        "license": WOA_LICENCE,
        "source_file": path.name,
        "source_file_sha256": source_sha,
        "geodiff_lon_convention": "-180..180",
        "time_note": TIME_NOTE,
        **({"history": previous} if previous else {}),
    }, step, stamped=False)  # a pure function of the source file: the shipped sample is byte-reproducible
    return ds


# ------------------------------------------------------------------------------------- hold-out protocol
def _box_indices(coord: np.ndarray, bounds: tuple[float, float], name: str, periodic: bool) -> np.ndarray:
    lo, hi = (float(b) for b in bounds)
    if periodic:
        lo_w, hi_w = wrap_longitude(lo, "-180..180"), wrap_longitude(hi, "-180..180")
        inside = (coord >= lo_w) & (coord < hi_w) if lo_w < hi_w else (coord >= lo_w) | (coord < hi_w)
        index = np.flatnonzero(inside)
        # order eastwards from the western edge so a box across the date line stays contiguous
        index = index[np.argsort(wrap_longitude(coord[index] - lo_w, "0..360"))]
    else:
        if not lo < hi:
            raise ConfigError(f"box {name} bounds {bounds} must be (south, north) with south < north")
        index = np.flatnonzero((coord >= lo) & (coord < hi))
    if index.size == 0:
        raise ConfigError(f"box {name} bounds {bounds} contain no grid point of {name} ({coord.min()}..{coord.max()})")
    return index


@dataclass(frozen=True)
class HoldoutSplit:
    """A geographic hold-out: one box held out at every time and depth, everything else for training.

    Attributes
    ----------
    train : the full dataset with the box set to NaN (the baselines fit climatology, OI covariance and EOFs on it).
    heldout : the truth inside the box, dims ``(time, depth, lat, lon)``, box shape ``(32, 64)`` by default; a box
        across 180 degrees gets longitudes in ``[0, 360)`` (attribute ``geodiff_lon_convention = "0..360"``) so
        they stay ascending.
    lat_index, lon_index : integer positions of the box rows and columns in the full grid (lon eastwards).
    patch_size : ``(rows, columns)`` of the training patches (default: the box shape).
    """

    train: xr.Dataset
    heldout: xr.Dataset
    lat_index: np.ndarray
    lon_index: np.ndarray
    patch_size: tuple[int, int]
    box: dict[str, tuple[float, float]]

    @property
    def target(self) -> xr.Dataset:
        """Template of the held-out grid: 0 at ocean cells, NaN on land (no held-out values inside)."""
        return xr.zeros_like(self.heldout).where(self.heldout.notnull())

    def patch_windows(
        self, stride: tuple[int, int] = (4, 8), *, min_ocean_fraction: float = 0.25, depth_index: int = 0
    ) -> list[tuple[int, int]]:
        """Top-left ``(row, column)`` of every training patch that does not touch the box.

        Longitude is periodic (a window may wrap across the grid edge, take columns modulo ``nlon``); latitude
        is not. A window is kept when at least ``min_ocean_fraction`` of its cells at level ``depth_index`` are
        ocean.

        Example
        -------
        >>> from geodiff.adapters import woa
        >>> split = woa.holdout_split(woa.open_sample())
        >>> len(split.patch_windows(stride=(8, 16)))
        41
        """
        rows, cols = self.patch_size
        nlat, nlon = self.train.sizes["lat"], self.train.sizes["lon"]
        if "sea_mask" not in self.train.coords:
            raise GridError("the training dataset has no 'sea_mask' coordinate (land mask) to choose patches with")
        in_box = np.zeros((nlat, nlon), dtype=bool)
        in_box[np.ix_(self.lat_index, self.lon_index)] = True
        ocean = np.asarray(self.train.sea_mask.isel(depth=depth_index).values, dtype=bool)
        windows = []
        for i in range(0, nlat - rows + 1, stride[0]):
            for j in range(0, nlon, stride[1]):
                columns = np.arange(j, j + cols) % nlon
                if in_box[i : i + rows][:, columns].any():
                    continue
                if ocean[i : i + rows][:, columns].mean() >= min_ocean_fraction:
                    windows.append((i, j))
        return windows

    def training_patches(
        self,
        stride: tuple[int, int] = (8, 16),
        *,
        min_ocean_fraction: float = 0.25,
        anomalies: bool = False,
        variable: str = VARIABLE,
    ) -> xr.Dataset:
        """Training patches as one dataset: dims ``(patch, time, depth, y, x)``, coords ``lat(patch, y)``, ``lon(patch, x)``.

        ``anomalies=True`` subtracts the zonal (latitude-depth) mean of the training data per month, the same
        background :func:`geodiff.baselines.climatology` uses inside the held-out box (``mode="zonal"``).

        Example
        -------
        >>> from geodiff.adapters import woa
        >>> split = woa.holdout_split(woa.open_sample())
        >>> patches = split.training_patches(stride=(16, 32))
        >>> patches.temperature.dims
        ('patch', 'time', 'depth', 'y', 'x')
        """
        windows = self.patch_windows(stride, min_ocean_fraction=min_ocean_fraction)
        if not windows:
            raise GridError(f"no training patch of size {self.patch_size} fits outside the box with stride {stride}")
        rows, cols = self.patch_size
        field = self.train[variable]
        if anomalies:
            field = field - field.mean("lon", skipna=True)
        values = np.asarray(field.values, dtype=np.float32)
        nlon = values.shape[-1]
        lat = self.train.lat.values
        lon = self.train.lon.values
        data = np.empty((len(windows), *values.shape[:2], rows, cols), dtype=np.float32)
        lats = np.empty((len(windows), rows))
        lons = np.empty((len(windows), cols))
        for n, (i, j) in enumerate(windows):
            columns = np.arange(j, j + cols) % nlon
            data[n] = values[:, :, i : i + rows][..., columns]
            lats[n] = lat[i : i + rows]
            lons[n] = lon[columns] if np.all(np.diff(lon[columns]) > 0) else wrap_longitude(lon[columns], "0..360")
        attrs = dict(field.attrs) if not anomalies else {
            **{k: v for k, v in self.train[variable].attrs.items() if k in ("units", "long_name")},
            "long_name": f"anomaly from the zonal training mean of {variable}",
        }
        out = xr.Dataset(
            {variable: (("patch", "time", "depth", "y", "x"), data, attrs)},
            coords={
                "time": self.train.time, "depth": self.train.depth,
                "lat": (("patch", "y"), lats), "lon": (("patch", "x"), lons),
                "row": ("patch", np.array([w[0] for w in windows])),
                "column": ("patch", np.array([w[1] for w in windows])),
            },
            attrs=append_history({}, f"HoldoutSplit.training_patches(stride={tuple(stride)}, anomalies={anomalies})"),
        )
        return out


def holdout_split(
    ds: xr.Dataset,
    *,
    lat: tuple[float, float] = DEFAULT_BOX["lat"],
    lon: tuple[float, float] = DEFAULT_BOX["lon"],
    patch_size: tuple[int, int] | None = None,
) -> HoldoutSplit:
    """Hold out the box ``lat = (south, north)``, ``lon = (west, east)`` (degrees; east may be < west to cross 180).

    Grid cells whose centre lies in ``[south, north) x [west, east)`` are held out at every time and depth.

    Example
    -------
    >>> from geodiff.adapters import woa
    >>> split = woa.holdout_split(woa.open_sample(), lat=(-40.0, -20.0), lon=(-20.0, 20.0))
    >>> dict(split.heldout.sizes)["lat"], dict(split.heldout.sizes)["lon"]
    (10, 20)
    >>> bool(split.train.temperature.sel(lat=-29.5, lon=0.5).isnull().all())
    True
    """
    for name in ("lat", "lon"):
        if name not in ds.dims:
            raise CoordinateError(f"holdout_split needs a dimension {name!r}; dataset dims are {tuple(ds.dims)}")
    lat_index = _box_indices(ds.lat.values, lat, "lat", periodic=False)
    lon_index = _box_indices(ds.lon.values, lon, "lon", periodic=True)
    heldout = ds.isel(lat=lat_index, lon=lon_index)
    box_lon = heldout.lon.values
    crosses = bool(np.any(np.diff(box_lon) < 0))
    if crosses:  # a box across the date line gets the continuous [0, 360) convention
        heldout = heldout.assign_coords(lon=wrap_longitude(heldout.lon, "0..360"))
        heldout.lon.attrs = {**ds.lon.attrs, "comment": "convention [0, 360): the held-out box crosses 180"}
    box_cells = np.zeros((ds.sizes["lat"], ds.sizes["lon"]), dtype=bool)
    box_cells[np.ix_(lat_index, lon_index)] = True
    in_box = xr.DataArray(box_cells, dims=("lat", "lon"), coords={"lat": ds.lat, "lon": ds.lon})
    train = ds.where(~in_box)
    if "sea_mask" in ds.coords:
        train = train.assign_coords(sea_mask=ds.sea_mask & ~in_box)
    shape = (lat_index.size, lon_index.size)
    size = tuple(patch_size) if patch_size is not None else shape
    if len(size) != 2 or min(size) < 1 or size[0] > ds.sizes["lat"] or size[1] > ds.sizes["lon"]:
        raise ConfigError(
            f"patch_size {patch_size} must be (rows, columns) within the grid {ds.sizes['lat']}x{ds.sizes['lon']}")
    note = (f"held-out box lat [{lat[0]}, {lat[1]}) lon [{lon[0]}, {lon[1]}) ({shape[0]}x{shape[1]} cells), all times")
    train.attrs = {**ds.attrs, "holdout": f"training part: {note} set to NaN"}
    heldout.attrs = {**ds.attrs, "holdout": f"held-out part: {note}"}
    if crosses:
        heldout.attrs["geodiff_lon_convention"] = "0..360"
    return HoldoutSplit(train=train, heldout=heldout, lat_index=lat_index, lon_index=lon_index,
                        patch_size=(int(size[0]), int(size[1])), box={"lat": tuple(lat), "lon": tuple(lon)})


def holdout_observations(
    heldout: xr.Dataset | HoldoutSplit,
    fraction: float = 0.05,
    *,
    seed: int = 0,
    error_std: float = 0.0,
    variable: str = VARIABLE,
) -> tuple[xr.Dataset, xr.DataArray]:
    """Guidance observations drawn from the held-out truth; returns ``(observation table, guidance_mask)``.

    ``guidance_mask`` is :func:`geodiff.metrics.random_guidance_mask` of the held-out ocean cells (the same
    ``fraction`` at every depth and month). The table has dim ``obs``, variables ``value`` (truth plus Gaussian
    noise of ``error_std``, none when 0) and ``error_std``, coords ``lat``, ``lon``, ``time``, ``depth``,
    ``variable``, ``source``, ``obs_id``; observations sit at cell centres.

    Example
    -------
    >>> from geodiff.adapters import woa
    >>> split = woa.holdout_split(woa.open_sample())
    >>> obs, mask = woa.holdout_observations(split, 0.05, seed=1)
    >>> obs.sizes["obs"] == int(mask.sum())
    True
    """
    from geodiff.metrics import random_guidance_mask

    truth_ds = heldout.heldout if isinstance(heldout, HoldoutSplit) else heldout
    if variable not in truth_ds:
        raise DataError(f"held-out dataset has no variable {variable!r}")
    if not np.isfinite(error_std) or error_std < 0:
        raise ConfigError(f"error_std must be a finite number >= 0, got {error_std}")
    truth = truth_ds[variable]
    mask = random_guidance_mask(truth.notnull(), fraction, seed=seed, per_level=True)
    stacked = truth.where(mask).stack(obs=truth.dims)
    stacked = stacked[stacked.notnull().values]
    values = np.asarray(stacked.values, dtype=np.float64)
    if error_std > 0:
        values = values + np.random.default_rng([seed, 1]).normal(0.0, error_std, size=values.shape)
    n = values.size
    coords = {name: ("obs", np.asarray(stacked[name].values)) for name in truth.dims}
    table = xr.Dataset(
        {"value": ("obs", values, {"units": truth.attrs.get("units", ""), "long_name": f"observed {variable}"}),
         "error_std": ("obs", np.full(n, float(error_std)), {"units": truth.attrs.get("units", "")})},
        coords={**coords, "variable": ("obs", np.full(n, variable)),
                "source": ("obs", np.full(n, "woa_holdout")), "obs_id": ("obs", np.arange(n))},
        attrs=append_history({}, f"geodiff.adapters.woa.holdout_observations(fraction={fraction}, seed={seed}, "
                                 f"error_std={error_std})"),
    )
    return table, mask

