"""How geodiff writes arrays to disk: chunks of a few MB, a real compressor, a checksum on every chunk.

- zarr (v3) stores: Blosc/zstd (level 5, byte shuffle) followed by a crc32c checksum on every chunk
  (:func:`zarr_compressors`), so a chunk altered on disk fails to decode instead of decoding into garbage;
- netCDF files: zlib (level 4, shuffle) with HDF5's fletcher32 checksum, chunked by :func:`chunk_shape`
  (:func:`netcdf_encoding`); :func:`write_netcdf` writes beside the target and renames it into place, so a reader
  never sees half a file;
- a full disk (``ENOSPC``, ``EDQUOT``) while writing is a :class:`~geodiff.errors.StoreError` naming the path
  (:func:`disk_full`), never a traceback.

Example
-------
>>> from geodiff.io.encoding import chunk_shape
>>> chunk_shape(("member", "time", "depth", "lat", "lon"), (16, 100, 42, 180, 360), 4, fixed={"time": 1})
(1, 1, 14, 180, 360)
>>> chunk_shape(("time", "lat", "lon"), (100, 30, 40), 4, fixed={"time": 1})
(1, 30, 40)
"""

from __future__ import annotations

import errno
import math
import os
import uuid
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from geodiff.errors import StoreError

__all__ = ["CHUNK_BYTES", "chunk_shape", "zarr_compressors", "netcdf_encoding", "write_netcdf", "disk_full"]

#: the largest uncompressed chunk geodiff writes by default (bytes)
CHUNK_BYTES = 4 * 2**20
#: zstd level inside Blosc for zarr chunks, zlib level for netCDF variables
ZARR_LEVEL, NETCDF_LEVEL = 5, 4
#: encoding keys of a variable kept when geodiff sets its own compression and chunking
_KEPT_NETCDF_KEYS = ("dtype", "_FillValue", "missing_value", "scale_factor", "add_offset", "units", "calendar")
_FULL = (errno.ENOSPC, errno.EDQUOT)


def chunk_shape(dims: Sequence[Hashable], shape: Sequence[int], itemsize: int,
                fixed: Mapping[Hashable, int] | None = None, target: int = CHUNK_BYTES) -> tuple[int, ...]:
    """Chunk sizes of at most about ``target`` bytes: dims in ``fixed`` get the size given there, the others are
    whole unless the chunk is too big; then they are split, outermost first, into equal pieces.

    ``dims``/``shape``: the array's dimensions and sizes; ``itemsize``: bytes per value.
    """
    fixed = dict(fixed or {})
    chunks = [max(1, min(int(fixed.get(d, n)), int(n))) for d, n in zip(dims, shape)]
    for axis, dim in enumerate(dims):
        if dim in fixed:
            continue
        rest = math.prod(chunks[:axis] + chunks[axis + 1:]) * itemsize
        if rest * chunks[axis] <= target:
            break
        pieces = math.ceil(chunks[axis] / max(1, target // max(rest, 1)))
        chunks[axis] = math.ceil(chunks[axis] / pieces)
    return tuple(chunks)


def zarr_compressors() -> tuple[Any, ...]:
    """The bytes-to-bytes codecs of every zarr array geodiff writes: Blosc/zstd level 5 with byte shuffle, then
    a crc32c checksum (verified whenever the chunk is read)."""
    from zarr.codecs import BloscCodec, Crc32cCodec

    return (BloscCodec(cname="zstd", clevel=ZARR_LEVEL, shuffle="shuffle"), Crc32cCodec())


def netcdf_encoding(ds: xr.Dataset, fixed: Mapping[Hashable, int] | None = None) -> dict[Hashable, dict[str, Any]]:
    """``to_netcdf`` encoding of every numeric variable with dimensions: zlib level 4 with shuffle, fletcher32
    checksums, chunks from :func:`chunk_shape` (one time per chunk unless ``fixed`` says otherwise). The
    variable's own dtype, fill value, packing and time units are kept.

    Example
    -------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"t": (("time", "lat"), np.zeros((3, 2), "float32"))})
    >>> netcdf_encoding(ds)["t"]["chunksizes"], netcdf_encoding(ds)["t"]["fletcher32"]
    ((1, 2), True)
    """
    fixed = {"time": 1, **dict(fixed or {})}
    encoding = {}
    for name, var in ds.variables.items():
        kept = {k: v for k, v in var.encoding.items() if k in _KEPT_NETCDF_KEYS}
        if var.ndim == 0 or var.dtype.kind not in "fiub":
            encoding[name] = kept
            continue
        itemsize = np.dtype(kept.get("dtype", var.dtype)).itemsize
        encoding[name] = {**kept, "zlib": True, "complevel": NETCDF_LEVEL, "shuffle": True, "fletcher32": True,
                          "chunksizes": chunk_shape(var.dims, var.shape, itemsize, fixed)}
    return encoding


@contextmanager
def disk_full(path: str | Path, what: str) -> Iterator[None]:
    """Turn a full disk or quota (``ENOSPC``/``EDQUOT``) raised inside the block into a StoreError naming ``path``."""
    try:
        yield
    except OSError as err:
        if err.errno not in _FULL:
            raise
        raise StoreError(f"no space left on the device while writing {what} to {path} ({os.strerror(err.errno)}); "
                         "free some space and run the same command again") from err


def write_netcdf(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` to the netCDF-4 file ``path`` with :func:`netcdf_encoding`, atomically (a hidden file beside
    it, renamed into place). A full disk is a StoreError and leaves nothing at ``path``.

    Example
    -------
    >>> import tempfile, numpy as np, xarray as xr
    >>> path = write_netcdf(xr.Dataset({"t": ("time", np.arange(3.0))}), tempfile.mkdtemp() + "/t.nc")
    >>> xr.open_dataset(path)["t"].encoding["fletcher32"]
    True
    """
    path = Path(path)
    scratch = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        with disk_full(path, "a netCDF file"):
            ds.to_netcdf(scratch, engine="netcdf4", format="NETCDF4", encoding=netcdf_encoding(ds))
            os.replace(scratch, path)
    finally:
        scratch.unlink(missing_ok=True)
    return path
