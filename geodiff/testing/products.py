"""Format-faithful synthetic files for the products geodiff reads, for tests, docs and notebooks.

No data hub is reachable from the machines geodiff is tested on, so each writer here produces a small file that
follows the product's documented layout: file and variable names, dimension names and order, dtypes, packing
(``scale_factor``/``add_offset``), fill values, units and the attributes the adapters rely on. The *values* come
from a smooth analytic ocean/atmosphere (:func:`ocean_temperature`, :func:`ocean_salinity`, :func:`is_land`,
:func:`seafloor_depth`) so that tests can compare adapter output with the truth. Where a real product is too big
for a test, the writer keeps the layout and shrinks one thing, said in its docstring (ERA5 at 2.5 deg instead of
0.25 deg, GridSat-B1 on a latitude band, GEBCO with only one tile written).

Products and their layouts:

* CMIP6 ``thetao`` (Omon), CMIP6 data reference syntax paths, ``_FillValue = 1e20``: "CESM2" (dims
  ``time, lev, nlat, nlon``; 2-D ``lat``/``lon``; ``lev`` in centimeters; ``noleap``), "MPI-ESM1-2-LR"
  (``time, lev, j, i``; 2-D ``latitude``/``longitude`` with ``vertices_*``; ``lev`` in m; ``proleptic_gregorian``),
  "UKESM1-0-LL" (``time, lev, j, i``; ``360_day``). The grids are rotated-pole (curvilinear) grids.
* EN4.2.2 analyses ``EN.4.2.2.f.analysis.g10.YYYYMM.nc`` (temperature in kelvin with the contradictory
  ``valid_min/valid_max`` in degC, salinity, 42 levels, 173 x 360) and profiles
  ``EN.4.2.2.f.profiles.g10.YYYYMM.nc`` (``N_PROF x N_LEVELS``, char QC flags, fill 99999).
* ERA5 single and pressure levels in the current CDS layout (``valid_time``, ``pressure_level``, ``number``,
  ``expver``, one file per ``stepType``) and the legacy layout (``time``, ``level``, packed int16).
* GridSat-B1 (``irwin_cdr`` int16, ``scale_factor=0.01``, ``add_offset=200``, 0.07 deg), sounder climate data
  records (AMSU-A mean layer temperature, HIRS OLR and UTH, MHS UTH), GEBCO_2023 ``elevation`` (int16, 15"),
  station tables (CSV and CF timeSeries netCDF).

Example
-------
>>> import tempfile, xarray as xr
>>> from geodiff.testing import products
>>> path = products.write_cmip6(tempfile.mkdtemp(), "CESM2")
>>> path.name
'thetao_Omon_CESM2_historical_r1i1p1f1_gn_200001-200003.nc'
>>> with xr.open_dataset(path, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)) as ds:
...     ds.thetao.dims, ds.lev.attrs["units"], ds.thetao.encoding["_FillValue"]
(('time', 'lev', 'nlat', 'nlon'), 'centimeters', np.float32(1e+20))
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geodiff.adapters.regrid import EN4_DEPTHS

__all__ = [
    "CMIP6_FIXTURES",
    "cmip6_catalog_rows",
    "is_land",
    "ocean_salinity",
    "ocean_temperature",
    "rotated_grid",
    "seafloor_depth",
    "write_cmip6",
    "write_catalog_tree",
    "write_cmip6_tree",
    "write_cmip6_zarr_collection",
    "write_demo_files",
    "write_en4_analysis",
    "write_en4_profiles",
    "write_era5",
    "write_gebco",
    "write_gridsat",
    "write_sounder",
    "write_stations_csv",
    "write_stations_netcdf",
]

# ---------------------------------------------------------------------------------------------------------------
# the synthetic truth


def _wrap180(lon: Any) -> Any:
    return ((np.asarray(lon, dtype="float64") + 180.0) % 360.0) - 180.0


def is_land(lat: Any, lon: Any) -> np.ndarray:
    """True on the synthetic continents: an 'America' (-80..-35 E, -55..60 N), a 'Greenland', an 'Antarctica'.

    >>> is_land([0.0, 0.0, -80.0], [-60.0, 0.0, 10.0]).tolist()
    [True, False, True]
    """
    lat = np.asarray(lat, dtype="float64")
    lon = _wrap180(lon)
    america = (lon >= -80.0) & (lon <= -35.0) & (lat >= -55.0) & (lat <= 60.0)
    greenland = (lat >= 60.0) & (lon >= -75.0) & (lon <= -15.0)
    antarctica = lat <= -75.0
    return america | greenland | antarctica


def seafloor_depth(lat: Any, lon: Any) -> np.ndarray:
    """Sea-floor depth (m, > 0): 4500 m basins, a mid-ocean ridge near 20 W rising to 1500 m, shelves near land.

    >>> float(seafloor_depth(0.0, 150.0)) > 4000.0, float(seafloor_depth(0.0, -20.0)) < 2000.0
    (True, True)
    """
    lat = np.asarray(lat, dtype="float64")
    lon = _wrap180(lon)
    ridge = 3000.0 * np.exp(-(((lon + 20.0) / 8.0) ** 2))
    shelf = 3500.0 * np.exp(-(((lon + 35.0) / 3.0) ** 2)) * ((lat > -55.0) & (lat < 60.0))
    return np.maximum(4500.0 + 500.0 * np.cos(np.deg2rad(3.0 * lat)) - ridge - shelf, 150.0)


def ocean_temperature(lat: Any, lon: Any, depth: Any, month: Any = 1) -> np.ndarray:
    """Potential temperature (degC) of the synthetic ocean: warm tropics, a seasonal cycle, decay with depth.

    Arguments broadcast together (numpy rules). Values lie in about -1.5..29 degC.

    >>> round(float(ocean_temperature(0.0, 0.0, 0.0, 1)), 3), round(float(ocean_temperature(0.0, 0.0, 5000.0)), 2)
    (27.0, 2.02)
    """
    lat_r = np.deg2rad(np.asarray(lat, dtype="float64"))
    lon_r = np.deg2rad(np.asarray(lon, dtype="float64"))
    depth = np.asarray(depth, dtype="float64")
    season = np.sin(2.0 * np.pi * (np.asarray(month, dtype="float64") - 1.0) / 12.0)
    surface = 28.0 * np.cos(lat_r) ** 2 - 1.5 + 2.0 * season * np.sin(lat_r) + 0.5 * np.cos(2.0 * lon_r) * np.cos(lat_r)
    return 2.0 + (surface - 2.0) * np.exp(-depth / 700.0)


def ocean_salinity(lat: Any, lon: Any, depth: Any, month: Any = 1) -> np.ndarray:
    """Practical salinity (PSS-78) of the synthetic ocean, about 33.5..36.

    >>> round(float(ocean_salinity(20.0, 0.0, 0.0)), 2)
    34.99
    """
    lat_r = np.deg2rad(np.asarray(lat, dtype="float64"))
    lon_r = np.deg2rad(np.asarray(lon, dtype="float64"))
    depth = np.asarray(depth, dtype="float64")
    month = np.asarray(month, dtype="float64")
    surface = 34.2 + 1.8 * np.sin(2.0 * lat_r) ** 2 + 0.2 * np.sin(lon_r) + 0.05 * np.cos(2.0 * np.pi * month / 12.0)
    return 34.7 + (surface - 34.7) * np.exp(-depth / 500.0)


def _ocean_field(
    func: Any, lat2d: np.ndarray, lon2d: np.ndarray, depths: np.ndarray, months: Sequence[int]
) -> np.ndarray:
    """``func`` on ``[time, depth, *lat2d.shape]`` with NaN on land and below the sea floor."""
    lat = lat2d[None, None]
    lon = lon2d[None, None]
    depth = np.asarray(depths, dtype="float64")[None, :, None, None]
    month = np.asarray(months, dtype="float64")[:, None, None, None]
    values = func(lat, lon, depth, month)
    dry = is_land(lat2d, lon2d)[None, None] | (depth > seafloor_depth(lat2d, lon2d)[None, None])
    return np.where(dry, np.nan, values)


# ---------------------------------------------------------------------------------------------------------------
# curvilinear grids


def rotated_grid(ny: int, nx: int, pole_lat: float, pole_lon: float, rlat_range: Sequence[float] = (-89.0, 80.0)
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Geographic ``(lat [ny, nx], lon [ny, nx] in 0..360)`` of a rotated-pole grid (cell centres).

    The rotated grid is regular in (rotated lat, rotated lon); its north pole sits at ``(pole_lat, pole_lon)``,
    like the displaced pole of ocean models (placed over land).

    >>> lat, lon = rotated_grid(4, 8, 90.0, 0.0, (-45.0, 45.0))
    >>> lat[:, 0].round(6).tolist()
    [-33.75, -11.25, 11.25, 33.75]
    """
    r0, r1 = rlat_range
    rlat = r0 + (np.arange(ny) + 0.5) * (r1 - r0) / ny
    rlon = (np.arange(nx) + 0.5) * 360.0 / nx
    rlat2, rlon2 = np.meshgrid(np.deg2rad(rlat), np.deg2rad(rlon), indexing="ij")
    xyz = np.stack([np.cos(rlat2) * np.cos(rlon2), np.cos(rlat2) * np.sin(rlon2), np.sin(rlat2)], axis=-1)
    tilt = np.deg2rad(90.0 - pole_lat)
    ry = np.array([[np.cos(tilt), 0.0, np.sin(tilt)], [0.0, 1.0, 0.0], [-np.sin(tilt), 0.0, np.cos(tilt)]])
    spin = np.deg2rad(pole_lon)
    rz = np.array([[np.cos(spin), -np.sin(spin), 0.0], [np.sin(spin), np.cos(spin), 0.0], [0.0, 0.0, 1.0]])
    geo = xyz @ (rz @ ry).T
    lat = np.rad2deg(np.arcsin(np.clip(geo[..., 2], -1.0, 1.0)))
    lon = np.rad2deg(np.arctan2(geo[..., 1], geo[..., 0])) % 360.0
    return lat, lon


