"""CMIP6 ocean output (e.g. ``thetao``, Omon) -> canonical datasets on a target grid, and stacked training sets.

Models write on their native grids: curvilinear 2-D ``lat``/``lon`` (``nlat, nlon`` in CESM, ``j, i`` with
``latitude``/``longitude`` in MPI-ESM and UKESM), ``lev`` in centimetres in some models (CESM) and metres in
others, ``_FillValue = 1e20`` on land, calendars ``noleap``, ``360_day`` or ``proleptic_gregorian``.

* :func:`open_dataset` reads one model run (one or more files) and standardizes it on its native grid (units,
  ``lev`` -> ``depth`` in m, 2-D coordinates renamed ``lat``/``lon``, calendar kept).
* :func:`to_grid` regrids it to a target grid (any grid with 1-D lat/lon, e.g. :func:`~geodiff.adapters.regrid.en4_grid`
  or an EN4 analysis) and interpolates to the target depths (no extrapolation below the deepest valid level).
* :func:`search` queries an intake-esm ESM collection (``source_id``, ``experiment_id``, ``member_id``,
  ``variable_id``, ``table_id``, ``grid_label``...); :func:`open_collection` opens every matching run, puts it on
  the target grid and stacks models and members into one training set with :func:`stack_members`.

The training set has dims ``(time, depth, lat, lon)``: ``time`` numbers the samples (0..N-1, unique) and the
non-index coordinates ``source_id``, ``member_id``, ``model_time`` (ISO text in the model's own calendar) and
``calendar`` say where each sample comes from, so models with different calendars can be stacked without
converting dates.

Example
-------
>>> import tempfile
>>> from geodiff.adapters import cmip6, regrid
>>> from geodiff.testing import products
>>> path = products.write_cmip6(tempfile.mkdtemp(), "CESM2")
>>> native = cmip6.open_dataset(path)
>>> native.thetao.dims, native.depth.attrs["units"], float(native.depth[0])
(('time', 'depth', 'nlat', 'nlon'), 'm', 5.0)
>>> on_grid = cmip6.to_grid(native, regrid.regular_grid(10.0), depth=[10.0, 100.0])
>>> on_grid.thetao.dims, on_grid.thetao.shape
(('time', 'depth', 'lat', 'lon'), (3, 2, 18, 36))
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from geodiff.adapters.files import netcdf_files, open_netcdf_files
from geodiff.adapters.regrid import regrid, target_grid
from geodiff.adapters.standardize import (
    CANONICAL_UNITS,
    calendar_of,
    check_calendars,
    record,
    standardize,
)
from geodiff.errors import CalendarError, DataError, GridError, UnitsError
from geodiff.io.paths import Location, exists, is_url, is_zarr, join
from geodiff.io.paths import open_dataset as open_location

__all__ = ["open_collection", "open_dataset", "search", "stack_members", "to_grid"]

_QUERY_COLUMNS = ("activity_id", "institution_id", "source_id", "experiment_id", "member_id", "table_id",
                  "variable_id", "grid_label", "version")


def _open(locations: Sequence[Location]) -> tuple[xr.Dataset, list[str]]:
    """The run stored at ``locations`` (netCDF files or zarr stores, local or URLs) as one lazy dataset along
    ``time``, and the names of its files or stores."""
    decode = xr.coders.CFDatetimeCoder(use_cftime=True)
    if not any(is_url(location) or is_zarr(location) for location in locations):
        files = netcdf_files(locations, "CMIP6")
        return open_netcdf_files(files, "CMIP6", along="time", decode_times=decode), [p.name for p in files]
    parts = [open_location(location, decode_times=decode).unify_chunks() for location in locations]
    ds = parts[0] if len(parts) == 1 else xr.concat(parts, "time", data_vars="minimal", coords="minimal",
                                                     compat="override", join="override")
    return ds, [posixpath.basename(str(location).rstrip("/")) for location in locations]


def open_dataset(
    paths: Location | Sequence[Location],
    variable: str = "thetao",
    *,
    units: str | None = None,
    lon: str = "-180..180",
) -> xr.Dataset:
    """One model run (one file or consecutive files of it, or a zarr store) on its native grid, standardized.

    ``paths``: netCDF files or zarr stores (v2 or v3, as in the Pangeo CMIP6 cloud collection), local paths or
    fsspec URLs (:mod:`geodiff.io.paths`). ``units`` is the canonical unit of ``variable`` (default from its
    ``standard_name``, degC for ``thetao``). Calendars are kept (cftime dates). Land (``_FillValue`` 1e20) is
    NaN. See the module example.

    Raises :class:`~geodiff.errors.DataError` when ``variable`` is not in the files, and the errors of
    :func:`~geodiff.adapters.standardize.standardize` on bad units or coordinates.
    """
    ds, names = _open([paths] if isinstance(paths, (str, Path)) else list(paths))
    if variable not in ds.data_vars:
        raise DataError(f"variable {variable!r} is not in {names}; found {list(ds.data_vars)}")
    keep = [variable] + [n for n in ds.data_vars if n != variable and ("bnds" in str(n) or "vertices" in str(n))]
    ds = ds[keep]
    if units is None:
        units = CANONICAL_UNITS.get(str(ds[variable].attrs.get("standard_name")), ds[variable].attrs.get("units"))
    if units is None:
        raise UnitsError(f"variable {variable!r} has no 'units' attribute and no canonical unit was given")
    out = standardize(ds, variables={variable: units}, lon=lon)
    out.attrs["geodiff_source_files"] = json.dumps(names)
    return out


def to_grid(
    ds: xr.Dataset,
    target: Any,
    *,
    depth: Any = None,
    method: str = "idw",
    k: int | None = None,
    land: str = "nearest",
    target_mask: xr.DataArray | None = None,
    lon: str | None = None,
) -> xr.Dataset:
    """``ds`` (from :func:`open_dataset`) regridded to ``target`` and interpolated to its (or ``depth``) levels.

    See :func:`geodiff.adapters.regrid.regrid` for ``method``, ``k``, ``land`` and ``target_mask``. The result is
    standardized again (lat ascending, one longitude convention: ``lon`` or the dataset's).

    >>> import tempfile
    >>> from geodiff.testing import products
    >>> from geodiff.adapters.regrid import regular_grid
    >>> native = open_dataset(products.write_cmip6(tempfile.mkdtemp(), "MPI-ESM1-2-LR"))
    >>> to_grid(native, regular_grid(45.0), depth=[6.0, 7000.0]).thetao.isel(time=0, lat=2, lon=0).values.tolist()
    [23.01..., nan]
    """
    out = regrid(ds, target, depth=depth, method=method, k=k, land=land, target_mask=target_mask)
    names = [n for n in out.data_vars if {"lat", "lon"} <= set(out[n].dims)]
    convention = lon or ds.attrs.get("geodiff_lon_convention", "-180..180")
    # values were checked on the native grid; checking again would compute the regridding
    return standardize(out, variables={n: out[n].attrs["units"] for n in names if "units" in out[n].attrs},
                       lon=convention, check_values=False)


def _time_labels(ds: xr.Dataset) -> list[str]:
    values = ds["time"].values
    out = []
    for value in values:
        if isinstance(value, np.datetime64):
            out.append(str(np.datetime_as_string(value, unit="s")))
        else:
            out.append(value.isoformat())
    return out


def stack_members(
    datasets: Sequence[xr.Dataset],
    labels: Sequence[Mapping[str, str]] | None = None,
    *,
    calendars: str = "label",
    mask: str = "common",
) -> xr.Dataset:
    """Stack datasets on the same grid (models, members) into one training set along ``time`` (samples).

    ``labels`` gives per dataset ``{"source_id": ..., "member_id": ...}`` (default from global attributes
    ``source_id`` / ``variant_label``). ``calendars="strict"`` raises :class:`~geodiff.errors.CalendarError` when
    calendars differ; ``"label"`` keeps each sample's date as text in its own calendar (coordinate
    ``model_time``, with ``calendar``). ``mask="common"`` sets NaN wherever any sample is NaN, so that every
    sample has the same land mask (the codec needs one); ``"keep"`` leaves each sample's own NaNs.

    >>> import cftime, numpy as np, xarray as xr
    >>> def run(cal, value):
    ...     t = [cftime.datetime(2000, m, 15, calendar=cal) for m in (1, 2)]
    ...     return xr.Dataset({"thetao": (("time", "lat", "lon"), np.full((2, 2, 2), value), {"units": "degC"})},
    ...                       coords={"time": t, "lat": [0.0, 1.0], "lon": [0.0, 1.0]})
    >>> train = stack_members([run("noleap", 1.0), run("360_day", 2.0)],
    ...                       [{"source_id": "A", "member_id": "r1"}, {"source_id": "B", "member_id": "r1"}])
    >>> train.time.values.tolist(), train.source_id.values.tolist(), train.calendar.values.tolist()[1:3]
    ([0, 1, 2, 3], ['A', 'A', 'B', 'B'], ['noleap', '360_day'])
    """
    if not datasets:
        raise DataError("stack_members needs at least one dataset")
    if calendars not in ("strict", "label"):
        raise CalendarError(f"calendars must be 'strict' or 'label', got {calendars!r}")
    if mask not in ("common", "keep"):
        raise GridError(f"mask must be 'common' or 'keep', got {mask!r}")
    if labels is None:
        labels = [{"source_id": str(ds.attrs.get("source_id", f"dataset{i}")),
                   "member_id": str(ds.attrs.get("variant_label", ds.attrs.get("member_id", "")))}
                  for i, ds in enumerate(datasets)]
    if len(labels) != len(datasets):
        raise DataError(f"{len(labels)} labels for {len(datasets)} datasets")
    names = [f"{lab.get('source_id')}/{lab.get('member_id')}" for lab in labels]
    if calendars == "strict":
        check_calendars(*datasets, names=names)
    first = datasets[0]
    variables = [n for n in first.data_vars if {"lat", "lon", "time"} <= set(first[n].dims)]
    if not variables:
        raise GridError("the first dataset has no data variable with dims (time, ..., lat, lon)")
    pieces = []
    offset = 0
    for ds, lab, name in zip(datasets, labels, names):
        for dim in ("lat", "lon", "depth", "level"):
            if (dim in first.dims) != (dim in ds.dims):
                raise GridError(f"{name} and {names[0]} differ in having a {dim!r} dimension")
            if dim in first.dims and not np.allclose(np.asarray(ds[dim], "float64"), np.asarray(first[dim], "float64")):
                raise GridError(f"{name} is on another grid than {names[0]} (coordinate {dim!r}); regrid both first")
        for var in variables:
            if var not in ds.data_vars:
                raise DataError(f"{name} has no variable {var!r}")
            if ds[var].attrs.get("units") != first[var].attrs.get("units"):
                raise UnitsError(
                    f"variable {var!r} is in {ds[var].attrs.get('units')!r} in {name} but in "
                    f"{first[var].attrs.get('units')!r} in {names[0]}; standardize both to one unit"
                )
        n = ds.sizes["time"]
        cal = calendar_of(ds) or "none"
        piece = ds[variables].drop_vars([c for c in ds[variables].coords if "time" in ds[c].dims])
        text = {  # object-dtype strings: variable-length in netCDF and zarr v3
            "source_id": [lab.get("source_id", "")] * n, "member_id": [lab.get("member_id", "")] * n,
            "model_time": _time_labels(ds), "calendar": [cal] * n,
        }
        piece = piece.assign_coords(
            time=("time", np.arange(offset, offset + n)),
            **{key: ("time", np.array(values, dtype=object)) for key, values in text.items()},
        )
        piece.attrs = {}
        pieces.append(piece)
        offset += n
    stacked = xr.concat(pieces, dim="time", data_vars="all", coords="different", compat="equals", join="exact",
                        combine_attrs="drop")
    for var in variables:
        stacked[var].attrs = dict(first[var].attrs)
        stacked[var].encoding = {}
    for dim in ("lat", "lon", "depth", "level"):
        if dim in stacked.coords:
            stacked[dim].attrs = dict(first[dim].attrs)
    stacked["time"].attrs = {"long_name": "training sample index",
                             "comment": "samples stacked over source_id, member_id and model_time"}
    changes = [f"stacked {len(datasets)} runs ({', '.join(names)}) into {offset} samples along 'time'"]
    if mask == "common":
        import dask

        counts = dask.compute(*[stacked[var].notnull().sum("time") for var in variables])
        for var, count in zip(variables, counts):
            valid = count == stacked.sizes["time"]
            removed = int(((count > 0) & ~valid).sum())
            stacked[var] = stacked[var].where(valid)
            if removed:
                changes.append(f"common land mask for {var!r}: {removed} cells valid in some runs only set to NaN")
    attrs = {
        "title": "geodiff training set",
        "geodiff_lon_convention": first.attrs.get("geodiff_lon_convention", "-180..180"),
        "source_ids": json.dumps(sorted({lab.get("source_id", "") for lab in labels})),
        "history": "\n".join(f"[{name}] {line}" for ds, name in zip(datasets, names)
                             for line in str(ds.attrs.get("history", "")).splitlines() if line),
    }
    stacked.attrs = {k: v for k, v in attrs.items() if v}
    return record(stacked, changes, step="stack_members")


def _collection(collection: Any) -> Any:
    try:
        import intake_esm
    except ImportError as err:  # an optional extra
        raise DataError("searching an ESM collection needs intake-esm: pip install 'geodiffusion[catalog]'") from err
    if isinstance(collection, intake_esm.esm_datastore):
        return collection
    if not exists(collection):
        raise DataError(f"ESM collection {str(collection)!r} does not exist")
    return intake_esm.esm_datastore(str(collection))


def search(collection: Any, **query: Any) -> Any:
    """Rows (a pandas DataFrame) of an intake-esm ESM collection (JSON path or datastore) matching ``query``.

    Query keys are collection columns (``source_id``, ``experiment_id``, ``member_id``, ``variable_id``,
    ``table_id``, ``grid_label``, ...); values are strings or lists of strings.

    >>> from geodiff.catalog import esm_collection_path
    >>> rows = search(esm_collection_path("cmip6"), source_id="CESM2", variable_id="thetao")
    >>> sorted(rows.member_id)
    ['r1i1p1f1', 'r2i1p1f1']
    """
    cat = _collection(collection)
    columns = set(cat.df.columns)
    unknown = [k for k in query if k not in columns]
    if unknown:
        raise DataError(f"unknown query keys {unknown}; the collection's columns are {sorted(columns)}")
    return cat.search(**query).df.copy()


def open_collection(
    collection: Any,
    *,
    target: Any,
    root: str | Path | None = None,
    depth: Any = None,
    method: str = "idw",
    k: int | None = None,
    land: str = "nearest",
    target_mask: xr.DataArray | None = None,
    calendars: str = "label",
    mask: str = "common",
    lon: str = "-180..180",
    progress: bool | None = None,
    **query: Any,
) -> xr.Dataset:
    """Search ``collection``, open each run, put it on ``target`` and stack all runs into a training set.

    ``progress`` shows a tqdm bar over the runs (``None``: only on a terminal).

    Relative paths in the collection are taken relative to ``root`` (default: the collection file's folder).
    One run is one (``source_id``, ``experiment_id``, ``member_id``, ``table_id``, ``variable_id``,
    ``grid_label``) group; its files are concatenated in time order. Exactly one ``variable_id`` must match.

    >>> import tempfile
    >>> from geodiff.catalog import esm_collection_path
    >>> from geodiff.testing import products
    >>> from geodiff.adapters.regrid import regular_grid
    >>> root = tempfile.mkdtemp()
    >>> _ = products.write_cmip6_tree(root)
    >>> train = open_collection(esm_collection_path(), root=root, target=regular_grid(30.0), depth=[10.0],
    ...                         source_id=["CESM2", "MPI-ESM1-2-LR"], member_id="r1i1p1f1")
    >>> dict(train.thetao.sizes), sorted(set(train.source_id.values.tolist()))
    ({'time': 6, 'depth': 1, 'lat': 6, 'lon': 12}, ['CESM2', 'MPI-ESM1-2-LR'])
    """
    rows = search(collection, **query)
    if rows.empty:
        raise DataError(f"no entry of the collection matches {query}")
    variables = sorted(set(rows["variable_id"]))
    if len(variables) != 1:
        raise DataError(f"the query matches variables {variables}; ask for one variable_id")
    if root is not None:
        base: Location = root
    elif isinstance(collection, (str, Path)):
        base = posixpath.dirname(collection) if is_url(collection) else Path(collection).parent
    else:
        raise DataError("pass root= (the folder the collection's relative paths start from) with a datastore object")
    assets = _collection(collection).esmcat.assets.column_name  # "path" (files) or "zstore" (Pangeo zarr stores)
    if assets not in rows.columns:
        raise DataError(f"the collection's asset column {assets!r} is not among its columns {sorted(rows.columns)}")
    keys = [c for c in ("source_id", "experiment_id", "member_id", "table_id", "variable_id", "grid_label")
            if c in rows.columns]
    runs, labels = [], []
    target_grid(target)  # fail early on a bad target
    groups = list(rows.groupby(keys, sort=True))
    for key, group in tqdm(groups, desc="CMIP6 runs", unit="run", disable=None if progress is None else not progress):
        meta = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        native = open_dataset([join(base, p) for p in group[assets]], variables[0], lon=lon)
        runs.append(to_grid(native, target, depth=depth, method=method, k=k, land=land, target_mask=target_mask,
                            lon=lon))
        labels.append({"source_id": meta.get("source_id", ""), "member_id": meta.get("member_id", "")})
    return stack_members(runs, labels, calendars=calendars, mask=mask)
