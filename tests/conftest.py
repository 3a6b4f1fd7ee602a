"""Shared test settings: small thread counts (CI has 2 cores) and deterministic seeds."""

import os

import numpy as np
import pytest
import torch

torch.set_num_threads(int(os.environ.get("GEODIFF_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)
    yield
