"""Open an input file, checked: the one opener of the ``geodiff`` commands and of the API where a path is given.

A file that cannot be what its name says is refused with an error naming it, before any value is used:

- a netCDF file (``.nc``, ``.nc4``, ``.netcdf``) that is empty, cut short by a killed writer (the netCDF library
  would read the missing bytes as zeros), or is not netCDF at all (a text file named ``.nc``):
  :class:`~geodiff.errors.DataError` (:func:`check_input_file`, :func:`~geodiff.adapters.files.check_netcdf`);
- a zarr store without metadata, or with a chunk that does not decode (a corrupted compressed chunk):
  :class:`~geodiff.errors.DataError` naming the store and the variable (every chunk is read once, streamed, when
  ``verify=True``);
- a CSV table that cannot be parsed, or whose ``time`` column holds values that are not times:
  :class:`~geodiff.errors.ObservationError` naming the file, the column, the row and the value.

:func:`check_input_file` holds the file checks alone (no opening), for readers that open files themselves.

Example
-------
>>> import tempfile, pathlib
>>> from geodiff.inputs import open_input
>>> path = pathlib.Path(tempfile.mkdtemp()) / "table.nc"
>>> _ = path.write_text("lat,lon,value\\n1,2,3\\n")
>>> open_input(path)
Traceback (most recent call last):
...
geodiff.errors.DataError: input ...table.nc is not a netCDF file (it starts with b'lat,lon,'); ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geodiff.errors import ConfigError, DataError, ObservationError

__all__ = ["open_input", "check_input_file", "NETCDF_SUFFIXES", "parse_times"]

NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf")
_ZARR_METADATA = ("zarr.json", ".zgroup", ".zarray", ".zmetadata")


def _is_zarr(path: Path) -> bool:
    return path.suffix == ".zarr" or any((path / name).exists() for name in _ZARR_METADATA)


def check_input_file(path: str | Path) -> str:
    """The kind of input at ``path`` (``"netcdf"``, ``"zarr"`` or ``"csv"``) after the checks that need no
    decoding: it exists, a netCDF file is complete and is netCDF, a zarr store has metadata.
    :class:`~geodiff.errors.DataError` (or ConfigError for an unknown suffix) naming the file otherwise."""
    from geodiff.adapters.files import check_netcdf

    path = Path(path)
    if not path.exists():
        raise DataError(f"input {path} does not exist")
    if _is_zarr(path):
        if not path.is_dir() or not any((path / name).exists() for name in _ZARR_METADATA):
            raise DataError(f"input {path} is not a zarr store (no {' or '.join(_ZARR_METADATA[:2])} in it)")
        return "zarr"
    if path.suffix in NETCDF_SUFFIXES:
        if path.is_dir():
            raise DataError(f"input {path} is a folder, not a netCDF file")
        if check_netcdf(path) == "other":
            with path.open("rb") as stream:
                start = stream.read(8)
            raise DataError(f"input {path} is not a netCDF file (it starts with {start!r}); give a netCDF-3 or "
                            "netCDF-4 file, a .zarr store or a .csv table")
        return "netcdf"
    if path.suffix == ".csv":
        if path.stat().st_size == 0:
            raise DataError(f"input {path} is empty (0 bytes)")
        return "csv"
    raise ConfigError(f"cannot open {path}: expected a .nc, .zarr or .csv file")


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
    import numpy as np
    import pandas as pd

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


def _open_zarr(path: Path, verify: bool) -> Any:
    import dask
    import xarray as xr

    try:
        ds = xr.open_zarr(path)
    except Exception as err:  # zarr raises many unrelated types on a damaged store
        raise DataError(f"input {path} cannot be opened as a zarr store: {type(err).__name__}: {err}") from err
    if verify:
        import numpy as np

        for name, var in ds.variables.items():
            data = var.data
            if not hasattr(data, "map_blocks"):
                continue  # in memory already: it was read (and decoded) on opening
            one_per_chunk = tuple((1,) * len(sizes) for sizes in data.chunks)
            try:
                dask.compute(data.map_blocks(lambda block: np.zeros((1,) * block.ndim, bool), chunks=one_per_chunk,
                                             dtype=bool))
            except Exception as err:  # a chunk that does not decode (zstd, blosc, crc32c, ...)
                raise DataError(f"input {path}: variable {name!r} has a chunk that cannot be read "
                                f"({type(err).__name__}: {err}); the store is corrupt: write or copy it again"
                                ) from err
    return ds


def _open_csv(path: Path) -> Any:
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise ObservationError(f"input {path} cannot be read as a CSV table: {err}") from err
    if "time" in table.columns:
        table["time"] = parse_times(table["time"], f"column 'time' of {path}")
    return table


def open_input(path: str | Path, *, verify: bool = True) -> Any:
    """Open an input lazily after :func:`check_input_file`: ``.zarr`` and ``.nc`` as an ``xr.Dataset`` (dask),
    ``.csv`` as a ``pandas.DataFrame`` with ``time`` parsed. ``verify``: read every chunk of a zarr store once
    (streamed) so that a corrupted chunk is named here, not met in the middle of a computation."""
    import xarray as xr

    path = Path(path)
    kind = check_input_file(path)
    if kind == "zarr":
        return _open_zarr(path, verify)
    if kind == "csv":
        return _open_csv(path)
    try:
        return xr.open_dataset(path, chunks={})
    except (OSError, ValueError, RuntimeError) as err:
        raise DataError(f"input {path} cannot be read as netCDF: {err}") from err
