"""Checks of input files, before any value is used: the checks :func:`geodiff.io.paths.open_input` (the opener of
the ``geodiff`` commands and of the API where a path is given) makes on what it opens.

- :func:`check_netcdf_input`: a netCDF file that is empty, cut short by a killed writer (the netCDF library would
  read the missing bytes as zeros), or is not netCDF at all (a text file named ``.nc``):
  :class:`~geodiff.errors.DataError` naming it (:func:`~geodiff.adapters.files.check_netcdf` reads the header only);
- :func:`verify_zarr_chunks`: a zarr store with a chunk that does not decode (a corrupted compressed chunk):
  :class:`~geodiff.errors.DataError` naming the store and the variable (every chunk is read once, streamed);
- :func:`read_table`: a CSV table that cannot be parsed, or whose ``time`` column holds values that are not
  times (:func:`~geodiff.observations.parse_times`): :class:`~geodiff.errors.ObservationError` naming the file, the column, the row and
  the value.

Example
-------
>>> import tempfile, pathlib
>>> from geodiff.inputs import check_netcdf_input
>>> path = pathlib.Path(tempfile.mkdtemp()) / "table.nc"
>>> _ = path.write_text("lat,lon,value\\n1,2,3\\n")
>>> check_netcdf_input(path)
Traceback (most recent call last):
...
geodiff.errors.DataError: input ...table.nc is not a netCDF file (it starts with b'lat,lon,'); ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from geodiff.errors import DataError, ObservationError

__all__ = ["check_netcdf_input", "verify_zarr_chunks", "read_table"]


def check_netcdf_input(path: str | Path, name: Any = None) -> None:
    """DataError naming ``name`` (default: ``path``) unless the local file ``path`` is a complete netCDF file
    (a URL's local copy is checked under the URL's ``name``)."""
    from geodiff.adapters.files import check_netcdf

    path = Path(path)
    label = path if name is None else name
    if path.is_dir():
        raise DataError(f"input {label} is a folder, not a netCDF file")
    if check_netcdf(path) == "other":  # DataError naming the file when it is missing, empty or cut short
        with path.open("rb") as stream:
            start = stream.read(8)
        raise DataError(f"input {label} is not a netCDF file (it starts with {start!r}); give a netCDF-3 or "
                        "netCDF-4 file, a .zarr store or a .csv table")


def verify_zarr_chunks(ds: Any, name: Any) -> None:
    """Read every chunk of every variable of the zarr-backed ``ds`` once (streamed, one bool kept per chunk);
    DataError naming the store ``name`` and the variable when a chunk cannot be read or decoded."""
    import dask
    import numpy as np

    for variable, var in ds.variables.items():
        data = var.data
        if not hasattr(data, "map_blocks"):
            continue  # in memory already: it was read (and decoded) on opening
        one_per_chunk = tuple((1,) * len(sizes) for sizes in data.chunks)
        try:
            dask.compute(data.map_blocks(lambda block: np.zeros((1,) * block.ndim, bool), chunks=one_per_chunk,
                                         dtype=bool))
        except Exception as err:  # a chunk that does not decode (zstd, blosc, crc32c, ...)
            raise DataError(f"input {name}: variable {variable!r} has a chunk that cannot be read "
                            f"({type(err).__name__}: {err}); the store is corrupt: write or copy it again") from err


def read_table(source: Any, name: Any, **read_options: Any) -> Any:
    """The CSV table at ``source`` (pandas), its ``time`` column parsed (:func:`~geodiff.observations.parse_times`); ObservationError
    naming ``name`` when it cannot be parsed."""
    import pandas as pd

    from geodiff.observations import parse_times

    try:
        table = pd.read_csv(source, **read_options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise ObservationError(f"input {name} cannot be read as a CSV table: {err}") from err
    if "time" in table.columns:
        table["time"] = parse_times(table["time"], f"column 'time' of {name}")
    return table