# ---------------------------------------------------------------------------------------------------------------
# CMIP6


#: Models written by :func:`write_cmip6`: grid, vertical axis, calendar and CMIP6 metadata of each.
CMIP6_MODELS: dict[str, dict[str, Any]] = {
    "CESM2": {
        "institution_id": "NCAR", "dims": ("nlat", "nlon"), "latlon": ("lat", "lon"), "shape": (72, 144),
        "pole": (72.0, -40.0), "lev_units": "centimeters", "lev_scale": 100.0, "calendar": "noleap",
        "time_units": "days since 0001-01-01 00:00:00", "version": "v20190308",
        "levels": (5.0, 15.0, 25.0, 35.0, 50.0, 75.0, 110.0, 160.0, 240.0, 360.0, 550.0, 850.0, 1300.0, 2000.0, 3000.0,
                   4200.0, 5500.0),
        "grid": "native gx1v7 displaced pole grid (384x320 latxlon)", "nominal_resolution": "100 km",
    },
    "MPI-ESM1-2-LR": {
        "institution_id": "MPI-M", "dims": ("j", "i"), "latlon": ("latitude", "longitude"), "shape": (60, 120),
        "pole": (75.0, -45.0), "lev_units": "m", "lev_scale": 1.0, "calendar": "proleptic_gregorian",
        "time_units": "days since 1850-1-1 00:00:00", "version": "v20190710",
        "levels": (6.0, 17.0, 27.0, 37.0, 47.0, 57.0, 68.5, 82.5, 100.0, 122.5, 150.0, 182.5, 220.0, 262.5, 310.0,
                   362.5, 420.0, 485.0, 560.0, 645.0, 740.0, 845.0, 960.0, 1085.0, 1220.0, 1365.0, 1525.0, 1700.0,
                   1885.0, 2080.0, 2290.0, 2525.0, 2785.0, 3070.0, 3395.0, 3770.0, 4195.0, 4670.0, 5170.0, 5720.0),
        "grid": "gn: GR15 bipolar curvilinear grid", "nominal_resolution": "250 km",
    },
    "UKESM1-0-LL": {
        "institution_id": "MOHC", "dims": ("j", "i"), "latlon": ("latitude", "longitude"), "shape": (60, 120),
        "pole": (70.0, -35.0), "lev_units": "m", "lev_scale": 1.0, "calendar": "360_day",
        "time_units": "days since 1850-01-01", "version": "v20190627",
        "levels": (0.5, 1.6, 2.8, 4.2, 5.8, 7.6, 9.8, 12.3, 15.4, 19.0, 25.0, 35.0, 50.0, 75.0, 110.0, 160.0, 230.0,
                   330.0, 460.0, 640.0, 880.0, 1200.0, 1600.0, 2100.0, 2700.0, 3400.0, 4200.0, 5000.0, 5900.0),
        "grid": "Native eORCA1 tripolar primarily 1 deg with meridional refinement down to 1/3 degree in the tropics",
        "nominal_resolution": "100 km",
    },
}

#: The CMIP6 files of the fixture tree: the rows of ``data_catalog/cmip6_collection.csv``.
CMIP6_FIXTURES: tuple[dict[str, str], ...] = (
    {"source_id": "CESM2", "member_id": "r1i1p1f1"},
    {"source_id": "CESM2", "member_id": "r2i1p1f1"},
    {"source_id": "MPI-ESM1-2-LR", "member_id": "r1i1p1f1"},
    {"source_id": "UKESM1-0-LL", "member_id": "r1i1p1f2"},
)


def _cmip6_months(start: str, months: int) -> list[tuple[int, int]]:
    year, month = (int(x) for x in start.split("-"))
    out = []
    for _ in range(months):
        out.append((year, month))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def _cmip6_relpath(source_id: str, member_id: str, experiment_id: str, start: str, months: int) -> str:
    model = CMIP6_MODELS[source_id]
    ym = _cmip6_months(start, months)
    span = f"{ym[0][0]:04d}{ym[0][1]:02d}-{ym[-1][0]:04d}{ym[-1][1]:02d}"
    activity = "CMIP" if experiment_id in ("historical", "piControl", "1pctCO2", "abrupt-4xCO2") else "ScenarioMIP"
    name = f"thetao_Omon_{source_id}_{experiment_id}_{member_id}_gn_{span}.nc"
    return "/".join(["CMIP6", activity, model["institution_id"], source_id, experiment_id, member_id, "Omon", "thetao",
                     "gn", model["version"], name])


def cmip6_catalog_rows(start: str = "2000-01", months: int = 3) -> list[dict[str, str]]:
    """The ESM-collection rows (one per file) of the fixture tree, paths relative to its root.

    >>> rows = cmip6_catalog_rows()
    >>> len(rows), rows[0]["source_id"], rows[0]["time_range"]
    (4, 'CESM2', '200001-200003')
    """
    rows = []
    for item in CMIP6_FIXTURES:
        path = _cmip6_relpath(item["source_id"], item["member_id"], "historical", start, months)
        model = CMIP6_MODELS[item["source_id"]]
        rows.append({
            "activity_id": "CMIP", "institution_id": model["institution_id"], "source_id": item["source_id"],
            "experiment_id": "historical", "member_id": item["member_id"], "table_id": "Omon",
            "variable_id": "thetao", "grid_label": "gn", "version": model["version"],
            "time_range": path.rsplit("_", 1)[1][:-3], "path": path,
        })
    return rows


def _time_values(months: list[tuple[int, int]], units: str, calendar: str) -> tuple[np.ndarray, np.ndarray]:
    import cftime

    mids, bounds = [], []
    for year, month in months:
        nxt = (year + 1, 1) if month == 12 else (year, month + 1)
        start = cftime.datetime(year, month, 1, calendar=calendar)
        stop = cftime.datetime(nxt[0], nxt[1], 1, calendar=calendar)
        t0, t1 = cftime.date2num([start, stop], units, calendar=calendar)
        mids.append(0.5 * (t0 + t1))
        bounds.append([t0, t1])
    return np.asarray(mids, "float64"), np.asarray(bounds, "float64")


