"""Where data live: one opener for local paths and fsspec URLs (``memory://``, ``s3://``, ``gs://``, ``https://``).

Every place that takes a data path goes through this module, so a local file, a zarr store in an object store and
an in-memory store are opened the same way:

* :func:`is_url`, :func:`join`, :func:`exists`, :func:`filesystem`: locations as local paths or URLs;
* :func:`is_zarr`: a zarr store (v2 or v3) rather than a file;
* :func:`open_dataset`: a gridded dataset or observation table (netCDF, zarr v2/v3), lazily (dask);
* :func:`open_input`: any input of a command: netCDF, zarr or CSV.

Local paths stay local paths (``pathlib.Path`` or ``str``); anything with a protocol (``proto://``) is handed to
fsspec with ``storage_options`` (credentials, endpoint, anonymous access; see the filesystem's documentation). A
netCDF file behind a URL is cached locally once (fsspec ``simplecache``) and read with netCDF4; zarr stores are
read in place. Object stores need their fsspec package (``s3fs``, ``gcsfs``; ``aiohttp`` for http).

Example
-------
>>> import numpy as np, xarray as xr
>>> from geodiff.io.paths import open_dataset, is_zarr
>>> _ = xr.Dataset({"t": ("time", np.arange(3.0))}).to_zarr("memory://doc/t.zarr", mode="w", consolidated=False)
>>> is_zarr("memory://doc/t.zarr")
True
>>> open_dataset("memory://doc/t.zarr")["t"].chunks
((3,),)
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Any

import xarray as xr

from geodiff.errors import DataError
from geodiff.inputs import check_netcdf_input, read_table, verify_zarr_chunks

__all__ = ["Location", "is_url", "join", "exists", "filesystem", "is_zarr", "is_folder", "glob", "local_file",
           "open_dataset", "open_input", "NETCDF_SUFFIXES"]

#: a local path or an fsspec URL (``memory://bucket/x.zarr``, ``s3://bucket/x.zarr``, ``https://host/x.nc``)
Location = str | os.PathLike
#: file name endings read as netCDF
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf")
_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray", ".zmetadata")


def is_url(location: Location) -> bool:
    """True when ``location`` names a protocol (``memory://``, ``s3://``, ``https://``, ``file://``).

    >>> is_url("s3://bucket/thetao.zarr"), is_url("/data/thetao.nc"), is_url(Path("x.nc"))
    (True, False, False)
    """
    return isinstance(location, str) and "://" in location


def join(base: Location, relative: Location) -> Location:
    """``relative`` taken from ``base`` (a folder path or URL); absolute paths and URLs are returned as they are.

    >>> join("s3://bucket/cmip6", "CESM2/thetao.zarr"), str(join("/data", "a.nc")), join("/data", "gs://b/a.zarr")
    ('s3://bucket/cmip6/CESM2/thetao.zarr', '/data/a.nc', 'gs://b/a.zarr')
    """
    if is_url(relative) or Path(relative).is_absolute():
        return relative
    if is_url(base):
        return posixpath.join(str(base).rstrip("/"), str(relative))
    return Path(base) / relative


def filesystem(location: Location, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec filesystem holding ``location`` and the path within it.

    :class:`~geodiff.errors.DataError` when the protocol is unknown or its fsspec package is not installed.
    """
    import fsspec

    try:
        return fsspec.core.url_to_fs(str(location), **(storage_options or {}))
    except (ImportError, ValueError) as err:
        raise DataError(f"cannot reach {str(location)!r}: {err}") from err


def exists(location: Location, storage_options: dict[str, Any] | None = None) -> bool:
    """True when a file, folder or store is at ``location`` (local path or URL)."""
    if not is_url(location):
        return Path(location).exists()
    fs, path = filesystem(location, storage_options)
    return bool(fs.exists(path))


def _suffix(location: Location) -> str:
    return posixpath.splitext(str(location).rstrip("/"))[1].lower()


def is_zarr(location: Location, storage_options: dict[str, Any] | None = None) -> bool:
    """True for a zarr store (v2 or v3): a name ending ``.zarr`` or a folder holding zarr metadata."""
    if _suffix(location) == ".zarr":
        return True
    if _suffix(location) in NETCDF_SUFFIXES or _suffix(location) == ".csv":
        return False
    if not is_url(location):
        return any((Path(location) / marker).exists() for marker in _ZARR_MARKERS)
    fs, path = filesystem(location, storage_options)
    return any(fs.exists(posixpath.join(path, marker)) for marker in _ZARR_MARKERS)


def _consolidated(location: Location, storage_options: dict[str, Any] | None) -> bool:
    """True when the zarr store at ``location`` has consolidated metadata (v2 ``.zmetadata``, v3 ``zarr.json``)."""
    import json

    fs, path = filesystem(location, storage_options)
    if fs.exists(posixpath.join(path, ".zmetadata")):
        return True
    try:
        with fs.open(posixpath.join(path, "zarr.json"), "rb") as fh:
            return json.load(fh).get("consolidated_metadata") is not None
    except (FileNotFoundError, ValueError):
        return False


def local_file(location: Location, storage_options: dict[str, Any] | None = None) -> Path:
    """A local file with the content of ``location``: the path itself, or for a URL a copy fetched once into a
    cache folder of this URL's parent (fsspec ``simplecache``; the file keeps its name, which some products'
    readers parse). :class:`~geodiff.errors.DataError` names the URL when it cannot be reached.

    >>> import fsspec
    >>> with fsspec.open("memory://doc/cached.nc", "wb") as fh:
    ...     _ = fh.write(b"x")
    >>> local_file("memory://doc/cached.nc").name, str(local_file("/data/a.nc"))
    ('cached.nc', '/data/a.nc')
    """
    if not is_url(location):
        return Path(location)
    import hashlib
    import tempfile

    import fsspec

    location = str(location)
    protocol = location.split("://", 1)[0]
    parent = hashlib.sha256(posixpath.dirname(location).encode()).hexdigest()[:16]
    cache = {"same_names": True, "cache_storage": os.path.join(tempfile.gettempdir(), "geodiff-url-cache", parent)}
    try:
        return Path(fsspec.open_local(f"simplecache::{location}", simplecache=cache,
                                      **({protocol: storage_options} if storage_options else {})))
    except (ImportError, ValueError, OSError) as err:
        raise DataError(f"cannot reach {location!r}: {err}") from err


def glob(location: Location, pattern: str, storage_options: dict[str, Any] | None = None) -> list[Location]:
    """The files in folder ``location`` (local path or URL) whose names match ``pattern`` (e.g. ``"*.nc"``), sorted;
    URLs stay URLs."""
    if not is_url(location):
        return sorted(Path(location).glob(pattern))
    fs, path = filesystem(location, storage_options)
    return [fs.unstrip_protocol(item) for item in sorted(fs.glob(posixpath.join(path.rstrip("/"), pattern)))]


def is_folder(location: Location, storage_options: dict[str, Any] | None = None) -> bool:
    """True when ``location`` (local path or URL) is a folder."""
    if not is_url(location):
        return Path(location).is_dir()
    fs, path = filesystem(location, storage_options)
    return bool(fs.isdir(path))


def open_dataset(location: Location, *, storage_options: dict[str, Any] | None = None, chunks: Any = None,
                 **open_options: Any) -> xr.Dataset:
    """The dataset at ``location``, lazily (dask): a zarr store (v2 or v3, consolidated or not) or a netCDF file.

    ``chunks`` defaults to the store's own chunks (``{}``); ``open_options`` go to ``xarray.open_zarr`` /
    ``xarray.open_dataset`` (e.g. ``decode_times=False``). :class:`~geodiff.errors.DataError` names the location
    when nothing is there or it is neither zarr nor netCDF.
    """
    chunks = {} if chunks is None else chunks
    if not exists(location, storage_options):
        raise DataError(f"{str(location)!r} does not exist")
    if is_zarr(location, storage_options):
        try:
            options = {"consolidated": _consolidated(location, storage_options), **open_options}
            return xr.open_zarr(str(location) if is_url(location) else location, storage_options=storage_options,
                                chunks=chunks, **options)
        except (OSError, ValueError, KeyError) as err:
            raise DataError(f"cannot open zarr store {str(location)!r}: {err}") from err
    local = local_file(location, storage_options)
    check_netcdf_input(local, location)  # empty, cut short (read as zeros otherwise) or not netCDF: named here
    try:
        return xr.open_dataset(local, chunks=chunks, **open_options)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot open {str(location)!r} as netCDF or zarr: {err}") from err


def open_input(location: Location, *, storage_options: dict[str, Any] | None = None, verify: bool = True) -> Any:
    """An input of a command, lazily: a zarr store or netCDF file (``xr.Dataset``, dask) or a CSV table (pandas
    DataFrame, ``time`` parsed). :class:`~geodiff.errors.DataError` for any other kind of file, a netCDF file that
    is empty, cut short or not netCDF, and (``verify``: every chunk read once, streamed) a zarr store with a chunk
    that does not decode; :class:`~geodiff.errors.ObservationError` for a CSV table that does not parse or holds
    a time that is not one (:mod:`geodiff.inputs`)."""
    if _suffix(location) == ".csv":
        if not exists(location, storage_options):
            raise DataError(f"{str(location)!r} does not exist")
        return read_table(str(location) if is_url(location) else location, location,
                          storage_options=storage_options if is_url(location) else None)
    if is_zarr(location, storage_options):
        ds = open_dataset(location, storage_options=storage_options)
        if verify:
            verify_zarr_chunks(ds, location)
        return ds
    if _suffix(location) in NETCDF_SUFFIXES:
        return open_dataset(location, storage_options=storage_options)
    raise DataError(f"cannot open {str(location)!r}: expected a netCDF file (.nc), a zarr store (.zarr) or a CSV "
                    "table (.csv)")
