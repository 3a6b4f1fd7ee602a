"""What a batch sets up on each ``dask.distributed`` worker before it computes regions: the memory allocator.

``distributed``'s nanny starts every worker process with ``MALLOC_TRIM_THRESHOLD_=65536``. Setting that variable
switches off glibc's dynamic mmap threshold, so every tensor above 128 KiB is mapped from the kernel and unmapped
again when freed: each network evaluation then pays page faults for all its activations, and a one-worker cluster
computed regions at 0.6x the speed of the same loop in one process. :class:`AllocatorSetup`, registered on the
client by :func:`~geodiff.batch.runner.run_batch`, raises both thresholds in every worker (now and after a
restart) so freed activation memory is reused as in a plain process; a worker's resident memory then stays at its
peak rather than shrinking between regions. Only glibc (Linux) has ``mallopt``; elsewhere nothing is changed.

Example
-------
>>> from geodiff.batch.workers import AllocatorSetup, tune_allocator
>>> AllocatorSetup.name
'geodiff-batch-allocator'
>>> isinstance(tune_allocator(), bool)
True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["AllocatorSetup", "tune_allocator", "allocator_tuned", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

#: allocations below this many bytes come from the reusable heap (glibc's largest allowed value on 64-bit)
MMAP_THRESHOLD = 32 * 2**20
#: free memory at the top of the heap kept for reuse rather than returned to the kernel (bytes)
TRIM_THRESHOLD = 256 * 2**20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_TUNED: dict[str, bool] = {"done": False}  # whether this process's allocator was set by tune_allocator


def tune_allocator() -> bool:
    """Set glibc's mmap and trim thresholds of this process (:data:`MMAP_THRESHOLD`, :data:`TRIM_THRESHOLD`);
    True when done, False where the C library has no ``mallopt`` (not glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    _TUNED["done"] = _TUNED["done"] or done
    return done


def allocator_tuned() -> bool:
    """True when :func:`tune_allocator` has set this process's allocator."""
    return _TUNED["done"]


class AllocatorSetup(WorkerPlugin):
    """Worker plugin: :func:`tune_allocator` when a worker starts (and on workers already running)."""

    name = "geodiff-batch-allocator"

    def setup(self, worker: Any) -> None:
        tune_allocator()
