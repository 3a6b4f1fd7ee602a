"""The zarr (v3) output store of a batch job: template, layout checks, region writes, checksums, completion ledger.

Layout of a store:

- the output dataset: every data variable ``(member, time, ...)`` chunked with one *region* (a block of times)
  per time chunk, coordinates written with the template;
- a group ``geodiff_ledger`` (ignored by ``xarray.open_zarr``): attributes ``job`` (the job's configuration),
  ``layout`` (dims, chunks, dtypes and coordinate digests) and ``regions`` (time slices); an array ``entries``
  (one string per region, one chunk each, written atomically): empty while the region is not done, else JSON
  with the sha256 of every variable's values in the region.

A region is recorded only after its data are written, so an entry always means "written"; NaN or a missing chunk
means nothing (land gives both). Region writes cover whole chunks, so regions never share a chunk and parts of a
job (``--part i/N``, dask workers) write without locks.

Every array (data, coordinates, ledger) is written with :func:`geodiff.io.encoding.zarr_compressors`: compressed,
with a crc32c checksum per chunk, so a chunk altered on disk fails to decode. :meth:`OutputStore.inspect` re-reads
the store and names the regions whose data or ledger entry are bad; :meth:`OutputStore.repair` marks them not done,
so the next run of the job recomputes them (a ledger entry that cannot be read counts as not done anyway). A full
disk while writing is a :class:`~geodiff.errors.StoreError`; the region stays not done and a rerun resumes.

Example
-------
>>> import numpy as np, xarray as xr
>>> from geodiff.batch.store import values_digest
>>> a = xr.DataArray(np.array([1.0, np.nan], dtype="float32"))
>>> values_digest(a, np.dtype("float32")) == values_digest(a.copy(), np.dtype("float32"))
True
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from geodiff.errors import StoreError
from geodiff.io.cf import without_coordinate_fill
from geodiff.io.encoding import chunk_shape, disk_full, zarr_compressors

__all__ = ["OutputStore", "Problem", "build_template", "layout_of", "compare_layouts", "values_digest", "LEDGER"]

LEDGER = "geodiff_ledger"
FORMAT = "geodiff.batch/1"


def values_digest(values: Any, dtype: np.dtype) -> str:
    """sha256 of ``values`` cast to ``dtype`` (the store's dtype), every NaN made the same NaN."""
    array = np.array(getattr(values, "values", values), dtype=dtype, copy=True, order="C")
    if array.dtype.kind == "f":
        array[np.isnan(array)] = np.nan
    return hashlib.sha256(array.tobytes()).hexdigest()


def _coord_digest(variable: xr.Variable) -> str:
    values = np.asarray(variable.values)
    if values.dtype.kind in "mM":
        values = values.astype("datetime64[ns]").view("int64")
    if values.dtype.kind == "O":
        return hashlib.sha256(json.dumps([str(v) for v in values.ravel()]).encode()).hexdigest()
    return hashlib.sha256(np.ascontiguousarray(values).tobytes() + str(values.dtype).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# template and layout


def build_template(sample: xr.Dataset, times: xr.Variable, time_chunk: int,
                   chunks: Mapping[str, int] | None = None) -> xr.Dataset:
    """Lazy (dask, NaN) dataset of the whole output: ``sample``'s variables over ``times``, chunked for regions.

    ``time_chunk`` times make a region; ``chunks`` optionally splits other dims (e.g. ``{"lat": 8}``); dims not
    named there are whole unless a chunk would exceed :data:`~geodiff.io.encoding.CHUNK_BYTES` (then split,
    outermost first: :func:`~geodiff.io.encoding.chunk_shape`). Nothing proportional to the number of times is held
    in memory except the time coordinate.
    """
    chunks = dict(chunks or {})
    unknown = sorted(set(chunks) - set(sample.dims) - {"time"})
    if unknown:
        raise StoreError(f"chunks name dimensions {unknown} that the output does not have ({list(sample.dims)})")
    if "time" in chunks:
        raise StoreError("give the time chunk as time_chunk (one region per time chunk), not in chunks")
    if not isinstance(time_chunk, int) or time_chunk < 1:
        raise StoreError(f"time_chunk must be an integer >= 1, got {time_chunk!r}")
    data_vars = {}
    for name, var in sample.data_vars.items():
        if "time" not in var.dims:
            raise StoreError(f"output variable {name!r} has no time dimension; batch outputs are per time")
        shape = tuple(times.size if d == "time" else var.sizes[d] for d in var.dims)
        var_chunks = chunk_shape(var.dims, shape, var.dtype.itemsize, {**chunks, "time": time_chunk})
        data = da.full(shape, np.nan, dtype=var.dtype, chunks=var_chunks)
        encoding = {"dtype": var.dtype, "chunks": var_chunks, "compressors": zarr_compressors()}
        if "_FillValue" in var.encoding:
            encoding["_FillValue"] = var.encoding["_FillValue"]
        data_vars[name] = xr.Variable(var.dims, data, attrs=dict(var.attrs), encoding=encoding)
    coords = {}
    for name, coord in sample.coords.items():
        if "time" in coord.dims:
            if coord.dims != ("time",) or name != "time":
                raise StoreError(f"coordinate {name!r} depends on time; only the time coordinate may")
            continue
        encoding = {k: v for k, v in coord.encoding.items() if k in ("dtype", "units", "calendar")}
        coords[name] = xr.Variable(coord.dims, coord.values, attrs=dict(coord.attrs),
                                   encoding={**encoding, "compressors": zarr_compressors()})
    time_encoding = {k: v for k, v in times.encoding.items() if k in ("dtype", "units", "calendar")}
    time_encoding["compressors"] = zarr_compressors()
    coords["time"] = xr.Variable(("time",), times.values, attrs=dict(times.attrs), encoding=time_encoding)
    return without_coordinate_fill(xr.Dataset(data_vars, coords=coords, attrs=dict(sample.attrs)))


def layout_of(ds: xr.Dataset) -> dict[str, Any]:
    """Plain-JSON description of a dataset's grid: dims, data variables (dims, dtype, chunks), coordinate digests."""
    variables = {}
    for name, var in ds.data_vars.items():
        chunks = var.encoding.get("chunks")
        if chunks is None and var.chunks is not None:
            chunks = tuple(c[0] for c in var.chunks)
        variables[str(name)] = {"dims": list(var.dims), "dtype": np.dtype(var.dtype).str,
                                "chunks": [int(c) for c in chunks] if chunks is not None else None}
    return {
        "dims": {str(k): int(v) for k, v in ds.sizes.items()},
        "variables": variables,
        "coords": {str(k): _coord_digest(v.variable) for k, v in ds.coords.items()},
    }


def compare_layouts(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """Differences between two :func:`layout_of` results, as sentences naming what differs (empty: same)."""
    problems = []
    for dim in sorted(set(found["dims"]) | set(wanted["dims"])):
        a, b = found["dims"].get(dim), wanted["dims"].get(dim)
        if a != b:
            problems.append(f"dimension {dim!r} has size {a} in the store, {b} in this job")
    for name in sorted(set(found["variables"]) | set(wanted["variables"])):
        a, b = found["variables"].get(name), wanted["variables"].get(name)
        if a is None or b is None:
            problems.append(f"variable {name!r} is {'missing from' if a is None else 'not produced by'} "
                            f"{'the store' if a is None else 'this job'}")
            continue
        for key in ("dims", "dtype", "chunks"):
            if a[key] != b[key]:
                what = "chunking" if key == "chunks" else key
                problems.append(f"{what} of variable {name!r} is {a[key]} in the store, {b[key]} in this job")
    for name in sorted(set(found["coords"]) | set(wanted["coords"])):
        a, b = found["coords"].get(name), wanted["coords"].get(name)
        if a != b and a is not None and b is not None:
            problems.append(f"coordinate {name!r} has other values in the store than in this job (grid differs)")
        elif a != b:
            problems.append(f"coordinate {name!r} is {'missing from the store' if a is None else 'not in this job'}")
    return problems


# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """Something wrong with a store: ``region`` (None: the whole store, e.g. its layout) and a sentence saying
    what; ``repairable``: recomputing the region fixes it."""

    region: int | None
    text: str
    repairable: bool = True


@dataclass(frozen=True)
class Region:
    """Region ``index``: times ``start:stop`` of the output (one time chunk)."""

    index: int
    start: int
    stop: int


class OutputStore:
    """A batch job's zarr store on the local file system (see the module docstring for its layout)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- creation -----------------------------------------------------------------------------------------------

    def exists(self) -> bool:
        """True when a zarr store is at the path (a batch store or not)."""
        return (self.path / "zarr.json").is_file()

    def create_or_check(self, template: xr.Dataset, job: Mapping[str, Any]) -> None:
        """Write ``template`` and an empty ledger (unless the store exists), then check it matches the job.

        The template is written beside the target and renamed into place, so several parts starting at once
        create it once; the others check it. Raises :class:`StoreError` naming what differs.
        """
        if self.path.exists() and not self.exists():
            if self.path.is_dir() and not any(self.path.iterdir()):
                self.path.rmdir()
            else:
                raise StoreError(f"{self.path} exists and is not a zarr store; choose another output path")
        if not self.exists():
            scratch = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.partial")
            try:
                with disk_full(self.path, "the store's template"):
                    self._write_template(scratch, template, job)
                try:
                    os.rename(scratch, self.path)
                except OSError:
                    if not self.exists():
                        raise
            finally:
                if scratch.exists():
                    shutil.rmtree(scratch)
        self.check(template, job)

    @staticmethod
    def _write_template(path: Path, template: xr.Dataset, job: Mapping[str, Any]) -> None:
        template.to_zarr(path, compute=False, zarr_format=3, consolidated=False, mode="w-")
        root = zarr.open_group(path, mode="r+", zarr_format=3)
        ledger = root.create_group(LEDGER)
        size = template.sizes["time"]
        step = next(iter(template.data_vars.values())).encoding["chunks"]
        step = step[next(iter(template.data_vars.values())).dims.index("time")]
        regions = [[start, min(start + step, size)] for start in range(0, size, step)]
        ledger.attrs.update({"format": FORMAT, "job": dict(job), "layout": layout_of(template), "regions": regions})
        ledger.create_array("entries", shape=(len(regions),), chunks=(1,), dtype=str, fill_value="",
                            compressors=zarr_compressors())

    def _ledger(self, mode: str = "r") -> zarr.Group:
        try:
            group = zarr.open_group(self.path, mode=mode, zarr_format=3)
            ledger = group[LEDGER]
        except (KeyError, FileNotFoundError, zarr.errors.GroupNotFoundError) as err:
            raise StoreError(f"{self.path} has no geodiff ledger; it was not written by a geodiff batch job") from err
        except (ValueError, TypeError, zarr.errors.BaseZarrError) as err:  # zarr.json that is not valid metadata
            raise StoreError(f"the metadata of {self.path} or of its {LEDGER} cannot be read (corrupted "
                             f"zarr.json): {type(err).__name__}: {err}") from err
        if ledger.attrs.get("format") != FORMAT:
            raise StoreError(f"{self.path}/{LEDGER} has format {ledger.attrs.get('format')!r}; expected {FORMAT!r}")
        return ledger

    def check(self, template: xr.Dataset, job: Mapping[str, Any]) -> None:
        """StoreError unless the store's recorded layout and job equal ``template``'s and ``job``."""
        attrs = self._ledger().attrs
        problems = compare_layouts(attrs["layout"], layout_of(template))
        recorded = attrs["job"]
        for key in sorted(set(recorded) | set(job)):
            if recorded.get(key) != job.get(key):
                problems.append(f"job setting {key!r} is {recorded.get(key)!r} in the store, {job.get(key)!r} here")
        if problems:
            raise StoreError(f"the store {self.path} does not match this job: " + "; ".join(problems))

    # -- ledger -------------------------------------------------------------------------------------------------

    @property
    def regions(self) -> list[Region]:
        """Every region of the job, in time order."""
        return [Region(i, start, stop) for i, (start, stop) in enumerate(self._ledger().attrs["regions"])]

    @property
    def job(self) -> dict[str, Any]:
        """The configuration of the job that created the store."""
        return dict(self._ledger().attrs["job"])

    @property
    def layout(self) -> dict[str, Any]:
        """The layout recorded when the store was created."""
        return dict(self._ledger().attrs["layout"])

    def _read_entries(self) -> tuple[list[dict[str, Any] | None], list[int]]:
        """``(entry of every region or None, regions whose ledger entry cannot be read)``.

        An entry whose chunk fails its checksum or does not hold an entry's JSON is unreadable: the region's data
        cannot be vouched for, so it counts as not done.
        """
        array = self._ledger()["entries"]
        try:
            raw = array[:].tolist()
        except Exception:  # noqa: BLE001 -- a chunk that does not decode (checksum, codec): read them one by one
            raw = []
            for index in range(array.shape[0]):
                try:
                    raw.append(str(array[index]))
                except Exception:  # noqa: BLE001 -- this region's chunk does not decode
                    raw.append(None)
        entries: list[dict[str, Any] | None] = []
        unreadable = []
        for index, text in enumerate(raw):
            entry = None
            if text:
                try:
                    entry = json.loads(text)
                except (TypeError, ValueError):
                    entry = None
            if text is None or (text and not (isinstance(entry, dict) and isinstance(entry.get("sha256"), dict))):
                unreadable.append(index)
                entry = None
            entries.append(entry)
        return entries, unreadable

    def entries(self) -> list[dict[str, Any] | None]:
        """Ledger entry of every region (None: not done, or an entry that cannot be read)."""
        return self._read_entries()[0]

    def done(self) -> np.ndarray:
        """Bool per region: True when its data are written and recorded."""
        return np.array([entry is not None for entry in self.entries()], dtype=bool)

    def _record(self, index: int, text: str) -> None:
        with disk_full(self.path, f"the ledger entry of region {index}"):
            self._ledger("r+")["entries"][index] = text

    # -- writing ------------------------------------------------------------------------------------------------

    def write_region(self, region: Region, result: xr.Dataset, extra: Mapping[str, Any] | None = None) -> None:
        """Write ``result`` (the output at the region's times) into the store, then record the region as done."""
        layout = self.layout
        data = xr.Dataset()
        digests = {}
        for name, spec in layout["variables"].items():
            var = result[name].variable
            dtype = np.dtype(spec["dtype"])
            clean = xr.Variable(var.dims, np.asarray(var.values).astype(dtype, copy=False))
            data[name] = clean
            digests[name] = values_digest(clean, dtype)
        with disk_full(self.path, f"region {region.index} (times {region.start}:{region.stop})"):
            data.to_zarr(self.path, region={"time": slice(region.start, region.stop)}, mode="r+", zarr_format=3,
                         consolidated=False)
        entry = {"sha256": digests, **(dict(extra) if extra else {})}
        self._record(region.index, json.dumps(entry, default=str))

    def check_result(self, region: Region, result: xr.Dataset, template: xr.Dataset) -> None:
        """StoreError unless ``result`` has the template's variables, dims and coordinates at the region's times."""
        problems = []
        for name, var in template.data_vars.items():
            if name not in result.data_vars:
                problems.append(f"variable {name!r} is missing")
                continue
            got = result[name]
            if got.dims != var.dims:
                problems.append(f"variable {name!r} has dims {got.dims}, expected {var.dims}")
        expected_sizes = {**template.sizes, "time": region.stop - region.start}
        for dim, size in expected_sizes.items():
            if result.sizes.get(dim) != size:
                problems.append(f"dimension {dim!r} has size {result.sizes.get(dim)}, expected {size}")
        for name, coord in template.coords.items():
            if name not in result.coords:
                problems.append(f"coordinate {name!r} is missing")
                continue
            want = coord.isel(time=slice(region.start, region.stop)) if "time" in coord.dims else coord
            if not problems and not np.array_equal(np.asarray(result[name].values), np.asarray(want.values)):
                problems.append(f"coordinate {name!r} has other values than the store's")
        if problems:
            raise StoreError(f"the job's output for region {region.index} (times {region.start}:{region.stop}) does "
                             "not fit the store: " + "; ".join(problems))

    # -- final checks ---------------------------------------------------------------------------------------------

    def open(self, consolidated: bool | None = False) -> xr.Dataset:
        """The output dataset (lazy, dask); StoreError when the metadata of one of its arrays cannot be read."""
        try:
            return xr.open_zarr(self.path, consolidated=consolidated, zarr_format=3)
        except (ValueError, TypeError, KeyError, zarr.errors.BaseZarrError) as err:
            raise StoreError(f"the metadata of the store {self.path} cannot be read (a corrupted or missing "
                             f"zarr.json): {type(err).__name__}: {err}") from err

    def inspect(self) -> list[Problem]:
        """Every problem found by re-reading the store: regions not done, unreadable ledger entries, layout,
        chunks that fail their checksum or differ from the recorded sha256 (empty: all good)."""
        entries, unreadable = self._read_entries()
        regions = self.regions
        problems = [Problem(r.index, f"the ledger entry of region {r.index} (times {r.start}:{r.stop}) cannot be "
                                     "read (corrupted ledger chunk)") for r in regions if r.index in unreadable]
        problems += [Problem(r.index, f"region {r.index} (times {r.start}:{r.stop}) is not done", repairable=False)
                     for r, e in zip(regions, entries) if e is None and r.index not in unreadable]
        ds = self.open()
        recorded = self.layout
        layout = [Problem(None, p.replace("this job", "the ledger")) for p in compare_layouts(layout_of(ds), recorded)]
        if layout:
            return problems + layout
        for region, entry in zip(regions, entries):
            if entry is None:
                continue
            part = ds.isel(time=slice(region.start, region.stop))
            where = f"in region {region.index} (times {region.start}:{region.stop})"
            for name, digest in entry["sha256"].items():
                try:
                    got = values_digest(part[name].values, np.dtype(recorded["variables"][name]["dtype"]))
                except Exception as err:  # noqa: BLE001 -- a chunk that does not decode (checksum, codec)
                    problems.append(Problem(region.index, f"variable {name!r} {where} cannot be read "
                                                          f"(corrupted chunk): {type(err).__name__}: {err}"))
                    continue
                if got != digest:
                    problems.append(Problem(region.index, f"variable {name!r} {where} differs from what was "
                                                          "written (corrupted or altered chunk)"))
        return problems

    def verify(self) -> list[str]:
        """The sentences of :meth:`inspect` (empty: all good)."""
        return [problem.text for problem in self.inspect()]

    def repair(self, problems: list[Problem] | None = None) -> list[int]:
        """Mark every region with a repairable problem (``problems``, default :meth:`inspect`) not done, so the
        next run of the job recomputes it; returns the indices of those regions."""
        problems = self.inspect() if problems is None else problems
        bad = sorted({p.region for p in problems if p.region is not None and p.repairable})
        for index in bad:
            self._record(index, "")
        return bad

    def consolidate(self, history_line: str | None = None) -> None:
        """Append ``history_line`` to the dataset's ``history`` and consolidate the metadata."""
        root = zarr.open_group(self.path, mode="r+", zarr_format=3)
        with disk_full(self.path, "the store's consolidated metadata"):
            if history_line:
                from geodiff.provenance import append_history

                root.attrs.update(append_history(dict(root.attrs), history_line))
            with warnings.catch_warnings():
                # zarr warns that consolidated metadata is not yet part of the v3 specification; xarray reads it
                warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
                zarr.consolidate_metadata(self.path, zarr_format=3)
