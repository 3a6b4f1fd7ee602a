"""Multi-source conditional downscaling: a coarse field (+ auxiliary sources, + stations) -> a high-resolution ensemble.

The model is a :class:`~geodiff.io.ModelBundle` whose denoiser is conditional
(:class:`~geodiff.backbones.conditional.ConditionalUNet`) and whose metadata has a ``"downscaling"`` entry
(:func:`downscaling_metadata`): the integer factor, the training patch size and every source with its variables
and grid ratio ``r`` (source cells per high-resolution cell: ``1 / factor`` for the coarse field, 1 for a
topography on the target grid, 2 for a finer one). The normaliser holds statistics for the target variables and
for every source variable.

For each time of ``coarse``:

1. the high-resolution grid is the coarse grid refined by the factor (:func:`refine_coords`; each coarse cell
   split into ``factor x factor`` cells); every source must lie on the grid of ratio ``r`` over the same area;
2. the sources are normalised (NaN -> 0) and the sampler runs on the whole domain with a
   :class:`~geodiff.diffusion.patches.PatchDenoiser` (overlapping windows of the training patch size blended with
   smooth weights at every step: no seams), optionally with classifier-free guidance over the sources;
3. guidance (default ``"coarse"``): the area mean of the sample must match the coarse field within
   ``coarse_error_std`` (:class:`~geodiff.guidance.coarse.CoarseGuidance`, land-aware
   :class:`~geodiff.operators.CoarsenOperator` with the area weights the model was trained with), jointly with station observations when given
   (:class:`~geodiff.operators.PointOperator` at the stations' positions).

The result has the coarse dataset's variable names and attributes on the high-resolution grid, a ``member``
dimension, NaN on land (``mask``, or under coarse cells that are NaN), ``history`` appended and provenance
attributes (geodiff version, model sha256, guidance, sampler, seed, sources used). The generator of each time is
seeded from ``(seed, time)`` as in :func:`geodiff.reconstruct`.

Example
-------
>>> import numpy as np, xarray as xr, torch
>>> from geodiff.pipelines.downscale import coarsen, refine_coords
>>> refine_coords(np.array([0.0, 4.0]), 4).tolist()
[-1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5]
>>> fine = xr.Dataset({"tas": (("lat", "lon"), np.arange(16.0).reshape(4, 4), {"units": "K"})},
...                   coords={"lat": [0.5, 1.5, 2.5, 3.5], "lon": [0.5, 1.5, 2.5, 3.5]})
>>> coarsen(fine, 2, weights=None).tas.values.tolist()
[[2.5, 4.5], [10.5, 12.5]]
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from geodiff import registry
from geodiff.backbones.conditional import ClassifierFreeDenoiser
from geodiff.datacheck import check_gridded
from geodiff.diffusion.engine import RUNAWAY_FACTOR, RunawayCheck, SamplingEngine
from geodiff.diffusion.residual import RegressionModel
from geodiff.diffusion.patches import PatchDenoiser
from geodiff.diffusion.schedules import EDMSchedule, Schedule
from geodiff.errors import ConfigError, CoordinateError, GridError
from geodiff.grid import channel_mask, coarse_coords, grid_for_ratio, is_periodic, refine_coords
from geodiff.guidance import CoarseGuidance, combine
from geodiff.io.bundle import ModelBundle, load
from geodiff.io.codec import Codec
from geodiff.observations import ObservationTable, as_observations
from geodiff.operators import CoarsenOperator, PointOperator
from geodiff.pipelines.blocks import PipelineBlock, is_lazy, lazy_over_time
from geodiff.pipelines.reconstruct import record_provenance, time_generator
from geodiff.pipelines.request import check_request, opened
from geodiff.pipelines.units import model_units, observations_to_model_units, to_model_units
from geodiff.provenance import append_history
from geodiff.runtime import DEFAULT_THREADS, uses_threads
from geodiff.training.pairs import downscaling_metadata
from geodiff.tutorial import downscaling_paths, open_downscaling

__all__ = ["downscale", "coarsen", "refine_coords", "coarse_coords", "downscaling_metadata", "output_codec",
           "output_template", "open_sample", "sample_paths", "COARSE"]

COARSE = "coarse"
#: default error of the coarse values as a fraction of each variable's standard deviation in the normaliser
COARSE_ERROR_FRACTION = 0.02
LAT, LON, TIME = "lat", "lon", "time"


# ---------------------------------------------------------------------------------------------------------------
# grids


def coarsen(ds: xr.Dataset | xr.DataArray, factor: int, *, weights: str | None = "coslat") -> xr.Dataset | xr.DataArray:
    """Area mean of a high-resolution field over ``factor x factor`` blocks of (lat, lon) (xarray side of
    :class:`~geodiff.operators.CoarsenOperator`): ``weights="coslat"`` (cell areas) or None (equal); NaN (land)
    cells are left out and a block of land only is NaN. Sizes must be multiples of ``factor``; attributes kept,
    ``history`` appended."""
    if LAT not in ds.dims or LON not in ds.dims:
        raise GridError(f"coarsen needs dimensions 'lat' and 'lon', got {tuple(ds.dims)}")
    for dim in (LAT, LON):
        if ds.sizes[dim] % factor:
            raise GridError(f"dimension {dim!r} has {ds.sizes[dim]} cells, not a multiple of the factor {factor}")
    if weights not in ("coslat", None):
        raise ConfigError(f"weights must be 'coslat' or None, got {weights!r}")
    w = xr.ones_like(ds[LAT], dtype=np.float64) if weights is None else np.cos(np.deg2rad(ds[LAT])).clip(0)
    blocks = {LAT: factor, LON: factor}
    valid = ds.notnull() * w
    total = (ds.fillna(0) * w).coarsen(blocks, boundary="exact").sum()
    count = valid.coarsen(blocks, boundary="exact").sum()
    out = (total / count.where(count > 0)).assign_coords(
        {LAT: coarse_coords(ds[LAT].values, factor, LAT), LON: coarse_coords(ds[LON].values, factor, LON)}
    )
    out[LAT].attrs, out[LON].attrs = dict(ds[LAT].attrs), dict(ds[LON].attrs)
    if isinstance(ds, xr.Dataset):
        for name in ds.data_vars:
            out[name].attrs = dict(ds[name].attrs)
            out[name] = out[name].astype(ds[name].dtype)
    else:
        out = out.astype(ds.dtype)
    out.attrs = append_history(dict(ds.attrs), f"geodiff coarsen: area mean ({weights or 'equal'} weights) over "
                                               f"{factor} x {factor} blocks")
    if isinstance(ds, xr.DataArray):
        out.name = ds.name
    return out


# ---------------------------------------------------------------------------------------------------------------
# the pipeline


def _spec(bundle: ModelBundle) -> dict[str, Any]:
    spec = bundle.metadata.get("downscaling")
    if not isinstance(spec, dict) or not {"factor", "patch", "target", "sources"} <= set(spec):
        raise ConfigError("the model bundle has no 'downscaling' metadata (factor, patch, target, sources): it is not "
                          "a downscaling model; build it with geodiff.pipelines.downscale.downscaling_metadata")
    return spec


def _as_dataset(data: xr.Dataset | xr.DataArray, name: str) -> xr.Dataset:
    if isinstance(data, xr.DataArray):
        if data.name is None:
            raise ConfigError(f"{name} is a DataArray without a name; name it after its variable")
        return data.to_dataset()
    if not isinstance(data, xr.Dataset):
        raise ConfigError(f"{name} must be an xr.Dataset or DataArray, got {type(data).__name__}")
    return data


def _source_tensor(bundle: ModelBundle, ds: xr.Dataset, name: str, variables: list[str], time: Any,
                   lat: np.ndarray, lon: np.ndarray) -> torch.Tensor:
    """Normalised source ``[1, C_s, H_s, W_s]`` (NaN -> 0) checked against the expected grid ``(lat, lon)``."""
    missing = [v for v in variables if v not in ds.data_vars]
    if missing:
        raise ConfigError(f"source {name!r} lacks variables {missing}; the model was trained with {variables}")
    for coord, expected in ((LAT, lat), (LON, lon)):
        if coord not in ds.coords:
            raise CoordinateError(f"source {name!r} has no {coord!r} coordinate")
        values = np.asarray(ds[coord].values, dtype=np.float64)
        tolerance = 1e-3 * (abs(expected[1] - expected[0]) if expected.size > 1 else 1.0)
        if values.shape != expected.shape or not np.allclose(values, expected, rtol=0, atol=tolerance):
            raise CoordinateError(
                f"source {name!r} coordinate {coord!r} ({values.size} values from {values[:1]} ) does not match the "
                f"grid the model expects over this domain ({expected.size} values from {expected[:1]})"
            )
    if TIME in ds.dims:
        if time is None:
            raise GridError(f"source {name!r} has a time dimension but the coarse field has none")
        ds = ds.sel({TIME: time})
    arrays = []
    for variable in variables:
        da = bundle.normalizer.normalize(ds[variable])
        extra = [d for d in da.dims if d not in (LAT, LON)]
        if extra:
            raise GridError(f"source variable {variable!r} of {name!r} has dimensions {extra} besides lat/lon")
        arrays.append(np.nan_to_num(np.asarray(da.transpose(LAT, LON).values, dtype=np.float32), nan=0.0))
    return torch.from_numpy(np.stack(arrays))[None]


@uses_threads
def downscale(
    model: ModelBundle | str,
    coarse: xr.Dataset | xr.DataArray | str | os.PathLike,
    *,
    sources: Mapping[str, xr.Dataset | xr.DataArray] | None = None,
    stations: xr.Dataset | pd.DataFrame | str | os.PathLike | None = None,
    members: int = 8,
    steps: int = 24,
    sampler: str = "heun",
    sampler_options: dict[str, Any] | None = None,
    schedule: Schedule | None = None,
    seed: int = 0,
    guidance: str | None = "coarse",
    guidance_options: dict[str, Any] | None = None,
    coarse_error_std: float | Mapping[str, float] | None = None,
    station_error_std: float | None = None,
    condition_on_coarse: bool = True,
    cfg_scale: float = 1.0,
    mask: xr.DataArray | np.ndarray | None = None,
    patch: Sequence[int] | None = None,
    overlap: Sequence[int] | None = None,
    batch_size: int | None = None,
    device: str = "cpu",
    progress: bool = True,
    threads: int | None = DEFAULT_THREADS,
    max_normalized: float | None = None,
    on_runaway: str = "resample",
    runaway_factor: float | None = RUNAWAY_FACTOR,
    lazy: bool | None = None,
    time_chunk: int = 1,
) -> xr.Dataset:
    """Downscale ``coarse`` with a conditional diffusion model; returns an ensemble ``xr.Dataset`` on the
    high-resolution grid (module docstring).

    Parameters
    ----------
    model: a :class:`~geodiff.io.ModelBundle` (or its path) with ``"downscaling"`` metadata.
    coarse: the coarse field: the model's target variables, dims ``([time,] lat, lon)`` on a regular grid.
    sources: auxiliary sources by name (any subset of the model's; ``Dataset``/``DataArray`` on the grid of the
        source's ratio over the same domain; static, or with the coarse field's times).
    stations: observation table (dim ``obs``) of the target variables on the high-resolution grid, used as
        guidance together with the coarse field (records at other times than a coarse time are not used). Give
        each station its real error (``error_std``: instrument and averaging over the time step, plus
        representativeness of a point for a cell): a station noisier than the model's own error at that place
        has little to add (on two real sets, stations 1.0-1.7x as noisy as that error gained 3-4 % at held-out
        stations, stations 0.4-0.5x as noisy 6-13 %; ``benchmarks/RESULTS.md``).
    members, steps, sampler, sampler_options, schedule, seed: as :func:`geodiff.reconstruct`.
    guidance: ``"coarse"`` (coarse consistency + stations, MMPS) or None (conditioning only);
        ``guidance_options`` go to :class:`~geodiff.guidance.coarse.CoarseGuidance` (e.g. ``cg_iterations``).
        With stations, the joint solve defaults to diagonal-preconditioned CG (``preconditioner="diagonal"``):
        coarse cells and stations have very different errors, and one plain CG step moves both with one step
        length (with noisy stations it made held-out stations 0.4-0.9 % worse on two real sets, the
        preconditioned step 3-4 % better; with realistic station errors the two tie; ``benchmarks/RESULTS.md``).
        ``guidance_options={"preconditioner": "none"}`` restores the plain step.
    coarse_error_std: error of the coarse values as area means, in the variable's units (one number or one per
        variable); default None: :data:`COARSE_ERROR_FRACTION` of the variable's standard deviation in the
        model's normaliser (the data's variability, whatever its units). ``station_error_std``: for station records without ``error_std``.
    condition_on_coarse: give the coarse field to the network as a source (False: leave it out at inference).
    cfg_scale: classifier-free guidance scale over the sources (1 = plain conditional model).
    mask: high-resolution validity mask (bool ``(lat, lon)`` or ``(variable, lat, lon)``, DataArray or numpy
        array, True = valid), applied where the coarse cell above is not NaN; default: the model's own mask when
        the output grid is the one it was trained on (land under an ocean coarse cell stays land), else valid
        wherever the coarse cell above is not NaN.
    patch, overlap: window and overlap sizes (high-resolution cells) of the patch-wise sampler; default: the
        training patch and a quarter of it.
    batch_size: members sampled at once (default: all).
    max_normalized, on_runaway, runaway_factor: a member with a non-finite value, with a valid cell at or beyond
        ``max_normalized`` in the model's normalised units (default None: no absolute bound, since a conditional
        model sampled with few steps or without some of its sources leaves its training range as a whole; e.g.
        ``MAX_NORMALIZED`` = 10 refuses that too; nothing is clipped), or further from the ensemble median than
        ``runaway_factor`` times the members' median distance, has run away: it is redrawn, refused or kept and
        flagged as ``on_runaway`` says, and recorded in attribute ``geodiff_runaway`` (as :func:`geodiff.reconstruct`).
    lazy: return a dask-backed result (default: when ``coarse`` is dask-backed and has a time axis), computed
        block by block of ``time_chunk`` times on ``.compute()`` / ``.to_zarr()`` as :func:`geodiff.reconstruct`
        does (bit for bit the eager result; attributes without the per-call reports). The validity mask
        (coarse cells finite at every time) is computed first, in one pass over the coarse field.
    threads: torch threads of the call (default 1, :data:`geodiff.runtime.DEFAULT_THREADS`; None: as set).

    Example
    -------
    >>> import geodiff
    >>> from geodiff.pipelines.downscale import coarsen, open_sample, sample_paths
    >>> fields, topography = open_sample()
    >>> coarse = coarsen(fields.isel(time=[0]), 4)
    >>> out = downscale(geodiff.load(sample_paths()["model"]), coarse, sources={"topography": topography},
    ...                 members=2, steps=2, progress=False)
    >>> out.tas.dims, out.tas.shape
    (('member', 'time', 'lat', 'lon'), (2, 1, 36, 48))
    """
    settings = {name: value for name, value in locals().items() if name not in ("model", "coarse")}
    check_request("downscale", device=device, members=members, steps=steps, batch_size=batch_size,
                  guidance=guidance, guidance_options=guidance_options, sampler=sampler,
                  sampler_options=sampler_options, max_normalized=max_normalized, on_runaway=on_runaway,
                  runaway_factor=runaway_factor)
    bundle = model if isinstance(model, ModelBundle) else load(model, device=device)
    bundle = bundle.to(device)
    spec = _spec(bundle)
    factor, target = int(spec["factor"]), list(spec["target"])
    denoiser = bundle.denoiser
    denoiser.eval()
    deterministic = isinstance(denoiser, RegressionModel)
    if deterministic:
        if stations is not None:
            raise ConfigError("a regression model takes no station guidance; use a diffusion model")
        guidance, members = None, 1
    if getattr(denoiser, "mask", None) is not None:
        raise ConfigError("a downscaling model must be trained without a fixed denoiser mask (it samples any domain)")
    coarse = _as_dataset(opened(coarse), "coarse")
    stations = opened(stations)
    missing = [v for v in target if v not in coarse.data_vars]
    if missing:
        raise ConfigError(f"the coarse field lacks the model's target variables {missing}")
    for variable in target:
        extra = [d for d in coarse[variable].dims if d not in (TIME, LAT, LON)]
        if extra:
            raise GridError(f"coarse variable {variable!r} has dimensions {extra}; downscale takes ([time,] lat, lon)")
    coarse = check_gridded(coarse, target, where="coarse")
    coarse = to_model_units(coarse, model_units(bundle.codec, target), "coarse")
    lat = refine_coords(coarse[LAT].values, factor, LAT)
    lon = refine_coords(coarse[LON].values, factor, LON)
    height, width = lat.size, lon.size
    channels = len(target)
    has_time = TIME in coarse.dims
    times = list(coarse[TIME].values) if has_time else [None]
    known = spec["sources"]
    sources = dict(sources or {})
    unknown = sorted(set(sources) - set(known) - {COARSE})
    if unknown or COARSE in sources:
        raise ConfigError(f"unknown sources {unknown or [COARSE]}: the model's auxiliary sources are "
                          f"{sorted(set(known) - {COARSE})} (the coarse field is given as `coarse`)")
    source_data = {name: _as_dataset(value, f"source {name!r}") for name, value in sources.items()}
    if coarse_error_std is None:
        errors = {v: COARSE_ERROR_FRACTION * float(s) for v, s in zip(target, _scales(bundle, target, times[0]))}
    else:
        errors = coarse_error_std if isinstance(coarse_error_std, Mapping) else {v: coarse_error_std for v in target}
    if set(errors) != set(target) or not all(float(errors[v]) > 0 for v in target):
        raise ConfigError(f"coarse_error_std must be a positive number or one per variable {target}")
    if bundle.codec.shape[0] != channels:
        raise ConfigError(f"the model's codec has {bundle.codec.shape[0]} channels; its downscaling target has "
                          f"{channels}")

    if has_time and (lazy or (lazy is None and is_lazy(coarse))):
        finite = np.stack([coarse[v].notnull().all(TIME).transpose(LAT, LON).values for v in target])  # one pass
        under = _valid_under(np.where(finite, 0.0, np.nan), False, factor)  # under cells finite at every time
        return _downscale_lazily(bundle, coarse, {**settings, "coarse_error_std": errors, "members": members,
                                                  "mask": _validity(under, mask, bundle, lat, lon)})
    coarse_values = _coarse_values(coarse, target)  # [T?, C, Hc, Wc]
    valid = _validity(_valid_under(coarse_values, has_time, factor), mask, bundle, lat, lon)
    weights = spec.get("area_weights", "coslat")  # the coarse area means the model was trained with
    operator = CoarsenOperator((channels, height, width), factor, mask=valid,
                               grid_lat=lat if weights == "coslat" else None).to(device)
    fine_codec, coarse_codec = output_codec(coarse, target, factor, valid), output_codec(coarse, target, 1)
    channel_list = [(v, None) for v in target]
    table = report = validated = None
    if stations is not None:
        table = as_observations(stations, default_error_std=station_error_std)
        table = observations_to_model_units(table, model_units(bundle.codec, target), "stations")
        validated = ObservationTable.validate(table, lat, lon, ocean_mask=valid, channels=channel_list,
                                              default_error_std=station_error_std)
        table, report = validated.data, validated.report

    base = bundle.denoiser if cfg_scale == 1.0 else ClassifierFreeDenoiser(bundle.denoiser, cfg_scale)
    train_patch = tuple(int(p) for p in (patch or spec["patch"]))
    overlap = tuple(int(o) for o in (overlap or (train_patch[0] // 4, train_patch[1] // 4)))
    bound = None if max_normalized is None else float(max_normalized)
    patched = PatchDenoiser(base, patch=train_patch, overlap=overlap, periodic_lon=is_periodic(lon))
    engine = SamplingEngine(
        registry.get("sampler", sampler)(**(sampler_options or {})), patched,
        (schedule or EDMSchedule()).sigmas(steps), members=members, batch_size=batch_size, device=device,
        runaway=RunawayCheck(on_runaway, runaway_factor, bound=bound), progress=progress, fields=len(times),
        label="downscale",
    )  # fmt: skip
    used_sources = ([COARSE] if condition_on_coarse else []) + sorted(source_data)
    fields, described, runaways = [], None, {}
    with engine:
        for t_index, time in enumerate(times):
            values = torch.from_numpy(coarse_values[t_index] if has_time else coarse_values)  # [C, Hc, Wc]
            coarse_n = bundle.normalize_tensor(values, time=time, codec=coarse_codec)
            cond = {}
            if condition_on_coarse:
                cond[COARSE] = torch.nan_to_num(coarse_n, nan=0.0).to(torch.float32)[None].to(device)
            for name, ds in source_data.items():
                ratio = known[name]["ratio"]
                cond[name] = _source_tensor(bundle, ds, name, list(known[name]["variables"]), time,
                                            grid_for_ratio(lat, ratio, LAT), grid_for_ratio(lon, ratio, LON)
                                            ).to(device)  # fmt: skip
            guide = combine([])
            if guidance is not None:
                if guidance != "coarse":
                    raise ConfigError(f"guidance must be 'coarse' or None, got {guidance!r}")
                error = np.array([float(errors[v]) for v in target])
                error_n = torch.as_tensor(error[:, None, None] / bundle.statistics(time, coarse_codec)[1])
                y = operator.observed(coarse_n)
                e = error_n.reshape(-1)[torch.as_tensor(operator.kept)]
                options = dict(guidance_options or {})
                if table is not None and not {"preconditioner", "method"} & set(options):
                    options["preconditioner"] = "diagonal"  # stations and coarse cells: very different errors
                guide = CoarseGuidance(y.to(device), operator, e.to(device), **options)
                if table is not None:
                    observed = validated
                    if time is not None and TIME in table.coords:
                        observed = validated.at_time(time)
                    at_time = observed.data
                    if at_time.sizes["obs"]:
                        point = PointOperator.from_table(observed)
                        op_n, y_n, e_n = point.to_normalized(at_time["value"].values, at_time["error_std"].values,
                                                             *bundle.statistics(time, fine_codec))
                        guide = guide.with_stations(y_n.to(device), op_n.to(device), e_n.to(device))
                described = guide.describe()
            elif table is not None:
                raise ConfigError("stations are used as guidance: pass guidance='coarse' with them")
            if deterministic:
                with torch.no_grad():
                    prediction = patched(torch.zeros(1, channels, height, width, device=device), 0.0, cond or None)
                fields.append((prediction * torch.as_tensor(valid, device=device)).to(torch.float64).cpu())
                continue
            ensemble = engine.draw(guide, (channels, height, width), cond=cond or None,
                                   generator=time_generator(seed, 0 if time is None else time, device),
                                   valid=torch.as_tensor(valid, device=device), where=f"time {time}",
                                   setting=f"sampler {sampler!r}, {steps} steps, guidance {guidance!r}")
            if ensemble.runaways:
                runaways[str(time)] = [r.describe() for r in ensemble.runaways]
            fields.append(ensemble.x.to(torch.float64).cpu())
    stacked = torch.stack(fields, dim=1)  # [M, T, C, H, W], normalised
    out = bundle.decode(stacked if has_time else stacked[:, 0], codec=fine_codec, member=True,
                        time=coarse[TIME] if has_time else None)
    config = {"guidance": guidance, "guidance_options": guidance_options or {}, "guidance_described": described,
              "coarse_error_std": {v: float(errors[v]) for v in target}, "sources": used_sources,
              "cfg_scale": cfg_scale, "sampler": sampler, "sampler_options": sampler_options or {}, "steps": steps,
              "threads": threads,
              "members": members, "seed": seed, "factor": factor, "patch": list(train_patch),
              "overlap": list(overlap), "deterministic": deterministic}
    return record_provenance(out, coarse.attrs, "geodiff.downscale", config, model_sha256=bundle.sha256, seed=seed,
                             sources=used_sources, observations=None if report is None else report.as_dict(),
                             runaway={**engine.runaway.describe(), "members": runaways})


def _validity(valid: np.ndarray, mask: xr.DataArray | np.ndarray | None, bundle: ModelBundle, lat: np.ndarray,
              lon: np.ndarray) -> np.ndarray:
    """``valid [C, H, W]`` (under finite coarse cells) and ``mask``, or the model's own land mask on its grid."""
    if mask is not None:
        array = mask.transpose(..., LAT, LON).values if isinstance(mask, xr.DataArray) else mask
        return valid & channel_mask(array, valid.shape, "mask")
    if _same_grid(bundle.codec, lat, lon):
        return valid & bundle.codec.mask.numpy()  # the model's own land mask: land under an ocean coarse cell
    return valid


