"""Does a hybrid prior's learned correction help guided reconstructions? Checked on the validation period.

:func:`geodiff.fit` keeps the network weights with the best *denoising* loss on the validation period, but what a
user gets is *guided sampling*, and the two can disagree: on OSTIA SST a correction that lowered the denoising loss
and the ensemble mean's RMSE shrank the guided ensemble to a spread/skill of 0.6, where the Gaussian part alone was
calibrated (``benchmarks/RESULTS.md``). So ``fit`` ends by reconstructing validation times both ways, with the
pipeline users call (:func:`geodiff.reconstruct` at its defaults), and keeps the correction only where it helps.

Protocol: on up to ``max_fields`` validation times (evenly spaced), ``coverage`` of the valid cells of every level
is observed at the cell centres with a Gaussian error of :data:`~geodiff.training.hybrid_prior.VALIDATION_ERROR`
(1 %) of the cell's anomaly std (the observations the Gaussian part's mix was chosen with); ``members`` members are
drawn and scored on the other valid cells: ensemble CRPS, spread/skill and the RMSE of the mean. Both variants use
a Gaussian part whose low-rank factor holds the *training* period only: the final prior also holds the validation
period's anomalies, so it has seen these very fields.

Decision: the correction is kept when it lowers the mean CRPS (over variables, each relative to the Gaussian
part's) by at least :data:`MIN_GAIN` (a smaller gain is within the noise of a few fields and members, and not worth
running the network when sampling) and its ensemble stays calibrated: spread/skill within :data:`CALIBRATED` or no further from 1 (as a log
ratio) than the Gaussian part's. Otherwise the bundle's denoiser runs without it (``correction=False``).

Example
-------
>>> import numpy as np, pandas as pd, xarray as xr, geodiff
>>> from geodiff.training.correction_check import check_correction
>>> time = pd.date_range("2000-01-01", periods=12, freq="YS")
>>> rng = np.random.default_rng(0)
>>> ds = xr.Dataset({"tas": (("time", "lat", "lon"), 280 + rng.normal(size=(12, 6, 6)), {"units": "K"})},
...                 coords={"time": time, "lat": np.arange(6.0), "lon": np.arange(6.0)})
>>> bundle = geodiff.fit(ds, steps=2, validate_every=2, check_correction=False, progress=False)
>>> check = check_correction(bundle, ds, coverage=0.2, members=4, steps=4, max_fields=1)
>>> sorted(check.as_dict())
['coverage', 'fields', 'gaussian_part', 'keep', 'members', 'reason', 'seconds', 'steps', 'with_correction']
"""

from __future__ import annotations

import copy
import time as _time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr

from geodiff import metrics
from geodiff.diffusion.gaussian_prior import GaussianResidualDenoiser
from geodiff.errors import ConfigError
from geodiff.io.bundle import ModelBundle
from geodiff.training.hybrid_prior import VALIDATION_ERROR, hybrid_factor

__all__ = ["check_correction", "CorrectionCheck", "CALIBRATED", "MIN_GAIN", "without_correction"]

CALIBRATED = (0.8, 1.25)  # spread/skill counted as calibrated
MIN_GAIN = 0.01  # the CRPS must fall by at least this fraction


@dataclass
class CorrectionCheck:
    """The outcome of :func:`check_correction`; ``with_correction`` and ``gaussian_part`` map each variable to its
    ``{"crps", "rmse", "spread_skill"}`` (data units) on the held-out cells of the validation fields."""

    keep: bool
    reason: str
    with_correction: dict[str, dict[str, float]]
    gaussian_part: dict[str, dict[str, float]]
    coverage: float
    members: int
    steps: int
    fields: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready record (kept in ``bundle.metadata["training"]["correction_check"]``)."""
        return asdict(self)


def without_correction(bundle: ModelBundle) -> ModelBundle:
    """A copy of a hybrid-prior bundle whose denoiser is the Gaussian part alone (``correction=False``)."""
    if not isinstance(bundle.denoiser, GaussianResidualDenoiser):
        raise ConfigError("only a hybrid prior (geodiff.fit(prior='hybrid')) has a learned correction to leave out")
    out = copy.deepcopy(bundle)
    out.denoiser.correction = False
    out.denoiser.config["correction"] = False
    return out


def _calibration_gap(spread_skill: float) -> float:
    return abs(float(np.log(spread_skill))) if spread_skill > 0 else float("inf")


def _decide(with_correction: dict[str, dict[str, float]], gaussian: dict[str, dict[str, float]]) -> tuple[bool, str]:
    ratio = float(np.mean([with_correction[v]["crps"] / gaussian[v]["crps"] for v in gaussian]))
    if not ratio <= 1.0 - MIN_GAIN:
        return False, (f"the correction does not lower the validation CRPS by {MIN_GAIN:.0%} or more ({ratio:.3f}x "
                       "the Gaussian part's)")
    for name in gaussian:
        ss, ss_gaussian = with_correction[name]["spread_skill"], gaussian[name]["spread_skill"]
        calibrated = CALIBRATED[0] <= ss <= CALIBRATED[1]
        if not calibrated and _calibration_gap(ss) > _calibration_gap(ss_gaussian):
            return False, (f"with the correction the {name} ensemble is not calibrated (spread/skill {ss:.2f}, the "
                           f"Gaussian part's {ss_gaussian:.2f}), although its CRPS is {ratio:.3f}x")
    return True, f"the correction lowers the validation CRPS to {ratio:.3f}x the Gaussian part's, calibrated"


def _observe(truth: xr.Dataset, cell_std: xr.Dataset, coverage: float, seed: int) -> tuple[xr.Dataset, dict]:
    """Observation table of ``coverage`` of each level's valid cells (at cell centres, error ``VALIDATION_ERROR``
    x the cell's anomaly std, noise drawn from ``seed``) and, per variable, the mask of the held-out cells."""
    rng = np.random.default_rng([seed, 7])
    columns: dict[str, list[np.ndarray]] = {}
    held_out = {}
    for name, field in truth.data_vars.items():
        chosen = metrics.random_guidance_mask(field.notnull(), coverage, seed=seed, per_level=True)
        held_out[name] = field.notnull() & ~chosen
        stacked = field.where(chosen).stack(obs=field.dims)
        keep = stacked.notnull().values
        error = VALIDATION_ERROR * cell_std[name].broadcast_like(field).stack(obs=field.dims).values[keep]
        parts = {"value": stacked.values[keep] + error * rng.standard_normal(error.size), "error_std": error,
                 "variable": np.full(error.size, str(name))}
        parts.update({str(dim): np.asarray(stacked[dim].values)[keep] for dim in field.dims})
        for key, values in parts.items():
            columns.setdefault(key, []).append(values)
    joined = {key: np.concatenate(parts) for key, parts in columns.items()}
    n = joined["value"].size
    table = xr.Dataset({"value": ("obs", joined.pop("value")), "error_std": ("obs", joined.pop("error_std"))},
                       coords={**{key: ("obs", values) for key, values in joined.items()},
                               "obs_id": ("obs", np.arange(n))})
    return table, held_out


