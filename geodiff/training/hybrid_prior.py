"""Fit the Gaussian part of a hybrid prior (:class:`~geodiff.diffusion.gaussian_prior.GaussianResidualDenoiser`).

From normalised training anomalies ``[N, C, H, W]`` (land = 0, ``mask`` True = valid):

1. a stationary covariance per channel, fitted to the anomalies' semivariograms with the fit optimal interpolation
   uses (:func:`geodiff.covariance.fit_variograms`), for each candidate model;
2. the shrinkage ``alpha`` between the training anomalies' second moment and that stationary covariance, and the
   variance ``v`` of a uniform shift of each channel, ``S = (1 - alpha) A^T A / (N - 1) + alpha K + v 1 1^T``,
   and the model, chosen by the exact posterior mean's error on the *validation* fields from random observations
   at 2, 5 and 10 % of their valid cells (never the test period); then a factor on the whole covariance (the
   spread) chosen by the posterior's CRPS on the same fields.

Everything is in normalised units (the anomaly normaliser's per-cell std), so the observation error used for the
choice, ``VALIDATION_ERROR`` = 0.01, is 1 % of a cell's anomaly std.

Example
-------
>>> import torch
>>> from geodiff.training.hybrid_prior import fit_hybrid_prior
>>> g = torch.Generator().manual_seed(0)
>>> base = torch.randn(40, 1, 1, 1, generator=g)  # one large-scale mode plus noise
>>> fields = (base + 0.3 * torch.randn(40, 1, 6, 8, generator=g)).float()
>>> mask = torch.ones(1, 6, 8, dtype=torch.bool)
>>> prior, factor, report = fit_hybrid_prior(fields[:32], fields[32:], mask, lat=range(6), lon=range(8),
...                                          times=[f"2000-01-{d + 1:02d}" for d in range(32)])
>>> factor.shape[1], prior["cells"], 0.0 <= report["alpha"] <= 1.0, report["offset"] in (0.0, 0.25, 1.0, 4.0)
(48, 48, True, True)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from geodiff.covariance import empirical_variograms, fit_variograms, stationary_covariance
from geodiff.errors import ConfigError, GeodiffError

__all__ = ["fit_hybrid_prior", "hybrid_factor", "ALPHAS", "OFFSETS", "CANDIDATE_MODELS", "VALIDATION_ERROR", "MAX_PRIOR_CELLS"]

ALPHAS = (0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95)
#: variances (normalised units squared) of a uniform shift of each channel: a period whose climate departs from
#: the training period's (a trend, another season) moves whole fields, which neither part above allows for
OFFSETS = (0.0, 0.25, 1.0, 4.0)
#: factors on the whole covariance, chosen by the validation CRPS once the mix is chosen (the mix sets the mean)
INFLATIONS = (1.0, 1.5, 2.0, 3.0, 4.0)
CANDIDATE_MODELS = ("exponential", "matern32")
VALIDATION_ERROR = 0.01
VALIDATION_COVERAGES = (0.02, 0.05, 0.10)
MAX_PRIOR_CELLS = 8000  # a dense P x P covariance and its eigendecomposition


def _stationary(fields: np.ndarray, mask: np.ndarray, lat: np.ndarray, lon: np.ndarray, days: np.ndarray,
                model: str, seed: int) -> list[dict[str, Any]]:
    """The stationary model of each channel fitted to the semivariograms of its valid cells (OI's fit)."""
    rng = np.random.default_rng(seed)
    lat2, lon2 = np.meshgrid(lat, lon, indexing="ij")
    parts = []
    for channel in range(fields.shape[1]):
        valid = mask[channel]
        if valid.sum() < 10:
            raise ConfigError(f"channel {channel} has {int(valid.sum())} valid cells; a covariance needs at least 10")
        values = fields[:, channel][:, valid]
        spatial, temporal = empirical_variograms(values, lat2[valid], lon2[valid], days, max_distance_km=4000.0,
                                                 n_bins=20, n_anchors=400, period=None, rng=rng)
        if len(spatial) < 3:
            raise ConfigError(f"channel {channel}: too few cell pairs within 4000 km to fit a covariance")
        fitted = fit_variograms(spatial, temporal, model, float(np.var(values)), 4000.0)
        parts.append({"model": model, "variance": fitted["variance"], "length_scale": fitted["length_scale"],
                      "nugget": fitted["nugget"]})
    return parts


def _block_stationary(parts: list[dict[str, Any]], mask: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    cells = int(mask.sum())
    cov = np.zeros((cells, cells))
    start = 0
    for channel, part in enumerate(parts):
        n = int(mask[channel].sum())
        cov[start:start + n, start:start + n] = stationary_covariance(
            part["model"], part["variance"], part["length_scale"], part["nugget"], lat, lon, mask[channel])
        start += n
    return cov


def _validation_error(anomalies: np.ndarray, stationary: np.ndarray, channel: np.ndarray, alpha: float,
                      offset: float, fields: np.ndarray, draws: list[list[np.ndarray]],
                      noises: list[list[np.ndarray]]) -> float:
    """Mean over coverages of the RMSE (unobserved valid cells) of the exact posterior mean on ``fields [M, P]``
    under ``S = (1 - alpha) A^T A / (N - 1) + alpha K + offset [same channel]``; only the observed columns of ``S``
    are formed."""
    scale = (1 - alpha) / (anomalies.shape[0] - 1)
    errors = []
    for per_coverage, per_noise in zip(draws, noises):
        total, count = 0.0, 0
        for field, observed, noise in zip(fields, per_coverage, per_noise):
            columns = (scale * anomalies.T @ anomalies[:, observed] + alpha * stationary[:, observed]
                       + offset * (channel[:, None] == channel[None, observed]))
            k_oo = columns[observed] + VALIDATION_ERROR**2 * np.eye(observed.size)
            mean = columns @ np.linalg.solve(k_oo, field[observed] + noise)
            hidden = np.ones(field.size, bool)
            hidden[observed] = False
            total += float(((mean - field)[hidden] ** 2).sum())
            count += int(hidden.sum())
        errors.append(np.sqrt(total / count))
    return float(np.mean(errors))


def _validation_crps(anomalies: np.ndarray, stationary: np.ndarray, channel: np.ndarray, alpha: float, offset: float,
                     inflation: float, fields: np.ndarray, draws: list[list[np.ndarray]],
                     noises: list[list[np.ndarray]]) -> float:
    """Mean Gaussian CRPS (unobserved valid cells, all coverages) of the exact posterior under ``inflation * S``."""
    from scipy.stats import norm

    scale = (1 - alpha) / (anomalies.shape[0] - 1)
    prior_var = inflation * (scale * (anomalies**2).sum(0) + alpha * np.diag(stationary) + offset)
    total, count = 0.0, 0
    for per_coverage, per_noise in zip(draws, noises):
        for field, observed, noise in zip(fields, per_coverage, per_noise):
            columns = inflation * (scale * anomalies.T @ anomalies[:, observed] + alpha * stationary[:, observed]
                                   + offset * (channel[:, None] == channel[None, observed]))
            k_oo = columns[observed] + VALIDATION_ERROR**2 * np.eye(observed.size)
            solved = np.linalg.solve(k_oo, np.concatenate([(field[observed] + noise)[:, None], columns.T], axis=1))
            mean = columns @ solved[:, 0]
            std = np.sqrt(np.clip(prior_var - np.einsum("ij,ji->i", columns, solved[:, 1:]), 1e-12, None))
            hidden = np.ones(field.size, bool)
            hidden[observed] = False
            z = (field - mean)[hidden] / std[hidden]
            total += float((std[hidden] * (z * (2 * norm.cdf(z) - 1) + 2 * norm.pdf(z) - 1 / np.sqrt(np.pi))).sum())
            count += int(hidden.sum())
    return total / count


def hybrid_factor(fields: Tensor, mask: Tensor, choice: Mapping[str, float]) -> Tensor:
    """The low-rank factor ``W [K, P]`` float32 of normalised anomaly ``fields [N, C, H, W]`` on the valid cells of
    ``mask [C, H, W]``, for the ``alpha``, ``offset`` and ``inflation`` of ``choice`` (:func:`fit_hybrid_prior`'s
    report): the scaled anomalies, then one row per channel for the uniform shift when ``offset > 0``."""
    mask_np = mask.cpu().numpy().astype(bool)
    if fields.shape[0] < 2:
        raise ConfigError("the low-rank part of a hybrid prior needs at least two fields")
    anomalies = fields.reshape(fields.shape[0], -1).double().cpu().numpy()[:, mask_np.reshape(-1)]
    channel = np.repeat(np.arange(mask_np.shape[0]), mask_np.reshape(mask_np.shape[0], -1).sum(1))
    alpha, offset, inflation = (float(choice[key]) for key in ("alpha", "offset", "inflation"))
    rows = [np.sqrt(inflation * (1 - alpha) / (anomalies.shape[0] - 1)) * anomalies]
    if offset > 0:  # a uniform shift of each channel: one row per channel, sqrt(offset) on its cells
        rows.append(np.sqrt(inflation * offset) * (channel[None, :] == np.arange(mask_np.shape[0])[:, None]))
    return torch.from_numpy(np.concatenate(rows)).float()


def fit_hybrid_prior(
    training: Tensor, validation: Tensor, mask: Tensor, *, lat: Sequence[float], lon: Sequence[float],
    times: Sequence[Any], seed: int = 0, final: Tensor | None = None,
) -> tuple[dict[str, Any], Tensor, dict[str, Any]]:
    """The hybrid prior of normalised ``training [N, C, H, W]`` anomalies, shrinkage chosen on ``validation``.

    Returns ``(prior, factor [N, P] float32, report)``: ``prior`` is the ``prior`` argument of
    :class:`~geodiff.diffusion.gaussian_prior.GaussianResidualDenoiser` (stationary parts already scaled by
    ``alpha``), ``factor`` its buffer (the scaled anomalies, then one row per channel for the shift), ``report``
    the chosen model, ``alpha`` and shift variance with the validation errors. ``final`` (default ``training``):
    the fields whose anomalies make the low-rank part once the choice is made, e.g. the whole training period
    with its validation part, the months closest to what is reconstructed next.
    """
    mask_np = mask.cpu().numpy().astype(bool)
    cells = int(mask_np.sum())
    if cells > MAX_PRIOR_CELLS:
        raise ConfigError(f"the grid has {cells} valid cells; a hybrid Gaussian prior holds a dense covariance of at "
                          f"most {MAX_PRIOR_CELLS}: crop or coarsen the domain, or pass prior='network'")
    if training.shape[0] < 2 or validation.shape[0] < 1:
        raise ConfigError("a hybrid prior needs at least two training fields and one validation field")
    lat_np, lon_np = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    flat_mask = mask_np.reshape(-1)
    anomalies = training.reshape(training.shape[0], -1).double().cpu().numpy()[:, flat_mask]
    channel = np.repeat(np.arange(mask_np.shape[0]), mask_np.reshape(mask_np.shape[0], -1).sum(1))
    held_out = validation.reshape(validation.shape[0], -1).double().cpu().numpy()[:, flat_mask]
    rng = np.random.default_rng(seed)
    order = [rng.permutation(cells) for _ in held_out]
    draws = [[np.sort(o[:max(1, int(round(c * cells)))]) for o in order] for c in VALIDATION_COVERAGES]
    noise = [[VALIDATION_ERROR * rng.standard_normal(d.size) for d in per] for per in draws]
    time_values = pd.to_datetime([str(t) for t in times], errors="coerce")
    if time_values.isna().any():  # non-standard calendars: only the spacing matters to the fit
        time_values = pd.date_range("2000-01-01", periods=len(times), freq="D")
    days = ((time_values - time_values[0]) / pd.Timedelta(days=1)).to_numpy(dtype=np.float64)
    fields = training.double().cpu().numpy()
    scores: dict[str, dict[str, float]] = {}
    best: tuple[float, str, float, list[dict[str, Any]]] | None = None
    for model in CANDIDATE_MODELS:
        try:
            parts = _stationary(fields, mask_np, lat_np, lon_np, days, model, seed)
        except GeodiffError as err:  # too few cells or pairs for a variogram: that model is not a candidate
            scores[model] = {"error": str(err)}  # type: ignore[dict-item]
            continue
        stationary = _block_stationary(parts, mask_np, lat_np, lon_np)
        scores[model] = {}
        for alpha in ALPHAS:
            for offset in OFFSETS:
                try:
                    error = _validation_error(anomalies, stationary, channel, alpha, offset, held_out, draws, noise)
                except np.linalg.LinAlgError:
                    continue
                scores[model][f"alpha={alpha},offset={offset}"] = error
                if best is None or error < best[0]:
                    best = (error, model, alpha, offset, parts)
    if best is None:
        raise ConfigError(f"no covariance model could be fitted to the training anomalies: {scores}")
    error, model, alpha, offset, parts = best
    stationary = _block_stationary(parts, mask_np, lat_np, lon_np)
    crps = {str(g): _validation_crps(anomalies, stationary, channel, alpha, offset, g, held_out, draws, noise)
            for g in INFLATIONS}
    inflation = float(min(INFLATIONS, key=lambda g: crps[str(g)]))
    choice = {"alpha": alpha, "offset": offset, "inflation": inflation}
    factor = hybrid_factor(training if final is None else final, mask, choice)
    prior = {"lat": lat_np.tolist(), "lon": lon_np.tolist(), "rank": int(factor.shape[0]), "cells": cells,
             "stationary": [{**p, "variance": inflation * alpha * p["variance"], "nugget": inflation * alpha * p["nugget"]}
                            for p in parts]}
    report = {"model": model, "alpha": alpha, "offset": offset, "inflation": inflation, "validation_rmse": error,
              "validation_crps": crps, "candidates": scores,
              "validation_coverages": list(VALIDATION_COVERAGES), "validation_error": VALIDATION_ERROR}
    return prior, factor, report
