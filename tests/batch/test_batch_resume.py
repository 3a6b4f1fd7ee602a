"""kill -9 during a batch job, twice, then resume: the finished store is identical to an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from geodiff.batch import finalise, run_batch, status
from tests.batch.conftest import assert_same_store
from tests.batch.helpers import RUN, TIMES, reconstruct_job

SCRIPT = Path(__file__).with_name("batch_script.py")


def _run_until(bundle, store, at_least: int) -> int:
    """Start the batch in a subprocess, SIGKILL it once ``at_least`` regions are recorded; regions done then."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(SCRIPT), str(bundle), str(store)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"the batch ended before it was killed: {process.stderr.read()[-2000:]}")
            if (store / "geodiff_ledger").exists() and status(store).done >= at_least:
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the batch made no progress in 120 s")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    return status(store).done


def test_killed_twice_then_resumed_equals_uninterrupted(bundle, reference, tmp_path):
    store = tmp_path / "resumed.zarr"
    first = _run_until(bundle, store, 2)
    assert 2 <= first < TIMES
    second = _run_until(bundle, store, first + 3)
    assert first < second < TIMES
    state = status(store)
    assert len(state.missing) == TIMES - second
    run_batch(reconstruct_job(bundle), store, **RUN)  # the same call finishes the job
    assert status(store).complete
    finalise(store)
    assert_same_store(store, reference)