def write_cmip6(
    root: str | Path,
    source_id: str = "CESM2",
    member_id: str = "r1i1p1f1",
    *,
    experiment_id: str = "historical",
    start: str = "2000-01",
    months: int = 3,
) -> Path:
    """Write one CMIP6 ``thetao`` (Omon) file under ``root`` following the CMIP6 data reference syntax.

    Layout per model in :data:`CMIP6_MODELS` (dims, 2-D lat/lon names, ``lev`` units, calendar). ``thetao`` is
    float32 ``(time, lev, <y>, <x>)`` in degC with ``_FillValue = missing_value = 1e20`` on land and below the sea
    floor; ``time_bnds``/``lev_bnds`` and lat/lon vertices as in CMOR output; global attributes as required by
    the CMIP6 data request. Returns the file path.
    """
    import xarray as xr

    if source_id not in CMIP6_MODELS:
        raise KeyError(f"no fixture model {source_id!r}; models are {sorted(CMIP6_MODELS)}")
    model = CMIP6_MODELS[source_id]
    ydim, xdim = model["dims"]
    lat_name, lon_name = model["latlon"]
    ny, nx = model["shape"]
    lat, lon = rotated_grid(ny, nx, *model["pole"])
    levels = np.asarray(model["levels"], dtype="float64")
    edges = np.concatenate([[0.0], 0.5 * (levels[1:] + levels[:-1]), [levels[-1] + 0.5 * (levels[-1] - levels[-2])]])
    ym = _cmip6_months(start, months)
    time, time_bnds = _time_values(ym, model["time_units"], model["calendar"])
    member = sum(ord(c) for c in member_id) % 7
    values = _ocean_field(ocean_temperature, lat, lon, levels, [m for _, m in ym])
    thetao = (values + 0.05 * member).astype("float32")  # members differ a little; NaN -> 1e20 on writing
    scale = model["lev_scale"]
    vertices_dim = "vertices"
    dlat = 0.5 * 180.0 / ny
    lat_v = np.stack([lat - dlat, lat - dlat, lat + dlat, lat + dlat], axis=-1).clip(-90.0, 90.0)
    lon_v = np.stack([lon - dlat, lon + dlat, lon + dlat, lon - dlat], axis=-1) % 360.0
    coords = {
        "time": ("time", time, {"bounds": "time_bnds", "units": model["time_units"], "calendar": model["calendar"],
                                "axis": "T", "long_name": "time", "standard_name": "time"}),
        "lev": ("lev", levels * scale, {"bounds": "lev_bnds", "units": model["lev_units"], "axis": "Z",
                                        "positive": "down", "long_name": "ocean depth coordinate",
                                        "standard_name": "olevel"}),
        ydim: (ydim, np.arange(ny, dtype="int32"), {"long_name": "cell index along second dimension", "units": "1"}),
        xdim: (xdim, np.arange(nx, dtype="int32"), {"long_name": "cell index along first dimension", "units": "1"}),
        lat_name: ((ydim, xdim), lat, {"standard_name": "latitude", "long_name": "latitude",
                                       "units": "degrees_north", "bounds": f"vertices_{lat_name}"
                                       if lat_name == "latitude" else "lat_bnds"}),
        lon_name: ((ydim, xdim), lon, {"standard_name": "longitude", "long_name": "longitude",
                                       "units": "degrees_east", "bounds": f"vertices_{lon_name}"
                                       if lon_name == "longitude" else "lon_bnds"}),
    }
    lat_b = f"vertices_{lat_name}" if lat_name == "latitude" else "lat_bnds"
    lon_b = f"vertices_{lon_name}" if lon_name == "longitude" else "lon_bnds"
    data_vars = {
        "thetao": (("time", "lev", ydim, xdim), thetao, {
            "standard_name": "sea_water_potential_temperature", "long_name": "Sea Water Potential Temperature",
            "comment": "Diagnostic full, dimensional potential temperature", "units": "degC",
            "original_name": "TEMP", "cell_methods": "area: mean where sea time: mean",
            "cell_measures": "area: areacello volume: volcello",
        }),
        "time_bnds": (("time", "d2" if source_id == "CESM2" else "bnds"), time_bnds, {}),
        "lev_bnds": (("lev", "d2" if source_id == "CESM2" else "bnds"), np.stack([edges[:-1], edges[1:]], -1) * scale,
                     {"units": model["lev_units"]}),
        lat_b: ((ydim, xdim, vertices_dim), lat_v, {"units": "degrees_north"}),
        lon_b: ((ydim, xdim, vertices_dim), lon_v, {"units": "degrees_east"}),
    }
    created = "2019-01-01T00:00:00Z"
    attrs = {
        "Conventions": "CF-1.7 CMIP-6.2", "activity_id": "CMIP", "data_specs_version": "01.00.29",
        "experiment_id": experiment_id, "experiment": "all-forcing simulation of the recent past",
        "forcing_index": 1, "frequency": "mon", "grid": model["grid"], "grid_label": "gn",
        "initialization_index": 1, "institution_id": model["institution_id"], "mip_era": "CMIP6",
        "nominal_resolution": model["nominal_resolution"], "physics_index": 1, "realization_index": 1,
        "realm": "ocean", "source_id": source_id, "source_type": "AOGCM BGC", "sub_experiment": "none",
        "sub_experiment_id": "none", "table_id": "Omon", "variable_id": "thetao", "variant_label": member_id,
        "creation_date": created, "tracking_id": f"hdl:21.14100/geodiff-fixture-{source_id}-{member_id}",
        "license": "CMIP6 model data produced by the fixture writer of geodiff are synthetic (not model output).",
        "title": f"{source_id} output prepared for CMIP6 (format-faithful synthetic file written by geodiff)",
        "history": f"{created} written by geodiff.testing.products.write_cmip6 (synthetic values)",
    }
    ds = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    path = Path(root) / _cmip6_relpath(source_id, member_id, experiment_id, start, months)
    path.parent.mkdir(parents=True, exist_ok=True)
    encoding = {
        "thetao": {"_FillValue": np.float32(1e20), "missing_value": np.float32(1e20), "dtype": "float32",
                   "zlib": True, "complevel": 1},
        "time": {"dtype": "float64", "_FillValue": None}, "lev": {"_FillValue": None},
        "time_bnds": {"_FillValue": None}, "lev_bnds": {"_FillValue": None},
        lat_name: {"_FillValue": None}, lon_name: {"_FillValue": None},
        lat_b: {"_FillValue": None}, lon_b: {"_FillValue": None},
    }
    ds.to_netcdf(path, encoding=encoding, format="NETCDF4_CLASSIC", unlimited_dims=["time"])
    return path


def write_cmip6_tree(root: str | Path, start: str = "2000-01", months: int = 3) -> list[Path]:
    """Write every file listed by :func:`cmip6_catalog_rows` under ``root``; returns the paths."""
    return [write_cmip6(root, item["source_id"], item["member_id"], start=start, months=months)
            for item in CMIP6_FIXTURES]


def write_cmip6_zarr_collection(root: str | Path, *, base: str | None = None, zarr_format: int = 2,
                                start: str = "2000-01", months: int = 3) -> Path:
    """The fixture runs as a Pangeo-style CMIP6 cloud collection: one zarr store per run under ``root`` (the
    data reference syntax folders without a file name, consolidated metadata, the native encoding kept) and an
    intake-esm collection ``pangeo-cmip6.json`` + ``.csv`` whose asset column is ``zstore`` (format ``zarr``)
    and whose columns are those of the Pangeo catalog (``dcpp_init_year`` included). ``zstore`` holds
    ``base`` + the relative folder (default: ``root``; e.g. ``"gs://cmip6"`` as in the Pangeo catalog).
    Returns the JSON path.

    >>> import tempfile, pandas as pd
    >>> path = write_cmip6_zarr_collection(tempfile.mkdtemp(), base="gs://cmip6")
    >>> pd.read_csv(path.with_suffix(".csv"))["zstore"][0]
    'gs://cmip6/CMIP6/CMIP/NCAR/CESM2/historical/r1i1p1f1/Omon/thetao/gn/v20190308/'
    """
    import json
    import tempfile

    import pandas as pd
    import xarray as xr

    root = Path(root)
    base = str(root) if base is None else base.rstrip("/")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for row in cmip6_catalog_rows(start, months):
            nc = write_cmip6(scratch, row["source_id"], row["member_id"], start=start, months=months)
            folder = row["path"].rsplit("/", 1)[0] + "/"
            with xr.open_dataset(nc, decode_times=False, mask_and_scale=False) as ds:
                ds.load().to_zarr(root / folder, mode="w", zarr_format=zarr_format, consolidated=True)
            rows.append({**{k: v for k, v in row.items() if k not in ("path", "time_range")},
                         "zstore": f"{base}/{folder}", "dcpp_init_year": None})
    columns = ["activity_id", "institution_id", "source_id", "experiment_id", "member_id", "table_id",
               "variable_id", "grid_label", "zstore", "dcpp_init_year", "version"]
    pd.DataFrame(rows, columns=columns).to_csv(root / "pangeo-cmip6.csv", index=False)
    spec = {
        "esmcat_version": "0.1.0", "id": "pangeo-cmip6-fixture",
        "description": "CMIP6 fixture runs as zarr stores, laid out as the Pangeo CMIP6 cloud collection",
        "catalog_file": "pangeo-cmip6.csv",
        "attributes": [{"column_name": c, "vocabulary": ""} for c in columns if c != "zstore"],
        "assets": {"column_name": "zstore", "format": "zarr"},
        "aggregation_control": {
            "variable_column_name": "variable_id",
            "groupby_attrs": ["activity_id", "institution_id", "source_id", "experiment_id", "table_id",
                              "grid_label"],
            "aggregations": [{"type": "union", "attribute_name": "variable_id"},
                             {"type": "join_new", "attribute_name": "member_id",
                              "options": {"coords": "minimal", "compat": "override"}},
                             {"type": "join_new", "attribute_name": "dcpp_init_year",
                              "options": {"coords": "minimal", "compat": "override"}}],
        },
    }
    path = root / "pangeo-cmip6.json"
    path.write_text(json.dumps(spec, indent=2))
    return path


