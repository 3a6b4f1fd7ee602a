"""Twin-experiment ingredients from a forecast model (pure torch): truth runs, backgrounds, observation sites.

- :func:`truth_run`: a spun-up trajectory ``[T, C, H, W]`` every ``interval_s`` seconds;
- :func:`backgrounds`: forecasts over ``lead_s`` from perturbed earlier truths (perturbed analyses), so that
  ``backgrounds(...)[t]`` is a background for ``truth[t + k]`` (``k = lead_s / interval_s``);
- :func:`observation_sites`: random positions inside the grid (away from the edges, where bilinear
  interpolation needs no wrap-around).

Example
-------
>>> import torch
>>> from geodiff.dynamics import BarotropicModel
>>> from geodiff.dynamics.twin import truth_run, backgrounds
>>> model = BarotropicModel(nx=16, ny=16)
>>> truth = truth_run(model, 4, 6 * 3600.0, spin_up_s=24 * 3600.0, seed=0)
>>> truth.shape
torch.Size([4, 3, 16, 16])
>>> backgrounds(model, truth[:-1], 6 * 3600.0, rms_wind=1.0, seed=1).shape  # for truth[1:]
torch.Size([3, 3, 16, 16])
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from geodiff.dynamics.barotropic import BarotropicModel
from geodiff.errors import ConfigError

__all__ = ["truth_run", "backgrounds", "perturb", "observation_sites"]


def truth_run(
    model: BarotropicModel, n_times: int, interval_s: float, *, spin_up_s: float, seed: int,
    progress: bool = False,
) -> Tensor:
    """Truth trajectory ``[n_times, 3, ny, nx]`` (float64) after ``spin_up_s`` seconds from a random state."""
    if n_times < 1:
        raise ConfigError(f"n_times must be >= 1, got {n_times}")
    start = model.random_state(1, generator=torch.Generator().manual_seed(seed))
    start = model.spin_up(start, spin_up_s, progress=progress)
    return model.trajectory(start, n_times, interval_s, progress=progress)[:, 0]


def perturb(model: BarotropicModel, states: Tensor, *, rms_wind: float, seed: int) -> Tensor:
    """``states [B, 3, ny, nx]`` plus independent balanced random perturbations of rms wind ``rms_wind`` (m/s)."""
    noise = model.random_state(states.shape[0], generator=torch.Generator().manual_seed(seed), rms_wind=rms_wind)
    return states + noise.to(states.dtype)


def backgrounds(
    model: BarotropicModel, earlier: Tensor, lead_s: float, *, rms_wind: float, seed: int, batch: int = 256
) -> Tensor:
    """Forecasts ``[B, 3, ny, nx]`` over ``lead_s`` of ``earlier [B, ...]`` perturbed by :func:`perturb`."""
    out = []
    for start in range(0, earlier.shape[0], batch):
        chunk = perturb(model, earlier[start : start + batch], rms_wind=rms_wind, seed=seed + start)
        out.append(model.forecast(chunk, lead_s))
    return torch.cat(out)


def observation_sites(model: BarotropicModel, n_sites: int, *, seed: int, margin: int = 1) -> tuple[np.ndarray, ...]:
    """``(lat [n], lon [n])`` uniformly at random inside the grid, ``margin`` cells from its edges."""
    coords = model.coordinates()
    lat, lon = coords["lat"], coords["lon"]
    rng = np.random.default_rng(seed)
    return (rng.uniform(lat[margin], lat[-1 - margin], n_sites), rng.uniform(lon[margin], lon[-1 - margin], n_sites))
