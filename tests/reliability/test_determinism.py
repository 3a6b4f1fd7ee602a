"""Same seed, same bits: reconstructions on CPU are bitwise reproducible, in another process, from a reloaded bundle,
and whatever the order (or subset) of the times processed, because each time's generator comes from (seed, time)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import geodiff
from geodiff.pipelines.reconstruct import reconstruct
from tests.reliability import helpers

# the untrained test model leaves the training range in 3 steps; determinism is what is tested here
SETTINGS = {"members": 2, "steps": 3, "progress": False, "max_normalized": None}


@pytest.fixture(scope="module")
def model():
    return helpers.bundle()


@pytest.fixture(scope="module")
def obs():
    return helpers.observations(times=helpers.TIMES)


def digest(ds) -> str:
    return hashlib.sha256(np.ascontiguousarray(ds.thetao.values).tobytes()).hexdigest()


@pytest.mark.parametrize("sampler", ["heun", "ddpm"])  # deterministic and stochastic transitions
def test_same_seed_gives_bitwise_equal_output_and_another_seed_does_not(model, obs, sampler) -> None:
    first = reconstruct(model, obs, seed=7, sampler=sampler, **SETTINGS)
    second = reconstruct(model, obs, seed=7, sampler=sampler, **SETTINGS)
    other = reconstruct(model, obs, seed=8, sampler=sampler, **SETTINGS)
    np.testing.assert_array_equal(first.thetao.values, second.thetao.values)
    assert digest(first) == digest(second)
    assert not np.array_equal(first.thetao.values, other.thetao.values, equal_nan=True)
    assert np.isnan(first.thetao.values).sum() == np.isnan(other.thetao.values).sum()  # the same land


@pytest.mark.parametrize("sampler", ["heun", "ddpm"])
def test_times_in_another_order_or_alone_give_the_same_fields(model, obs, sampler) -> None:
    times = helpers.TIMES
    forward = reconstruct(model, obs, seed=3, sampler=sampler, times=times, **SETTINGS)
    backward = reconstruct(model, obs, seed=3, sampler=sampler, times=times[::-1], **SETTINGS)
    alone = reconstruct(model, obs, seed=3, sampler=sampler, times=times[1:2], **SETTINGS)
    assert backward.time.values.tolist() == times[::-1].tolist()
    for t in times:
        np.testing.assert_array_equal(forward.thetao.sel(time=t).values, backward.thetao.sel(time=t).values)
    np.testing.assert_array_equal(forward.thetao.sel(time=times[1]).values, alone.thetao.sel(time=times[1]).values)
    # the times really differ (each its own generator and observations)
    assert not np.array_equal(forward.thetao.isel(time=0).values, forward.thetao.isel(time=1).values, equal_nan=True)


SCRIPT = textwrap.dedent(
    """
    import hashlib, sys
    import numpy as np, pandas as pd, torch
    torch.set_num_threads(1)
    import geodiff
    from geodiff.pipelines.reconstruct import reconstruct
    obs = pd.read_csv(sys.argv[2], parse_dates=["time"])
    out = reconstruct(geodiff.load(sys.argv[1]), obs, seed=11, members=2, steps=3, progress=False, max_normalized=None)
    print(hashlib.sha256(np.ascontiguousarray(out.thetao.values).tobytes()).hexdigest())
    """
)


def test_a_reloaded_bundle_in_another_process_gives_the_same_bits(model, obs, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    model.save(folder)
    obs.to_csv(tmp_path / "obs.csv", index=False)
    table = obs.copy()
    here = reconstruct(model, table, seed=11, members=2, steps=3, progress=False, max_normalized=None)
    reloaded = reconstruct(geodiff.load(folder), table, seed=11, members=2, steps=3, progress=False, max_normalized=None)
    assert digest(reloaded) == digest(here)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(folder), str(tmp_path / "obs.csv")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == digest(here)