# ---------------------------------------------------------------------------------------------------------------
# EN4


def _en4_name(kind: str, year: int, month: int) -> str:
    return f"EN.4.2.2.f.{kind}.g10.{year:04d}{month:02d}.nc"


def write_en4_analysis(directory: str | Path, year: int = 2000, month: int = 1) -> Path:
    """Write ``EN.4.2.2.f.analysis.g10.YYYYMM.nc``: the EN4.2.2 objective analysis of one month.

    Dims ``time`` (1, unlimited), ``depth`` (42), ``lat`` (173: -83..89), ``lon`` (360: 1..360), ``bnds``;
    float32 ``temperature`` in **kelvin** (``standard_name`` sea_water_potential_temperature) carrying
    ``valid_min=-2, valid_max=45`` (in degC: contradictory metadata, as in the product), ``salinity`` (psu),
    ``temperature_uncertainty`` (kelvin) and ``salinity_uncertainty``, ``_FillValue -1e30`` on land and below the
    floor; ``depth`` in metres with ``positive="down"`` and ``depth_bnds``; ``time`` in days since 1800-01-01.
    """
    import xarray as xr

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lat = np.arange(-83.0, 90.0, dtype="float32")
    lon = np.arange(1.0, 361.0, dtype="float32")
    depth = np.asarray(EN4_DEPTHS, dtype="float32")
    edges = np.concatenate([[0.0], 0.5 * (depth[1:] + depth[:-1]), [5500.0]]).astype("float32")
    lat2, lon2 = np.meshgrid(lat.astype("float64"), lon.astype("float64"), indexing="ij")
    temp_c = _ocean_field(ocean_temperature, lat2, lon2, depth, [month])
    sal = _ocean_field(ocean_salinity, lat2, lon2, depth, [month])
    day0 = _dt.date(1800, 1, 1)
    t0 = (_dt.date(year, month, 1) - day0).days
    t1 = (_dt.date(year + (month == 12), month % 12 + 1, 1) - day0).days
    fill = np.float32(-1.0e30)
    common = {"cell_methods": "time: mean"}
    data_vars = {
        "temperature": (("time", "depth", "lat", "lon"), (temp_c + 273.15).astype("float32"), {
            "long_name": "potential temperature", "standard_name": "sea_water_potential_temperature",
            "units": "kelvin", "valid_min": np.float32(-2.0), "valid_max": np.float32(45.0), **common}),
        "salinity": (("time", "depth", "lat", "lon"), sal.astype("float32"), {
            "long_name": "salinity", "standard_name": "sea_water_salinity", "units": "psu",
            "valid_min": np.float32(0.0), "valid_max": np.float32(45.0), **common}),
        "temperature_uncertainty": (("time", "depth", "lat", "lon"),
                                    np.where(np.isnan(temp_c), np.nan, 0.5).astype("float32"), {
            "long_name": "uncertainty of potential temperature", "units": "kelvin", **common}),
        "salinity_uncertainty": (("time", "depth", "lat", "lon"),
                                 np.where(np.isnan(sal), np.nan, 0.1).astype("float32"), {
            "long_name": "uncertainty of salinity", "units": "psu", **common}),
        "depth_bnds": (("depth", "bnds"), np.stack([edges[:-1], edges[1:]], -1), {}),
        "time_bnds": (("time", "bnds"), np.asarray([[t0, t1]], "float32"), {}),
    }
    coords = {
        "time": ("time", np.asarray([0.5 * (t0 + t1)], "float32"),
                 {"long_name": "time", "standard_name": "time", "units": "days since 1800-01-01 00:00:00",
                  "bounds": "time_bnds"}),
        "depth": ("depth", depth, {"long_name": "depth", "standard_name": "depth", "units": "metres",
                                   "positive": "down", "bounds": "depth_bnds"}),
        "lat": ("lat", lat, {"long_name": "latitude", "standard_name": "latitude", "units": "degrees_north"}),
        "lon": ("lon", lon, {"long_name": "longitude", "standard_name": "longitude", "units": "degrees_east"}),
    }
    attrs = {
        "Conventions": "CF-1.0", "title": "EN.4.2.2 objective analysis (format-faithful synthetic file)",
        "institution": "Met Office Hadley Centre (layout); values synthetic",
        "history": "written by geodiff.testing.products.write_en4_analysis",
        "references": "Good, S. A., M. J. Martin and N. A. Rayner, 2013, JGR Oceans, 118, 6704-6716",
    }
    ds = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    encoding = {name: {"_FillValue": fill, "zlib": True, "complevel": 1}
                for name in ("temperature", "salinity", "temperature_uncertainty", "salinity_uncertainty")}
    encoding.update({n: {"_FillValue": None} for n in ("time", "depth", "lat", "lon", "depth_bnds", "time_bnds")})
    path = directory / _en4_name("analysis", year, month)
    ds.to_netcdf(path, encoding=encoding, format="NETCDF4_CLASSIC", unlimited_dims=["time"])
    return path