def _downscale_lazily(bundle: ModelBundle, coarse: xr.Dataset, settings: dict[str, Any]) -> xr.Dataset:
    """The dask-backed result of :func:`downscale`: one :class:`PipelineBlock` per block of ``time_chunk`` times,
    each given the validity mask and coarse error of the whole series (so blocks equal the eager result)."""
    keyword_inputs = {name: settings[name] for name in ("sources", "stations") if settings[name] is not None}
    options = {name: value for name, value in settings.items()
               if name not in ("lazy", "time_chunk", "sources", "stations")}
    block = PipelineBlock(downscale, bundle, (coarse,), keyword_inputs, {**options, "progress": False, "lazy": False})
    template = output_template(bundle, coarse.isel({TIME: [0]}), members=settings["members"])
    config = {name: settings[name] for name in ("guidance", "sampler", "steps", "members", "seed", "cfg_scale",
                                                "condition_on_coarse", "threads", "time_chunk")}
    used_sources = ([COARSE] if settings["condition_on_coarse"] else []) + sorted(settings["sources"] or {})
    config.update(guidance_options=settings["guidance_options"] or {}, sampler_options=settings["sampler_options"] or {},
                  coarse_error_std={name: float(value) for name, value in settings["coarse_error_std"].items()},
                  sources=used_sources, lazy=True)
    attrs = record_provenance(template, coarse.attrs, "geodiff.downscale", config, model_sha256=bundle.sha256,
                              seed=settings["seed"], sources=used_sources).attrs
    return lazy_over_time(block, template, coarse[TIME].variable, settings["time_chunk"], attrs)


