"""Train a conditional downscaling model from Datasets in one call: ``geodiff.fit_downscaling(ds, factor)``.

The conditional sibling of :func:`geodiff.fit`. From a high-resolution training series ``ds`` (the truth), the
integer coarsening ``factor`` and optional auxiliary ``sources`` (topography, a satellite product, ... on grids of
integer or 1 / integer ratio over the same area), it builds everything :func:`geodiff.downscale` needs: the
normaliser (one mean and std per variable, target and sources), the training pairs (patches of the truth, the
land-aware area mean of each patch as the ``coarse`` source, the sources cut to the same area:
:class:`~geodiff.training.pairs.DownscalingPairs`), a :class:`~geodiff.backbones.conditional.ConditionalUNet`, and
the bundle with its ``"downscaling"`` metadata. Three ``mode`` s share data, patches, network, budget, learning-rate
schedule and early stopping, so they compare fairly:

- ``"regression"``: a deterministic :class:`~geodiff.diffusion.residual.RegressionModel` (mean squared error) that
  learns what bilinear interpolation of the coarse field misses (``coarse_skip``);
- ``"direct"``: an EDM :class:`~geodiff.diffusion.denoiser.Denoiser` of the normalised field;
- ``"residual"``: a :class:`~geodiff.diffusion.residual.ResidualDenoiser`: the regression's prediction plus a
  diffusion model of what it misses (CorrDiff); the regression (``regression=``, a bundle of mode
  ``"regression"``) is trained first with the same settings when not given. The diffusion model learns the
  fields minus the regression's whole-field prediction (windows blended as :func:`geodiff.downscale` blends
  them), on the regression's training times, scaled cell by cell so that their size is that of the regression's
  errors on the validation times (``residual_scale``): a regression fits its own training data better than new
  times, and an ensemble built on in-sample residuals is too narrow. With ``residual_folds`` the residuals come from
  regressions that never saw the times they predict (cross-fitting) instead.

Training runs through the one loop (:func:`geodiff.train`) with the objective of the mode
(:class:`~geodiff.training.objectives.RegressionObjective` or
:class:`~geodiff.training.objectives.DenoisingObjective`), AdamW, a linear warm-up and a cosine decay of the
learning rate over the run. The last ``validation`` fraction of the times is held out: the model is scored on
fixed patches of those times every ``validate_every`` steps (regression: mean squared error; diffusion:
:func:`~geodiff.training.fit.validation_loss`, the denoising error at fixed noise levels) and the weights with
the best score are returned (early stopping). With ``time_budget`` (seconds) the number of steps comes from the
measured speed of this model, and the budget is a wall-clock limit (a machine that slows down shortens the run;
one that the probe misjudged as slow is given the steps the budget affords after the first segment);
with ``checkpoint_dir`` an interrupted run resumes.

Masks and weights: ``mask`` (bool ``(lat, lon)`` DataArray or numpy array, True = valid) is combined with the
cells that are NaN in the data; the coarse field is the area mean over valid cells only (``area_weights``:
``"coslat"`` or None for equal weights), so land under an ocean coarse cell does not enter it, and invalid cells
are left out of every training loss and validation score (each patch carries its own mask). Global grids
(longitudes covering 360 degrees) use a backbone with periodic longitude padding.

Example
-------
>>> import numpy as np, pandas as pd, xarray as xr
>>> from geodiff.training.fit_downscaling import fit_downscaling
>>> rng = np.random.default_rng(0)
>>> ds = xr.Dataset({"tas": (("time", "lat", "lon"), 280 + rng.normal(size=(10, 16, 16)), {"units": "K"})},
...                 coords={"time": pd.date_range("2000", periods=10, freq="YS"),
...                         "lat": np.arange(16.0), "lon": np.arange(16.0)})
>>> bundle = fit_downscaling(ds, 4, mode="regression", steps=2, patch_size=(8, 8), base_channels=8,
...                          progress=False)
>>> bundle.metadata["downscaling"]["sources"]["coarse"], bundle.metadata["training"]["mode"]
({'variables': ['tas'], 'ratio': '1/4'}, 'regression')
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
import time as _time
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr
from torch import Tensor
from tqdm.auto import tqdm

from geodiff.backbones.conditional import ConditionalUNet
from geodiff.diffusion.denoiser import Denoiser
from geodiff.diffusion.losses import EDMLoss
from geodiff.diffusion.patches import PatchDenoiser
from geodiff.diffusion.residual import RegressionModel, ResidualDenoiser
from geodiff.errors import CheckpointError, ConfigError, GridError
from geodiff.grid import channel_mask, grid_for_ratio, is_periodic
from geodiff.io.bundle import ModelBundle
from geodiff.io.codec import Codec
from geodiff.io.normalize import Normalizer
from geodiff.runtime import DEFAULT_THREADS, uses_threads
from geodiff.training.fit import check_training_data, validation_loss
from geodiff.training.objectives import DenoisingObjective, RegressionObjective
from geodiff.training.pairs import COARSE, DownscalingPairs, downscaling_metadata
from geodiff.training.checkpoint import checkpoint_step
from geodiff.training.time_budget import affordable_steps, replanned_steps
from geodiff.training.trainer import train

__all__ = ["fit_downscaling", "MODES"]

MODES = ("regression", "direct", "residual")
PROBE_STEPS = 12  # steps that measure the speed for a time budget (after two warm-up steps)
VALIDATION_PATCHES = 32  # fixed validation patches (from validation times evenly spaced, 4 patches a time at most)
MAX_PATCH = 32
RUN_STATE = "fit_downscaling.json"
MAX_SCORING_SHARE = 0.15  # of a time budget spent on validation scores at most
SCALE_SMOOTHING = 2.0  # cells: std of the Gaussian that smooths the per-cell mean squares of residual_scale


def _source_ratio(source: xr.Dataset, height: int, width: int, name: str) -> Fraction:
    """Source cells per field cell, the same along lat and lon, an integer or 1 / integer."""
    ry, rx = Fraction(source.sizes["lat"], height), Fraction(source.sizes["lon"], width)
    if ry != rx or (ry.numerator != 1 and ry.denominator != 1):
        raise GridError(f"source {name!r} is {source.sizes['lat']} x {source.sizes['lon']} over a {height} x {width} "
                        "field: its grid must have the same integer or 1 / integer ratio along lat and lon")
    return ry


def _check_source(source: xr.Dataset, name: str, lat: np.ndarray, lon: np.ndarray, times: np.ndarray) -> Fraction:
    ratio = _source_ratio(source, lat.size, lon.size, name)
    for coord, values in (("lat", lat), ("lon", lon)):
        expected = grid_for_ratio(values, ratio, coord)
        tolerance = 1e-3 * abs(float(expected[1] - expected[0])) if expected.size > 1 else 1e-3
        if not np.allclose(np.asarray(source[coord].values, dtype=np.float64), expected, rtol=0, atol=tolerance):
            raise GridError(f"source {name!r} coordinate {coord!r} does not lie on the grid of ratio {ratio} over "
                            "the training domain (cell edges must align with the high-resolution grid)")
    if "time" in source.dims and not np.isin(times, source["time"].values).all():
        raise GridError(f"source {name!r} has a time dimension without every training time")
    return ratio


def _stack(normalizer: Normalizer, ds: xr.Dataset, variables: Sequence[str], times: np.ndarray | None) -> Tensor:
    """Normalised ``[N or 1, C, H, W]`` float32 (NaN -> 0) of ``variables`` at ``times`` (static data: one)."""
    if times is not None and "time" in ds.dims:
        ds = ds.sel(time=times)
    arrays = []
    for name in variables:
        da = normalizer.normalize(ds[name])
        order = (("time",) if "time" in da.dims else ()) + ("lat", "lon")
        extra = [d for d in da.dims if d not in order]
        if extra:
            raise GridError(f"variable {name!r} has dimensions {extra} besides (time, lat, lon)")
        arrays.append(np.nan_to_num(np.asarray(da.transpose(*order).values, dtype=np.float32), nan=0.0))
    out = torch.from_numpy(np.stack(arrays, axis=-3))
    return out if out.ndim == 4 else out[None]


def _statistics(ds: xr.Dataset, name: str) -> tuple[float, float]:
    values = np.asarray(ds[name].values, dtype=np.float64)
    mean, std = float(np.nanmean(values)), float(np.nanstd(values))
    if not math.isfinite(mean) or not std > 0:
        raise ConfigError(f"variable {name!r} has no variability to normalise by (std {std})")
    return mean, std


def _default_patch(height: int, width: int, align: int) -> tuple[int, int]:
    def size(n: int) -> int:
        best = (min(n, MAX_PATCH) // align) * align
        if best < align:
            raise GridError(f"the grid ({height} x {width}) is smaller than the coarse cells' alignment {align}")
        return best

    return size(height), size(width)


def _mask(ds: xr.Dataset, names: Sequence[str], mask: Any, shape: tuple[int, int, int]) -> np.ndarray:
    """Valid cells ``[C, H, W]``: finite at the first time in every variable, and True in the user's ``mask``."""
    finite = np.stack([np.isfinite(np.asarray(ds[n].isel(time=0).transpose("lat", "lon").values)) for n in names])
    if mask is None:
        return finite
    if isinstance(mask, xr.DataArray):
        mask = mask.transpose(*[d for d in mask.dims if d not in ("lat", "lon")], "lat", "lon").values
    return finite & channel_mask(mask, shape, "mask")


