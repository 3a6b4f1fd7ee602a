"""Run a :class:`~geodiff.batch.job.BatchJob` region by region into a resumable zarr store; status; finalise.

:func:`run_batch` writes the store's template first (``to_zarr(compute=False)``), then computes every region
that the ledger does not list as done, in this process or on a ``dask.distributed`` client (with retries), and
records each region after its data are written. Killed at any moment, the same call continues where it stopped;
the finished store equals the one of an uninterrupted run. ``part=(i, N)`` runs only regions ``i-1, i-1+N, ...``
(array jobs of a scheduler). :func:`finalise` checks that every region is done, that the grid and chunking are
those recorded, and that every region's values still have the recorded sha256, then consolidates the metadata.
:func:`verify` reports the same problems without finalising; with ``repair=True`` it marks the bad regions (a
corrupted chunk, an altered value, an unreadable ledger entry) not done, and the next :func:`run_batch` of the
job recomputes them: the repaired store equals the one of an uninterrupted run.

Example
-------
>>> import numpy as np, xarray as xr, tempfile, os
>>> from geodiff.batch import run_batch, status, finalise
>>> class Ramp:  # a toy job: the output at time t is t everywhere
...     def describe(self): return {"job": "ramp"}
...     def times(self): return xr.Variable("time", np.arange(6))
...     def sample(self): return self.run(np.arange(1))
...     def run(self, times):
...         return xr.Dataset({"v": (("time", "x"), np.repeat(times[:, None], 3, 1).astype("float32"))},
...                           coords={"time": times, "x": [0, 1, 2]})
>>> path = os.path.join(tempfile.mkdtemp(), "out.zarr")
>>> run_batch(Ramp(), path, time_chunk=2, part=(1, 2), progress=False)
>>> status(path).done, status(path).total
(2, 3)
>>> run_batch(Ramp(), path, time_chunk=2, progress=False)
>>> ds = finalise(path)
>>> ds["v"].values[:, 0].tolist()
[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

import geodiff
from geodiff.batch.job import BatchJob, region_seed
from geodiff.batch.store import OutputStore, Region, build_template
from geodiff.errors import ConfigError, StoreError

__all__ = ["run_batch", "status", "verify", "finalise", "parse_part", "BatchStatus", "make_template"]


def parse_part(part: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"i/N"`` (1-based) or ``(i, N)`` -> ``(i, N)``; ConfigError otherwise.

    Example
    -------
    >>> parse_part("2/4")
    (2, 4)
    """
    if part is None:
        return None
    if isinstance(part, str):
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", part)
        if not match:
            raise ConfigError(f"part {part!r} must look like 'i/N' (e.g. '1/4')")
        part = (int(match.group(1)), int(match.group(2)))
    i, n = part
    if not (isinstance(i, int) and isinstance(n, int) and 1 <= i <= n):
        raise ConfigError(f"part must be i/N with 1 <= i <= N, got {i}/{n}")
    return i, n


#: reports a pipeline makes per call (observations used, runaway members), kept per region in the ledger
_REGION_REPORTS = {"observations": "geodiff_observations", "runaway": "geodiff_runaway"}


def make_template(job: BatchJob, time_chunk: int, chunks: Mapping[str, int] | None = None,
                  history: str | None = None) -> xr.Dataset:
    """The lazy template of ``job``'s output with attributes: ``history`` appended, provenance."""
    from geodiff.provenance import append_history

    described = job.describe()
    template = build_template(job.sample(), job.times(), time_chunk, chunks)
    line = history or f"geodiff.batch.run_batch({json.dumps(described, default=str)})"
    attrs = append_history(dict(template.attrs), line)
    for key in _REGION_REPORTS.values():  # per-call reports of a pipeline; kept per region in the ledger
        attrs.pop(key, None)
    attrs.update({"geodiff_version": geodiff.__version__, "geodiff_job": json.dumps(described, default=str)})
    if "model_sha256" in described:
        attrs["geodiff_model_sha256"] = described["model_sha256"]
    if "seed" in described:
        attrs["geodiff_seed"] = int(described["seed"])
    template.attrs = attrs
    return template


def _compute_region(job: BatchJob, store: OutputStore, region: Region, times: np.ndarray) -> None:
    """Compute, check, write and record ``region``; ``times``: the region's times."""
    import torch

    seed = int(job.describe().get("seed", 0))
    torch.manual_seed(region_seed(seed, region.index))  # for pipelines that draw from the global generator
    result = job.run(times)
    store.check_result(region, result, store.open())
    reports = {name: json.loads(result.attrs[key]) for name, key in _REGION_REPORTS.items()
               if isinstance(result.attrs.get(key), str)}
    store.write_region(region, result, reports or None)


def _region_task(job: BatchJob, path: str, region: Region, times: np.ndarray) -> int:
    """One region on a dask worker: compute, write, record; returns the region index. ``times``: the region's
    times (so the worker does not rebuild the job's time axis for every region)."""
    _compute_region(job, OutputStore(path), region, times)
    return region.index