def _scales(bundle: ModelBundle, target: Sequence[str], time: Any) -> list[float]:
    """Each target variable's standard deviation in the model's normaliser at ``time`` (the median over its
    cells and levels)."""
    std = np.asarray(bundle.statistics(time)[1], dtype=np.float64).reshape(len(target), -1)
    return [float(np.median(row)) for row in std]


def _same_grid(codec: Codec, lat: np.ndarray, lon: np.ndarray) -> bool:
    """Whether ``(lat, lon)`` is the grid of ``codec`` (to within a thousandth of a cell)."""
    grid_lat, grid_lon = np.asarray(codec.lat, dtype=np.float64), np.asarray(codec.lon, dtype=np.float64)
    if grid_lat.shape != lat.shape or grid_lon.shape != lon.shape:
        return False
    tolerance = 1e-3 * abs(float(lat[1] - lat[0])) if lat.size > 1 else 1e-6
    return bool(np.allclose(grid_lat, lat, rtol=0, atol=tolerance) and np.allclose(grid_lon, lon, rtol=0,
                                                                                   atol=tolerance))


def _coarse_values(coarse: xr.Dataset, target: Sequence[str]) -> np.ndarray:
    """The target variables of ``coarse`` as float64 ``[T?, C, Hc, Wc]``."""
    order = ((TIME,) if TIME in coarse.dims else ()) + (LAT, LON)
    return np.stack([np.asarray(coarse[v].transpose(*order).values, dtype=np.float64) for v in target], axis=-3)