@uses_threads
def fit_downscaling(
    ds: xr.Dataset,
    factor: int,
    *,
    mode: Literal["regression", "direct", "residual"] = "direct",
    variables: str | Sequence[str] | None = None,
    sources: Mapping[str, xr.Dataset | xr.DataArray] | None = None,
    regression: ModelBundle | None = None,
    residual_folds: int | None = None,
    residual_scale: float | Literal["validation", "validation_per_cell"] | None = "validation_per_cell",
    steps: int | None = None,
    time_budget: float | None = None,
    validation: float = 0.15,
    validate_every: int | None = None,
    patch_size: tuple[int, int] | None = None,
    patches_per_field: int = 16,
    base_channels: int = 16,
    channel_mults: Sequence[int] = (1, 2, 2),
    source_channels: int = 16,
    source_dropout: float | None = None,
    batch_size: int = 16,
    lr: float = 1e-3,
    mask: Any = None,
    area_weights: Literal["coslat"] | None = "coslat",
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    threads: int | None = DEFAULT_THREADS,
) -> ModelBundle:
    """Train a conditional downscaling model (``mode``) of ``ds`` at ``factor`` and return its bundle for
    :func:`geodiff.downscale` (module docstring).

    Parameters
    ----------
    ds: high-resolution training series ``(time, lat, lon)``, NaN where invalid, units on every variable.
    factor: integer coarsening factor (grid sizes of the patches must be multiples of it).
    mode: ``"regression"``, ``"direct"`` or ``"residual"`` (module docstring).
    variables: target variables (default: every data variable with a time dimension).
    sources: auxiliary sources by name (Dataset or named DataArray on a grid of integer or 1 / integer ratio over
        the same area; static or with ``ds``'s times).
    regression: for ``mode="residual"``: the regression bundle to build on (same variables, factor, sources).
    residual_folds: for ``mode="residual"``: train the diffusion model on out-of-fold residuals. The training
        times are split into this many contiguous blocks; a regression with this call's settings (``steps``,
        ``time_budget`` each) is trained without each block and predicts it. Its errors there are errors on
        times it never saw, the kind the regression makes at prediction time, which in-sample residuals
        understate (the regression also fits its own training data), so the ensemble spread follows the
        regression's real error. None (default): the regression's own residuals on its training times (CorrDiff).
        The regression (trained or given) stays the mean at prediction time.
    residual_scale: for ``mode="residual"``: the diffusion model learns the residuals times this factor, so its
        samples are the regression's prediction plus residuals of that size. ``"validation"``, per variable: the
        regression's error RMS on the validation times over the RMS of the training residuals. A
        regression fits its own training data better than new times, so in-sample residuals are too small and an
        ensemble built on them too narrow; the factor calibrates the spread on times the regression never saw
        (with ``residual_folds`` it is close to 1). ``"validation_per_cell"`` (default): the same ratio per cell,
        of mean squares smoothed over :data:`SCALE_SMOOTHING` cells (Gaussian), so the spread also follows where
        the regression errs more on new times. A number: that factor; None: the residuals as they are (CorrDiff).
        Recorded as ``residual_scale`` (per variable; per cell: its mean, min and max) with the RMS of both
        residuals (``residual_rms_normalised``).
    steps, time_budget: optimizer steps (default 2000, or from the measured speed with a time budget; with a
        budget as well, the most steps) and seconds of training, a wall-clock limit: the run stops when the budget
        is spent (segments between validations shortened to fit it at the speed of the previous one), and a run
        that the speed probe planned too short is lengthened once, after its first segment, to fill the budget at
        that segment's speed (:mod:`geodiff.training.time_budget`; ``replanned_from``: the probe's plan). The
        recorded ``steps`` are those done, ``planned_steps`` those of the learning-rate schedule,
        ``stopped_by_budget`` says whether the budget ended the run.
    validation, validate_every: fraction of the times (the last ones) held out for early stopping, and steps
        between scores (default: ``steps / 10``; with a time budget, fewer scores when scoring would take more
        than 15 % of it).
    patch_size, patches_per_field: training window (default: up to 32 x 32 on the coarse cells' alignment) and
        windows drawn per field.
    base_channels, channel_mults, source_channels: width and depth of the network and of its source encoders.
    source_dropout: probability of leaving out each source of a sample in training (default 0.2 for diffusion,
        so a model can be given any subset of its sources, 0 for the regression).
    batch_size, lr: global batch and peak AdamW learning rate (warm-up, then cosine decay to 0).
    mask: bool ``(lat, lon)`` or ``(variable, lat, lon)`` (DataArray or numpy), True = valid; combined with NaN.
    area_weights: weights of the coarse area mean: ``"coslat"`` or None (equal).
    checkpoint_dir, resume: where the run keeps checkpoints; an interrupted run continues from them.
    seed: seed of the weights, the patches and every random draw of training.
    threads: torch threads of the call (default 1, :data:`geodiff.runtime.DEFAULT_THREADS`; None: as set).
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ConfigError(f"factor must be a positive integer, got {factor!r}")
    if area_weights not in ("coslat", None):
        raise ConfigError(f"area_weights must be 'coslat' or None, got {area_weights!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    if time_budget is not None and not time_budget > 0:
        raise ConfigError(f"time_budget must be a positive number of seconds, got {time_budget!r}")
    if not 0 < validation < 0.5:
        raise ConfigError(f"validation must be a fraction in (0, 0.5), got {validation}")
    names = [variables] if isinstance(variables, str) else list(variables or [
        str(n) for n, v in ds.data_vars.items() if "time" in v.dims])
    ds = check_training_data(ds, names)
    ds = ds[names]
    lat, lon = np.asarray(ds["lat"].values, np.float64), np.asarray(ds["lon"].values, np.float64)
    shape = (len(names), lat.size, lon.size)
    n_times = ds.sizes["time"]
    n_validation = max(1, math.ceil(validation * n_times))
    train_times, validation_times = ds["time"].values[:-n_validation], ds["time"].values[-n_validation:]

    source_data: dict[str, xr.Dataset] = {}
    ratios: dict[str, Fraction] = {}
    for name, value in (sources or {}).items():
        if name == COARSE:
            raise ConfigError(f"source name {COARSE!r} is reserved for the coarse field")
        value = value.to_dataset() if isinstance(value, xr.DataArray) else value
        if not isinstance(value, xr.Dataset):
            raise ConfigError(f"source {name!r} must be an xr.Dataset or a named DataArray")
        ratios[name] = _check_source(value, name, lat, lon, ds["time"].values)
        source_data[name] = value
    statistics = {n: _statistics(ds.sel(time=train_times), n) for n in names}
    for name, value in source_data.items():
        for variable in value.data_vars:
            if variable in statistics:
                raise ConfigError(f"source {name!r} variable {variable!r} has the name of another variable; rename it")
            statistics[str(variable)] = _statistics(value, str(variable))
    if regression is not None:
        normalizer = regression.normalizer
        if regression.metadata.get("training", {}).get("mode") != "regression":
            raise ConfigError("regression= must be a bundle trained with mode='regression'")
        expected = downscaling_metadata(factor, regression.metadata["downscaling"]["patch"], names,
                                        {n: (list(v.data_vars), ratios[n]) for n, v in source_data.items()},
                                        area_weights=area_weights)
        if regression.metadata["downscaling"] != expected:
            raise ConfigError("the regression bundle was trained for other variables, factor or sources: "
                              f"{regression.metadata['downscaling']} (now {expected})")
    else:
        normalizer = Normalizer.affine(statistics)
    valid = _mask(ds, names, mask, shape)
    codec = Codec.from_dataset(ds.isel(time=[0]).where(xr.DataArray(valid.any(0), dims=("lat", "lon"))))

    def pairs_of(times: np.ndarray, count: int, pair_seed: int, patch: tuple[int, int] | None,
                 minus: Tensor | None = None, scale: Tensor | None = None) -> DownscalingPairs:
        """Pairs of the fields at ``times``; with ``minus`` (``[N, C, H, W]``), pairs of
        ``(fields - minus) * scale`` (``scale``: ``[C, H, W]``) that keep the coarse field of the fields themselves."""
        fields = _stack(normalizer, ds, names, times) * torch.from_numpy(valid)
        cond = {name: _stack(normalizer, value, list(value.data_vars), times) for name, value in source_data.items()}
        options = dict(sources=cond, mask=valid, grid_lat=lat if area_weights == "coslat" else None)
        if minus is None:
            return DownscalingPairs(fields, factor, patch=patch, patches_per_field=count, seed=pair_seed, **options)
        coarse = DownscalingPairs(fields, factor, **options).sources[COARSE]
        residual = (fields - minus) * torch.from_numpy(valid)
        if scale is not None:
            residual = residual * scale
        return DownscalingPairs(residual, factor, coarse=coarse, patch=patch, patches_per_field=count, seed=pair_seed,
                                **options)

    def predicted(model: torch.nn.Module, times: np.ndarray) -> Tensor:
        """A regression's normalised prediction ``[N, C, H, W]`` of the whole fields at ``times``, windowed and
        blended as :func:`geodiff.downscale` does."""
        return _predict(model, pairs_of(times, 1, seed, None), patch, is_periodic(lon)) * torch.from_numpy(valid)

    whole = pairs_of(train_times[:1], 1, seed, None)
    patch = tuple(int(p) for p in patch_size) if patch_size is not None else _default_patch(*shape[1:], whole.align)
    periodic = is_periodic(lon)
    all_sources = {COARSE: len(names), **{n: len(v.data_vars) for n, v in source_data.items()}}
    dropout = (0.0 if mode == "regression" else 0.2) if source_dropout is None else float(source_dropout)
    architecture = {"base_channels": base_channels, "channel_mults": list(channel_mults), "num_res_blocks": 1,
                    "attention_levels": [], "mid_attention": False, "source_channels": source_channels,
                    "source_dropout": dropout, "periodic_lon": periodic}

    def network() -> ConditionalUNet:
        return ConditionalUNet(len(names), sources=all_sources, **architecture)

    if mode == "residual" and regression is None:
        regression = fit_downscaling(
            ds, factor, mode="regression", variables=names, sources=sources, steps=steps, time_budget=time_budget,
            validation=validation, validate_every=validate_every, patch_size=patch, patches_per_field=patches_per_field,
            base_channels=base_channels, channel_mults=channel_mults, source_channels=source_channels,
            batch_size=batch_size, lr=lr, mask=mask, area_weights=area_weights,
            checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir) / "regression", resume=resume,
            seed=seed, device=device, progress=progress)
    if mode != "residual" and residual_folds is not None:
        raise ConfigError("residual_folds is for mode='residual'")
    if mode == "residual":  # the diffusion model learns the fields minus the regression's prediction
        mean = copy.deepcopy(regression.denoiser).cpu()  # type: ignore[union-attr]
        mean.eval()
        fold_options = dict(variables=names, sources=sources, steps=steps, time_budget=time_budget,
                            validate_every=validate_every, patch_size=patch, patches_per_field=patches_per_field,
                            base_channels=base_channels, channel_mults=channel_mults, source_channels=source_channels,
                            batch_size=batch_size, lr=lr, mask=mask, area_weights=area_weights, resume=resume,
                            device=device, progress=progress)
        train_means = predicted(mean, train_times) if residual_folds is None else _out_of_fold_means(
            ds, factor, train_times, validation_times, residual_folds, predicted, checkpoint_dir, seed, fold_options)
        validation_means = predicted(mean, validation_times)
        train_residual = _stack(normalizer, ds, names, train_times) - train_means
        validation_residual = _stack(normalizer, ds, names, validation_times) - validation_means
        residual_rms = {"training": _rms(train_residual, valid), "validation": _rms(validation_residual, valid)}
        scale = _residual_scale(residual_scale, train_residual, validation_residual, valid, periodic)
        del train_residual, validation_residual
        data = pairs_of(train_times, patches_per_field, seed, patch, minus=train_means, scale=scale)
    else:
        if residual_scale not in (None, "validation", "validation_per_cell"):
            raise ConfigError("residual_scale is for mode='residual'")
        residual_rms = scale = None
        data = pairs_of(train_times, patches_per_field, seed, patch)
    chosen = np.unique(np.linspace(0, n_validation - 1, min(n_validation, VALIDATION_PATCHES)).astype(int))
    held = pairs_of(validation_times[chosen], max(1, min(4, VALIDATION_PATCHES // chosen.size)), seed + 1, patch,
                    minus=validation_means[chosen] if mode == "residual" else None, scale=scale)
    items = [held[i] for i in range(len(held))]  # (x, cond, mask of the patch); residual mode: x = the residual
    x_val = torch.stack([item[0] for item in items])
    cond_val = {k: torch.stack([item[1][k] for item in items]) for k in items[0][1]}
    patch_valid = torch.stack([item[2] for item in items])

    torch.manual_seed(seed)
    sigma_data = 1.0
    if mode == "regression":
        model: torch.nn.Module = RegressionModel(network(), coarse_skip=True)
        objective: Any = RegressionObjective()

        def score(m: torch.nn.Module) -> float:
            error = (m(x_val, None, cond_val) - x_val) ** 2
            return float(error[patch_valid].mean())
    else:
        if mode == "residual":  # trained as a denoiser of the residual, wrapped around the regression at the end
            sigma_data = float(x_val[patch_valid].std())
        model = Denoiser(network(), sigma_data=sigma_data)
        objective = DenoisingObjective(EDMLoss(P_mean=-0.4 + math.log(sigma_data), P_std=1.6, sigma_data=sigma_data))

        def score(m: torch.nn.Module) -> float:
            return validation_loss(m, x_val, patch_valid, seed=seed, sigma_data=sigma_data, cond=cond_val)

    folder = None if checkpoint_dir is None else Path(checkpoint_dir)
    state: dict[str, Any] = {}
    if folder is not None and resume and (folder / RUN_STATE).is_file():
        state = json.loads((folder / RUN_STATE).read_text())
        if steps is not None and time_budget is None and state.get("steps") != steps:
            raise CheckpointError(f"{folder / RUN_STATE} is a run of {state.get('steps')} steps; now steps={steps}")
    started = _time.perf_counter()
    options = dict(objective=objective, batch_size=batch_size, lr=lr, weight_decay=0.01, grad_clip=1.0,
                   threads=threads, ema_decay=None, seed=seed, device=device)
    total = state.get("steps") or steps
    seconds_per_step = state.get("seconds_per_step")
    scores = state.get("scores", 10)  # validations after the one at step 0
    if total is None and time_budget is not None:
        seconds_per_step, one_score = _probe_speed(model, data, options, score)
        # at most MAX_SCORING_SHARE of the budget goes to validation: fewer scores on a slow machine
        scores = max(1, min(10, int(MAX_SCORING_SHARE * time_budget / one_score) - 1))
        spent = _time.perf_counter() - started
        total = max(PROBE_STEPS, affordable_steps(time_budget - spent - (scores + 1) * one_score, seconds_per_step))
    total = int(total or 2000)
    every = int(state.get("every") or validate_every or max(1, total // scores))
    run = {"steps": total, "seconds_per_step": seconds_per_step, "scores": scores, "every": every,
           "warmup_steps": int(state.get("warmup_steps") or min(100, max(1, total // 10))),
           "seconds": float(state.get("seconds", 0.0)), "stopped_by_budget": False,
           "replanned_from": state.get("replanned_from"), **({"replanned": True} if state.get("replanned") else {})}

    def record_run() -> None:
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / RUN_STATE).write_text(json.dumps(run))

    record_run()
    options.update(warmup_steps=run["warmup_steps"], cosine_steps=total, checkpoint_every=every,
                   progress=progress, validation=score, eval_every=every)
    with tempfile.TemporaryDirectory(prefix="geodiff-fit-downscaling-") as scratch:
        if time_budget is None:
            result = train(model, data, steps=total, checkpoint_dir=folder, resume=resume, **options)
            done = total
        else:  # a wall-clock limit: segments between validations, each shortened to what the budget left allows;
            # after the first timed segment the run's length is re-planned once from its speed (time_budget module)
            work = folder if folder is not None else Path(scratch)
            done = checkpoint_step(work) if resume else 0
            while True:
                target = min(total, done + every)
                spent = run["seconds"] + (_time.perf_counter() - started)
                if run["seconds_per_step"]:
                    affordable = affordable_steps(time_budget - spent, run["seconds_per_step"])
                    if affordable < 1 and done > 0:
                        run["stopped_by_budget"] = done < total
                        break
                    target = min(target, done + max(1, affordable))
                timed = _time.perf_counter()
                result = train(model, data, steps=target, checkpoint_dir=work, resume=resume or done > 0,
                               reschedule=True, **options)
                first = target > done and "replanned" not in run
                if target > done:
                    run["seconds_per_step"] = (_time.perf_counter() - timed) / (target - done)
                done = target
                run["seconds"] += _time.perf_counter() - started
                started = _time.perf_counter()
                if first:
                    longer = replanned_steps(done, total, time_budget - run["seconds"], run["seconds_per_step"],
                                             most=steps)
                    if longer > total:
                        run["replanned_from"], run["steps"], total = total, longer, longer
                        options["cosine_steps"] = total
                    run["replanned"] = True
                record_run()
                if done >= total:
                    break
    run["seconds"] += _time.perf_counter() - started
    record_run()
    model.eval()
    model.cpu()
    if mode == "residual":
        model = ResidualDenoiser(model.backbone, mean=mean, sigma_data=sigma_data).eval()
    sources_meta = {n: (list(map(str, v.data_vars)), ratios[n]) for n, v in source_data.items()}
    metadata = {
        "name": f"downscaling ({mode}) of {', '.join(names)} x{factor}",
        "trained_by": "geodiff.training.fit_downscaling",
        "downscaling": downscaling_metadata(factor, patch, names, sources_meta, area_weights=area_weights),
        "training": {
            "mode": mode, "steps": done, "planned_steps": total, "stopped_by_budget": run["stopped_by_budget"],
            "replanned_from": run["replanned_from"],
            "best_step": result.best_step,
            "validation_history": [{"step": i * every, "score": v} for i, v in enumerate(result.validation_losses)],
            "seconds": round(run["seconds"], 1), "seconds_per_step": run["seconds_per_step"],
            "time_budget": time_budget, "architecture": architecture, "sigma_data": sigma_data,
            "patch_size": list(patch), "patches_per_field": patches_per_field, "batch_size": batch_size, "lr": lr,
            "seed": seed, "area_weights": area_weights, "valid_cells": int(valid.sum()),
            "training_times": int(n_times - n_validation), "validation_times": int(n_validation),
            "training_period": [str(train_times[0]), str(train_times[-1])],
            "validation_period": [str(validation_times[0]), str(validation_times[-1])],
            "regression": None if regression is None or mode != "residual" else regression.metadata["training"],
            "residual_folds": residual_folds, "residual_rms_normalised": residual_rms,
            "residual_scale": _describe_scale(scale, residual_scale, valid),
            "torch": torch.__version__,
        },
    }
    return ModelBundle(model, codec, normalizer, metadata=metadata)


def _predict(model: torch.nn.Module, pairs: DownscalingPairs, patch: tuple[int, int], periodic: bool,
             batch: int = 8) -> Tensor:
    """``model``'s prediction ``[N, C, H, W]`` of the whole fields of ``pairs`` (built with ``patch=None``) from
    their conditioning alone, in windows of ``patch`` blended as :func:`geodiff.downscale` blends them."""
    patched = PatchDenoiser(model, patch=patch, overlap=(patch[0] // 4, patch[1] // 4), periodic_lon=periodic)
    n = pairs.fields.shape[0]
    out = []
    with torch.no_grad():
        for start in range(0, n, batch):
            rows = slice(start, min(n, start + batch))
            size = rows.stop - rows.start
            cond = {k: (v[rows] if v.shape[0] > 1 else v.expand(size, *v.shape[1:])) for k, v in pairs.sources.items()}
            out.append(patched(torch.zeros_like(pairs.fields[rows]), 0.0, cond))
    return torch.cat(out)


def _rms(residual: Tensor, valid: np.ndarray) -> list[float]:
    """RMS per variable of ``residual [N, C, H, W]`` over the valid cells (``valid [C, H, W]``)."""
    return [float(residual[:, c][:, torch.from_numpy(valid[c])].square().mean().sqrt()) for c in range(valid.shape[0])]


def _residual_scale(setting: Any, train_residual: Tensor, validation_residual: Tensor, valid: np.ndarray,
                    periodic: bool) -> Tensor | None:
    """The factor ``[C, H, W]`` the residuals ``[N, C, H, W]`` are multiplied by (``residual_scale``), or None."""
    channels = valid.shape[0]
    if setting is None:
        return None
    if setting in ("validation", "validation_per_cell"):
        train_rms = _rms(train_residual, valid)
        if min(train_rms) <= 0:
            raise ConfigError("the regression reproduces its training fields exactly: no residual to learn "
                              f"(residual_scale={setting!r} has nothing to scale)")
        if setting == "validation":
            ratio = [v / t for v, t in zip(_rms(validation_residual, valid), train_rms)]
            return torch.tensor(ratio, dtype=torch.float32)[:, None, None].expand(valid.shape).clone()
        from scipy.ndimage import gaussian_filter

        def smoothed(residual: Tensor) -> np.ndarray:  # mean square per cell, smoothed over valid cells only
            square = residual.double().square().mean(0).numpy() * valid
            modes = ("nearest", "wrap" if periodic else "nearest")
            out = []
            for c in range(channels):
                weight = gaussian_filter(valid[c].astype(np.float64), SCALE_SMOOTHING, mode=modes)
                out.append(gaussian_filter(square[c], SCALE_SMOOTHING, mode=modes) / np.maximum(weight, 1e-12))
            return np.stack(out)

        train_square, validation_square = smoothed(train_residual), smoothed(validation_residual)
        factor = np.sqrt(validation_square / np.maximum(train_square, 1e-30))
        factor = np.where(valid & (train_square > 0), factor, 1.0)
        return torch.from_numpy(factor.astype(np.float32))
    if isinstance(setting, bool) or not isinstance(setting, int | float) or not math.isfinite(setting) or setting <= 0:
        raise ConfigError("residual_scale must be 'validation', 'validation_per_cell', a positive number or None, "
                          f"got {setting!r}")
    return torch.full(valid.shape, float(setting))


def _describe_scale(scale: Tensor | None, setting: Any, valid: np.ndarray) -> Any:
    """``residual_scale`` for the metadata: per variable, or per variable ``{mean, min, max}`` over valid cells."""
    if scale is None:
        return None
    if setting != "validation_per_cell":
        return [round(float(scale[c].flatten()[0]), 6) for c in range(scale.shape[0])]
    cells = [scale[c][torch.from_numpy(valid[c])] for c in range(scale.shape[0])]
    return [{"mean": round(float(v.mean()), 6), "min": round(float(v.min()), 6), "max": round(float(v.max()), 6)}
            for v in cells]


def _out_of_fold_means(ds: xr.Dataset, factor: int, train_times: np.ndarray, validation_times: np.ndarray,
                       folds: int, predicted: Any, checkpoint_dir: str | Path | None, seed: int,
                       options: dict[str, Any]) -> Tensor:
    """Each training time predicted by a regression trained without it (``residual_folds``): the times are split
    into ``folds`` contiguous blocks, and a regression trained on the other blocks (early stopping on the same
    validation times) predicts each block. Returns the normalised predictions ``[N, C, H, W]``."""
    if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= train_times.size:
        raise ConfigError(f"residual_folds must be an integer from 2 to the {train_times.size} training times, "
                          f"got {folds!r}")
    blocks = np.array_split(np.arange(train_times.size), folds)
    smallest_fold = train_times.size - max(b.size for b in blocks) + validation_times.size
    held_share = (validation_times.size - 0.5) / smallest_fold
    if not held_share < 0.5:
        raise ConfigError(f"residual_folds={folds} leaves too few training times next to the {validation_times.size} "
                          "validation times; use fewer folds")
    means: list[Tensor] = []
    for k, block in enumerate(tqdm(blocks, desc="out-of-fold regressions", disable=not options["progress"])):
        kept = np.setdiff1d(np.arange(train_times.size), block)
        times = np.concatenate([train_times[kept], validation_times])
        folder = None if checkpoint_dir is None else Path(checkpoint_dir) / f"fold{k}"
        fold = fit_downscaling(ds.sel(time=times), factor, mode="regression", seed=seed + 1 + k,
                               validation=(validation_times.size - 0.5) / times.size, checkpoint_dir=folder, **options)
        means.append(predicted(fold.denoiser, train_times[block]))
    return torch.cat(means)


def _probe_speed(model: torch.nn.Module, data: DownscalingPairs, options: dict[str, Any],
                 score: Any) -> tuple[float, float]:
    """Seconds per training step (after two warm-up steps) and seconds per validation score, measured on a copy."""
    probe = copy.deepcopy(model)
    train(probe, data, steps=2, progress=False, **options)
    timed = _time.perf_counter()
    train(probe, data, steps=2 + PROBE_STEPS, progress=False, **options)
    seconds_per_step = (_time.perf_counter() - timed) / PROBE_STEPS
    timed = _time.perf_counter()
    probe.eval()
    with torch.no_grad():
        score(probe)
    return seconds_per_step, max(_time.perf_counter() - timed, 1e-6)