def run_batch(
    job: BatchJob,
    store: str | Path,
    *,
    time_chunk: int = 1,
    chunks: Mapping[str, int] | None = None,
    part: str | tuple[int, int] | None = None,
    client: Any = None,
    retries: int = 2,
    history: str | None = None,
    progress: bool = True,
) -> None:
    """Compute ``job`` into the zarr store at ``store``, skipping regions already done (resume).

    Parameters
    ----------
    job: a :class:`~geodiff.batch.job.BatchJob` (e.g. :class:`~geodiff.batch.job.PipelineJob`).
    store: path of the output zarr store (created with the template on the first run).
    time_chunk: times per region (= the zarr time chunk). ``chunks``: other chunk sizes, e.g. ``{"lat": 8}``.
    part: ``"i/N"``: only regions with ``index % N == i - 1``.
    client: a ``dask.distributed.Client``: regions become tasks (``retries`` each) on its workers, which write
        to the store themselves (it must be on a file system they share). The job (inputs included) is sent once
        to every worker, a model given as a folder is loaded once per worker process, and the workers' memory
        allocator is set up for tensor work (:mod:`geodiff.batch.workers`).
    history: the line appended to the output's ``history`` (default: the job's configuration).
    progress: show a progress bar over regions.

    Raises :class:`~geodiff.errors.StoreError` when the store exists with another grid, chunking or job.
    """
    part = parse_part(part)
    if not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"retries must be an integer >= 0, got {retries!r}")
    output = OutputStore(store)
    template = make_template(job, time_chunk, chunks, history)
    output.create_or_check(template, job.describe())
    times = np.asarray(template["time"].values)
    done = output.done()
    pending = [r for r in output.regions if not done[r.index] and (part is None or r.index % part[1] == part[0] - 1)]
    bar = tqdm(total=len(pending), desc="batch", unit="region", disable=not progress)
    try:
        if client is None:
            for region in pending:
                _compute_region(job, output, region, times[region.start:region.stop])
                bar.update(1)
        elif pending:
            from distributed import as_completed

            from geodiff.batch.workers import AllocatorSetup

            client.register_plugin(AllocatorSetup())  # idempotent: by name
            shared = client.scatter(job, broadcast=True, hash=False)  # inputs shipped once per worker
            futures = [client.submit(_region_task, shared, str(output.path), region, times[region.start:region.stop],
                                     retries=retries, pure=False)
                       for region in pending]
            for future in as_completed(futures):
                future.result()
                bar.update(1)
    finally:
        bar.close()


@dataclass
class BatchStatus:
    """What a store holds: ``done`` of ``total`` regions, the missing ones and the job that made the store."""

    path: Path
    total: int
    done: int
    missing: list[tuple[int, int, int]] = field(default_factory=list)  # (region, first time index, stop)
    job: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True when every region is done."""
        return self.done == self.total

    def __str__(self) -> str:
        lines = [f"{self.path}: {self.done}/{self.total} regions done"]
        if self.missing:
            shown = ", ".join(f"{i} (times {a}:{b})" for i, a, b in self.missing[:20])
            more = f" and {len(self.missing) - 20} more" if len(self.missing) > 20 else ""
            lines.append(f"missing: {shown}{more}")
        lines.append(f"job: {json.dumps(self.job, default=str)}")
        return "\n".join(lines)


def status(store: str | Path) -> BatchStatus:
    """Which regions of the store are done (reads the ledger only)."""
    output = _open_store(store)
    done = output.done()
    missing = [(r.index, r.start, r.stop) for r in output.regions if not done[r.index]]
    return BatchStatus(output.path, len(done), int(done.sum()), missing, output.job)


def _open_store(store: str | Path) -> OutputStore:
    output = OutputStore(store)
    if not output.exists():
        raise StoreError(f"{store} is not a zarr store (no zarr.json)")
    return output


def _listed(problems: list[str]) -> str:
    return "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")


def verify(store: str | Path, *, repair: bool = False) -> list[str]:
    """Re-read the store: every problem found (regions not done, unreadable ledger entries, layout, chunks that
    fail their checksum or differ from what was written), as sentences; empty when the store is sound.

    ``repair=True`` marks every region with a bad chunk or ledger entry not done (the sentences then say so), so
    that running the same job again recomputes exactly those regions.
    """
    output = _open_store(store)
    problems = output.inspect()
    texts = [problem.text for problem in problems]
    if repair:
        repaired = output.repair(problems)
        if repaired:
            texts.append(f"marked regions {repaired} not done: run the same batch job again to recompute them")
    return texts


def finalise(store: str | Path, *, history: str | None = None) -> xr.Dataset:
    """Validate the store (every region done, grid and chunks as recorded, checksums) and consolidate metadata.

    Returns the output dataset (lazy). Raises :class:`~geodiff.errors.StoreError` listing every problem found
    (with how to recompute bad regions: :func:`verify` with ``repair=True``, then the job again).
    """
    output = _open_store(store)
    problems = output.inspect()
    if problems:
        hint = ""
        if any(p.repairable and p.region is not None for p in problems):
            hint = (" (to recompute the damaged regions: `geodiff batch verify --repair STORE` or "
                    "geodiff.batch.verify(store, repair=True), then run the batch job again)")
        raise StoreError(f"cannot finalise {store}: {_listed([p.text for p in problems])}{hint}")
    output.consolidate(history or "geodiff.batch.finalise: every region verified, metadata consolidated")
    return output.open(consolidated=True)