def _valid_under(coarse_values: np.ndarray, has_time: bool, factor: int) -> np.ndarray:
    """High-resolution validity ``[C, H, W]``: under every coarse cell that is finite at every time."""
    block = np.isfinite(coarse_values).all(axis=0) if has_time else np.isfinite(coarse_values)
    return np.repeat(np.repeat(block, factor, axis=-2), factor, axis=-1)


def output_codec(coarse: xr.Dataset, target: Sequence[str], factor: int, valid: np.ndarray | None = None) -> Codec:
    """The codec of the high-resolution output of :func:`downscale` for ``coarse``: the target variables with
    their attributes, ``_FillValue`` and dtype (float64 for non-float input), the coarse time axis' attributes and
    encoding, the global attributes, on the grid refined by ``factor``; valid where ``valid [C, H, W]`` (default:
    under every coarse cell that is finite at every time).

    >>> import numpy as np, xarray as xr
    >>> coarse = xr.Dataset({"tas": (("lat", "lon"), np.array([[280.0, np.nan], [281.0, 282.0]]), {"units": "K"})},
    ...                     coords={"lat": [1.0, 3.0], "lon": [1.0, 3.0]})
    >>> codec = output_codec(coarse, ["tas"], 2)
    >>> codec.shape, codec.lon.tolist(), codec.mask[0, 0].tolist()
    ((1, 4, 4), [0.5, 1.5, 2.5, 3.5], [True, True, False, False])
    """
    has_time = TIME in coarse.dims
    lat = refine_coords(coarse[LAT].values, factor, LAT)
    lon = refine_coords(coarse[LON].values, factor, LON)
    if valid is None:
        valid = _valid_under(_coarse_values(coarse, target), has_time, factor)
    dims = ((TIME,) if has_time else ()) + (LAT, LON)
    data = {}
    for c, name in enumerate(target):
        dtype = coarse[name].dtype if coarse[name].dtype.kind == "f" else np.dtype(np.float64)
        values = np.where(valid[c], 0.0, np.nan).astype(dtype)
        data[name] = xr.Variable(dims, values[None] if has_time else values, dict(coarse[name].attrs),
                                 {k: v for k, v in coarse[name].encoding.items() if k in ("dtype", "_FillValue")})
    coords: dict[str, Any] = {LAT: xr.Variable(LAT, lat, dict(coarse[LAT].attrs)),
                              LON: xr.Variable(LON, lon, dict(coarse[LON].attrs))}
    if has_time:
        coords[TIME] = coarse[TIME].variable[:1].copy()
    return Codec.from_dataset(xr.Dataset(data, coords=coords, attrs=dict(coarse.attrs)), list(target))


def output_template(model: ModelBundle, coarse: xr.Dataset | xr.DataArray, *, members: int = 1) -> xr.Dataset:
    """What :func:`downscale` returns for ``coarse`` and ``members`` (layout, attributes, dtypes), with zeros
    in place of samples and without provenance: the template of a downscaling batch."""
    spec = _spec(model)
    coarse = _as_dataset(coarse, "coarse")
    codec = output_codec(coarse, list(spec["target"]), int(spec["factor"]))
    has_time = TIME in coarse.dims
    zeros = torch.zeros(members, *((coarse.sizes[TIME],) if has_time else ()), *codec.shape)
    return model.decode(zeros, codec=codec, member=True, time=coarse[TIME] if has_time else None)


# ---------------------------------------------------------------------------------------------------------------
# shipped sample


#: the shipped sample's paths and reader are :mod:`geodiff.tutorial`'s (kept under these names here)
sample_paths = downscaling_paths
open_sample = open_downscaling
