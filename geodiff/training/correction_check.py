"""Does a hybrid prior's learned correction help guided reconstructions? Checked on the validation period.

:func:`geodiff.fit` keeps the network weights with the best *denoising* loss on the validation period, but what a
user gets is *guided sampling*, and the two can disagree: on OSTIA SST a correction that lowered the denoising loss
and the ensemble mean's RMSE shrank the guided ensemble to a spread/skill of 0.6, where the Gaussian part alone was
calibrated (``benchmarks/RESULTS.md``). So ``fit`` ends by reconstructing validation times both ways, sampled as
:func:`geodiff.reconstruct` samples at its defaults, and keeps the correction only where it helps.

Protocol, in normalised units (the encoded anomalies): on up to ``max_fields`` validation times (evenly spaced),
``coverage`` of the valid cells of every channel is observed with a Gaussian error of
:data:`~geodiff.training.hybrid_prior.VALIDATION_ERROR` (1 % of the cell's anomaly std: the observations the
Gaussian part's mix was chosen with); ``members`` members are drawn (MMPS at its preferred solve, Heun, EDM
schedule, clipping and runaway checks as in ``reconstruct``) and scored on the other valid cells: ensemble CRPS,
spread/skill and the RMSE of the mean. Both variants use a Gaussian part whose low-rank factor holds the
*training* period only: the final prior also holds the validation period's anomalies, so it has seen these very
fields.

Decision: the correction is kept when it lowers the CRPS by at least :data:`MIN_GAIN` (a smaller gain is within the
noise of a few fields and members, and not worth running the network when sampling) and its ensemble stays
calibrated: spread/skill within :data:`CALIBRATED`, or no further from 1 (as a log ratio) than the Gaussian part's.
Otherwise the bundle's denoiser runs without it (``correction=False``).

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
import logging
import time as _time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from geodiff import metrics
from geodiff.diffusion.engine import RunawayCheck, SamplingEngine, derive_seed
from geodiff.diffusion.gaussian_prior import GaussianResidualDenoiser
from geodiff.diffusion.samplers import HeunSampler
from geodiff.diffusion.schedules import EDMSchedule
from geodiff.errors import ConfigError
from geodiff.guidance.mmps import MMPSGuidance, preferred_method
from geodiff.io.bundle import MAX_NORMALIZED, ModelBundle
from geodiff.operators import GridPointOperator
from geodiff.training.hybrid_prior import VALIDATION_ERROR, hybrid_factor

logger = logging.getLogger(__name__)

__all__ = ["check_correction", "settle_correction", "CorrectionCheck", "CALIBRATED", "MIN_GAIN", "without_correction"]

CALIBRATED = (0.8, 1.25)  # spread/skill counted as calibrated
MIN_GAIN = 0.01  # the CRPS must fall by at least this fraction


@dataclass
class CorrectionCheck:
    """The outcome of :func:`check_correction`; ``with_correction`` and ``gaussian_part`` are the
    ``{"crps", "rmse", "spread_skill"}`` (normalised units) on the held-out cells of the validation fields."""

    keep: bool
    reason: str
    with_correction: dict[str, float]
    gaussian_part: dict[str, float]
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


def _decide(with_correction: dict[str, float], gaussian: dict[str, float]) -> tuple[bool, str]:
    ratio = with_correction["crps"] / gaussian["crps"]
    if not ratio <= 1.0 - MIN_GAIN:
        return False, (f"the correction does not lower the validation CRPS by {MIN_GAIN:.0%} or more ({ratio:.3f}x "
                       "the Gaussian part's)")
    ss, ss_gaussian = with_correction["spread_skill"], gaussian["spread_skill"]
    if not CALIBRATED[0] <= ss <= CALIBRATED[1] and _calibration_gap(ss) > _calibration_gap(ss_gaussian):
        return False, (f"with the correction the ensemble is not calibrated (spread/skill {ss:.2f}, the Gaussian "
                       f"part's {ss_gaussian:.2f}), although its CRPS is {ratio:.3f}x")
    return True, f"the correction lowers the validation CRPS to {ratio:.3f}x the Gaussian part's, calibrated"


def _guided_members(denoiser: GaussianResidualDenoiser, truth: Tensor, mask: Tensor, coverage: float,
                    members: int, steps: int, bound: float, seed: int) -> tuple[Tensor, Tensor]:
    """Guided ensembles ``[n, M, C, H, W]`` of normalised ``truth [n, C, H, W]`` from ``coverage`` of each channel's
    valid cells (error ``VALIDATION_ERROR``, i.e. 1 % of the cell's anomaly std), sampled as
    :func:`geodiff.reconstruct` samples (MMPS at its preferred solve, Heun, EDM schedule, clipping at ``bound``,
    runaway checks); and the mask ``[n, C, H, W]`` of the held-out valid cells."""
    engine = SamplingEngine(HeunSampler(), denoiser, EDMSchedule().sigmas(steps), members=members, clip=bound,
                            runaway=RunawayCheck(bound=bound), fields=truth.shape[0], label="correction check")
    rng = np.random.default_rng([seed, 7])
    valid = mask.cpu().numpy()
    out, held_out = [], torch.zeros(truth.shape, dtype=torch.bool)
    with engine:
        for k, field in enumerate(truth):
            chosen = np.zeros(valid.shape, dtype=bool)
            for channel in range(valid.shape[0]):
                cells = np.flatnonzero(valid[channel])
                picked = rng.choice(cells, max(1, int(round(coverage * cells.size))), replace=False)
                chosen[channel].reshape(-1)[picked] = True
            held_out[k] = torch.from_numpy(valid & ~chosen)
            index = torch.from_numpy(np.flatnonzero(chosen.reshape(-1)))
            y = field.reshape(-1)[index].double()
            y = y + VALIDATION_ERROR * torch.from_numpy(rng.standard_normal(index.numel()))
            guide = MMPSGuidance(y, GridPointOperator(index, tuple(truth.shape[1:])),
                                 torch.full_like(y, VALIDATION_ERROR), method=preferred_method(denoiser))
            ensemble = engine.draw(guide, tuple(truth.shape[1:]), valid=mask,
                                   generator=torch.Generator().manual_seed(derive_seed(seed, "correction check", k)))
            out.append(ensemble.x.cpu())
    return torch.stack(out), held_out


def _scores(truth: Tensor, ensembles: Tensor, held_out: Tensor) -> dict[str, float]:
    """CRPS, RMSE of the mean and spread/skill (normalised units) over the held-out cells."""
    dims = ("field", "channel", "lat", "lon")
    field = xr.DataArray(truth.double().numpy(), dims=dims)
    members = xr.DataArray(ensembles.double().numpy(), dims=("field", "member", *dims[1:]))
    where = xr.DataArray(held_out.numpy(), dims=dims)
    return {"crps": float(metrics.crps_ensemble(field, members, where=where)),
            "rmse": float(metrics.rmse(field, members.mean("member"), where=where)),
            "spread_skill": float(metrics.spread_skill_ratio(field, members, where=where))}


def check_correction(bundle: ModelBundle, ds: xr.Dataset, *, coverage: float = 0.05, members: int = 8,
                     steps: int = 24, max_fields: int = 3, seed: int = 0) -> CorrectionCheck:
    """Reconstruct validation times of ``ds`` with and without the correction of a hybrid prior trained on it.

    ``bundle``: what :func:`geodiff.fit` returned for ``ds`` (its metadata gives the training and validation
    periods and the Gaussian part's mix); ``ds``: the dataset it was trained on (same times). Returns the scores of
    both variants and the decision (module docstring); the bundle is not changed.
    """
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
    trained = copy.deepcopy(bundle.denoiser)
    with torch.no_grad():
        trained.factor = factor.to(trained.factor.device)
    trained.set_mask(codec.mask)
    trained.correction = True
    gaussian = copy.deepcopy(trained)
    gaussian.correction = False

    times = n_train + np.unique(np.linspace(0, n_validation - 1, min(n_validation, max_fields)).astype(int))
    truth = _in_memory(FieldStream(ds, codec, normalizer, times))
    bound = float(getattr(normalizer, "bound", MAX_NORMALIZED))
    scores = {}
    for label, denoiser in (("with_correction", trained), ("gaussian_part", gaussian)):
        with torch.no_grad():
            ensembles, held_out = _guided_members(denoiser, truth, codec.mask, coverage, members, steps, bound, seed)
        scores[label] = _scores(truth, ensembles, held_out)
    keep, reason = _decide(scores["with_correction"], scores["gaussian_part"])
    return CorrectionCheck(keep=keep, reason=reason, with_correction=scores["with_correction"],
                           gaussian_part=scores["gaussian_part"], coverage=coverage, members=members, steps=steps,
                           fields=int(times.size), seconds=round(_time.perf_counter() - started, 1))


def settle_correction(bundle: ModelBundle, ds: xr.Dataset, *, check: bool = True, seed: int = 0) -> dict[str, Any]:
    """Decide a hybrid prior's correction in place, as :func:`geodiff.fit` does last: an untrained one (best
    validation at step 0, output zero) is left out so that sampling does not run the network for nothing; else
    :func:`check_correction` decides (``check=False``: kept unchecked). A bundle whose metadata already holds a
    decision keeps it. Sets ``bundle.denoiser.correction`` and returns the record kept in
    ``bundle.metadata["training"]["correction_check"]``."""
    record = bundle.metadata["training"]
    if "correction_check" in record:
        return record["correction_check"]
    if record["best_step"] == 0:
        note = {"keep": False, "reason": "the untrained correction (best validation at step 0) is zero"}
    elif not check:
        note = {"keep": True, "reason": "not checked (check_correction=False)"}
    else:
        outcome = check_correction(bundle, ds, seed=seed)
        note = outcome.as_dict()
        logger.info("fit: learned correction %s: %s", "kept" if outcome.keep else "left out", outcome.reason)
    bundle.denoiser.correction = note["keep"]
    bundle.denoiser.config["correction"] = note["keep"]
    record["correction_check"] = note
    return note
