"""Batch jobs over long time series: resumable zarr output, completion ledger, parts, dask.distributed.

- :mod:`geodiff.batch.job`: the :class:`BatchJob` contract and pipeline-backed jobs (:class:`PipelineJob`).
- :mod:`geodiff.batch.store`: the zarr (v3) store: template, layout checks, region writes, checksums, ledger.
- :mod:`geodiff.batch.runner`: :func:`run_batch`, :func:`status`, :func:`verify` (and repair), :func:`finalise`.

Example
-------
>>> from geodiff.batch import parse_part
>>> parse_part("1/3")
(1, 3)
"""

from geodiff.batch.job import JOB_KINDS, BatchJob, JobKind, PipelineJob, region_seed, select_times
from geodiff.batch.runner import BatchStatus, finalise, make_template, parse_part, run_batch, status, verify
from geodiff.batch.store import OutputStore

__all__ = [
    "BatchJob", "JobKind", "JOB_KINDS", "PipelineJob", "region_seed", "select_times",
    "run_batch", "status", "verify", "finalise", "parse_part", "make_template", "BatchStatus", "OutputStore",
]
