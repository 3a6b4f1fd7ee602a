"""EOF-based reconstruction: DINEOF (iterative, Beckers & Rixen 2003) and its stable limit, EOF projection.

:func:`dineof` works on the target's own gappy data. Observations are placed on the target grid (nearest cell;
several in one cell are averaged; the output's ``notes`` record it) and turned into anomalies from a background.
The anomaly matrix has one row per ocean cell of the 3-D grid (all depth levels stacked) and one column per time
step. Missing entries start at 0; each iteration replaces them by the rank-``k`` truncated-SVD reconstruction of
the matrix, until their relative change is below ``tol``. The number of modes is chosen by cross-validation: a
random ``cv_fraction`` of the observed entries is set aside, ``k = 1, 2, ...`` modes are run in turn (each
starting from the previous solution, as in DINEOF; stopping after ``patience`` modes without improvement), and
the smallest ``k`` whose validation RMSE is within 1 % (of the validation anomalies' RMS) of the best is rerun
with all data. Observation errors are not used (DINEOF has no error model). Observed cells keep their observed
value (``keep_observed=True``, as in DINEOF) or take the reconstruction.

:func:`eof_projection` is the stable least-squares limit when training data exist: EOFs (per depth level) are
computed once from training anomaly samples of the target's spatial shape (e.g. patches of the same size drawn
outside a held-out box), and each target field is the ridge-regularised least-squares fit of the EOF amplitudes
to its observations. With EOF variances ``lambda``, observation-error variances ``r`` and the training variance
left unexplained by the retained modes ``e`` (per cell), the amplitudes are
``c = (E_o' W E_o + ridge * diag(1 / lambda))^-1 E_o' W y`` with ``W = diag(1 / (r + e))``: for ``ridge = 1`` this
is the Gaussian posterior mean under the EOF prior, and the posterior std is returned too. The number of modes is
chosen by ``folds``-fold cross-validation over the observations. (Appending many complete training columns to
DINEOF's matrix approaches the same fit without the prior term, ``ridge -> 0``.)

Example
-------
>>> import numpy as np, xarray as xr
>>> from geodiff.baselines import dineof
>>> rng = np.random.default_rng(0)
>>> field = np.einsum("sk,tk->ts", rng.normal(size=(48, 2)), rng.normal(size=(10, 2))).reshape(10, 6, 8)
>>> truth = xr.DataArray(field, dims=("time", "lat", "lon"), name="t", coords={
...     "time": np.datetime64("2000-01-01") + np.arange(10) * np.timedelta64(1, "D"),
...     "lat": np.arange(6.0), "lon": np.arange(8.0)})
>>> obs = truth.stack(obs=truth.dims).to_dataset(name="value").reset_index("obs")
>>> obs = obs.isel(obs=rng.random(obs.sizes["obs"]) < 0.7).assign(error_std=lambda d: 0 * d.value)
>>> rec = dineof(obs, truth, background=0 * truth, tol=1e-8)
>>> int(rec.attrs["dineof_modes"]), bool(abs(rec.t - truth).max() < 1e-3)
(2, True)
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import xarray as xr

from geodiff.baselines._common import (
    CANONICAL,
    estimate_outputs,
    GridIndex,
    Observations,
    as_4d,
    locate,
    ocean_of,
    output_dataset,
    read_observations,
    select_field,
    variable_attrs,
)
from geodiff.baselines.climatology import climatology_values
from geodiff.errors import ConfigError, GridError, ObservationError

__all__ = ["dineof", "eof_projection"]

#: validation RMSEs within this fraction of the validation anomalies' RMS of the best count as ties (fewer modes win)
PARSIMONY = 0.01


def _grid_obs(obs: Observations, index: GridIndex, shape4: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, int]:
    """Average of the observations in each cell of ``shape4`` (NaN elsewhere), mean error variance, duplicates."""
    flat = np.ravel_multi_index((index.time, index.depth, index.lat, index.lon), shape4)
    values = obs.value[index.keep]
    errors = obs.error_std[index.keep] ** 2
    n = int(np.prod(shape4))
    counts = np.bincount(flat, minlength=n).astype(float)
    sums = np.bincount(flat, weights=values, minlength=n)
    err = np.bincount(flat, weights=errors, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / counts, np.nan).reshape(shape4)
        # the average of m observations with error variances r_i has variance sum(r_i) / m^2
        variance = np.where(counts > 0, err / counts**2, np.nan).reshape(shape4)
    return mean, variance, int((counts > 1).sum())


def _background(grid: xr.DataArray, name: str, background: Any, training: Any, by: str | None,
                observed: np.ndarray) -> tuple[np.ndarray, str]:
    shape4 = tuple(grid.sizes.get(d, 1) for d in CANONICAL)
    if background is not None:
        bg = select_field(background, name if isinstance(background, xr.Dataset) and name in background else None,
                          "background")
        if bg.shape != grid.shape:
            raise GridError(f"background has shape {bg.shape}; the target grid has {grid.shape}")
        return as_4d(np.asarray(bg.values, dtype=np.float64), grid), "given"
    if training is not None:
        train = select_field(training, name, "training")
        values, _, _ = climatology_values(train, grid, by=by, mode="auto")
        return values.reshape(shape4), f"climatology of the training data (by={by!r}, mode='auto')"
    seen = np.isfinite(observed)
    sums = np.where(seen, observed, 0.0).sum(axis=(0, 2, 3))
    counts = seen.sum(axis=(0, 2, 3))
    overall = sums.sum() / max(counts.sum(), 1)
    level_mean = np.where(counts > 0, sums / np.maximum(counts, 1), overall)  # levels without data: overall mean
    return np.broadcast_to(level_mean[None, :, None, None], shape4).copy(), "per-level mean of the observations"


def _rank_k(z: np.ndarray, k: int) -> np.ndarray:
    """Rank-``k`` truncated-SVD reconstruction of ``z [rows, cols]`` (via the small Gram matrix)."""
    if z.shape[1] <= z.shape[0]:
        _, vectors = np.linalg.eigh(z.T @ z)
        v = vectors[:, ::-1][:, :k]
        return (z @ v) @ v.T
    _, vectors = np.linalg.eigh(z @ z.T)
    u = vectors[:, ::-1][:, :k]
    return u @ (u.T @ z)


def _complete(
    z: np.ndarray, missing: np.ndarray, k: int, tol: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """DINEOF iterations with ``k`` modes: fill ``missing`` entries of ``z`` (in place) until converged."""
    recon = z
    for iteration in range(1, max_iter + 1):
        recon = _rank_k(z, k)
        new = recon[missing]
        old = z[missing]
        change = np.linalg.norm(new - old) / max(np.linalg.norm(new), 1e-300)
        z[missing] = new
        if change < tol:
            return z, recon, iteration
    return z, recon, max_iter


def dineof(
    observations: Any,
    target: xr.Dataset | xr.DataArray,
    *,
    variable: str | None = None,
    background: xr.Dataset | xr.DataArray | None = None,
    training: xr.Dataset | xr.DataArray | None = None,
    by: str | None = None,
    max_modes: int | None = None,
    cv_fraction: float = 0.1,
    tol: float = 1e-5,
    max_iter: int = 500,
    patience: int = 3,
    keep_observed: bool = True,
    seed: int = 0,
) -> xr.Dataset:
    """DINEOF gap filling of the target's observed cells (see the module docstring).

    Parameters
    ----------
    observations : observation table (see :func:`~geodiff.baselines.optimal_interpolation`).
    target : grid template ``(time, [depth], lat, lon)`` with at least 2 time steps; NaN = land.
    background : anomaly reference on the target grid; default the climatology of ``training`` (with ``by``) if
        given, else the per-level mean of the observations.
    max_modes : most modes tried (default ``min(time steps - 1, 20)``); ``cv_fraction`` of the observed entries
        validate the choice (deterministic in ``seed``).
    tol, max_iter : convergence of the iterations for each number of modes.
    patience : stop adding modes once the validation RMSE has not improved for this many more modes.

    Returns
    -------
    xr.Dataset on the target grid with the input variable name, NaN on land; attrs ``dineof_modes`` and the
    validation RMSE per number of modes (``dineof_cv_rmse``, JSON).

    Example
    -------
    >>> import numpy as np, xarray as xr
    >>> from geodiff.baselines import dineof
    >>> grid = xr.DataArray(np.zeros((3, 2, 2)), dims=("time", "lat", "lon"), name="t", coords={
    ...     "time": np.datetime64("2000-01-01") + np.arange(3) * np.timedelta64(1, "D"), "lat": [0.0, 1.0],
    ...     "lon": [0.0, 1.0]})
    >>> obs = xr.Dataset({"value": ("obs", [1.0, 2.0, 3.0]), "error_std": ("obs", [0.0, 0.0, 0.0])},
    ...     coords={"lat": ("obs", [0.0, 0.0, 1.0]), "lon": ("obs", [0.0, 1.0, 1.0]),
    ...             "time": ("obs", grid.time.values)})
    >>> dineof(obs, grid, background=grid, cv_fraction=0.34).t.sizes["time"]
    3
    """
    grid = select_field(target, variable, "target")
    name = str(variable or grid.name)
    if "time" not in grid.dims or grid.sizes["time"] < 2:
        raise GridError("dineof needs a target with a 'time' dimension of at least 2 steps (its matrix columns); "
                        "use eof_projection for single fields")
    if not 0.0 < cv_fraction < 1.0:
        raise ConfigError(f"cv_fraction must be in (0, 1), got {cv_fraction}")
    if tol <= 0 or max_iter < 1 or patience < 1:
        raise ConfigError("tol must be > 0, max_iter >= 1 and patience >= 1")
    obs = read_observations(observations, name, grid)
    index = locate(obs, grid)
    shape4 = tuple(grid.sizes.get(d, 1) for d in CANONICAL)
    observed, _, duplicates = _grid_obs(obs, index, shape4)
    bg, bg_note = _background(grid, name, background, training, by, observed)
    ocean = ocean_of(grid).reshape(shape4)
    rows = np.flatnonzero(np.any(ocean, axis=0).ravel())  # ocean cells over (depth, lat, lon)
    n_time = shape4[0]
    anomaly = (observed - bg).reshape(n_time, -1)[:, rows].T  # [rows, time]
    seen = np.isfinite(anomaly)
    n_seen = int(seen.sum())
    if n_seen < 3:
        raise ObservationError(f"dineof needs at least 3 observed cells on the target grid, got {n_seen}")
    if max_modes is not None and max_modes < 1:
        raise ConfigError(f"max_modes must be >= 1, got {max_modes}")
    limit = max(1, min(n_time - 1, 20 if max_modes is None else int(max_modes)))

    rng = np.random.default_rng(seed)
    seen_idx = np.flatnonzero(seen.ravel())
    n_val = max(1, int(round(cv_fraction * seen_idx.size)))
    val_idx = rng.choice(seen_idx, size=n_val, replace=False)
    train_seen = seen.copy().ravel()
    train_seen[val_idx] = False
    train_seen = train_seen.reshape(seen.shape)
    z = np.where(train_seen, anomaly, 0.0)
    truth_val = anomaly.ravel()[val_idx]
    scores = []
    for k in range(1, limit + 1):
        z, recon, _ = _complete(z, ~train_seen, k, tol, max_iter)
        scores.append(float(np.sqrt(np.mean((recon.ravel()[val_idx] - truth_val) ** 2))))
        if len(scores) - 1 - int(np.argmin(scores)) >= patience:
            break  # no improvement for `patience` more modes
    margin = PARSIMONY * float(np.sqrt(np.mean(truth_val**2)))
    best = 1 + int(np.flatnonzero(np.asarray(scores) <= min(scores) + margin)[0])
    z = np.where(seen, anomaly, 0.0)
    iterations = 0
    for k in range(1, best + 1):
        z, recon, iterations = _complete(z, ~seen, k, tol, max_iter)
    filled = z if keep_observed else recon
    result = bg.reshape(n_time, -1).copy()
    result[:, rows] += filled.T
    notes = list(index.notes)
    if duplicates:
        notes.append(f"{duplicates} cells hold several observations (averaged)")
    notes.append("observation errors are not used by DINEOF")
    attrs = variable_attrs(grid)
    if "long_name" in attrs:
        attrs["long_name"] = f"{attrs['long_name']} (DINEOF reconstruction)"
    source_attrs = target.attrs if isinstance(target, xr.Dataset) else {}
    return output_dataset(
        {name: (result, attrs)}, grid, source_attrs,
        f"geodiff.baselines.dineof(modes={best}, cv_fraction={cv_fraction}, seed={seed})",
        {"baseline": "dineof", "dineof_modes": best, "dineof_cv_rmse": json.dumps(scores),
         "dineof_iterations": iterations, "dineof_background": bg_note, "notes": "; ".join(notes)},
    )


def _training_matrix(training: Any, name: str, grid: xr.DataArray) -> tuple[np.ndarray, str]:
    """Training anomalies as [samples, depth, lat, lon] (the input's dtype, NaN kept)."""
    da = training
    if isinstance(training, xr.Dataset):
        if name not in training:
            raise GridError(f"training_anomalies has no variable {name!r}")
        da = training[name]
    if not isinstance(da, xr.DataArray):
        raise GridError(f"training_anomalies must be an xarray Dataset or DataArray, got {type(training).__name__}")
    ny, nx = grid.sizes["lat"], grid.sizes["lon"]
    nk = grid.sizes.get("depth", 1)
    spatial = list(da.dims[-2:])
    if "depth" in grid.dims:
        if "depth" not in da.dims:
            raise GridError("training_anomalies have no 'depth' dimension but the target has depth levels")
        da = da.transpose(..., "depth", *spatial)
    shape = tuple(da.shape[-3:]) if "depth" in grid.dims else (1, *da.shape[-2:])
    if shape != (nk, ny, nx):
        raise GridError(f"training_anomalies samples have (depth, y, x) shape {shape}; the target has {(nk, ny, nx)}")
    values = np.asarray(da.values).reshape(-1, nk, ny, nx)
    return values, f"{values.shape[0]} samples of dims {tuple(da.dims)}"


def _eofs(samples: np.ndarray, max_modes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EOFs [space, m], variances [m] and per-cell total variance [space] of samples [n, space] (not centred).

    The leading singular vectors come from a randomised range finder with four power iterations (Halko et al.
    2011) when ``max_modes`` is well below the matrix size, else from a full SVD.
    """
    n, size = samples.shape
    total = np.mean(samples**2, axis=0)
    count = min(max_modes, n, size)
    if 2 * (count + 10) >= min(n, size):
        _, sv, vt = np.linalg.svd(samples, full_matrices=False)
    else:
        y = samples @ rng.standard_normal((size, count + 10))
        for _ in range(4):
            q, _ = np.linalg.qr(y)
            q, _ = np.linalg.qr(samples.T @ q)
            y = samples @ q
        q, _ = np.linalg.qr(y)
        _, sv, vt = np.linalg.svd(q.T @ samples, full_matrices=False)
    values = sv[:count] ** 2 / n
    eofs = vt[:count].T
    keep = values > 1e-10 * max(values[0], 1e-300)
    return eofs[:, keep], values[keep], total


def _solve(
    eofs_o: np.ndarray, y: np.ndarray, w: np.ndarray, lam: np.ndarray, ridge: float
) -> tuple[np.ndarray, np.ndarray]:
    a = eofs_o.T @ (eofs_o * w[:, None]) + np.diag(ridge / lam)
    chol = np.linalg.cholesky(a)
    rhs = eofs_o.T @ (w * y)
    coef = np.linalg.solve(chol.T, np.linalg.solve(chol, rhs))
    return coef, chol


def eof_projection(
    observations: Any,
    target: xr.Dataset | xr.DataArray,
    training_anomalies: xr.Dataset | xr.DataArray,
    *,
    background: xr.Dataset | xr.DataArray,
    variable: str | None = None,
    n_modes: int | None = None,
    max_modes: int = 40,
    ridge: float = 1.0,
    folds: int = 5,
    return_std: bool = True,
    seed: int = 0,
) -> xr.Dataset:
    """Fit EOF amplitudes (learned from training anomalies) to the observations; ridge-regularised least squares.

    Parameters
    ----------
    observations : observation table (see :func:`~geodiff.baselines.optimal_interpolation`).
    target : grid template ``([time], [depth], lat, lon)``; NaN = land.
    training_anomalies : anomaly samples from the same kind of background; the trailing dims are the target's
        ``(depth, lat, lon)`` shape (names free, e.g. ``(patch, time, depth, y, x)`` from
        :meth:`geodiff.adapters.woa.HoldoutSplit.training_patches` with ``anomalies=True``); all leading dims are
        samples. NaN (land) counts as 0 anomaly.
    background : the field the anomalies are added to, on the target grid.
    n_modes : fixed number of EOFs; default chosen by ``folds``-fold cross-validation up to ``max_modes``.
    ridge : weight of the prior ``sum c_j^2 / lambda_j`` (1 = Gaussian posterior mean).

    Returns
    -------
    xr.Dataset on the target grid: ``<variable>`` and (``return_std``) ``<variable>_std``, NaN on land.

    Example
    -------
    >>> import numpy as np, xarray as xr
    >>> from geodiff.baselines import eof_projection
    >>> rng = np.random.default_rng(0)
    >>> modes = rng.normal(size=(2, 4, 5))
    >>> train = xr.DataArray(np.einsum("nk,kyx->nyx", rng.normal(size=(50, 2)), modes), dims=("sample", "y", "x"))
    >>> grid = xr.DataArray(np.zeros((4, 5)), dims=("lat", "lon"), name="t",
    ...                     coords={"lat": np.arange(4.0), "lon": np.arange(5.0)})
    >>> truth = 1.5 * modes[0] - modes[1]
    >>> obs = xr.Dataset({"value": ("obs", truth[:, :3].ravel()), "error_std": ("obs", np.zeros(12))},
    ...     coords={"lat": ("obs", np.repeat(np.arange(4.0), 3)), "lon": ("obs", np.tile(np.arange(3.0), 4))})
    >>> rec = eof_projection(obs, grid, train, background=grid, n_modes=2, ridge=1e-6)
    >>> bool(np.abs(rec.t.values - truth).max() < 1e-3)
    True
    """
    grid = select_field(target, variable, "target")
    name = str(variable or grid.name)
    if ridge < 0 or not np.isfinite(ridge):
        raise ConfigError(f"ridge must be a finite number >= 0, got {ridge}")
    if folds < 2:
        raise ConfigError(f"folds must be >= 2, got {folds}")
    if n_modes is not None and n_modes < 1:
        raise ConfigError(f"n_modes must be >= 1, got {n_modes}")
    obs = read_observations(observations, name, grid)
    index = locate(obs, grid)
    shape4 = tuple(grid.sizes.get(d, 1) for d in CANONICAL)
    observed, err_var, duplicates = _grid_obs(obs, index, shape4)
    bg_da = select_field(background, name if isinstance(background, xr.Dataset) and name in background else None,
                         "background")
    if bg_da.shape != grid.shape:
        raise GridError(f"background has shape {bg_da.shape}; the target grid has {grid.shape}")
    bg = as_4d(np.asarray(bg_da.values, dtype=np.float64), grid)
    samples, sample_note = _training_matrix(training_anomalies, name, grid)
    n_t, n_k, ny, nx = shape4
    ocean = ocean_of(grid).reshape(shape4)
    top = int(n_modes) if n_modes is not None else int(max_modes)

    bases = []
    rng_eof = np.random.default_rng([seed, 1])
    for k in range(n_k):
        level = np.nan_to_num(samples[:, k].reshape(samples.shape[0], -1).astype(np.float64), nan=0.0)
        eofs, lam, total = _eofs(level, top, rng_eof)
        if lam.size == 0:
            raise GridError(f"training_anomalies are all zero at depth index {k}")
        bases.append((eofs, lam, total))
    floor = 1e-6 * max(float(np.mean([b[2].mean() for b in bases])), 1e-300)

    cache: dict[tuple[int, int], np.ndarray] = {}

    def residual_var(k: int, m: int) -> np.ndarray:
        if (k, m) not in cache:
            eofs, lam, total = bases[k]
            cache[(k, m)] = np.maximum(total - (eofs[:, :m] ** 2) @ lam[:m], 0.0) + floor
        return cache[(k, m)]

    problems = []  # (k, t, cells, anomalies, error variances)
    for t in range(n_t):
        for k in range(n_k):
            level = observed[t, k].ravel()
            cells = np.flatnonzero(np.isfinite(level) & ocean[t, k].ravel())
            if cells.size:
                y = level[cells] - bg[t, k].ravel()[cells]
                problems.append((k, t, cells, y, err_var[t, k].ravel()[cells]))
    if not problems:
        raise ObservationError("no observation falls on an ocean cell of the target grid")

    def predict(k, cells, y, r, m, at):
        eofs, lam, _ = bases[k]
        m = min(m, lam.size)
        e = eofs[:, :m]
        w = 1.0 / (r + residual_var(k, m)[cells])
        coef, chol = _solve(e[cells], y, w, lam[:m], max(ridge, 1e-12))
        return e[at] @ coef, e, chol, m

    scores: dict[int, float] = {}
    if n_modes is None:
        limit = max(len(b[1]) for b in bases)
        candidates = sorted({m for m in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128) if m <= limit} | {limit})
        rng = np.random.default_rng(seed)
        fold_of = [rng.integers(0, folds, size=p[2].size) for p in problems]
        for m in candidates:
            se, count = 0.0, 0
            for (k, _, cells, y, r), fold in zip(problems, fold_of, strict=True):
                for f in range(folds):
                    held, fit = fold == f, fold != f
                    if not held.any() or not fit.any():
                        continue
                    pred, *_ = predict(k, cells[fit], y[fit], r[fit], m, cells[held])
                    se += float(np.sum((pred - y[held]) ** 2))
                    count += int(held.sum())
            scores[m] = float(np.sqrt(se / max(count, 1)))
        chosen = min(scores, key=scores.get)
    else:
        chosen = int(n_modes)

    mean = bg.copy()
    std = np.full(shape4, np.nan)
    for k in range(n_k):
        _, lam, _ = bases[k]
        m = min(chosen, lam.size)
        prior_std = np.sqrt((bases[k][0][:, :m] ** 2) @ lam[:m] + residual_var(k, m))
        for t in range(n_t):
            std[t, k] = prior_std.reshape(ny, nx)
    everywhere = np.arange(ny * nx)
    for k, t, cells, y, r in problems:
        pred, e, chol, m = predict(k, cells, y, r, chosen, everywhere)
        mean[t, k] += pred.reshape(ny, nx)
        if return_std:
            half = np.linalg.solve(chol, e.T)  # A^-1 = chol^-T chol^-1, so diag(E A^-1 E^T) = |chol^-1 E^T|^2
            std[t, k] = np.sqrt(np.sum(half**2, axis=0) + residual_var(k, m)).reshape(ny, nx)
    outputs = estimate_outputs(name, grid, mean, std if return_std else None, "EOF projection")
    notes = list(index.notes)
    if duplicates:
        notes.append(f"{duplicates} cells hold several observations (averaged)")
    source_attrs = target.attrs if isinstance(target, xr.Dataset) else {}
    return output_dataset(
        outputs, grid, source_attrs,
        f"geodiff.baselines.eof_projection(n_modes={chosen}, ridge={ridge}, seed={seed})",
        {"baseline": "eof_projection", "eof_modes": chosen, "eof_cv_rmse": json.dumps(scores),
         "eof_training": sample_note, "eof_ridge": float(ridge), "notes": "; ".join(notes) or "none"},
    )
