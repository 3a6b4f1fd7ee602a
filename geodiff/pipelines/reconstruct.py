"""Sparse-observation reconstruction: a diffusion prior guided by an observation table -> an ensemble Dataset.

For each time present in the observation table, the observations are validated against the model grid,
turned into a differentiable point operator in the model's normalised space, and the prior is sampled with the
chosen guidance. The members are mapped back to physical units and decoded onto the model grid: the input
variable names, a ``member`` dimension, NaN on land, the variables' CF attributes, ``history`` appended and
provenance attributes (geodiff version, model sha256, guidance, sampler, seed, observation report).

Randomness: the generator of time ``t`` is seeded from ``(seed, t)``, so reconstructing one time alone gives the
same members as reconstructing it within a longer series.

Example
-------
>>> import geodiff
>>> from geodiff.adapters import woa
>>> from geodiff.pipelines.reconstruct import reconstruct
>>> from geodiff.pipelines.demo import prior_path
>>> model = geodiff.load(prior_path())
>>> split = woa.holdout_split(woa.open_sample())
>>> obs, _ = woa.holdout_observations(split.heldout.isel(time=[0]), 0.05, seed=0, error_std=0.1)
>>> result = reconstruct(model, obs, members=2, steps=10, progress=False)
>>> result.temperature.dims
('member', 'time', 'depth', 'lat', 'lon')
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from geodiff import registry
from geodiff.diffusion.centred_start import CentredStart, runs_no_network
from geodiff.diffusion.engine import RUNAWAY_FACTOR, RunawayCheck, SamplingEngine, derive_seed
from geodiff.diffusion.gaussian_prior import GaussianResidualDenoiser
from geodiff.diffusion.patches import PatchDenoiser
from geodiff.diffusion.schedules import EDMSchedule, Schedule
from geodiff.errors import ConfigError, ObservationError
from geodiff.guidance import MMPSGuidance, observation_method
from geodiff.guidance.mmps import preferred_method
from geodiff.io.bundle import MAX_NORMALIZED, ModelBundle, load
from geodiff.observations import ObservationTable, as_observations
from geodiff.operators import PointOperator
from geodiff.pipelines.blocks import PipelineBlock, is_lazy, lazy_over_time, time_axis
from geodiff.pipelines.request import check_request, opened
from geodiff.pipelines.units import model_units, observations_to_model_units
from geodiff.provenance import append_history, provenance_attrs
from geodiff.runtime import DEFAULT_THREADS, optimize, precision_context, uses_threads

__all__ = ["reconstruct", "time_generator_seed", "time_generator", "record_provenance"]


def time_generator_seed(seed: int, time: Any) -> int:
    """Seed of the generator for one time: a hash of ``(seed, time)``, stable across runs and machines."""
    return derive_seed(int(seed), pd.Timestamp(time).isoformat() if _is_datetime(time) else repr(time))


def time_generator(seed: int, time: Any, device: str | torch.device = "cpu") -> torch.Generator:
    """The generator of one time (:func:`time_generator_seed`) on ``device``."""
    return torch.Generator(device).manual_seed(time_generator_seed(seed, time))


def _is_datetime(value: Any) -> bool:
    return isinstance(value, (np.datetime64, _dt.datetime, pd.Timestamp))


def record_provenance(out: xr.Dataset, attrs: dict[str, Any], call: str, config: dict[str, Any], *,
                      model_sha256: str, seed: int, **records: Any) -> xr.Dataset:
    """``out`` with attributes ``attrs`` plus the provenance of a pipeline run: ``history`` appended with
    ``call(config as JSON)``, and :func:`~geodiff.provenance.provenance_attrs` (version, ``model_sha256``,
    ``guidance`` = the config, ``seed`` and every other record that is not None)."""
    described = json.dumps(config, default=str)
    out.attrs = {**append_history(dict(attrs), f"{call}({described})"),
                 **provenance_attrs(model_sha256=model_sha256, guidance=described, seed=int(seed),
                                    **{name: value for name, value in records.items() if value is not None})}
    return out


def _check_observation_range(table: xr.Dataset, y_normalized: torch.Tensor, bound: float) -> None:
    """ObservationError naming the first observation whose normalised value exceeds ``bound`` in magnitude."""
    far = np.flatnonzero(np.abs(y_normalized.cpu().numpy()) > bound)
    if far.size == 0:
        return
    k = int(far[0])
    name = str(table["variable"].values[k]) if "variable" in table.coords else "the field"
    raise ObservationError(
        f"{far.size} observations lie beyond +-{bound:g} in the model's normalised units, e.g. obs_id "
        f"{table['obs_id'].values[k].item()!r} of {name!r}: value {float(table['value'].values[k]):.6g} "
        f"(normalised {float(y_normalized[k]):.4g}); far outside what the model was trained on. Check the units "
        "and fill values, or pass max_normalized=None to use them anyway"
    )


def _patched(denoiser: Any, mask: torch.Tensor, patch: Any, overlap: Any) -> PatchDenoiser:
    """``denoiser`` in windows of ``patch`` cells (``overlap`` default a quarter), skipping all-land windows."""
    if isinstance(denoiser, GaussianResidualDenoiser):
        raise ConfigError("patch: a hybrid prior (Gaussian part + network) denoises whole fields only; leave patch "
                          "unset")
    if not (isinstance(patch, (tuple, list)) and len(patch) == 2 and all(isinstance(p, int) and p > 0
                                                                       for p in patch)):  # fmt: skip
        raise ConfigError(f"patch must be two positive integers (lat, lon cells), got {patch!r}")
    overlap = tuple(overlap) if overlap is not None else (patch[0] // 4, patch[1] // 4)
    return PatchDenoiser(denoiser, patch=tuple(patch), overlap=overlap, mask=mask)


@uses_threads
def reconstruct(
    model: ModelBundle | str,
    observations: xr.Dataset | pd.DataFrame | str | os.PathLike,
    *,
    guidance: str = "mmps",
    guidance_options: dict[str, Any] | None = None,
    members: int = 16,
    steps: int = 24,
    sampler: str = "heun",
    sampler_options: dict[str, Any] | None = None,
    schedule: Schedule | None = None,
    seed: int = 0,
    times: Any = None,
    default_error_std: float | dict[str, float] | None = None,
    batch_size: int | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    compile: bool = False,
    progress: bool = True,
    threads: int | None = DEFAULT_THREADS,
    max_normalized: float | str | None = "auto",
    on_runaway: str = "resample",
    runaway_factor: float | None = RUNAWAY_FACTOR,
    lazy: bool | None = None,
    time_chunk: int = 1,
    patch: tuple[int, int] | None = None,
    overlap: tuple[int, int] | None = None,
    start: str = "auto",
) -> xr.Dataset:
    """Reconstruct the model's fields from sparse observations; returns an ensemble ``xr.Dataset``.

    Parameters
    ----------
    model: a :class:`~geodiff.io.ModelBundle` or the path of one (``geodiff.load``).
    observations: observation table (``xr.Dataset`` with dim ``obs`` or ``DataFrame`` with the columns of
        :mod:`geodiff.observations`), or the path / URL of one (netCDF, zarr, CSV; opened and checked by
        :func:`geodiff.io.paths.open_input`); a ``units`` attribute on ``value`` is converted to the model's units
        (pint; refused when it cannot be), else the values are taken as in the model's units; validated against
        the model grid (the report is kept in the attrs).
    guidance: registered guidance name (``mmps``, ``dps``, ``sda``, ``reconmost``, ``repaint``) with
        ``guidance_options`` (e.g. ``{"cg_iterations": 3}``). MMPS solves exactly (``method="exact"``) when the
        model's denoiser knows its Gaussian covariance (the hybrid prior of :func:`geodiff.fit`), else with
        conjugate gradients (``"cg"``, also whenever ``cg_iterations`` or ``preconditioner`` is given);
        ``guidance_options={"method": ...}`` overrides it, and the attribute
        ``geodiff_guidance`` records which was used.
    members: ensemble size; ``batch_size`` members are sampled at once (default: all).
    steps: sampler steps; ``sampler`` is a registered sampler name with ``sampler_options``.
    schedule: noise levels (default: the EDM schedule, sigma 0.002..80).
    seed: base seed; the generator of each time is derived from ``(seed, time)``.
    times: reconstruct only these times (default: every time in the table).
    default_error_std: observation error for records without one (recorded), in the variable's units.
    precision: ``"fp32"``, ``"bf16"`` (autocast of the network on CPU or GPU) or ``"fp16"`` (GPU); the sampler
        and guidance arithmetic stay in float32 (``benchmarks/RESULTS.md`` gives the measured accuracy cost).
    compile: run the network through ``torch.compile`` (the first call compiles; worth it for long series).
        The network always runs channels-last (:func:`geodiff.runtime.optimize`; results unchanged up to float
        rounding). The process-wide allocator setting that removes page faults from every forward pass is left to
        the caller (:func:`geodiff.runtime.configure_allocator`; the ``geodiff`` command applies it).
    threads: torch threads of the call (default 1, :data:`geodiff.runtime.DEFAULT_THREADS`; None: as set).
    max_normalized: an observation whose value, in the model's normalised units, exceeds this in magnitude
        (``"auto"``: the normaliser's ``bound``, 10 standard deviations of per-variable statistics or
        :data:`~geodiff.io.anomaly.ANOMALY_BOUND` = 40 of a cell's anomaly std, whose values shift further when the
        climate of the period reconstructed departs from the training period's) lies far outside what the model was trained on
        (wrong units, a fill value, another variable): :class:`~geodiff.errors.ObservationError` naming its
        ``obs_id``. The same bound applies to the samples: every denoised estimate is clipped to it
        (:class:`~geodiff.diffusion.clipping.ClipDenoised`; it is above every training value, so only a member that
        runs away is touched), and a member that ends at it in a valid cell has run away (``on_runaway``).
        ``None`` switches all three off.
    on_runaway: what happens to a member that ran away (:mod:`geodiff.diffusion.engine`): non-finite, at the
        ``max_normalized`` bound, or further from the ensemble median than ``runaway_factor`` (default 5) times
        the members' median distance (and than half a standard deviation): ``"resample"`` (default: redraw it
        with a fresh generator derived from the time's, up to 3 times, then :class:`~geodiff.errors.SamplingError`),
        ``"raise"`` or ``"keep"`` (keep and flag it). Attribute ``geodiff_runaway`` records the settings and, per
        time, every runaway member, why, and how often it was redrawn. ``runaway_factor=None`` switches the relative
        check off.
    lazy: return a dask-backed result (default: when the observation table is dask-backed, e.g. opened from a
        zarr store or netCDF file with :func:`geodiff.io.paths.open_dataset`). Blocks of ``time_chunk`` times are
        reconstructed when the result is computed (``.compute()``, ``.load()``, ``.to_zarr()``), each from the
        observations at its times only (:class:`~geodiff.pipelines.blocks.PipelineBlock`, as a batch region), so
        memory stays that of a few blocks however long the series. The values equal the eager result's bit for
        bit; the attributes carry the settings but not the per-call reports (observations used, runaway members),
        which only exist once computed (a batch job keeps them per region). Bad observations raise on compute.
    patch, overlap: denoise in overlapping windows of ``patch = (lat, lon)`` cells blended without seams
        (:class:`~geodiff.diffusion.patches.PatchDenoiser`; ``overlap`` default a quarter of the patch), skipping
        every window without an ocean cell: a land-heavy domain pays for its ocean tiles only, and a network
        trained on crops (``geodiff.fit`` crops grids larger than 64 cells) denoises inputs of its training size.
        Not for hybrid priors, whose Gaussian part is a whole-field covariance. None (default): the whole domain
        in one call.
    start: ``"noise"``: sampling starts at ``sigma_max`` times standard noise; ``"centred"``: at the guided
        denoised mean of ``x = 0`` plus that noise (:class:`~geodiff.diffusion.centred_start.CentredStart`: one more
        denoiser call, and no bias of ``|mean| / sigma_max`` posterior standard deviations left by the start);
        ``"auto"`` (default): centred for an exact solve with a prior that runs no network (a Gaussian prior, or a
        hybrid prior whose correction :func:`geodiff.fit` left out), noise otherwise. Recorded in
        ``geodiff_guidance``.

    Returns a Dataset with dims ``(member, time, [depth,] lat, lon)`` on the model grid.
    """
    settings = {name: value for name, value in locals().items() if name not in ("model", "observations", "times")}
    check_request("reconstruct", device=device, members=members, steps=steps, batch_size=batch_size,
                  guidance=guidance, guidance_options=guidance_options, sampler=sampler,
                  sampler_options=sampler_options, max_normalized=max_normalized, precision=precision,
                  on_runaway=on_runaway, runaway_factor=runaway_factor)
    observations = opened(observations)
    bundle = model if isinstance(model, ModelBundle) else load(model, device=device)
    bundle = bundle.to(device)
    if lazy or (lazy is None and is_lazy(observations)):
        return _reconstruct_lazily(bundle, observations, times, settings)
    codec, denoiser = bundle.codec, bundle.denoiser
    denoiser.eval()
    valid = codec.mask.cpu().numpy().astype(bool)  # [C, H, W], True = ocean
    table = as_observations(observations, default_error_std=default_error_std)
    table = observations_to_model_units(table, model_units(codec, codec.variables))
    validated = ObservationTable.validate(
        table, codec.lat, codec.lon, ocean_mask=valid, channels=codec.channels,
        default_error_std=default_error_std,
    )  # fmt: skip
    clean, report = validated.data, validated.report
    if "time" not in clean.coords:
        raise ObservationError("the observation table has no 'time' coordinate; reconstruct works time by time")
    wanted = np.unique(clean["time"].values) if times is None else np.atleast_1d(np.asarray(times))
    if wanted.size == 0:
        raise ObservationError("no time to reconstruct: the observation table is empty after validation")
    optimize(denoiser, freeze=False, compile=compile, allocator=False)  # channels-last network
    network = denoiser if patch is None else _patched(denoiser, codec.mask.to(device), patch, overlap)
    guidance_cls = observation_method(guidance)
    options = dict(guidance_options or {})
    if guidance_cls is MMPSGuidance and not {"method", "cg_iterations", "preconditioner"} & set(options):
        options["method"] = preferred_method(denoiser)  # exact solves for priors with a known spectrum
    if start not in ("auto", "noise", "centred"):
        raise ConfigError(f"start must be 'auto', 'noise' or 'centred', got {start!r}")
    if start == "auto":
        start = "centred" if options.get("method") == "exact" and runs_no_network(network) else "noise"
    sampler_run = registry.get("sampler", sampler)(**(sampler_options or {}))
    if start == "centred":
        sampler_run = CentredStart(sampler_run)
    if max_normalized == "auto":
        max_normalized = float(getattr(bundle.normalizer, "bound", MAX_NORMALIZED))
    bound = None if max_normalized is None else float(max_normalized)
    engine = SamplingEngine(
        sampler_run, network, (schedule or EDMSchedule()).sigmas(steps),
        members=members, batch_size=batch_size, clip=bound, device=device, progress=progress, fields=len(wanted),
        runaway=RunawayCheck(on_runaway, runaway_factor, bound=bound),
        autocast=precision_context(precision, torch.device(device).type), label="reconstruct",
    )  # fmt: skip
    fields, described, runaways = [], None, {}
    with engine:
        for time in wanted:
            observed = validated.at_time(time)
            at_time = observed.data
            if at_time.sizes["obs"] == 0:
                raise ObservationError(f"no valid observation at time {time}; the report says:\n{report}")
            operator = PointOperator.from_table(observed).to(device)
            mean_np, std_np = bundle.statistics(time)  # [C, H, W] float64
            op_n, y_n, e_n = operator.to_normalized(at_time["value"].values, at_time["error_std"].values,
                                                    mean_np, std_np)
            if bound is not None:
                _check_observation_range(at_time, y_n, bound)
            guide = guidance_cls(y_n.to(device), op_n.to(device), e_n.to(device), **options)
            described = guide.describe()
            ensemble = engine.draw(guide, codec.shape, generator=time_generator(seed, time, device),
                                   valid=codec.mask.to(device), where=f"time {time}",
                                   setting=f"guidance {guidance!r}, sampler {sampler!r}, {steps} steps")
            if ensemble.runaways:
                runaways[str(time)] = [r.describe() for r in ensemble.runaways]
            fields.append(ensemble.x.cpu())
    out = bundle.decode(torch.stack(fields, dim=1), member=True, time=wanted)  # [M, T, C, H, W]
    config = {"guidance": guidance, "guidance_options": guidance_options or {}, "guidance_described": described,
              "sampler": sampler, "sampler_options": sampler_options or {}, "steps": steps, "start": start,
              "nfe_per_member": engine.nfe(), "members": members, "seed": seed,
              "threads": threads, "precision": precision, "max_normalized": max_normalized}
    if patch is not None:
        config["patch"] = {"patch": list(network.patch), "overlap": list(network.overlap),
                           "windows": len(network.computed(*codec.shape[-2:])),
                           "of": len(list(network.windows(*codec.shape[-2:])))}
    return record_provenance(out, out.attrs, "geodiff.reconstruct", config, model_sha256=bundle.sha256, seed=seed,
                             observations=report.as_dict(), runaway={**engine.runaway.describe(), "members": runaways})


def _reconstruct_lazily(bundle: ModelBundle, observations: Any, times: Any, settings: dict[str, Any]) -> xr.Dataset:
    """The dask-backed result of :func:`reconstruct` (``lazy=True``): one :class:`PipelineBlock` per block of
    ``settings["time_chunk"]`` times, the attributes of the eager result without its per-call reports."""
    wanted = time_axis(observations, "observations") if times is None else np.atleast_1d(np.asarray(times))
    if wanted.size == 0:
        raise ObservationError("no time to reconstruct: the observation table has no time")
    options = {name: value for name, value in settings.items() if name not in ("lazy", "time_chunk")}
    block = PipelineBlock(reconstruct, bundle, (observations,), options={**options, "progress": False, "lazy": False},
                          pass_times=True)
    template = bundle.decode(torch.zeros(settings["members"], 1, *bundle.codec.shape), member=True, time=wanted[:1])
    config = {name: settings[name] for name in ("guidance", "sampler", "steps", "members", "seed", "threads",
                                                "precision", "max_normalized", "time_chunk")}
    config.update(guidance_options=settings["guidance_options"] or {},
                  sampler_options=settings["sampler_options"] or {}, lazy=True)
    if settings["patch"] is not None:
        config.update(patch=list(settings["patch"]), overlap=settings["overlap"])
    attrs = record_provenance(template, template.attrs, "geodiff.reconstruct", config, model_sha256=bundle.sha256,
                              seed=settings["seed"]).attrs
    return lazy_over_time(block, template, wanted, settings["time_chunk"], attrs)
