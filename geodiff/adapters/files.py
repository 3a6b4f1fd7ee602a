"""The input files of the adapters: one or several netCDF files of a product, each checked to be complete
(:func:`geodiff.inputs.check_netcdf`, re-exported here) before it is opened.

Every adapter checks its files with it before opening them, and
:func:`~geodiff.adapters.standardize.standardize` checks the file a dataset was opened from
(``ds.encoding["source"]``).

Example
-------
>>> netcdf_files([], "EN4")
Traceback (most recent call last):
...
geodiff.errors.DataError: no EN4 files given
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import xarray as xr

from geodiff.errors import DataError
from geodiff.inputs import INCOMPLETE, check_netcdf
from geodiff.io.paths import Location, exists, glob, is_folder, local_file

__all__ = ["check_netcdf", "netcdf_files", "INCOMPLETE"]


def netcdf_files(paths: Location | Sequence[Location], product: str, *, folder_glob: str | None = None) -> list[Path]:
    """The input files of an adapter, sorted, each checked to exist and to be complete (:func:`check_netcdf`).

    ``paths``: one path or URL, or several (:mod:`geodiff.io.paths`: a URL's file is fetched once into a local
    cache, under its own name); with ``folder_glob`` (e.g. ``"*.nc"``) a folder stands for its matching files.
    ``product`` names the product in the :class:`~geodiff.errors.DataError` messages.

    >>> netcdf_files([], "EN4")
    Traceback (most recent call last):
    ...
    geodiff.errors.DataError: no EN4 files given
    """
    if isinstance(paths, (str, os.PathLike)):
        items = glob(paths, folder_glob) if folder_glob and is_folder(paths) else [paths]
    else:
        items = list(paths)
    if not items:
        if folder_glob and isinstance(paths, (str, os.PathLike)):
            raise DataError(f"no {product} netCDF files found in {str(paths)!r} (looked for {folder_glob!r})")
        raise DataError(f"no {product} files given")
    missing = [str(p) for p in items if not exists(p)]
    if missing:
        raise DataError(f"{product} files {missing} do not exist")
    local = [local_file(item) for item in sorted(items, key=str)]
    for item in local:
        check_netcdf(item)
    return local


def open_netcdf_files(files: Sequence[Path], product: str, variables: Sequence[str] = (), *, along: str = "coords",
                      **open_options: Any) -> xr.Dataset:
    """Checked netCDF ``files`` of ``product`` (:func:`netcdf_files`) as one lazy dataset: one file as it is, several
    concatenated along ``time`` (``along="time"``) or combined by their coordinates (``along="coords"``).
    :class:`~geodiff.errors.DataError` names the files when they cannot be read and the ``variables`` missing."""
    try:
        if len(files) == 1:
            ds = xr.open_dataset(files[0], chunks={}, **open_options)
        elif along == "time":
            ds = xr.open_mfdataset([str(f) for f in files], combine="nested", concat_dim="time", data_vars="minimal",
                                   coords="minimal", compat="override", join="override", **open_options)
        else:
            ds = xr.open_mfdataset([str(f) for f in files], combine="by_coords", data_vars="minimal",
                                   coords="minimal", compat="override", **open_options)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot open {product} files {[str(f) for f in files]} ({INCOMPLETE} or not netCDF): {err}"
                        ) from err
    missing = [v for v in variables if v not in ds.data_vars]
    if missing:
        raise DataError(f"{product} variables {missing} not found in {files[0].name}; found {list(ds.data_vars)}")
    return ds
