"""Shared test settings: small thread counts (CI has 2 cores) and deterministic seeds."""

import os

# Single-threaded BLAS: on 2 shared cores, threaded OpenBLAS in several test workers is many times slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import torch

torch.set_num_threads(int(os.environ.get("GEODIFF_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)
    yield