def write_en4_profiles(
    directory: str | Path, year: int = 2000, month: int = 1, *, n_prof: int = 120, n_levels: int = 60, seed: int = 0
) -> Path:
    """Write ``EN.4.2.2.f.profiles.g10.YYYYMM.nc``: quality-controlled profiles of one month (netCDF4 char QC).

    Dims ``N_PROF``, ``N_LEVELS``, ``STRING8``, ``STRING4``...; ``JULD`` (double, days since 1950-01-01) with
    char ``JULD_QC``; ``LATITUDE``/``LONGITUDE`` (double) with ``POSITION_QC``; float ``DEPH_CORRECTED``,
    ``POTM_CORRECTED`` (degC), ``PSAL_CORRECTED`` (psu), ``TEMP`` with ``_FillValue 99999`` and char per-level
    QC (``*_CORRECTED_QC``) and per-profile QC (``PROFILE_POTM_QC``, ``PROFILE_PSAL_QC``): ``'1'`` accepted,
    ``'4'`` rejected, ``'0'`` no data. Values sample the synthetic ocean at the profile's position; a known share of
    flags is ``'4'`` (the adapter tests count them).
    """
    import netCDF4

    rng = np.random.default_rng(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / _en4_name("profiles", year, month)
    # positions in the ocean
    lats, lons = [], []
    while len(lats) < n_prof:
        la, lo = rng.uniform(-70.0, 70.0), rng.uniform(-180.0, 180.0)
        if not is_land(la, lo):
            lats.append(la)
            lons.append(lo)
    lat = np.asarray(lats)
    lon = np.asarray(lons)
    days = (_dt.date(year, month, 1) - _dt.date(1950, 1, 1)).days
    juld = days + rng.uniform(0.0, 27.0, n_prof)
    fill = np.float32(99999.0)
    depth = np.full((n_prof, n_levels), fill, dtype="float32")
    potm = np.full_like(depth, fill)
    psal = np.full_like(depth, fill)
    n_used = rng.integers(5, n_levels + 1, n_prof)
    for p in range(n_prof):
        floor = float(seafloor_depth(lat[p], lon[p]))
        z = np.sort(rng.uniform(1.0, min(floor, 2000.0), n_used[p])).astype("float32")
        depth[p, : z.size] = z
        potm[p, : z.size] = ocean_temperature(lat[p], lon[p], z, month)
        psal[p, : z.size] = ocean_salinity(lat[p], lon[p], z, month)
    present = depth < fill
    level_qc_t = np.where(present, b"1", b"0").astype("S1")
    level_qc_s = level_qc_t.copy()
    bad_t = present & (rng.random(present.shape) < 0.05)
    bad_s = present & (rng.random(present.shape) < 0.03)
    level_qc_t[bad_t] = b"4"
    level_qc_s[bad_s] = b"4"
    potm[bad_t] = potm[bad_t] + 15.0  # rejected values are wrong on purpose
    psal[bad_s] = psal[bad_s] - 5.0
    position_qc = np.where(rng.random(n_prof) < 0.04, b"4", b"1").astype("S1")
    juld_qc = np.where(rng.random(n_prof) < 0.03, b"4", b"1").astype("S1")
    prof_t = np.where(rng.random(n_prof) < 0.05, b"4", b"1").astype("S1")
    prof_s = np.where(rng.random(n_prof) < 0.05, b"4", b"1").astype("S1")
    for k, flags in enumerate((position_qc, juld_qc, prof_t, prof_s)):  # every flag rejects at least once
        flags[k % n_prof] = b"4"
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.createDimension("N_PROF", n_prof)
        nc.createDimension("N_LEVELS", n_levels)
        nc.createDimension("STRING8", 8)
        nc.createDimension("STRING4", 4)
        nc.createDimension("DATE_TIME", 14)
        nc.setncatts({"title": "EN4 quality controlled profiles (format-faithful synthetic file)",
                      "institution": "Met Office Hadley Centre (layout); values synthetic",
                      "history": "written by geodiff.testing.products.write_en4_profiles",
                      "Conventions": "CF-1.0"})
        v = nc.createVariable("DATA_TYPE", "S1", ("STRING8",))
        v[:] = netCDF4.stringtochar(np.array(["EN4 PROF"], "S8"))[0]
        v = nc.createVariable("REFERENCE_DATE_TIME", "S1", ("DATE_TIME",))
        v[:] = netCDF4.stringtochar(np.array(["19500101000000"], "S14"))[0]
        v = nc.createVariable("PLATFORM_NUMBER", "S1", ("N_PROF", "STRING8"))
        v.long_name = "Float unique identifier"
        v[:] = netCDF4.stringtochar(np.array([f"{5900000 + p:<8d}" for p in range(n_prof)], "S8"))
        v = nc.createVariable("WMO_INST_TYPE", "S1", ("N_PROF", "STRING4"))
        v.long_name = "Coded instrument type"
        v[:] = netCDF4.stringtochar(np.array(["846 "] * n_prof, "S4"))
        v = nc.createVariable("JULD", "f8", ("N_PROF",), fill_value=99999.0)
        v.setncatts({"long_name": "Julian day (UTC) of the location relative to REFERENCE_DATE_TIME",
                     "units": "days since 1950-01-01 00:00:00 utc",
                     "conventions": "Relative julian days with decimal part (as parts of day)"})
        v[:] = juld
        v = nc.createVariable("JULD_QC", "S1", ("N_PROF",))
        v.long_name = "Quality on Date and Time"
        v.conventions = "Q where Q =[0-9]"
        v[:] = juld_qc
        for name, values, units in (("LATITUDE", lat, "degree_north"), ("LONGITUDE", lon, "degree_east")):
            v = nc.createVariable(name, "f8", ("N_PROF",), fill_value=99999.0)
            v.setncatts({"long_name": f"{name.lower()} of the station, best estimate", "units": units})
            v[:] = values
        v = nc.createVariable("POSITION_QC", "S1", ("N_PROF",))
        v.long_name = "Quality on position (latitude and longitude)"
        v[:] = position_qc
        for name, values in (("PROFILE_POTM_QC", prof_t), ("PROFILE_PSAL_QC", prof_s)):
            v = nc.createVariable(name, "S1", ("N_PROF",))
            v.long_name = f"Global quality flag of {name.split('_')[1]} profile"
            v[:] = values
        for name, values, units, long_name, qc in (
            ("DEPH_CORRECTED", depth, "meters", "Corrected depth", None),
            ("POTM_CORRECTED", potm, "degree_Celsius", "Corrected potential temperature", level_qc_t),
            ("PSAL_CORRECTED", psal, "psu", "Corrected practical salinity", level_qc_s),
            ("TEMP", np.where(present, potm + 0.05, fill).astype("float32"), "degree_Celsius",
             "In situ temperature", None),
        ):
            v = nc.createVariable(name, "f4", ("N_PROF", "N_LEVELS"), fill_value=fill, zlib=True)
            v.setncatts({"long_name": long_name, "units": units})
            v[:] = values
            if qc is not None:
                q = nc.createVariable(f"{name}_QC", "S1", ("N_PROF", "N_LEVELS"))
                q.long_name = "quality flag"
                q.conventions = "Q where Q =[0-9]"
                q[:] = qc
        q = nc.createVariable("DEPH_CORRECTED_QC", "S1", ("N_PROF", "N_LEVELS"))
        q.long_name = "quality flag"
        q[:] = np.where(present, b"1", b"0").astype("S1")
    return path


# ---------------------------------------------------------------------------------------------------------------
# ERA5


def _era5_grid(step: float) -> tuple[np.ndarray, np.ndarray]:
    lat = np.linspace(90.0, -90.0, int(round(180.0 / step)) + 1)
    lon = np.arange(0.0, 360.0, step)
    return lat, lon


def _era5_fields(lat: np.ndarray, lon: np.ndarray, levels: np.ndarray, hours: int) -> dict[str, np.ndarray]:
    lat2, lon2 = np.meshgrid(np.deg2rad(lat), np.deg2rad(lon), indexing="ij")
    t = np.arange(hours, dtype="float64")[:, None, None]
    wave = np.cos(lat2)[None] * np.cos(lon2[None] - 2 * np.pi * t / 24.0)
    height = {1000.0: 110.0, 850.0: 1460.0, 500.0: 5570.0, 250.0: 10360.0}
    z = np.stack([(height.get(float(p), 5000.0) + 60.0 * wave + 150.0 * np.cos(lat2)[None]) * 9.80665
                  for p in levels], axis=1)
    temp = np.stack([(288.0 - 6.5e-3 * height.get(float(p), 5000.0)) + 20.0 * np.cos(lat2)[None] - 10.0
                     + 2.0 * wave for p in levels], axis=1)
    return {
        "z": z, "t": temp,
        "t2m": 273.15 + 30.0 * np.cos(lat2)[None] ** 2 - 5.0 + 3.0 * wave,
        "msl": 101325.0 + 800.0 * np.sin(2 * lat2)[None] + 200.0 * wave,
        "tp": np.clip(2e-4 * (np.cos(3 * lat2)[None] + wave), 0.0, None),
    }


_ERA5_META = {
    "z": ("Geopotential", "geopotential", "m**2 s**-2", 129),
    "t": ("Temperature", "air_temperature", "K", 130),
    "t2m": ("2 metre temperature", "unknown", "K", 167),
    "msl": ("Mean sea level pressure", "air_pressure_at_mean_sea_level", "Pa", 151),
    "tp": ("Total precipitation", "unknown", "m", 228),
}


def write_era5(
    directory: str | Path, *, layout: str = "cds", kind: str = "pressure", hours: int = 4, step: float = 2.5,
    date: str = "2000-01-01",
) -> list[Path]:
    """Write ERA5 hourly files of one day in the current CDS layout (``layout="cds"``) or the legacy one.

    ``kind="pressure"``: ``z`` (geopotential, m**2 s**-2) and ``t`` on 1000/850/500 hPa; ``kind="single"``:
    ``t2m``, ``msl`` (instantaneous) and ``tp`` (accumulated). Latitude runs 90..-90 (descending) and longitude
    0..357.5 (0..360) as in ERA5, at ``step`` degrees (2.5 instead of 0.25 to keep files small).

    * CDS (since 2024): ``valid_time`` (int64 seconds since 1970-01-01), ``pressure_level`` (hPa, decreasing),
      ``latitude``/``longitude`` (float64), scalar ``number``, ``expver`` (``valid_time``, text; stored as char[4]
      where the CDS stores a netCDF string), float32
      variables with ``GRIB_*`` attributes, one file per step type
      (``data_stream-oper_stepType-instant.nc``, ``data_stream-oper_stepType-accum.nc``).
    * legacy: ``time`` (int32 hours since 1900-01-01), ``level`` (int32 millibars, increasing),
      float32 ``latitude``/``longitude``, variables packed in int16 with ``scale_factor``/``add_offset`` and
      ``_FillValue = missing_value = -32767``; one file.
    """
    import xarray as xr

    if layout not in ("cds", "legacy"):
        raise ValueError(f"layout must be 'cds' or 'legacy', got {layout!r}")
    if kind not in ("pressure", "single"):
        raise ValueError(f"kind must be 'pressure' or 'single', got {kind!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lat, lon = _era5_grid(step)
    levels = np.asarray([1000.0, 850.0, 500.0])
    fields = _era5_fields(lat, lon, levels, hours)
    start = np.datetime64(date, "s")
    times = start + np.arange(hours) * np.timedelta64(3600, "s")
    names = ["z", "t"] if kind == "pressure" else ["t2m", "msl", "tp"]
    if layout == "cds":
        groups = {"instant": [n for n in names if n != "tp"], "accum": [n for n in names if n == "tp"]}
        paths = []
        for step_type, group in groups.items():
            if not group:
                continue
            data_vars = {}
            for name in group:
                long_name, standard_name, units, param = _ERA5_META[name]
                dims = ("valid_time", "pressure_level", "latitude", "longitude") if kind == "pressure" else (
                    "valid_time", "latitude", "longitude")
                data_vars[name] = (dims, fields[name].astype("float32"), {
                    "GRIB_paramId": param, "GRIB_dataType": "an", "GRIB_numberOfPoints": lat.size * lon.size,
                    "GRIB_typeOfLevel": "isobaricInhPa" if kind == "pressure" else "surface",
                    "GRIB_stepUnits": 1, "GRIB_stepType": step_type, "GRIB_gridType": "regular_ll",
                    "GRIB_units": units, "GRIB_name": long_name, "GRIB_shortName": name,
                    "GRIB_cfVarName": name, "long_name": long_name, "units": units, "standard_name": standard_name,
                })
            coords = {
                "number": ((), np.int64(0), {"long_name": "ensemble member numerical id", "units": "1",
                                             "standard_name": "realization"}),
                "valid_time": ("valid_time", ((times - np.datetime64("1970-01-01T00:00:00", "s"))
                                              .astype("int64")), {"long_name": "time", "standard_name": "time",
                                                                  "units": "seconds since 1970-01-01",
                                                                  "calendar": "proleptic_gregorian"}),
                "latitude": ("latitude", lat, {"units": "degrees_north", "standard_name": "latitude",
                                               "long_name": "latitude", "stored_direction": "decreasing"}),
                "longitude": ("longitude", lon, {"units": "degrees_east", "standard_name": "longitude",
                                                 "long_name": "longitude"}),
                "expver": ("valid_time", np.array(["0001"] * hours, dtype="<U4"), {"long_name": "Experiment version"}),
            }
            if kind == "pressure":
                coords["pressure_level"] = ("pressure_level", levels, {
                    "units": "hPa", "long_name": "pressure", "standard_name": "air_pressure",
                    "positive": "down", "stored_direction": "decreasing"})
            attrs = {
                "GRIB_centre": "ecmf", "GRIB_centreDescription": "European Centre for Medium-Range Weather Forecasts",
                "GRIB_subCentre": 0, "Conventions": "CF-1.7",
                "institution": "European Centre for Medium-Range Weather Forecasts",
                "history": f"GRIB to CDM+CF via cfgrib (layout); synthetic values written by geodiff "
                           f"(stepType={step_type})",
            }
            ds = xr.Dataset(data_vars, coords=coords, attrs=attrs)
            path = directory / f"data_stream-oper_stepType-{step_type}.nc"
            enc = {n: {"zlib": True, "complevel": 1, "_FillValue": np.float32(np.nan)} for n in group}
            enc["valid_time"] = {"dtype": "int64"}
            # the CDS writes expver as a netCDF string; char[4] here: same values, and the netCDF-C 4.10 / HDF5 2.2
            # build these tests run on crashes after many opens of files holding variable-length strings
            enc["expver"] = {"dtype": "S1"}
            ds.to_netcdf(path, encoding=enc)
            paths.append(path)
        return paths
    # legacy
    hours_since = ((times - np.datetime64("1900-01-01T00:00:00", "s")).astype("int64") // 3600).astype("int32")
    data_vars, encoding = {}, {}
    for name in names:
        long_name, standard_name, units, _ = _ERA5_META[name]
        dims = ("time", "level", "latitude", "longitude") if kind == "pressure" else ("time", "latitude", "longitude")
        values = fields[name][:, ::-1] if kind == "pressure" else fields[name]  # legacy levels increase
        lo, hi = float(values.min()), float(values.max())
        scale = (hi - lo) / 65533.0 if hi > lo else 1.0
        offset = lo + 32766.0 * scale
        attrs = {"units": units, "long_name": long_name}
        if standard_name != "unknown":
            attrs["standard_name"] = standard_name
        data_vars[name] = (dims, values.astype("float64"), attrs)
        encoding[name] = {"dtype": "int16", "scale_factor": scale, "add_offset": offset,
                          "_FillValue": np.int16(-32767), "missing_value": np.int16(-32767)}
    coords = {
        "longitude": ("longitude", lon.astype("float32"), {"units": "degrees_east", "long_name": "longitude"}),
        "latitude": ("latitude", lat.astype("float32"), {"units": "degrees_north", "long_name": "latitude"}),
        "time": ("time", hours_since, {"units": "hours since 1900-01-01 00:00:00.0", "long_name": "time",
                                       "calendar": "gregorian"}),
    }
    if kind == "pressure":
        coords["level"] = ("level", levels[::-1].astype("int32"), {"units": "millibars", "long_name": "pressure_level"})
    ds = xr.Dataset(data_vars, coords=coords,
                    attrs={"Conventions": "CF-1.6",
                           "history": "synthetic values written by geodiff in the legacy CDS netCDF layout"})
    for name in ("longitude", "latitude", "time") + (("level",) if kind == "pressure" else ()):
        encoding[name] = {"_FillValue": None}
    path = directory / f"era5_{'pressure' if kind == 'pressure' else 'single'}_levels_{date.replace('-', '')}.nc"
    ds.to_netcdf(path, encoding=encoding, format="NETCDF3_64BIT")
    return [path]


# ---------------------------------------------------------------------------------------------------------------
# satellites, topography, stations


def write_gridsat(
    directory: str | Path, when: str = "2000-01-01T00", *, lat_range: Sequence[float] = (-5.0, 5.0)
) -> Path:
    """Write ``GRIDSAT-B1.YYYY.MM.DD.HH.v02r01.nc``: the 0.07 deg global grid on a latitude band.

    Real files cover 70S..70N (2000 x 5143); this writer keeps the grid definition (centres at
    ``-70 + 0.07 i``, ``-180 + 0.07 j``, all 5143 longitudes) and writes the rows in ``lat_range``. ``irwin_cdr``,
    ``irwin_2`` and ``irwvp`` are int16 ``(time, lat, lon)`` with ``scale_factor=0.01``, ``add_offset=200``,
    ``_FillValue=-31999`` and packed ``valid_min``/``valid_max``; ``satid_ir`` is int8.
    """
    import xarray as xr

    stamp = np.datetime64(when, "h")
    lat_all = np.round(-70.0 + 0.07 * np.arange(2000), 4)
    lat = lat_all[(lat_all >= lat_range[0]) & (lat_all <= lat_range[1])].astype("float32")
    lon = np.round(-180.0 + 0.07 * np.arange(5143), 4).astype("float32")
    lat2, lon2 = np.meshgrid(np.deg2rad(lat.astype("float64")), np.deg2rad(lon.astype("float64")), indexing="ij")
    tb = 290.0 - 60.0 * np.exp(-(((lat2 - 0.05) / 0.05) ** 2)) * (0.5 + 0.5 * np.cos(3 * lon2))
    tb = tb[None]
    tb_packed = np.round((tb - 200.0) / 0.01).astype("int16")
    tb_packed[..., :50] = -31999  # a strip without satellite coverage
    packing = {"scale_factor": np.float32(0.01), "add_offset": np.float32(200.0)}
    base = {"units": "K", "valid_min": np.int16(-20000), "valid_max": np.int16(16000), **packing}
    data_vars = {
        "irwin_cdr": (("time", "lat", "lon"), tb_packed, {
            "long_name": "Brightness Temperature, IR window channel (CDR-quality)",
            "standard_name": "toa_brightness_temperature", **base}),
        "irwin_2": (("time", "lat", "lon"), tb_packed, {
            "long_name": "Brightness Temperature, IR window channel (secondary satellite)", **base}),
        "irwvp": (("time", "lat", "lon"), np.round((tb - 40.0 - 200.0) / 0.01).astype("int16"), {
            "long_name": "Brightness Temperature, IR water vapor channel", **base}),
        "satid_ir": (("time", "lat", "lon"), np.full(tb.shape, 3, "int8"), {
            "long_name": "Satellite index for IR window channel"}),
    }
    hours = (stamp - np.datetime64("1970-01-01T00", "h")).astype("int64")
    coords = {
        "time": ("time", np.asarray([hours * 3600], "int32"), {"standard_name": "time", "long_name": "time",
                                                               "units": "seconds since 1970-01-01 00:00:00 UTC",
                                                               "calendar": "standard", "axis": "T"}),
        "lat": ("lat", lat, {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north",
                             "axis": "Y"}),
        "lon": ("lon", lon, {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east",
                             "axis": "X"}),
    }
    attrs = {"Conventions": "CF-1.6, ACDD-1.3", "title": "Gridded Satellite (GridSat-B1) data, v02r01",
             "id": "GRIDSAT-B1", "geospatial_lat_resolution": "0.07 degrees",
             "history": "format-faithful synthetic file written by geodiff (latitude band only)"}
    ds = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    # the values are already packed integers: written as they are, the packing declared by the attributes
    encoding: dict[str, dict[str, Any]] = {
        name: {"dtype": "int16", "_FillValue": np.int16(-31999), "zlib": True, "complevel": 1}
        for name in ("irwin_cdr", "irwin_2", "irwvp")
    }
    encoding["satid_ir"] = {"dtype": "int8", "_FillValue": np.int8(-1), "zlib": True, "complevel": 1}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ts = str(stamp)
    path = directory / f"GRIDSAT-B1.{ts[:4]}.{ts[5:7]}.{ts[8:10]}.{ts[11:13]}.v02r01.nc"
    for name in ("time", "lat", "lon"):
        encoding[name] = {"_FillValue": None}
    ds.to_netcdf(path, encoding=encoding)
    return path


#: Sounder climate-data-record products: file name, variable, units, grid (see :mod:`geodiff.adapters.sounders`).
SOUNDER_FIXTURES: dict[str, dict[str, Any]] = {
    "amsua_tmt": {"file": "NESDIS-STAR_TCDR_MSU-AMSUA_V05R00_TMT_S200001_E200003.nc", "variable": "tcdr_TMT",
                  "units": "K", "long_name": "Mid-tropospheric layer temperature (TMT)", "step": 2.5},
    "hirs_olr": {"file": "olr-monthly_v02r07_200001_200003.nc", "variable": "olr", "units": "W m-2",
                 "long_name": "NOAA Climate Data Record of monthly mean upward longwave flux at top of the atmosphere",
                 "standard_name": "toa_outgoing_longwave_flux", "step": 2.5},
    "hirs_uth": {"file": "HIRS_UTH_monthly_v01r00_200001_200003.nc", "variable": "uth", "units": "%",
                 "long_name": "Upper tropospheric humidity (HIRS channel 12)", "step": 2.5},
    "mhs_uth": {"file": "MHS_UTH_monthly_v01r00_200001_200003.nc", "variable": "uth", "units": "%",
                "long_name": "Upper tropospheric humidity (MHS channel 3, 183.31+-1 GHz)", "step": 1.0},
}


def write_sounder(directory: str | Path, product: str = "amsua_tmt", months: int = 3) -> Path:
    """Write a monthly gridded sounder climate data record (see :data:`SOUNDER_FIXTURES`).

    Dims ``time, lat, lon``; lat ascending cell centres, lon 0..360 (NOAA CDR convention); float32 data with
    ``_FillValue -9999``; time in days since 1978-01-01 (standard calendar).
    """
    import xarray as xr

    if product not in SOUNDER_FIXTURES:
        raise KeyError(f"no sounder product {product!r}; products are {sorted(SOUNDER_FIXTURES)}")
    spec = SOUNDER_FIXTURES[product]
    step = spec["step"]
    lat = np.arange(-90.0 + step / 2, 90.0, step)
    lon = np.arange(step / 2, 360.0, step)
    lat2, lon2 = np.meshgrid(np.deg2rad(lat), np.deg2rad(lon), indexing="ij")
    month = np.arange(months, dtype="float64")[:, None, None]
    if product == "amsua_tmt":
        values = 250.0 + 15.0 * np.cos(lat2)[None] ** 2 + 0.5 * np.sin(month)
    elif product == "hirs_olr":
        values = 150.0 + 120.0 * np.cos(lat2)[None] ** 2 - 30.0 * np.exp(-(lat2[None] / 0.2) ** 2)
    else:
        values = 20.0 + 40.0 * np.exp(-(lat2[None] / 0.25) ** 2) + 5.0 * np.cos(lon2)[None] + 0 * month
    values = np.broadcast_to(values, (months,) + lat2.shape).astype("float32").copy()
    values[:, :2] = np.nan  # polar rows without data
    days = [(_dt.date(2000, 1 + m, 15) - _dt.date(1978, 1, 1)).days for m in range(months)]
    attrs = {"units": spec["units"], "long_name": spec["long_name"]}
    if "standard_name" in spec:
        attrs["standard_name"] = spec["standard_name"]
    ds = xr.Dataset(
        {spec["variable"]: (("time", "lat", "lon"), values, attrs)},
        coords={
            "time": ("time", np.asarray(days, "float64"), {"units": "days since 1978-01-01 00:00:00",
                                                           "standard_name": "time", "calendar": "standard"}),
            "lat": ("lat", lat.astype("float32"), {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("lon", lon.astype("float32"), {"units": "degrees_east", "standard_name": "longitude"}),
        },
        attrs={"Conventions": "CF-1.6", "title": spec["long_name"],
               "history": "format-faithful synthetic file written by geodiff"},
    )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / spec["file"]
    ds.to_netcdf(path, encoding={spec["variable"]: {"_FillValue": np.float32(-9999.0)},
                                 "time": {"_FillValue": None}, "lat": {"_FillValue": None},
                                 "lon": {"_FillValue": None}})
    return path


def write_gebco(path: str | Path, *, tile: Sequence[float] = (170.0, -10.0, -170.0, 10.0)) -> Path:
    """Write ``GEBCO_2023.nc`` at full size (43200 x 86400, 15 arc-seconds) with only ``tile`` filled in.

    ``elevation`` is int16 ``(lat, lon)`` in m (``standard_name`` height_above_mean_sea_level), chunked
    240 x 240 and compressed; chunks outside ``tile = (west, south, east, north)`` are never written, so the file
    is about 1 MB while reading all of it would need 7.5 GB: a test that the adapter never loads it whole.
    Inside the tile, elevation is ``-4000 + 10 * (lat + lon offset)`` metres (an easy oracle).
    """
    import netCDF4

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_lat, n_lon, res = 43200, 86400, 1.0 / 240.0
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.setncatts({"Conventions": "CF-1.6",
                      "title": "The GEBCO_2023 Grid - a continuous terrain model for oceans and land at 15 arc-second"
                               " intervals (format-faithful synthetic file: one tile written)",
                      "institution": "On behalf of the General Bathymetric Chart of the Oceans (GEBCO) (layout)",
                      "source": "synthetic", "history": "written by geodiff.testing.products.write_gebco",
                      "node_offset": np.int32(1)})
        nc.createDimension("lat", n_lat)
        nc.createDimension("lon", n_lon)
        lat = nc.createVariable("lat", "f8", ("lat",))
        lat.setncatts({"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north", "axis": "Y",
                       "sdn_parameter_urn": "SDN:P01::ALATZZ01", "sdn_parameter_name": "Latitude north",
                       "sdn_uom_urn": "SDN:P06::DEGN", "sdn_uom_name": "Degrees north"})
        lat[:] = -90.0 + (np.arange(n_lat) + 0.5) * res
        lon = nc.createVariable("lon", "f8", ("lon",))
        lon.setncatts({"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east", "axis": "X",
                       "sdn_parameter_urn": "SDN:P01::ALONZZ01", "sdn_parameter_name": "Longitude east",
                       "sdn_uom_urn": "SDN:P06::DEGE", "sdn_uom_name": "Degrees east"})
        lon[:] = -180.0 + (np.arange(n_lon) + 0.5) * res
        crs = nc.createVariable("crs", "i4")
        crs.setncatts({"grid_mapping_name": "latitude_longitude", "epsg_code": "EPSG:4326",
                       "semi_major_axis": 6378137.0, "inverse_flattening": 298.257223563})
        elev = nc.createVariable("elevation", "i2", ("lat", "lon"), zlib=True, complevel=1, chunksizes=(240, 240))
        elev.setncatts({"standard_name": "height_above_mean_sea_level", "long_name": "Elevation relative to sea level",
                        "units": "m", "grid_mapping": "crs", "sdn_parameter_urn": "SDN:P01::ALATZZ01",
                        "sdn_parameter_name": "Sea floor height (above mean sea level) {bathymetric height}",
                        "sdn_uom_urn": "SDN:P06::ULAA", "sdn_uom_name": "Metres"})
        west, south, east, north = tile
        rows = slice(int(np.floor((south + 90.0) * 240)), int(np.ceil((north + 90.0) * 240)))
        lat_rows = -90.0 + (np.arange(rows.start, rows.stop) + 0.5) * res

        def _cols(w: float, e: float) -> slice:
            return slice(int(np.floor((w + 180.0) * 240)), int(np.ceil((e + 180.0) * 240)))

        pieces = [_cols(west, east)] if west <= east else [_cols(west, 180.0), _cols(-180.0, east)]
        for cols in pieces:
            lon_cols = -180.0 + (np.arange(cols.start, cols.stop) + 0.5) * res
            offset = np.where(lon_cols < 0, lon_cols + 360.0, lon_cols) - 170.0
            elev[rows, cols] = np.round(-4000.0 + 10.0 * (lat_rows[:, None] + offset[None, :])).astype("int16")
    return path


def write_stations_csv(path: str | Path, *, n_stations: int = 6, hours: int = 4, seed: int = 0) -> Path:
    """Write a station CSV: ``station_id, lat, lon, time, t2m`` (degC), ``t2m_error`` (K), with a missing value."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    lat = rng.uniform(-60.0, 60.0, n_stations)
    lon = rng.uniform(-180.0, 180.0, n_stations)
    rows = []
    for s in range(n_stations):
        for h in range(hours):
            value = 30.0 * np.cos(np.deg2rad(lat[s])) ** 2 - 5.0 + 0.5 * h
            rows.append({"station_id": f"ST{s:03d}", "lat": round(lat[s], 4), "lon": round(lon[s], 4),
                         "time": f"2000-01-01T{h:02d}:00:00Z", "t2m": round(value, 3), "t2m_error": 0.5})
    rows[1]["t2m"] = float("nan")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def write_stations_netcdf(path: str | Path, *, n_stations: int = 5, hours: int = 3) -> Path:
    """Write a CF discrete-sampling-geometry ``timeSeries`` file: ``tas(station, time)`` in K with station lat/lon."""
    import xarray as xr

    lat = np.linspace(-40.0, 40.0, n_stations)
    lon = np.linspace(-170.0, 170.0, n_stations)
    times = np.datetime64("2000-01-01T00", "ns") + np.arange(hours) * np.timedelta64(1, "h")
    tas = 273.15 + 30.0 * np.cos(np.deg2rad(lat))[:, None] ** 2 - 5.0 + 0.1 * np.arange(hours)[None]
    tas[0, 0] = np.nan
    ds = xr.Dataset(
        {"tas": (("station", "time"), tas.astype("float32"), {"units": "K", "standard_name": "air_temperature",
                                                              "coordinates": "lat lon station_name"})},
        coords={
            "time": ("time", times, {"standard_name": "time"}),
            "lat": ("station", lat, {"standard_name": "latitude", "units": "degrees_north"}),
            "lon": ("station", lon, {"standard_name": "longitude", "units": "degrees_east"}),
            "station_name": ("station", np.array([f"WMO{i:05d}" for i in range(n_stations)]),
                             {"cf_role": "timeseries_id"}),
        },
        attrs={"featureType": "timeSeries", "Conventions": "CF-1.8",
               "history": "format-faithful synthetic file written by geodiff"},
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path, encoding={"tas": {"_FillValue": np.float32(-999.0)}, "station_name": {"dtype": "S1"}})
    return path


def write_demo_files(root: str | Path) -> Path:
    """Write the files of the adapters notebook under ``root``: the CMIP6 tree, one EN4 analysis, one profile file.

    >>> import tempfile
    >>> root = write_demo_files(tempfile.mkdtemp())
    >>> sorted(p.name for p in (root / "EN4").iterdir())
    ['EN.4.2.2.f.analysis.g10.200001.nc', 'EN.4.2.2.f.profiles.g10.200001.nc']
    """
    root = Path(root)
    write_cmip6_tree(root)
    write_en4_analysis(root / "EN4")
    write_en4_profiles(root / "EN4")
    return root


#: Where :func:`write_catalog_tree` puts each catalog entry's files (relative to the data root).
def _catalog_writers() -> dict[str, Any]:
    return {
        "cmip6_thetao": lambda root: write_cmip6_tree(root),
        "en4_analysis": lambda root: [write_en4_analysis(root / "EN4")],
        "en4_profiles": lambda root: [write_en4_profiles(root / "EN4")],
        "era5_pressure_levels": lambda root: write_era5(root / "ERA5/cds/pressure-levels", layout="cds",
                                                        kind="pressure"),
        "era5_single_levels": lambda root: write_era5(root / "ERA5/cds/single-levels", layout="cds", kind="single"),
        "era5_pressure_levels_legacy": lambda root: write_era5(root / "ERA5/legacy", layout="legacy",
                                                               kind="pressure"),
        "era5_single_levels_legacy": lambda root: write_era5(root / "ERA5/legacy", layout="legacy", kind="single"),
        "gridsat_b1": lambda root: [write_gridsat(root / "GRIDSAT")],
        "amsua_tmt": lambda root: [write_sounder(root / "SOUNDERS", "amsua_tmt")],
        "hirs_olr": lambda root: [write_sounder(root / "SOUNDERS", "hirs_olr")],
        "hirs_uth": lambda root: [write_sounder(root / "SOUNDERS", "hirs_uth")],
        "mhs_uth": lambda root: [write_sounder(root / "SOUNDERS", "mhs_uth")],
        "gebco_2023": lambda root: [write_gebco(root / "GEBCO/GEBCO_2023.nc")],
        "stations_csv": lambda root: [write_stations_csv(root / "STATIONS/stations.csv")],
        "stations_timeseries": lambda root: [write_stations_netcdf(root / "STATIONS/stations_timeseries.nc")],
    }


def write_catalog_tree(root: str | Path, only: Sequence[str] | None = None) -> Path:
    """Write a file for every entry of ``data_catalog/products.yaml`` (or the entries in ``only``) under ``root``.

    The places match the entries' ``urlpath`` (and the CMIP6 collection's paths), so that
    ``geodiff.catalog.open(name, root=root)`` works for each entry. Returns ``root``.
    """
    root = Path(root)
    writers = _catalog_writers()
    unknown = [n for n in (only or []) if n not in writers]
    if unknown:
        raise KeyError(f"no fixture writer for catalog entries {unknown}; entries are {sorted(writers)}")
    for name in only or sorted(writers):
        writers[name](root)
    return root
