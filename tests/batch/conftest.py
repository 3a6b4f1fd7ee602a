"""Session fixtures of the batch tests: a tiny trained bundle and an uninterrupted, finalised reference run."""

import re

import pytest

from geodiff.batch import finalise, run_batch
from tests.batch.helpers import RUN, reconstruct_job, tiny_bundle


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    return tiny_bundle(tmp_path_factory.mktemp("batch") / "bundle")


@pytest.fixture(scope="session")
def reference(bundle, tmp_path_factory):
    """The store of an uninterrupted serial run (finalised), as a path."""
    path = tmp_path_factory.mktemp("batch") / "reference.zarr"
    run_batch(reconstruct_job(bundle), path, **RUN)
    finalise(path)
    return path


def without_stamps(history: str) -> list[str]:
    """History lines without their leading UTC time stamps."""
    return [re.sub(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", "", line) for line in history.splitlines()]


def assert_same_store(a, b):
    """Two finalised stores hold identical datasets; their histories differ at most in the time stamps."""
    import xarray as xr

    left, right = (xr.open_zarr(p, consolidated=True).load() for p in (a, b))
    assert without_stamps(left.attrs.pop("history")) == without_stamps(right.attrs.pop("history"))
    xr.testing.assert_identical(left, right)
