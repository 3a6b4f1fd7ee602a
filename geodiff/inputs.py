"""Checks of input files, before any value is used: the checks :func:`geodiff.io.paths.open_input` (the opener of
the ``geodiff`` commands and of the API where a path is given) makes on what it opens.

- :func:`check_netcdf_input`: a netCDF file that is empty, cut short by a killed writer (the netCDF library would
  read the missing bytes as zeros), or is not netCDF at all (a text file named ``.nc``):
  :class:`~geodiff.errors.DataError` naming it (:func:`check_netcdf` reads the header only);
- :func:`verify_zarr_chunks`: a zarr store with a chunk that does not decode (a corrupted compressed chunk):
  :class:`~geodiff.errors.DataError` naming the store and the variable (every chunk is read once, streamed);
- :func:`read_table`: a CSV table that cannot be parsed, or whose ``time`` column holds values that are not
  times (:func:`~geodiff.observations.parse_times`): :class:`~geodiff.errors.ObservationError` naming the file, the column, the row and
  the value.

Is a netCDF file complete? A writer killed mid-write leaves a file shorter than its header says. The netCDF
library reads such a *classic* file (netCDF-3: CDF-1, CDF-2, CDF-5) without complaint and returns zeros (or fill
values) for the missing bytes -- a silently wrong field. :func:`check_netcdf` parses the classic header
(dimensions, attributes, each variable's shape, type and offset) and compares the bytes the variables need with
the file's size; for a netCDF-4 (HDF5) file it compares the end-of-file address of the HDF5 superblock with the
file's size. Any shortfall, or a header that cannot be parsed, raises :class:`~geodiff.errors.DataError` saying
the file is incomplete or corrupt and naming it. Only the header is read (a few kB), never the data.

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

import struct
from pathlib import Path
from typing import Any, BinaryIO

from geodiff.errors import DataError, ObservationError

__all__ = ["check_netcdf", "check_netcdf_input", "verify_zarr_chunks", "read_table", "INCOMPLETE"]

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


def check_netcdf_input(path: str | Path, name: Any = None) -> None:
    """DataError naming ``name`` (default: ``path``) unless the local file ``path`` is a complete netCDF file
    (a URL's local copy is checked under the URL's ``name``)."""
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