def _scores(truth: xr.Dataset, ensemble: xr.Dataset, held_out: dict) -> dict[str, dict[str, float]]:
    out = {}
    for name, field in truth.data_vars.items():
        members = ensemble[name].transpose("member", *field.dims)
        out[str(name)] = {
            "crps": float(metrics.crps_ensemble(field, members, where=held_out[name])),
            "rmse": float(metrics.rmse(field, members.mean("member"), where=held_out[name])),
            "spread_skill": float(metrics.spread_skill_ratio(field, members, where=held_out[name])),
        }
    return out


def check_correction(bundle: ModelBundle, ds: xr.Dataset, *, coverage: float = 0.05, members: int = 8,
                     steps: int = 24, max_fields: int = 3, seed: int = 0) -> CorrectionCheck:
    """Reconstruct validation times of ``ds`` with and without the correction of a hybrid prior trained on it.

    ``bundle``: what :func:`geodiff.fit` returned for ``ds`` (its metadata gives the training and validation
    periods and the Gaussian part's mix); ``ds``: the dataset it was trained on (same times). Returns the scores of
    both variants and the decision (module docstring); the bundle is not changed.
    """
    from geodiff.pipelines.reconstruct import reconstruct
    from geodiff.training.fit import MAX_PRIOR_TIMES, FieldStream, _in_memory

    if not isinstance(bundle.denoiser, GaussianResidualDenoiser):
        raise ConfigError("check_correction needs a hybrid prior (geodiff.fit(prior='hybrid'))")
    if not 0 < coverage < 1:
        raise ConfigError(f"coverage must be a fraction in (0, 1), got {coverage}")
    training = bundle.metadata.get("training", {})
    choice = training.get("gaussian_prior")
    n_train, n_validation = training.get("training_times"), training.get("validation_times")
    if not choice or n_train is None or n_validation is None:
        raise ConfigError("the bundle's metadata does not record geodiff.fit's hybrid prior and periods")
    if ds.sizes.get("time") != n_train + n_validation:
        raise ConfigError(f"ds has {ds.sizes.get('time')} times; the bundle was trained on {n_train} + "
                          f"{n_validation} (training + validation): pass the dataset it was trained on")
    started = _time.perf_counter()
    codec, normalizer = bundle.codec, bundle.normalizer
    ds = ds[codec.variables]
    chosen = np.unique(np.linspace(0, n_train - 1, min(n_train, MAX_PRIOR_TIMES)).astype(int))
    factor = hybrid_factor(_in_memory(FieldStream(ds, codec, normalizer, chosen)), codec.mask, choice)
    trained = copy.deepcopy(bundle)
    with torch.no_grad():
        trained.denoiser.factor = factor.to(trained.denoiser.factor.device)
    trained.denoiser.set_mask(codec.mask)
    trained.denoiser.correction = True
    variants = {"with_correction": trained, "gaussian_part": without_correction(trained)}

    times = n_train + np.unique(np.linspace(0, n_validation - 1, min(n_validation, max_fields)).astype(int))
    truth = ds.isel(time=times).load()
    cell_std = normalizer.denormalize(xr.ones_like(truth)) - normalizer.denormalize(xr.zeros_like(truth))
    table, held_out = _observe(truth, cell_std, coverage, seed)
    scores = {}
    for label, variant in variants.items():
        ensemble = reconstruct(variant, table, members=members, steps=steps, seed=seed, progress=False)
        scores[label] = _scores(truth, ensemble, held_out)
    keep, reason = _decide(scores["with_correction"], scores["gaussian_part"])
    return CorrectionCheck(keep=keep, reason=reason, with_correction=scores["with_correction"],
                           gaussian_part=scores["gaussian_part"], coverage=coverage, members=members, steps=steps,
                           fields=int(times.size), seconds=round(_time.perf_counter() - started, 1))
