"""Verification metrics, xarray-native and dask-friendly: ``truth`` and ``estimate`` in, DataArray/Dataset out.

Conventions shared by every function:

* ``dim``: dimensions to reduce; ``None`` reduces over all of them, ``[]`` keeps every point.
* ``weights``: ``None`` (equal), ``"coslat"`` (cos of the ``lat`` coordinate, area weights on a regular grid), or a
  DataArray broadcastable against the data.
* ``where``: optional boolean DataArray; only cells where it is True count.
* Cells where the truth or the estimate is NaN (land) are skipped, except in :func:`reconmost_mse_split` (see there).

Probabilistic scores take an ensemble with a member dimension (``member_dim="member"``). :func:`crps_ensemble`
uses scoringrules' *fair* estimator by default, ``mean_i |x_i - y| - sum_ij |x_i - x_j| / (2 M (M - 1))``, which is
unbiased for the CRPS of the distribution the M members are drawn from (the ``"nrg"`` estimator divides by
``2 M^2`` instead and favours small ensembles). :func:`spread_skill_ratio` is
``sqrt((M + 1) / M) * sqrt(mean ensemble variance) / RMSE(ensemble mean)``, with the variance taken with ddof=1;
the factor corrects for the finite ensemble, so a calibrated ensemble of any size scores 1 in expectation.

Example
-------
>>> import numpy as np, xarray as xr
>>> from geodiff import metrics
>>> truth = xr.DataArray(np.zeros((2, 3)), dims=("lat", "lon"), coords={"lat": [0.0, 60.0]})
>>> estimate = truth + xr.DataArray([1.0, 2.0], dims="lat", coords={"lat": [0.0, 60.0]})
>>> float(metrics.rmse(truth, estimate) ** 2)  # (1 + 4) / 2
2.5
>>> float(metrics.rmse(truth, estimate, weights="coslat") ** 2)  # (1 * 1 + 4 * 0.5) / 1.5
2.0
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any, TypeVar

import numpy as np
import xarray as xr

from geodiff.errors import ConfigError, CoordinateError, GridError

__all__ = [
    "bias",
    "crps_ensemble",
    "crps_gaussian",
    "lat_weights",
    "mae",
    "mse",
    "random_guidance_mask",
    "reconmost_mse_split",
    "rmse",
    "spread_skill_ratio",
]

XArray = TypeVar("XArray", xr.DataArray, xr.Dataset)
Dims = Hashable | Iterable[Hashable] | None
Weights = str | xr.DataArray | None


def lat_weights(lat: xr.DataArray) -> xr.DataArray:
    """Area weights ``cos(lat)`` (lat in degrees), clipped at 0 so +-90 get weight 0.

    Example
    -------
    >>> import xarray as xr
    >>> from geodiff.metrics import lat_weights
    >>> lat_weights(xr.DataArray([0.0, 60.0], dims="lat")).round(3).values.tolist()
    [1.0, 0.5]
    """
    weights = np.cos(np.deg2rad(lat)).clip(min=0.0)
    weights.name = "lat_weights"
    weights.attrs = {"long_name": "area weights cos(latitude)", "units": "1"}
    return weights


def _resolve_weights(weights: Weights, reference: xr.DataArray | xr.Dataset) -> xr.DataArray | None:
    if weights is None:
        return None
    if isinstance(weights, str):
        if weights != "coslat":
            raise ConfigError(f"weights={weights!r}: expected None, 'coslat' or a DataArray")
        if "lat" not in reference.coords:
            raise CoordinateError("weights='coslat' needs a 'lat' coordinate on the truth")
        return lat_weights(reference["lat"])
    if not isinstance(weights, xr.DataArray):
        raise ConfigError(f"weights must be None, 'coslat' or an xarray.DataArray, got {type(weights).__name__}")
    return weights


def _dims(obj: xr.DataArray | xr.Dataset, dim: Dims) -> list[Hashable]:
    if dim is None:
        return list(obj.dims)
    names = [dim] if isinstance(dim, str) or not isinstance(dim, Iterable) else list(dim)
    missing = [name for name in names if name not in obj.dims]
    if missing:
        raise CoordinateError(f"cannot reduce over {missing}: the data have dims {tuple(obj.dims)}")
    return names


def _weighted_mean(values: XArray, dim: Dims, weights: Weights, where: xr.DataArray | None, reference) -> XArray:
    """Mean of ``values`` over ``dim`` with weights, skipping NaN and cells where ``where`` is False."""
    valid = values.notnull()
    if where is not None:
        if not isinstance(where, xr.DataArray) or where.dtype != bool:
            raise ConfigError("where must be a boolean xarray.DataArray")
        valid = valid & where
    w = _resolve_weights(weights, reference)
    w = valid.astype(np.float64) if w is None else (w.fillna(0.0) * valid)
    dims = _dims(values, dim)
    numerator = (values.fillna(0.0) * w).sum(dims)
    denominator = w.sum(dims)
    return numerator / denominator.where(denominator > 0)


def _check_pair(truth: Any, estimate: Any, names: tuple[str, str] = ("truth", "estimate")) -> None:
    """Both xarray objects, on the same grid: xarray would otherwise align them silently (an inner join that
    scores only the shared cells, or none at all)."""
    for name, value in zip(names, (truth, estimate)):
        if not isinstance(value, xr.DataArray | xr.Dataset):
            raise ConfigError(f"{name} must be an xarray DataArray or Dataset, got {type(value).__name__}")
    differ = [str(dim) for dim in truth.indexes if dim in estimate.indexes
              and not truth.indexes[dim].equals(estimate.indexes[dim])]
    if differ:
        first = differ[0]
        raise GridError(
            f"{names[0]} and {names[1]} are on different grids: coordinate(s) {differ} differ (e.g. {first!r}: "
            f"{truth.indexes[first].size} values from {truth.indexes[first][0]} vs {estimate.indexes[first].size} "
            f"from {estimate.indexes[first][0]}); regrid or select one onto the other (metrics never align silently)"
        )


def mse(truth: XArray, estimate: XArray, dim: Dims = None, *, weights: Weights = None,
        where: xr.DataArray | None = None) -> XArray:
    """Mean squared error ``mean((estimate - truth)^2)``.

    Example
    -------
    >>> import xarray as xr
    >>> from geodiff.metrics import mse
    >>> float(mse(xr.DataArray([0.0, 0.0]), xr.DataArray([1.0, 3.0])))
    5.0
    """
    _check_pair(truth, estimate)
    return _weighted_mean((estimate - truth) ** 2, dim, weights, where, truth)


def rmse(truth: XArray, estimate: XArray, dim: Dims = None, *, weights: Weights = None,
         where: xr.DataArray | None = None) -> XArray:
    """Root-mean-square error ``sqrt(mean((estimate - truth)^2))`` (the mean is weighted, then the root taken).

    Example
    -------
    >>> import xarray as xr
    >>> from geodiff.metrics import rmse
    >>> float(rmse(xr.DataArray([0.0, 0.0]), xr.DataArray([3.0, -3.0])))
    3.0
    """
    return np.sqrt(mse(truth, estimate, dim, weights=weights, where=where))


def mae(truth: XArray, estimate: XArray, dim: Dims = None, *, weights: Weights = None,
        where: xr.DataArray | None = None) -> XArray:
    """Mean absolute error ``mean(|estimate - truth|)``.

    Example
    -------
    >>> import xarray as xr
    >>> from geodiff.metrics import mae
    >>> float(mae(xr.DataArray([0.0, 0.0]), xr.DataArray([1.0, -3.0])))
    2.0
    """
    _check_pair(truth, estimate)
    return _weighted_mean(abs(estimate - truth), dim, weights, where, truth)


def bias(truth: XArray, estimate: XArray, dim: Dims = None, *, weights: Weights = None,
         where: xr.DataArray | None = None) -> XArray:
    """Mean error ``mean(estimate - truth)`` (positive: the estimate is too high).

    Example
    -------
    >>> import xarray as xr
    >>> from geodiff.metrics import bias
    >>> float(bias(xr.DataArray([0.0, 0.0]), xr.DataArray([1.0, -3.0])))
    -1.0
    """
    _check_pair(truth, estimate)
    return _weighted_mean(estimate - truth, dim, weights, where, truth)


def _members(ensemble: Any, member_dim: Hashable, minimum: int) -> int:
    if not isinstance(ensemble, xr.DataArray | xr.Dataset):
        raise ConfigError(f"ensemble must be an xarray DataArray or Dataset, got {type(ensemble).__name__}")
    if member_dim not in ensemble.dims:
        raise CoordinateError(f"the ensemble has no member dimension {member_dim!r}; dims are {tuple(ensemble.dims)}")
    size = int(ensemble.sizes[member_dim])
    if size < minimum:
        raise GridError(f"the ensemble has {size} member(s) along {member_dim!r}; at least {minimum} are needed")
    return size


def crps_ensemble(truth: XArray, ensemble: XArray, dim: Dims = None, *, member_dim: Hashable = "member",
                  estimator: str = "fair", weights: Weights = None, where: xr.DataArray | None = None) -> XArray:
    """Ensemble CRPS (scoringrules), per point then averaged over ``dim``; same units as the data.

    ``estimator="fair"`` (default) is unbiased for the CRPS of the member distribution; ``"nrg"`` is the plain
    energy form. A constant ensemble scores the absolute error of that constant under both.

    Example
    -------
    >>> import numpy as np, xarray as xr
    >>> from geodiff.metrics import crps_ensemble
    >>> truth = xr.DataArray([0.0, 1.0], dims="x")
    >>> ens = xr.DataArray([[2.0, 2.0, 2.0], [1.0, 1.0, 1.0]], dims=("x", "member"))
    >>> float(crps_ensemble(truth, ens))  # constant ensemble: the MAE (2 + 0) / 2
    1.0
    """
    import scoringrules as sr

    _check_pair(truth, ensemble)
    _members(ensemble, member_dim, 2 if estimator == "fair" else 1)
    if estimator not in {"fair", "nrg", "pwm", "int", "qd", "akr", "akr_circperm"}:
        raise ConfigError(f"estimator={estimator!r}: expected 'fair' or another scoringrules CRPS estimator")

    def score(obs, fct):
        return sr.crps_ensemble(obs, fct, m_axis=-1, estimator=estimator, backend="numpy")

    per_point = xr.apply_ufunc(
        score, truth, ensemble, input_core_dims=[[], [member_dim]], dask="parallelized",
        output_dtypes=[np.float64], dask_gufunc_kwargs={"allow_rechunk": True},
    )
    return _weighted_mean(per_point, dim, weights, where, truth)


def crps_gaussian(truth: XArray, mean: XArray, std: XArray, dim: Dims = None, *, weights: Weights = None,
                  where: xr.DataArray | None = None) -> XArray:
    """Closed-form CRPS of a Gaussian forecast ``N(mean, std^2)`` (e.g. the OI posterior).

    ``std = 0`` gives the absolute error ``|mean - truth|``.

    Example
    -------
    >>> import numpy as np, xarray as xr
    >>> from geodiff.metrics import crps_gaussian
    >>> zero = xr.DataArray([0.0])
    >>> round(float(crps_gaussian(zero, zero, zero + 1.0)), 4)  # (sqrt(2) - 1) / sqrt(pi)
    0.2337
    """
    import scoringrules as sr

    _check_pair(truth, mean)

    def score(obs, mu, sigma):
        sigma = np.asarray(sigma, dtype=np.float64)
        safe = np.where(sigma > 0, sigma, 1.0)
        value = sr.crps_normal(obs, mu, safe, backend="numpy")
        return np.where(sigma > 0, value, np.abs(np.asarray(mu) - np.asarray(obs)))

    per_point = xr.apply_ufunc(score, truth, mean, std, dask="parallelized", output_dtypes=[np.float64])
    return _weighted_mean(per_point, dim, weights, where, truth)


def spread_skill_ratio(truth: XArray, ensemble: XArray, dim: Dims = None, *, member_dim: Hashable = "member",
                       weights: Weights = None, where: xr.DataArray | None = None) -> XArray:
    """``sqrt((M + 1) / M) * sqrt(mean var_ddof1(ensemble)) / RMSE(ensemble mean)``: 1 for a calibrated ensemble.

    Below 1 the ensemble is over-confident (too little spread), above 1 under-confident.

    Example
    -------
    >>> import numpy as np, xarray as xr
    >>> from geodiff.metrics import spread_skill_ratio
    >>> rng = np.random.default_rng(0)
    >>> centre = rng.normal(size=20000)
    >>> truth = xr.DataArray(centre + rng.normal(size=20000), dims="x")
    >>> ens = xr.DataArray(centre[:, None] + rng.normal(size=(20000, 4)), dims=("x", "member"))
    >>> round(float(spread_skill_ratio(truth, ens)), 1)
    1.0
    """
    _check_pair(truth, ensemble)
    members = _members(ensemble, member_dim, 2)
    ens_mean = ensemble.mean(member_dim)
    variance = ensemble.var(member_dim, ddof=1)
    error2 = (ens_mean - truth) ** 2
    both = error2.notnull() & variance.notnull()
    if where is not None:
        both = both & where
    spread2 = _weighted_mean(variance, dim, weights, both, truth)
    skill2 = _weighted_mean(error2, dim, weights, both, truth)
    return np.sqrt((members + 1) / members) * np.sqrt(spread2) / np.sqrt(skill2)


def reconmost_mse_split(truth: xr.DataArray, estimate: xr.DataArray, guidance_mask: xr.DataArray,
                        dim: Dims = None) -> xr.Dataset:
    """MSE on guidance points, on held-out points and in total, as ReconMOST reports it and as per-point means.

    Valid cells are where ``truth`` is not NaN; guidance cells are valid cells where ``guidance_mask`` is True,
    held-out cells the other valid cells. With ``SE_g``, ``SE_h`` the squared errors summed over each split and
    ``N = N_g + N_h`` the number of valid cells, the result has

    * ``mse_guidance_paper = SE_g / N``, ``mse_heldout_paper = SE_h / N`` (the paper divides both by ALL valid
      cells) and ``mse_total = (SE_g + SE_h) / N = mse_guidance_paper + mse_heldout_paper``;
    * ``mse_guidance = SE_g / N_g`` and ``mse_heldout = SE_h / N_h`` (true per-point means), so that
      ``mse_total = guidance_share * mse_guidance + heldout_share * mse_heldout``;
    * ``guidance_share = N_g / N``, ``heldout_share = N_h / N``, and the counts ``n_guidance``, ``n_heldout``,
      ``n_valid``.

    An estimate that is NaN at a valid cell makes the affected scores NaN (nothing is skipped).

    Example
    -------
    >>> import xarray as xr
    >>> from geodiff.metrics import reconmost_mse_split
    >>> truth = xr.DataArray([0.0, 0.0, 0.0, 0.0])
    >>> estimate = xr.DataArray([1.0, 2.0, 2.0, 2.0])
    >>> split = reconmost_mse_split(truth, estimate, xr.DataArray([True, False, False, False]))
    >>> float(split.mse_guidance_paper), float(split.mse_heldout_paper), float(split.mse_total)
    (0.25, 3.0, 3.25)
    >>> float(split.mse_guidance), float(split.mse_heldout)
    (1.0, 4.0)
    """
    for name, value in (("truth", truth), ("estimate", estimate), ("guidance_mask", guidance_mask)):
        if not isinstance(value, xr.DataArray):
            raise ConfigError(f"{name} must be an xarray.DataArray, got {type(value).__name__}")
    if guidance_mask.dtype != bool:
        raise ConfigError(f"guidance_mask must be boolean, got dtype {guidance_mask.dtype}")
    _check_pair(truth, estimate)
    _check_pair(truth, guidance_mask, ("truth", "guidance_mask"))
    valid = truth.notnull()
    guidance = valid & guidance_mask
    heldout = valid & ~guidance_mask
    dims = _dims(truth, dim)
    se = (estimate - truth) ** 2
    se_g = se.where(guidance, 0.0).sum(dims, skipna=False)
    se_h = se.where(heldout, 0.0).sum(dims, skipna=False)
    n_g = guidance.sum(dims)
    n_h = heldout.sum(dims)
    n = valid.sum(dims)
    safe_n, safe_g, safe_h = n.where(n > 0), n_g.where(n_g > 0), n_h.where(n_h > 0)
    result = xr.Dataset({
        "mse_guidance_paper": se_g / safe_n,
        "mse_heldout_paper": se_h / safe_n,
        "mse_total": (se_g + se_h) / safe_n,
        "mse_guidance": se_g / safe_g,
        "mse_heldout": se_h / safe_h,
        "guidance_share": n_g / safe_n,
        "heldout_share": n_h / safe_n,
        "n_guidance": n_g,
        "n_heldout": n_h,
        "n_valid": n,
    })
    units = truth.attrs.get("units")
    for name in ("mse_guidance_paper", "mse_heldout_paper", "mse_total", "mse_guidance", "mse_heldout"):
        result[name].attrs = {"units": f"({units})^2"} if units else {}
    result.attrs["convention"] = (
        "*_paper: squared error summed over the split divided by all valid cells (ReconMOST); "
        "mse_guidance / mse_heldout: per-point means over the split"
    )
    return result


def random_guidance_mask(valid_mask: xr.DataArray, fraction: float, seed: int = 0, per_level: bool = True, *,
                         horizontal_dims: tuple[Hashable, Hashable] = ("lat", "lon")) -> xr.DataArray:
    """Draw guidance points: ``round(fraction * n_valid)`` valid cells, uniformly without replacement.

    With ``per_level=True`` the draw is made independently in every horizontal slice (each depth level and each
    time step gets exactly its share of its own valid cells, as observation coverage is quoted per level);
    with ``per_level=False`` one draw is made over all valid cells together. Deterministic in ``seed``.

    Example
    -------
    >>> import numpy as np, xarray as xr
    >>> from geodiff.metrics import random_guidance_mask
    >>> valid = xr.DataArray(np.ones((2, 10, 10), bool), dims=("depth", "lat", "lon"))
    >>> mask = random_guidance_mask(valid, 0.05, seed=0)
    >>> mask.sum(("lat", "lon")).values.tolist()
    [5, 5]
    """
    if not isinstance(valid_mask, xr.DataArray) or valid_mask.dtype != bool:
        raise ConfigError("valid_mask must be a boolean xarray.DataArray (True = ocean / valid cell)")
    if not np.isfinite(fraction) or not 0.0 < fraction <= 1.0:
        raise ConfigError(f"fraction must be in (0, 1], got {fraction}")
    missing = [d for d in horizontal_dims if d not in valid_mask.dims]
    if missing:
        raise CoordinateError(f"valid_mask has no horizontal dimension(s) {missing}; dims are {valid_mask.dims}")
    other = [d for d in valid_mask.dims if d not in horizontal_dims]
    arranged = valid_mask.transpose(*other, *horizontal_dims)
    valid = np.asarray(arranged.values, dtype=bool)
    rng = np.random.default_rng(seed)
    if per_level:
        flat = valid.reshape(*valid.shape[: len(other)], -1)
    else:
        flat = valid.reshape(1, -1)
    keys = np.where(flat, rng.random(flat.shape), np.inf)
    count = np.rint(fraction * flat.sum(axis=-1, keepdims=True)).astype(np.int64)
    ranks = np.argsort(np.argsort(keys, axis=-1, kind="stable"), axis=-1, kind="stable")
    chosen = (ranks < count) & flat
    mask = xr.DataArray(chosen.reshape(valid.shape), dims=arranged.dims, coords=arranged.coords)
    mask = mask.transpose(*valid_mask.dims)
    mask.name = "guidance_mask"
    mask.attrs = {
        "long_name": "guidance (observed) points",
        "comment": f"random_guidance_mask(fraction={fraction}, seed={seed}, per_level={per_level})",
    }
    return mask


# ---------------------------------------------------------------------------------------------------------------
# spectra (downscaling)


def power_spectrum(field: xr.DataArray, dims: tuple[Hashable, Hashable] = ("lat", "lon"), *,
                   window: bool = True) -> xr.DataArray:
    """Radially averaged power spectrum of 2-D fields over ``dims``, averaged over every other dimension
    (members, times): a DataArray over ``wavenumber`` (cycles per grid cell, 0 .. 0.5 at the Nyquist limit).

    Each 2-D field has its mean removed and, with ``window`` (default), is tapered by a 2-D Hann window so the
    borders of a regional domain do not leak power to high wavenumbers; the power ``|FFT|^2`` is binned by the
    radial wavenumber ``k = sqrt(ky^2 + kx^2)`` in bins of width ``1 / max(H, W)`` and averaged in each bin.
    Fields with NaN are not supported (a regional land/sea field must be filled first).

    >>> import numpy as np, xarray as xr
    >>> x = np.arange(32)
    >>> wave = xr.DataArray(np.sin(2 * np.pi * x / 8)[None, :] * np.ones((32, 1)), dims=("lat", "lon"))
    >>> float(power_spectrum(wave, window=False).idxmax())  # peak at 1/8 cycles per cell
    0.125
    """
    missing = [d for d in dims if d not in field.dims]
    if missing:
        raise CoordinateError(f"field has no dimension(s) {missing}; dims are {field.dims}")
    arranged = field.transpose(..., *dims)
    values = np.asarray(arranged.values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise GridError("power_spectrum needs finite fields (fill land / missing cells first)")
    height, width = values.shape[-2:]
    values = values.reshape(-1, height, width)
    values = values - values.mean(axis=(-2, -1), keepdims=True)
    if window:
        values = values * (np.hanning(height)[:, None] * np.hanning(width)[None, :])
    power = (np.abs(np.fft.fft2(values)) ** 2).mean(axis=0) / (height * width)
    ky = np.fft.fftfreq(height)[:, None]
    kx = np.fft.fftfreq(width)[None, :]
    radius = np.sqrt(ky**2 + kx**2)
    width_bin = 1.0 / max(height, width)
    edges = np.arange(0.0, 0.5 + width_bin, width_bin) + width_bin / 2
    index = np.digitize(radius, edges)  # bin i: [(i - 1/2) w, (i + 1/2) w); beyond 0.5 + w/2 (corners) left out
    sums = np.bincount(index.ravel(), weights=power.ravel(), minlength=len(edges) + 1)[: len(edges)]
    counts = np.bincount(index.ravel(), minlength=len(edges) + 1)[: len(edges)]
    keep = counts > 0
    wavenumber = np.round(np.arange(len(edges)) * width_bin, 12)[keep]
    out = xr.DataArray(sums[keep] / counts[keep], dims=("wavenumber",), coords={"wavenumber": wavenumber},
                       name="power")
    out["wavenumber"].attrs = {"units": "cycles per grid cell", "long_name": "radial wavenumber"}
    out.attrs = {"long_name": "radially averaged power spectrum", "window": "hann" if window else "none"}
    return out


def high_wavenumber_power_ratio(truth: xr.DataArray, estimate: xr.DataArray, cutoff: float = 0.125, *,
                                dims: tuple[Hashable, Hashable] = ("lat", "lon"), window: bool = True) -> float:
    """Power of ``estimate`` above wavenumber ``cutoff`` (cycles per cell) over the truth's power there.

    ``estimate`` may have extra dimensions (members: each member's spectrum counts, not the ensemble mean's).
    1 means the estimate has as much fine-scale variability as the truth; smooth interpolation gives values well
    below 1. With a coarsening factor ``f`` the scales the coarse grid cannot hold are ``k > 1 / (2 f)``
    (``cutoff = 0.125`` for ``f = 4``).

    >>> import numpy as np, xarray as xr
    >>> field = xr.DataArray(np.random.default_rng(0).normal(size=(32, 32)), dims=("lat", "lon"))
    >>> high_wavenumber_power_ratio(field, field)
    1.0
    >>> high_wavenumber_power_ratio(field, field * 0.5)
    0.25
    """
    if not 0 < cutoff < 0.5:
        raise ConfigError(f"cutoff must be in (0, 0.5) cycles per grid cell, got {cutoff}")
    true_power = power_spectrum(truth, dims, window=window)
    est_power = power_spectrum(estimate, dims, window=window)
    high = true_power["wavenumber"] > cutoff
    return float(est_power.where(high).sum() / true_power.where(high).sum())


__all__ += ["power_spectrum", "high_wavenumber_power_ratio"]
