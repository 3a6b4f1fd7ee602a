"""Is a netCDF file complete? A check of the file's own size records, before any value is read.

A writer killed mid-write leaves a file shorter than its header says. The netCDF library reads such a
*classic* file (netCDF-3: CDF-1, CDF-2, CDF-5) without complaint and returns zeros (or fill values) for the
missing bytes -- a silently wrong field. :func:`check_netcdf` parses the classic header (dimensions, attributes,
each variable's shape, type and offset) and compares the bytes the variables need with the file's size; for a
netCDF-4 (HDF5) file it compares the end-of-file address of the HDF5 superblock with the file's size. Any
shortfall, or a header that cannot be parsed, raises :class:`~geodiff.errors.DataError` saying the file is
incomplete or corrupt and naming it. Only the header is read (a few kB), never the data.

Every adapter checks its files with it before opening them, and
:func:`~geodiff.adapters.standardize.standardize` checks the file a dataset was opened from
(``ds.encoding["source"]``).

Example
-------
>>> import os, tempfile, numpy as np, xarray as xr
>>> path = os.path.join(tempfile.mkdtemp(), "t.nc")
>>> xr.Dataset({"t": ("x", np.arange(100.0))}).to_netcdf(path, format="NETCDF3_CLASSIC")
>>> check_netcdf(path)
'netCDF-3 (CDF-1)'
>>> data = open(path, "rb").read()
>>> _ = open(path, "wb").write(data[:-40])  # as left by a writer killed before the end
>>> check_netcdf(path)
Traceback (most recent call last):
...
geodiff.errors.DataError: file '...t.nc' is incomplete or corrupt: ...
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import xarray as xr

from geodiff.errors import DataError

__all__ = ["check_netcdf", "netcdf_files", "INCOMPLETE"]

#: the words every "truncated / unreadable file" message of the adapters contains
INCOMPLETE = "incomplete or corrupt"

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 4, 6: 8, 7: 1, 8: 2, 9: 4, 10: 8, 11: 8}
_ABSENT, _DIMENSION, _VARIABLE, _ATTRIBUTE = 0, 10, 11, 12
_STREAMING = 0xFFFFFFFF


class _Truncated(Exception):
    """The header itself ends early or holds impossible values."""


class _Header:
    """Big-endian reader of a classic netCDF header (CDF-1, CDF-2 or CDF-5)."""

    def __init__(self, stream: BinaryIO, version: int):
        self.stream, self.version = stream, version

    def read(self, size: int) -> bytes:
        data = self.stream.read(size)
        if len(data) != size:
            raise _Truncated("the header ends early")
        return data

    def int32(self) -> int:
        return int(struct.unpack(">i", self.read(4))[0])

    def count(self) -> int:
        """NON_NEG: 4 bytes, 8 in CDF-5."""
        value = struct.unpack(">q", self.read(8))[0] if self.version == 5 else struct.unpack(">i", self.read(4))[0]
        if value < 0:
            raise _Truncated(f"negative count {value} in the header")
        return int(value)

    def offset(self) -> int:
        """OFFSET: 4 bytes in CDF-1, 8 in CDF-2 and CDF-5."""
        return int(struct.unpack(">q", self.read(8))[0] if self.version in (2, 5) else self.int32())

    def name(self) -> str:
        size = self.count()
        if size > 1 << 20:
            raise _Truncated(f"a name of {size} bytes in the header")
        raw = self.read(size)
        self.read(-size % 4)
        return raw.decode("utf-8", errors="replace")

    def list_tag(self, expected: int) -> int:
        tag, size = self.int32(), self.count()
        if tag == _ABSENT and size == 0:
            return 0
        if tag != expected:
            raise _Truncated(f"list tag {tag} where {expected} was expected")
        return size

    def skip_attributes(self) -> None:
        for _ in range(self.list_tag(_ATTRIBUTE)):
            self.name()
            kind = self.int32()
            if kind not in _TYPE_SIZES:
                raise _Truncated(f"unknown attribute type {kind}")
            nbytes = self.count() * _TYPE_SIZES[kind]
            self.read(nbytes + (-nbytes % 4))


def _classic_required_size(stream: BinaryIO, version: int) -> int:
    """Bytes a complete classic file must have, from its header."""
    header = _Header(stream, version)
    numrecs = header.count()
    if numrecs == _STREAMING and version != 5:
        raise _Truncated("the record count was never written (numrecs = STREAMING)")
    dims = []
    for _ in range(header.list_tag(_DIMENSION)):
        header.name()
        dims.append(header.count())
    header.skip_attributes()
    end = stream.tell()
    records = []  # (begin, bytes of one record) of each record variable
    for _ in range(header.list_tag(_VARIABLE)):
        name = header.name()
        ids = [header.count() for _ in range(header.count())]
        if any(i >= len(dims) for i in ids):
            raise _Truncated(f"variable {name!r} refers to a dimension that does not exist")
        header.skip_attributes()
        kind = header.int32()
        if kind not in _TYPE_SIZES:
            raise _Truncated(f"variable {name!r} has unknown type {kind}")
        header.count()  # vsize (padded, may overflow for large variables: recomputed below)
        begin = header.offset()
        shape = [dims[i] for i in ids]
        size = _TYPE_SIZES[kind]
        if shape and shape[0] == 0:  # the record (unlimited) dimension
            for n in shape[1:]:
                size *= n
            records.append((name, begin, size))
        else:
            for n in shape:
                size *= n
            end = max(end, begin + size)
    if records and numrecs:
        record_size = sum(size + (-size % 4) for _, _, size in records) if len(records) > 1 else records[0][2]
        for _, begin, size in records:
            end = max(end, begin + (numrecs - 1) * record_size + size)
    return end


def _hdf5_end_of_file(stream: BinaryIO) -> int | None:
    """The end-of-file address recorded in the HDF5 superblock at offset 0 (None for an unknown layout)."""

    def read(size: int) -> bytes:
        data = stream.read(size)
        if len(data) != size:
            raise _Truncated("the HDF5 superblock ends early")
        return data

    stream.seek(8)
    version = read(1)[0]
    if version in (0, 1):
        fixed = read(15 if version == 0 else 19)
        offsets = fixed[4]
        skip = 8 + 1 + len(fixed) + 2 * offsets  # base address, free-space address
    elif version in (2, 3):
        offsets = read(3)[0]
        skip = 8 + 4 + 2 * offsets  # base address, superblock extension address
    else:
        return None
    if offsets not in (2, 4, 8, 16, 32):
        raise _Truncated(f"the HDF5 superblock gives {offsets}-byte addresses")
    stream.seek(skip)
    return int.from_bytes(read(offsets), "little")


def check_netcdf(path: str | Path) -> str:
    """The kind of netCDF file at ``path`` after checking that it is complete; DataError naming it otherwise.

    Returns ``"netCDF-3 (CDF-1)"`` / ``"(CDF-2)"`` / ``"(CDF-5)"``, ``"netCDF-4 (HDF5)"``, or ``"other"`` for a
    file that is neither (left to the reader to reject; e.g. GRIB or CSV).

    >>> check_netcdf("/no/such/file.nc")
    Traceback (most recent call last):
    ...
    geodiff.errors.DataError: file '/no/such/file.nc' does not exist
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file {str(path)!r} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"file {str(path)!r} is {INCOMPLETE}: it is empty (0 bytes)")
    with path.open("rb") as stream:
        magic = stream.read(8)
        try:
            if magic[:3] == b"CDF" and len(magic) >= 4 and magic[3] in (1, 2, 5):
                stream.seek(4)
                required = _classic_required_size(stream, magic[3])
                if required > size:
                    raise _Truncated(f"its header needs {required} bytes but the file has {size}")
                return f"netCDF-3 (CDF-{magic[3]})"
            if magic == _HDF5_SIGNATURE:
                end = _hdf5_end_of_file(stream)
                if end is not None and end > size:
                    raise _Truncated(f"its HDF5 superblock records {end} bytes but the file has {size}")
                return "netCDF-4 (HDF5)"
        except _Truncated as err:
            raise DataError(
                f"file {str(path)!r} is {INCOMPLETE}: {err} (a writer stopped before the end, or a partial copy); "
                "write or download it again"
            ) from None
    if magic != _HDF5_SIGNATURE and len(magic) < 8 and (_HDF5_SIGNATURE.startswith(magic) or magic == b"CDF"):
        raise DataError(f"file {str(path)!r} is {INCOMPLETE}: it holds only {size} bytes")
    if magic[:3] == b"CDF":
        raise DataError(f"file {str(path)!r} is {INCOMPLETE}: unknown netCDF version byte {magic[3:4]!r}")
    return "other"


def netcdf_files(paths: str | Path | Sequence[str | Path], product: str, *, folder_glob: str | None = None) -> list[Path]:
    """The input files of an adapter, sorted, each checked to exist and to be complete (:func:`check_netcdf`).

    ``paths``: one path or several; with ``folder_glob`` (e.g. ``"*.nc"``) a folder stands for its matching files.
    ``product`` names the product in the :class:`~geodiff.errors.DataError` messages.

    >>> netcdf_files([], "EN4")
    Traceback (most recent call last):
    ...
    geodiff.errors.DataError: no EN4 files given
    """
    if isinstance(paths, (str, Path)):
        path = Path(paths)
        items = sorted(path.glob(folder_glob)) if folder_glob and path.is_dir() else [path]
    else:
        items = [Path(p) for p in paths]
    if not items:
        if folder_glob and isinstance(paths, (str, Path)):
            raise DataError(f"no {product} netCDF files found in {str(paths)!r} (looked for {folder_glob!r})")
        raise DataError(f"no {product} files given")
    missing = [str(p) for p in items if not p.exists()]
    if missing:
        raise DataError(f"{product} files {missing} do not exist")
    for item in items:
        check_netcdf(item)
    return sorted(items)


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
