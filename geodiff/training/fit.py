"""Train a diffusion prior from a Dataset in one call: ``geodiff.fit(ds) -> ModelBundle``.

:func:`fit` does what a user otherwise chains by hand (normaliser, codec, encoding, network, denoiser, training,
bundle) and adds what a scientist needs from a training run:

- **Strict input checks** before any training time is spent (:func:`geodiff.datacheck.check_gridded`):
  canonical layout, latitude within +-90 (a descending one is flipped, with a record), longitude increasing,
  times unique, parseable units that agree with the values, no fill values (``|value| >= 1e15``) or values far
  outside the fitted statistics.
- **Anomaly priors by default**: :class:`~geodiff.io.anomaly.AnomalyNormalizer` (per-cell climatology, by month
  for monthly series, and per-cell smoothed std), so the network models variability, not the mean state.
- **Lazy data**: a dask-backed Dataset (``xr.open_zarr`` of a long series) is never loaded whole; statistics
  stream chunk by chunk and training reads one time at a time (:class:`FieldStream`).
- **A validation period** (the last ``validation`` fraction of the times, by time): the EMA weights are scored
  every ``validate_every`` steps with a deterministic denoising loss and the best ones are kept (early stopping
  on the score, not on the training loss).
- **Guided reconstructions decide the hybrid prior's correction**: the learned correction is kept only where it
  lowers the CRPS of guided reconstructions of validation times with a calibrated ensemble
  (:mod:`geodiff.training.correction_check`); otherwise the bundle samples the Gaussian part alone.
- **Sizes from the data**: UNet depth and patch size from the grid, step count from ``time_budget`` (seconds)
  when ``steps`` is not given; every choice is recorded in the bundle's metadata.
- **Resume**: with ``checkpoint_dir`` a killed run continues (the training loop's exact resume plus the best
  weights and validation history saved there).

Example
-------
>>> import numpy as np, pandas as pd, xarray as xr, geodiff
>>> time = pd.date_range("2000-01-01", periods=30, freq="YS")
>>> rng = np.random.default_rng(0)
>>> ds = xr.Dataset({"tas": (("time", "lat", "lon"), 280 + rng.normal(size=(30, 8, 8)), {"units": "K"})},
...                 coords={"time": time, "lat": np.arange(8.0), "lon": np.arange(8.0)})
>>> bundle = geodiff.fit(ds, steps=4, validate_every=2, progress=False)
>>> bundle.metadata["training"]["steps"], bundle.metadata["training"]["validation_times"]
(4, 5)
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time as _time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from geodiff.diffusion.denoiser import Denoiser
from geodiff.diffusion.gaussian_prior import GaussianResidualDenoiser
from geodiff.errors import CheckpointError, ConfigError, CoordinateError, DataError
from geodiff.io.anomaly import AnomalyNormalizer
from geodiff.io.bundle import ModelBundle
from geodiff.io.codec import Codec
from geodiff.io.normalize import Normalizer
from geodiff.runtime import DEFAULT_THREADS, uses_threads
from geodiff.training.correction_check import settle_correction
from geodiff.training.hybrid_prior import MAX_PRIOR_CELLS, fit_hybrid_prior
from geodiff.training.time_budget import affordable_steps, replanned_steps

logger = logging.getLogger(__name__)

__all__ = ["fit", "FieldStream", "check_training_data", "default_architecture", "validation_loss"]

MAX_TRAINING_NORMALIZED = 50.0  # normalised training values beyond this: wrong units mixed in, or a fill value
FIT_STATE = "fit_state.json"
BEST_WEIGHTS = "best_ema.safetensors"
VALIDATION_SIGMAS = (0.02, 0.08, 0.3, 1.0, 3.0, 10.0)
MAX_VALIDATION_FIELDS = 16
PROBE_WARMUP, PROBE_STEPS = 5, 25  # steps that measure the speed for a time budget (after the first ones)
MAX_PRIOR_TIMES = 1000  # training fields (evenly spaced) that make the low-rank part of a hybrid prior  # validation fields scored (evenly spaced over the validation period)


def check_training_data(ds: xr.Dataset, variables: Sequence[str]) -> xr.Dataset:
    """``ds`` checked for training (:func:`geodiff.datacheck.check_gridded`: coordinates, times, fill values,
    units; a descending latitude flipped with a record) plus the layout ``(time, [level,] lat, lon)``, at least
    3 times and floating-point data; a :class:`~geodiff.errors.GeodiffError` naming what is wrong otherwise.
    """
    from geodiff.datacheck import check_gridded

    if not isinstance(ds, xr.Dataset):
        raise ConfigError(f"fit expects an xarray.Dataset, got {type(ds).__name__}")
    for name in variables:
        if name not in ds.data_vars:
            raise ConfigError(f"variable {name!r} is not a data variable of the dataset; found {list(ds.data_vars)}")
        da = ds[name]
        if da.dtype.kind != "f":
            raise DataError(f"variable {name!r} has dtype {da.dtype}; expected floating point (NaN on land)")
        if da.dims[0] != "time" or da.dims[-2:] != ("lat", "lon") or da.ndim not in (3, 4):
            raise CoordinateError(f"variable {name!r} has dims {da.dims}; expected (time, [level,] lat, lon)")
    if ds.sizes.get("time", 0) < 3:
        raise DataError(f"fit needs at least 3 times (training and validation); the dataset has "
                        f"{ds.sizes.get('time', 0)}")
    return check_gridded(ds, variables, where="the training dataset", time=True)


def _check_values(ds: xr.Dataset, variables: Sequence[str], normalizer: AnomalyNormalizer | Normalizer) -> None:
    """DataError naming a variable with values far outside its own statistics (one lazy pass)."""
    import dask

    pending = [abs(normalizer.normalize(ds[[name]])[name]).max() for name in variables]
    (computed,) = dask.compute(pending)
    for name, scaled in zip(variables, computed):
        scaled = float(scaled)
        if scaled > MAX_TRAINING_NORMALIZED:
            raise DataError(f"variable {name!r} has values {scaled:.3g} standard deviations from its climatology: "
                            "mixed units, a fill value or corrupt data; check the training data")


class FieldStream(Dataset):
    """Normalised, encoded fields ``[C, H, W]`` float32 of the times ``indices`` of a (dask-backed) dataset.

    Each item reads one time from ``ds`` (a chunk of a zarr store, say), normalises and encodes it; nothing is
    loaded ahead, so a series of any length trains within the memory of a batch. A DataLoader fetches a whole batch
    with one read (:meth:`__getitems__`): one dask graph and one decode per store chunk for the batch instead of
    per sample (2-degree 8-level zarr series in chunks of 8 times, batches of 8: 68 -> 28 ms per sample on a busy
    machine; ``benchmarks/training_io.py``).
    """

    def __init__(self, ds: xr.Dataset, codec: Codec, normalizer: AnomalyNormalizer | Normalizer,
                 indices: Sequence[int]):
        self.ds, self.codec, self.normalizer = ds[codec.variables], codec, normalizer
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.indices.size)

    def read(self, items: Sequence[int]) -> Tensor:
        """Items ``items`` (positions in this stream, any order, repeats allowed) as ``[n, C, H, W]`` float32, read
        from ``ds`` in one go, each distinct time once."""
        times, inverse = np.unique(self.indices[np.asarray(items, dtype=np.int64)], return_inverse=True)
        x, _ = self.codec.encode(self.normalizer.normalize(self.ds.isel(time=times).load()))
        return x[torch.as_tensor(inverse.reshape(-1))]

    def __getitem__(self, item: int) -> Tensor:
        return self.read([item])[0]

    def __getitems__(self, items: Sequence[int]) -> list[Tensor]:
        return list(self.read(items))


def _in_memory(stream: FieldStream, block: int = 64) -> Tensor:
    """All fields of ``stream`` as one tensor ``[N, C, H, W]`` float32, read and encoded ``block`` times at a time
    (a dask-backed series is never held whole in float64)."""
    out = torch.empty(len(stream), *stream.codec.shape)
    for start in range(0, len(stream), block):
        out[start:start + block] = stream.read(range(start, min(start + block, len(stream))))
    return out


def default_architecture(field_shape: tuple[int, int, int], *, base_channels: int = 32) -> dict[str, Any]:
    """UNet settings for fields ``(C, H, W)``: as many halvings (up to 3) as keep the coarsest grid >= 4 cells,
    attention at the bottom, mask-aware; and the training patch: the whole field up to 64 x 64 cells, else 64x64.

    >>> default_architecture((1, 28, 49))["channel_mults"], default_architecture((1, 28, 49))["patch_size"]
    ([1, 2, 2], None)
    """
    channels, height, width = field_shape
    patch = None if max(height, width) <= 64 else (min(height, 64), min(width, 64))
    smallest = min(patch or (height, width))
    halvings = max(0, min(3, int(math.log2(max(smallest, 1) / 4))))
    return {"in_channels": channels, "base_channels": base_channels, "channel_mults": [1] + [2] * halvings,
            "num_res_blocks": 1, "attention_levels": [], "mid_attention": True, "mask_aware": True,
            "patch_size": None if patch is None else list(patch)}


def validation_loss(denoiser: torch.nn.Module, fields: Tensor, mask: Tensor, *, seed: int = 0,
                    sigma_data: float = 1.0, cond: dict[str, Tensor] | None = None) -> float:
    """EDM-weighted denoising error of ``denoiser`` on ``fields [N, C, H, W]`` over valid cells, averaged over the
    fixed noise levels :data:`VALIDATION_SIGMAS` with fixed noise (``seed``): deterministic, comparable across
    steps. An exact denoiser of unit-variance Gaussian data scores 1. ``cond``: the fields' conditioning
    ``{name: [N, ...]}`` (conditional denoisers); ``mask``: ``[C, H, W]``, or ``[N, C, H, W]`` for fields with
    their own masks (patches)."""
    generator = torch.Generator().manual_seed(seed)
    total, valid = 0.0, mask.to(fields.device)
    was_training = denoiser.training
    denoiser.eval()
    with torch.no_grad():
        for sigma in VALIDATION_SIGMAS:
            noise = torch.randn(fields.shape, generator=generator).to(fields.device)
            x0 = denoiser(fields + sigma * noise, sigma) if cond is None else \
                denoiser(fields + sigma * noise, sigma, cond)
            weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
            error = ((x0 - fields) ** 2)[:, valid].mean() if valid.ndim == 3 else ((x0 - fields) ** 2)[valid].mean()
            total += weight * float(error)
    denoiser.train(was_training)
    return total / len(VALIDATION_SIGMAS)


@uses_threads
def fit(
    ds: xr.Dataset,
    *,
    variables: str | Sequence[str] | None = None,
    steps: int | None = None,
    time_budget: float | None = None,
    validation: float = 0.15,
    validate_every: int | None = None,
    anomaly: Literal["auto", "month", "season", "none", "off"] = "auto",
    prior: Literal["auto", "hybrid", "network"] = "auto",
    base_channels: int = 32,
    batch_size: int = 8,
    lr: float = 5e-4,
    ema_decay: float = 0.999,
    patch_size: tuple[int, int] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    seed: int = 0,
    device: str = "cpu",
    max_memory: float | None = 2e9,
    progress: bool = True,
    threads: int | None = DEFAULT_THREADS,
    check_correction: bool = True,
) -> ModelBundle:
    """Train a diffusion prior of the variables of ``ds`` and return its :class:`~geodiff.io.ModelBundle`.

    Parameters
    ----------
    ds: canonical dataset ``(time, [level,] lat, lon)``, NaN on land (numpy- or dask-backed; never loaded whole
        when dask-backed).
    variables: variables to model (default: every data variable with a time dimension).
    steps: optimizer steps; default from ``time_budget`` (measured speed), else 2000. With ``time_budget`` as well,
        the most steps.
    time_budget: seconds of training, a wall-clock limit: ``steps`` is sized from the measured speed when not given,
        and the run stops when the budget is spent (each segment between validations shortened to fit it at the
        speed of the previous one; the recorded ``steps`` are those done, ``stopped_by_budget`` says so). A run
        the probe planned too short is lengthened once, after its first segment, to fill the budget at that
        segment's speed (:mod:`geodiff.training.time_budget`; ``replanned_from``: the probe's plan).
    validation: fraction of the times, the last ones, held out for validation and early stopping (at least one).
    validate_every: steps between validations (default: ``steps / 10``).
    anomaly: ``"auto"`` (per-cell anomalies with a monthly climatology for monthly series of >= 2 years, else a
        per-cell mean), ``"month"``, ``"season"``, ``"none"`` (per-cell mean and std, no climatology) or ``"off"``
        (one mean and std per variable and level: :class:`~geodiff.io.Normalizer`).
    prior: ``"auto"`` (default): ``"hybrid"`` when the grid has at most
        :data:`~geodiff.training.hybrid_prior.MAX_PRIOR_CELLS` valid cells and no ``patch_size`` is given, else
        ``"network"`` (with a warning; the choice is recorded). ``"hybrid"``: the network learns a correction to an exact Gaussian prior whose covariance
        mixes the anomalies of the whole training period (validation included, once the mix is chosen) and a
        stationary model, mixed as chosen on the validation period
        (:mod:`geodiff.training.hybrid_prior`; whole fields, up to 8000 valid cells); ``"network"``: a plain
        EDM denoiser (any grid size, patches).
    base_channels, batch_size, lr, ema_decay, patch_size: network width, global batch, AdamW learning rate, EMA
        decay, training crop (default from :func:`default_architecture`).
    checkpoint_dir, resume: where the run keeps its checkpoints; an interrupted run continues from them.
    seed: seed of the initial weights and every random draw of training.
    max_memory: bytes the encoded training fields may take in memory (float32); a longer series is streamed from
        ``ds`` one time per sample (:class:`FieldStream`: slower, memory of a batch). None: always in memory.

    threads: torch threads of the call (default 1, :data:`geodiff.runtime.DEFAULT_THREADS`; None: as set).
    check_correction: for a hybrid prior, reconstruct validation times with and without the learned correction
        and keep it only where it lowers the CRPS with a calibrated ensemble
        (:mod:`geodiff.training.correction_check`; a few guided reconstructions).
    Returns the bundle with the EMA weights of the best validation score; ``bundle.metadata["training"]`` records
    every choice (architecture, steps, seconds, validation history).
    """
    from geodiff.backbones.unet import UNet
    from geodiff.diffusion.losses import EDMLoss
    from geodiff.training.checkpoint import latest_checkpoint
    from geodiff.training.trainer import train

    names = [variables] if isinstance(variables, str) else list(variables or [
        str(n) for n, v in ds.data_vars.items() if "time" in v.dims])
    ds = check_training_data(ds, names)
    if not 0 < validation < 0.5:
        raise ConfigError(f"validation must be a fraction in (0, 0.5), got {validation}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    if time_budget is not None and not time_budget > 0:
        raise ConfigError(f"time_budget must be a positive number of seconds, got {time_budget!r}")
    if prior not in ("auto", "hybrid", "network"):
        raise ConfigError(f"prior must be 'auto', 'hybrid' or 'network', got {prior!r}")
    if anomaly not in ("auto", "month", "season", "none", "off"):
        raise ConfigError(f"anomaly must be 'auto', 'month', 'season', 'none' or 'off', got {anomaly!r}")
    ds = ds[names]
    n_times = ds.sizes["time"]
    n_validation = max(1, math.ceil(validation * n_times))
    train_ds = ds.isel(time=slice(0, n_times - n_validation))
    if anomaly == "off":
        normalizer: AnomalyNormalizer | Normalizer = Normalizer.fit(train_ds, progress=progress)
    else:
        normalizer = AnomalyNormalizer.fit(train_ds, climatology=anomaly, progress=progress)
    _check_values(train_ds, names, normalizer)
    codec = Codec.from_dataset(ds.isel(time=[0]))
    training_codec = Codec.from_dataset(train_ds, varying_nan="raise")
    if not torch.equal(training_codec.mask, codec.mask):
        raise DataError("the land mask of the first time differs from the training period's")
    mask = codec.mask
    stream = FieldStream(ds, codec, normalizer, range(n_times - n_validation))
    encoded_bytes = len(stream) * 4 * math.prod(codec.shape)
    streaming = max_memory is not None and encoded_bytes > max_memory
    data: Tensor | Dataset = stream if streaming else _in_memory(stream)
    held_out = np.arange(n_times - n_validation, n_times)
    held_out = held_out[np.linspace(0, held_out.size - 1, min(held_out.size, MAX_VALIDATION_FIELDS)).astype(int)]
    validation_fields = _in_memory(FieldStream(ds, codec, normalizer, np.unique(held_out)))

    prior_choice = None
    if prior == "auto":
        cells = int(mask.sum())
        prior = "hybrid" if cells <= MAX_PRIOR_CELLS and patch_size is None else "network"
        prior_choice = (f"{prior}: {cells} valid cells" + (f" (a hybrid prior holds at most {MAX_PRIOR_CELLS})"
                        if cells > MAX_PRIOR_CELLS else "") + (", patch_size given" if patch_size is not None else ""))
        if prior == "network":
            logger.warning("fit: prior='auto' trains a network-only prior (%s); it has no exact Gaussian part, so "
                           "compare it with optimal interpolation before use", prior_choice)
    arch = default_architecture(codec.shape, base_channels=base_channels)
    patch = patch_size if patch_size is not None else arch.pop("patch_size")
    arch.pop("patch_size", None)
    prior_report = None
    if prior == "hybrid":
        if patch_size is not None:
            raise ConfigError("a hybrid prior trains on whole fields; leave patch_size unset or pass prior='network'")
        patch = None
        n_train = n_times - n_validation
        chosen = np.unique(np.linspace(0, n_train - 1, min(n_train, MAX_PRIOR_TIMES)).astype(int))
        fields = data if isinstance(data, Tensor) and chosen.size == n_train else \
            _in_memory(FieldStream(ds, codec, normalizer, chosen))
        everything = np.unique(np.linspace(0, n_times - 1, min(n_times, MAX_PRIOR_TIMES)).astype(int))
        prior_spec, factor, prior_report = fit_hybrid_prior(
            fields, validation_fields, mask, lat=codec.lat, lon=codec.lon,
            times=ds["time"].values[chosen], seed=seed,
            final=_in_memory(FieldStream(ds, codec, normalizer, everything)))
        torch.manual_seed(seed)
        denoiser: Denoiser = GaussianResidualDenoiser(UNet(**arch), prior=prior_spec, sigma_data=1.0, mask=mask)
        with torch.no_grad():
            denoiser.factor.copy_(factor)
    else:
        torch.manual_seed(seed)
        denoiser = Denoiser(UNet(**arch), sigma_data=1.0)
    loss = EDMLoss(P_mean=-0.4, P_std=1.6, sigma_data=1.0)

    scratch = tempfile.TemporaryDirectory(prefix="geodiff-fit-") if checkpoint_dir is None else None
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else Path(scratch.name)  # type: ignore[union-attr]
    folder.mkdir(parents=True, exist_ok=True)
    state_path = folder / FIT_STATE
    state: dict[str, Any] = {"history": [], "best": None, "steps": steps, "seconds": 0.0}
    if resume and state_path.is_file():
        state = json.loads(state_path.read_text())
        if steps is not None and state.get("steps") not in (None, steps):
            raise CheckpointError(f"{state_path} is a run of {state['steps']} steps; now steps={steps}: pass the "
                                  "same steps, resume=False or another checkpoint_dir")
    elif not resume and latest_checkpoint(folder) is not None:
        raise CheckpointError(f"{folder} holds checkpoints of an earlier run and resume=False; use another folder")
    options = dict(threads=threads, batch_size=batch_size, lr=lr, warmup_steps=100, ema_decay=ema_decay, loss=loss,
                   patch_size=None if patch is None else tuple(patch), checkpoint_dir=folder, resume=True,
                   seed=seed, device=device, progress=False, mask=mask)

    if not state["history"]:  # the untrained denoiser (for a hybrid prior: the Gaussian prior alone) competes too
        denoiser.set_mask(mask)
        score = validation_loss(denoiser, validation_fields, mask, seed=seed)
        state["history"].append({"step": 0, "validation": score, "training_loss": None})
        state["best"] = {"step": 0, "score": score}
        _save_weights(denoiser, folder / BEST_WEIGHTS)
    started = _time.perf_counter()

    def segment(done: int, target: int) -> None:
        """Train from ``done`` to ``target`` steps, score the EMA weights on the validation fields, keep the best."""
        nonlocal started
        result = train(denoiser, data, steps=target, checkpoint_every=max(1, target - done), **options)
        score = validation_loss(result.ema, validation_fields, mask, seed=seed)
        recent = result.losses[done:target]
        state["history"].append({"step": target, "validation": score,
                                 "training_loss": float(np.mean(recent)) if recent else None})
        if score < state["best"]["score"]:
            state["best"] = {"step": target, "score": score}
            _save_weights(result.ema, folder / BEST_WEIGHTS)
        logger.info("fit step %d: training loss %s, validation loss %.6g (best %.6g at step %d)", target,
                    "-" if not recent else f"{np.mean(recent):.6g}", score, state["best"]["score"],
                    state["best"]["step"])
        elapsed = _time.perf_counter() - started
        state["seconds"] = float(state.get("seconds", 0.0)) + elapsed
        if target > done:
            state["seconds_per_step"] = elapsed / (target - done)
        started = _time.perf_counter()
        state_path.write_text(json.dumps(state, indent=1))

    total = state.get("steps")
    if total is None:  # size the run to the budget from the speed of steps PROBE_WARMUP..PROBE_STEPS
        per_step = _probe_speed(denoiser, data, options)
        spent = _time.perf_counter() - started
        # with a budget, at least one timed segment after the probe (it may lengthen the run, or the limit stop it)
        total = 2000 if time_budget is None else PROBE_STEPS + max(1, affordable_steps(time_budget - spent, per_step)
                                                                   - PROBE_STEPS)
        state["steps"], state["seconds_per_step"] = total, per_step
        segment(PROBE_STEPS, PROBE_STEPS)
    done = state["history"][-1]["step"]
    every = validate_every or max(1, total // 10)
    bar = tqdm(total=total, initial=done, desc="fit", unit="step", disable=not progress)
    while done < total:
        target = min(total, done + every)
        if time_budget is not None:  # a wall-clock limit: shorten the segment to what the budget left allows
            left = time_budget - float(state.get("seconds", 0.0))
            affordable = affordable_steps(left, state["seconds_per_step"]) if state.get("seconds_per_step") else every
            if affordable < 1:
                state["stopped_by_budget"] = True
                state_path.write_text(json.dumps(state, indent=1))
                logger.info("fit: time budget of %.0f s spent after %d steps", time_budget, done)
                break
            target = min(target, done + affordable)
        segment(done, target)
        if time_budget is not None and "replanned" not in state and target > done:
            # once, after the first timed segment: lengthen a run the speed probe planned too short
            longer = replanned_steps(target, total, time_budget - state["seconds"], state["seconds_per_step"],
                                     most=steps)
            if longer > total:
                state["replanned_from"], state["steps"], total = total, longer, longer
                bar.total = total
            state["replanned"] = True
            state_path.write_text(json.dumps(state, indent=1))
        bar.update(target - done)
        last = state["history"][-1]
        bar.set_postfix(loss=f"{last['training_loss'] or 0.0:.4f}", val=f"{last['validation']:.4f}",
                        best=f"{state['best']['score']:.4f}")
        done = target
    bar.close()
    best = type(denoiser).from_config(denoiser.config)
    _load_weights(best, folder / BEST_WEIGHTS)
    best.set_mask(codec.mask)
    best.eval()
    if scratch is not None:
        scratch.cleanup()
    metadata = {
        "name": f"prior of {', '.join(names)}",
        "trained_by": "geodiff.fit",
        "training": {
            "steps": int(done), "stopped_by_budget": bool(state.get("stopped_by_budget", False)),
            "planned_steps": int(total), "replanned_from": state.get("replanned_from"),
            "best_step": state["best"]["step"], "best_validation": state["best"]["score"],
            "history": state["history"], "seconds": round(float(state["seconds"]), 1),
            "architecture": arch, "patch_size": None if patch is None else list(patch), "batch_size": batch_size,
            "lr": lr, "ema_decay": ema_decay, "loss": loss.config, "seed": seed,
            "normalizer": normalizer.kind if anomaly != "off" else "channel",
            "prior": prior, "prior_choice": prior_choice, "gaussian_prior": prior_report,
            "climatology": getattr(normalizer, "climatology", None),
            "training_times": int(n_times - n_validation), "validation_times": int(n_validation),
            "training_period": [str(ds["time"].values[0]), str(ds["time"].values[n_times - n_validation - 1])],
            "validation_period": [str(ds["time"].values[n_times - n_validation]), str(ds["time"].values[-1])],
            "torch": torch.__version__,
        },
    }
    bundle = ModelBundle(best, codec, normalizer, metadata=metadata)
    if prior == "hybrid":
        settle_correction(bundle, ds, check=check_correction, seed=seed)
    return bundle


def _probe_speed(denoiser: Denoiser, data: Any, options: dict[str, Any]) -> float:
    """Seconds per step of the run's first steps PROBE_WARMUP..PROBE_STEPS (they are part of the run)."""
    from geodiff.training.trainer import train

    train(denoiser, data, steps=PROBE_WARMUP, checkpoint_every=PROBE_WARMUP, **options)
    timed = _time.perf_counter()
    train(denoiser, data, steps=PROBE_STEPS, checkpoint_every=PROBE_STEPS, **options)
    return (_time.perf_counter() - timed) / (PROBE_STEPS - PROBE_WARMUP)


def _save_weights(module: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(tmp))
    tmp.replace(path)


def _load_weights(module: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the best weights of this run were not saved")
    module.load_state_dict(load_file(str(path)), strict=True)
