"""Data assimilation as generation: a background-conditioned latent diffusion model guided by observations.

An :class:`AssimilationModel` holds a latent :class:`~geodiff.backbones.autoencoder.Autoencoder` of the normalised
multi-variable state and a :class:`~geodiff.diffusion.denoiser.Denoiser` of the latent ``z`` conditioned on the
encoded background (``cond={"concat": z_b}``, concatenated by the backbone), together with the codec and
normaliser of the physical state (a :class:`~geodiff.io.ModelBundle` in sub-folder ``prior/``, the autoencoder in
``autoencoder/``). :func:`assimilate` samples ``p(z | background)`` guided by the observations through the decoder
(``guidance="mmps"``: :class:`~geodiff.guidance.latent_mmps.LatentMMPSGuidance`; ``"dps"``:
:class:`~geodiff.guidance.DPSGuidance` through the decoded operator; ``"none"``), optionally also by a reward
(:class:`~geodiff.guidance.reward.RewardGuidance`), and returns the decoded analysis ensemble as an
``xr.Dataset`` with the background's variables, a ``member`` dimension, CF attributes, ``history`` appended and
provenance attributes (geodiff version, model sha256, guidance, seed, observation report). :func:`cycle` runs
assimilation cycles over a window with a forecast model: the background of each cycle is the forecast of the
previous analysis' ensemble mean. Denoised latents are clipped to 1.25 times the largest ``|z|`` of the training
latents (recorded by :meth:`AssimilationModel.fit`; ``clip_latent``): a guided member that leaves the training
range (about 2 % of them in the twin benchmark, with errors 2-10 times the others') stays inside it.

Randomness: the generator of a time is seeded from ``(seed, time)`` (as in :mod:`geodiff.pipelines.reconstruct`).

Example
-------
>>> import numpy as np, torch
>>> from geodiff.dynamics import BarotropicModel
>>> from geodiff.pipelines.assimilate import AssimilationModel, assimilate, twin_dataset, twin_observations
>>> twin = BarotropicModel(nx=16, ny=16)
>>> truth = twin_dataset(twin, twin.random_state(2, generator=torch.Generator().manual_seed(0)),
...                      np.array(["2000-01-01", "2000-01-02"], dtype="datetime64[ns]"))
>>> model = AssimilationModel.untrained(truth, latent_channels=2, base_channels=8)
>>> obs = twin_observations(truth, [45.0, 50.0], [0.0, 5.0], error_std={"z": 5.0, "u": 1.0, "v": 1.0}, seed=0)
>>> analysis = assimilate(model, truth, obs, members=2, steps=2, progress=False)
>>> analysis.z.dims, analysis.attrs["geodiff_seed"]
(('member', 'time', 'lat', 'lon'), 0)
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch import Tensor
from tqdm.auto import tqdm

from geodiff import registry
from geodiff.backbones.autoencoder import Autoencoder
from geodiff.backbones.unet import UNet
from geodiff.datacheck import check_gridded
from geodiff.diffusion.denoiser import Denoiser
from geodiff.diffusion.engine import RUNAWAY_FACTOR, RunawayCheck, SamplingEngine
from geodiff.diffusion.schedules import EDMSchedule, Schedule
from geodiff.errors import CheckpointError, ConfigError, GridError, ObservationError
from geodiff.guidance import DecodedOperator, DPSGuidance, LatentMMPSGuidance, RewardGuidance, combine
from geodiff.io.bundle import MAX_NORMALIZED, ModelBundle, load
from geodiff.io.cf import generated_attrs
from geodiff.io.codec import Codec
from geodiff.io.normalize import Normalizer
from geodiff.observations import ObservationTable, as_observations
from geodiff.operators import PointOperator
from geodiff.pipelines.reconstruct import record_provenance, time_generator
from geodiff.pipelines.request import check_request, opened
from geodiff.pipelines.units import model_units, observations_to_model_units, to_model_units
from geodiff.provenance import append_history
from geodiff.runtime import DEFAULT_THREADS, uses_threads

__all__ = [
    "AssimilationModel",
    "assimilate",
    "sample_analysis",
    "cycle",
    "CycleResult",
    "twin_dataset",
    "twin_observations",
    "OBSERVATION_GUIDANCE",
]

OBSERVATION_GUIDANCE = ("mmps", "dps", "none")
#: default bound of denoised latents, relative to the largest |z| of the training latents (AssimilationModel.fit)
LATENT_CLIP_FACTOR = 1.25

TWIN_ATTRS = {
    "z": {"units": "m", "standard_name": "geopotential_height_anomaly", "long_name": "geopotential height anomaly"},
    "u": {"units": "m s-1", "standard_name": "eastward_wind", "long_name": "eastward wind"},
    "v": {"units": "m s-1", "standard_name": "northward_wind", "long_name": "northward wind"},
}


# ---- twin-experiment datasets and observation tables


def twin_dataset(
    model: Any, states: Tensor | np.ndarray, times: Any, *, attrs: dict[str, Any] | None = None
) -> xr.Dataset:
    """States ``[T, C, ny, nx]`` of a forecast model (channels ``model.variables``) as a canonical dataset
    ``(time, lat, lon)`` with CF attributes; coordinates from ``model.coordinates()``."""
    states = np.asarray(torch.as_tensor(states).detach().cpu().numpy(), dtype=np.float32)
    times = np.asarray(times)
    coords = model.coordinates()
    if states.ndim != 4 or states.shape[0] != times.size or states.shape[1] != len(model.variables):
        raise GridError(f"states must be [T={times.size}, {len(model.variables)}, ny, nx]; got {list(states.shape)}")
    data = {name: (("time", "lat", "lon"), states[:, c], dict(TWIN_ATTRS.get(name, {"units": "1"})))
            for c, name in enumerate(model.variables)}  # fmt: skip
    lat_attrs = {"units": "degrees_north", "standard_name": "latitude"}
    lon_attrs = {"units": "degrees_east", "standard_name": "longitude"}
    ds = xr.Dataset(data, coords={"time": times, "lat": ("lat", coords["lat"], lat_attrs),
                                  "lon": ("lon", coords["lon"], lon_attrs)})  # fmt: skip
    ds.attrs = {"title": f"{type(model).__name__} twin experiment", "Conventions": "CF-1.8",
                "geodiff_forecast_model": json.dumps(getattr(model, "config", {}), default=str), **(attrs or {})}
    return ds


def twin_observations(
    truth: xr.Dataset,
    lat: Sequence[float],
    lon: Sequence[float],
    *,
    error_std: dict[str, float],
    seed: int,
    times: Any = None,
    source: str = "twin",
) -> xr.Dataset:
    """Observation table of ``truth`` at sites ``(lat, lon)`` for each variable of ``error_std`` and each time:
    bilinear interpolation of the truth plus Gaussian noise of ``error_std[variable]`` (seeded by ``seed``)."""
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    if lat.shape != lon.shape or lat.ndim != 1 or lat.size == 0:
        raise ObservationError(f"lat and lon must be equal-length 1-D arrays, got {lat.shape} and {lon.shape}")
    times = truth["time"].values if times is None else np.atleast_1d(np.asarray(times))
    rng = np.random.default_rng(seed)
    rows: dict[str, list[np.ndarray]] = {k: [] for k in ("value", "error_std", "lat", "lon", "time", "variable")}
    for variable, std in error_std.items():
        if variable not in truth.data_vars:
            raise ObservationError(f"error_std names variable {variable!r}, which the truth does not have")
        op = PointOperator(truth["lat"].values, truth["lon"].values, lat, lon)
        fields = torch.from_numpy(truth[variable].sel(time=times).values.astype(np.float64))[:, None]
        values = op(fields).numpy()  # [T, N]
        values = values + rng.normal(0.0, float(std), size=values.shape) if std > 0 else values
        for t, time in enumerate(times):
            rows["value"].append(values[t])
            rows["error_std"].append(np.full(lat.size, float(std)))
            rows["lat"].append(lat)
            rows["lon"].append(lon)
            rows["time"].append(np.full(lat.size, time))
            rows["variable"].append(np.full(lat.size, variable, dtype=object))
    columns = {k: np.concatenate(v) for k, v in rows.items()}
    n = columns["value"].size
    units = {name: truth[name].attrs.get("units", "") for name in error_std}
    return xr.Dataset(
        {"value": ("obs", columns["value"], {"long_name": "observed value (units of its variable)"}),
         "error_std": ("obs", columns["error_std"])},
        coords={"lat": ("obs", columns["lat"]), "lon": ("obs", columns["lon"]), "time": ("obs", columns["time"]),
                "variable": ("obs", columns["variable"].astype(str)), "source": ("obs", np.full(n, source)),
                "obs_id": ("obs", np.arange(n))},
        attrs={"units_by_variable": json.dumps(units)},
    )  # fmt: skip


# ---- the model


class AssimilationModel:
    """Latent autoencoder + background-conditioned latent denoiser + codec and normaliser (module docstring).

    ``denoiser`` maps latents ``[B, Z, h, w]`` with ``cond={"concat": z_background [B, Z, h, w]}``; ``metadata``
    is JSON kept in the prior bundle.
    """

    def __init__(self, autoencoder: Autoencoder, denoiser: Denoiser, codec: Codec, normalizer: Normalizer,
                 metadata: dict[str, Any] | None = None):  # fmt: skip
        if not isinstance(autoencoder, Autoencoder):
            raise ConfigError(f"autoencoder must be a geodiff Autoencoder, got {type(autoencoder).__name__}")
        if autoencoder.in_channels != len(codec.channels):
            raise GridError(f"the autoencoder takes {autoencoder.in_channels} channels; the codec has "
                            f"{len(codec.channels)} ({codec.channels})")
        autoencoder.latent_shape(*codec.shape[1:])
        self.autoencoder = autoencoder.eval()
        self.prior = ModelBundle(denoiser, codec, normalizer, metadata)

    @classmethod
    def untrained(cls, ds: xr.Dataset, *, latent_channels: int = 4, base_channels: int = 16,
                  channel_mults: Sequence[int] = (1, 2), prior_channel_mults: Sequence[int] = (1, 2, 2),
                  periodic: bool = True, sigma_data: float = 1.0) -> AssimilationModel:  # fmt: skip
        """A fresh (untrained) model for the variables and grid of ``ds`` (codec and normaliser fitted on it):
        autoencoder levels ``channel_mults``, latent UNet levels ``prior_channel_mults`` (no attention)."""
        codec = Codec.from_dataset(ds)
        normalizer = Normalizer.fit(ds)
        channels = len(codec.channels)
        autoencoder = Autoencoder(channels, latent_channels, base_channels=base_channels,
                                  channel_mults=tuple(channel_mults), periodic_lat=periodic, periodic_lon=periodic)
        net = UNet(in_channels=latent_channels, base_channels=base_channels, channel_mults=tuple(prior_channel_mults),
                   num_res_blocks=1, attention_levels=(), mid_attention=False, cond_channels=latent_channels,
                   periodic_lon=periodic)  # fmt: skip
        return cls(autoencoder, Denoiser(net, sigma_data=sigma_data), codec, normalizer)

    @classmethod
    def fit(
        cls,
        truth: xr.Dataset,
        background: xr.Dataset,
        *,
        latent_channels: int = 4,
        base_channels: int = 16,
        autoencoder_steps: int = 1000,
        prior_steps: int = 2000,
        batch_size: int = 32,
        lr: float = 1e-3,
        seed: int = 0,
        periodic: bool = True,
        progress: bool = True,
    ) -> AssimilationModel:
        """Train a model on pairs ``(truth[t], background[t])`` (same times, variables and grid): the autoencoder
        on truths and backgrounds, then the latent denoiser of ``z(truth)`` given ``z(background)`` with
        :func:`geodiff.train` (EDM loss, ``sigma_data`` the latents' std; the EMA weights are kept)."""
        from geodiff.training.autoencoder import train_autoencoder
        from geodiff.training.trainer import train

        if truth.sizes.get("time") != background.sizes.get("time"):
            raise GridError(f"truth and background must pair up in time; got {truth.sizes.get('time')} and "
                            f"{background.sizes.get('time')} times")
        model = cls.untrained(truth, latent_channels=latent_channels, base_channels=base_channels, periodic=periodic)
        codec = model.codec
        x_t = model.normalize(codec.encode(truth[codec.variables])[0])
        x_b = model.normalize(codec.encode(background[codec.variables])[0])
        ae = train_autoencoder(model.autoencoder, torch.cat([x_t, x_b]), steps=autoencoder_steps,
                               batch_size=batch_size, lr=lr, seed=seed, progress=progress)  # fmt: skip
        with torch.no_grad():
            z_t = torch.cat([ae.autoencoder.encode(c) for c in x_t.split(256)])
            z_b = torch.cat([ae.autoencoder.encode(c) for c in x_b.split(256)])
            reconstruction = torch.cat([ae.autoencoder(c) for c in x_t.split(256)])
        sigma_data = float(z_t.std())
        denoiser = Denoiser(model.denoiser.backbone, sigma_data=sigma_data)
        result = train(denoiser, z_t, cond={"concat": z_b}, steps=prior_steps, batch_size=batch_size, lr=lr,
                       warmup_steps=min(100, prior_steps), seed=seed, progress=progress)  # fmt: skip
        metadata = {
            "autoencoder_steps": autoencoder_steps, "autoencoder_final_mse": float(np.mean(ae.losses[-20:])),
            "autoencoder_truth_rmse_normalised": float((reconstruction - x_t).pow(2).mean().sqrt()),
            "autoencoder_seconds": ae.seconds, "prior_steps": prior_steps,
            "prior_final_loss": float(np.mean(result.losses[-20:])), "training_pairs": int(x_t.shape[0]),
            "latent_sigma_data": sigma_data, "seed": seed,
            "latent_max_abs": float(max(z_t.abs().max(), z_b.abs().max())),
        }  # fmt: skip
        return cls(ae.autoencoder, result.ema.eval(), codec, model.prior.normalizer, metadata)

    @property
    def denoiser(self) -> Denoiser:
        return self.prior.denoiser

    @property
    def latent_bound(self) -> float | None:
        """Default bound of denoised latents: ``LATENT_CLIP_FACTOR`` times the largest ``|z|`` of the training
        latents (recorded by :meth:`fit` as metadata ``latent_max_abs``); None for a model without that record."""
        largest = self.prior.metadata.get("latent_max_abs")
        return None if largest is None else LATENT_CLIP_FACTOR * float(largest)

    @property
    def codec(self) -> Codec:
        return self.prior.codec

    @property
    def sha256(self) -> str:
        """sha256 over the prior bundle's manifest hash and the autoencoder's configuration and weights."""
        from safetensors.torch import save

        weights = save({k: v.detach().cpu().contiguous() for k, v in self.autoencoder.state_dict().items()})
        config = json.dumps(self.autoencoder.config, sort_keys=True).encode()
        return hashlib.sha256(self.prior.sha256.encode() + config + weights).hexdigest()

    def save(self, folder: str | Path, *, overwrite: bool = False) -> None:
        """Write ``folder/prior`` (model bundle) and ``folder/autoencoder`` (config.json + model.safetensors)."""
        folder = Path(folder)
        self.prior.save(folder / "prior", overwrite=overwrite)
        target = folder / "autoencoder"
        if target.exists() and any(target.iterdir()) and not overwrite:
            raise CheckpointError(f"{target} is not empty; pass overwrite=True")
        self.autoencoder.save_pretrained(target)

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> AssimilationModel:
        """Load a model written by :meth:`save` (the prior's manifest is checked; nothing is unpickled)."""
        folder = Path(folder)
        prior = load(folder / "prior", device=device)
        autoencoder = Autoencoder.from_pretrained(folder / "autoencoder", device=device)
        model = cls(autoencoder, prior.denoiser, prior.codec, prior.normalizer, prior.metadata)
        model.prior._sha256 = prior._sha256
        return model

    def to(self, device: str | torch.device) -> AssimilationModel:
        self.autoencoder.to(device)
        self.prior.to(device)
        return self

    # tensors

    def normalize(self, x: Tensor) -> Tensor:
        """Physical ``[B, C, H, W]`` -> normalised (the prior bundle's statistics, in ``x``'s dtype)."""
        return self.prior.normalize_tensor(x)

    def physical(self, x: Tensor) -> Tensor:
        """Normalised ``[B, C, H, W]`` -> physical units (the prior bundle's statistics, in ``x``'s dtype)."""
        return self.prior.denormalize_tensor(x)

    def encode(self, x: Tensor) -> Tensor:
        """Latent ``[B, Z, h, w]`` of physical states ``[B, C, H, W]``."""
        with torch.no_grad():
            return self.autoencoder.encode(self.normalize(x.to(torch.float32)))

    def decode(self, z: Tensor) -> Tensor:
        """Physical states ``[B, C, H, W]`` of latents (differentiable)."""
        return self.physical(self.autoencoder.decode(z))


# ---- sampling


def resolve_latent_bound(model: AssimilationModel, clip_latent: float | str | None) -> float | None:
    """The bound of denoised latents for ``clip_latent`` (``"auto"``, None or a positive number)."""
    if clip_latent == "auto":
        return model.latent_bound
    if clip_latent is None:
        return None
    try:
        bound = float(clip_latent)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        bound = float("nan")
    if isinstance(clip_latent, str) or not bound > 0:
        raise ConfigError(f"clip_latent must be 'auto', None or a positive number, got {clip_latent!r}")
    return bound


def sample_analysis(
    model: AssimilationModel,
    background: Tensor,
    *,
    operator: PointOperator | None = None,
    y: Tensor | None = None,
    error_std: Tensor | None = None,
    members: int = 8,
    steps: int = 16,
    guidance: str = "mmps",
    guidance_options: dict[str, Any] | None = None,
    reward: Callable[[Tensor], Tensor] | None = None,
    reward_scale: float = 0.0,
    reward_mode: str = "x0",
    sampler: str = "heun",
    schedule: Schedule | None = None,
    generator: torch.Generator | None = None,
    denoiser: Denoiser | None = None,
    callback: Callable[..., None] | None = None,
    clip_latent: float | str | None = "auto",
    max_normalized: float | None = MAX_NORMALIZED,
    on_runaway: str = "resample",
    runaway_factor: float | None = RUNAWAY_FACTOR,
) -> tuple[Tensor, Tensor]:
    """Analysis members for one background (tensors): ``(states [M, C, H, W] physical, latents [M, Z, h, w])``.

    ``background [C, H, W]`` physical; ``operator`` a :class:`~geodiff.operators.PointOperator` on the physical
    state with observations ``y [N]`` and ``error_std [N]`` (physical units), None for no observations;
    ``reward(states [M, C, H, W] physical) -> [M]`` guides with ``reward_scale`` (0: off) and ``reward_mode``
    (:class:`~geodiff.guidance.reward.RewardGuidance`, in the latent); ``denoiser``
    overrides the model's (e.g. a fine-tuned policy). ``clip_latent``: clamp every denoised latent to
    ``[-clip_latent, clip_latent]`` (:class:`~geodiff.diffusion.clipping.ClipDenoised`), above the largest ``|z|``
    of the training latents so that only members leaving the training range are touched (guided members that do
    run away otherwise dominate ensemble means); ``"auto"``: :attr:`AssimilationModel.latent_bound` (no clipping
    for a model that did not record its latent range); None: no clipping. ``max_normalized``, ``on_runaway``,
    ``runaway_factor``: the runaway checks of :mod:`geodiff.diffusion.engine` on the decoded states in normalised
    units (as :func:`geodiff.reconstruct`; :func:`assimilate` records them).
    """
    if members < 1 or steps < 1:
        raise ConfigError(f"members and steps must be >= 1, got {members}, {steps}")
    engine = _analysis_engine(model, members=members, steps=steps, sampler=sampler, schedule=schedule,
                              denoiser=denoiser, clip_latent=clip_latent, device=background.device,
                              runaway=RunawayCheck(on_runaway, runaway_factor, bound=max_normalized),
                              callback=callback)  # fmt: skip
    guide = _analysis_guidance(model, operator, y, error_std, guidance=guidance, guidance_options=guidance_options,
                               reward=reward, reward_scale=reward_scale, reward_mode=reward_mode)
    states, z, _ = _draw_analysis(model, engine, guide, background, generator, f"guidance {guidance!r}")
    return states, z


def _analysis_engine(model: AssimilationModel, *, members: int, steps: int, sampler: str,
                     schedule: Schedule | None, denoiser: Denoiser | None, clip_latent: float | str | None,
                     device: str | torch.device, runaway: RunawayCheck, **display: Any) -> SamplingEngine:
    """The engine sampling latents for :func:`sample_analysis` and :func:`assimilate` (``display``: progress)."""
    return SamplingEngine(registry.get("sampler", sampler)(), (denoiser or model.denoiser).eval(),
                          (schedule or EDMSchedule(sigma_max=80.0)).sigmas(steps), members=members, device=device,
                          clip=resolve_latent_bound(model, clip_latent), runaway=runaway, label="assimilate",
                          **display)  # fmt: skip


def _analysis_guidance(model: AssimilationModel, operator: PointOperator | None, y: Tensor | None,
                       error_std: Tensor | None, *, guidance: str, guidance_options: dict[str, Any] | None,
                       reward: Callable[[Tensor], Tensor] | None, reward_scale: float, reward_mode: str) -> Any:
    """Observation guidance through the decoder (``guidance``) and reward guidance, combined."""
    if guidance not in OBSERVATION_GUIDANCE:
        raise ConfigError(f"guidance must be one of {OBSERVATION_GUIDANCE}, got {guidance!r}")
    parts = []
    if operator is not None and guidance != "none":
        mean, std = model.prior.statistics()
        op_n, y_n, e_n = operator.to_normalized(y.cpu().numpy(), error_std.cpu().numpy(), mean, std)
        decoded = DecodedOperator(model.autoencoder.decode, op_n.to(torch.float32))
        cls = LatentMMPSGuidance if guidance == "mmps" else DPSGuidance
        parts.append(cls(y_n.to(torch.float32), decoded, e_n.to(torch.float32), **dict(guidance_options or {})))
    if reward is not None and reward_scale > 0:
        parts.append(RewardGuidance(lambda z: reward(model.decode(z)), scale=reward_scale, mode=reward_mode))
    return combine(parts)


def _draw_analysis(model: AssimilationModel, engine: SamplingEngine, guide: Any, background: Tensor,
                   generator: torch.Generator | None, setting: str, where: str = "") -> tuple[Tensor, Tensor, list]:
    """``(states [M, C, H, W] physical, latents, runaway members)`` of one background ``[C, H, W]``; the runaway
    checks look at the decoded states in normalised units on the codec's valid cells."""
    z_b = model.encode(background[None])
    ensemble = engine.draw(guide, tuple(z_b.shape[1:]), generator=generator,
                           cond=lambda n: {"concat": z_b.expand(n, -1, -1, -1)},
                           valid=model.codec.mask.to(z_b.device), measure=model.autoencoder.decode,
                           where=where, setting=f"{setting}, {engine.steps} steps")  # fmt: skip
    with torch.no_grad():
        return model.decode(ensemble.x), ensemble.x, ensemble.runaways


def _check_background(model: AssimilationModel, background: xr.Dataset) -> None:
    missing = [v for v in model.codec.variables if v not in background.data_vars]
    if missing:
        raise GridError(f"the background lacks the model's variables {missing}; it has {list(background.data_vars)}")
    if "time" not in background.dims:
        raise GridError("the background needs a 'time' dimension (the analysis times)")


@uses_threads
def assimilate(
    model: AssimilationModel | str,
    background: xr.Dataset | str | os.PathLike,
    observations: xr.Dataset | pd.DataFrame | str | os.PathLike,
    *,
    members: int = 8,
    steps: int = 16,
    seed: int = 0,
    guidance: str = "mmps",
    guidance_options: dict[str, Any] | None = None,
    reward: Callable[[Tensor], Tensor] | None = None,
    reward_scale: float = 0.0,
    reward_mode: str = "x0",
    sampler: str = "heun",
    default_error_std: float | dict[str, float] | None = None,
    denoiser: Denoiser | None = None,
    clip_latent: float | str | None = "auto",
    device: str = "cpu",
    progress: bool = True,
    threads: int | None = DEFAULT_THREADS,
    max_normalized: float | None = MAX_NORMALIZED,
    on_runaway: str = "resample",
    runaway_factor: float | None = RUNAWAY_FACTOR,
) -> xr.Dataset:
    """Analysis ensemble of ``background`` (dims ``(time, lat, lon)``, the model's variables and grid) given the
    observation table (:mod:`geodiff.observations`) at the same times; returns dims ``(member, time, lat, lon)``.

    ``guidance``: ``"mmps"`` (linearised MMPS through the decoder, ``guidance_options`` e.g.
    ``{"cg_iterations": 2}``), ``"dps"`` (``{"scale": ...}``) or ``"none"``. ``reward``/``reward_scale``: reward
    guidance (:mod:`geodiff.guidance.reward`, ``reward_mode`` ``"x0"`` or ``"tilt"``),
    ``reward(states [M, C, H, W] physical) -> [M]``. ``clip_latent``: bound of the denoised latents (see
    :func:`sample_analysis`). ``max_normalized``, ``on_runaway``, ``runaway_factor``: runaway members, judged on the
    decoded states in normalised units, are redrawn, refused or kept and flagged, and recorded in attribute
    ``geodiff_runaway`` (as :func:`geodiff.reconstruct`).
    Times without observations get the background-conditioned prior sample (recorded in the report).
    ``threads``: torch threads of the call (default 1, :data:`geodiff.runtime.DEFAULT_THREADS`; None: as set).
    """
    check_request("assimilate", device=device, members=members, steps=steps, guidance=guidance,
                  guidance_options=guidance_options, sampler=sampler, max_normalized=max_normalized,
                  on_runaway=on_runaway, runaway_factor=runaway_factor)
    background, observations = opened(background), opened(observations)
    model = model if isinstance(model, AssimilationModel) else AssimilationModel.load(model, device=device)
    model.to(device)
    _check_background(model, background)
    codec = model.codec
    clip_latent = resolve_latent_bound(model, clip_latent)
    background = check_gridded(background, codec.variables, where="background", time=True)
    background = to_model_units(background, model_units(codec, codec.variables), "background")
    codec.check_grid(background)
    table = as_observations(observations, default_error_std=default_error_std)
    table = observations_to_model_units(table, model_units(codec, codec.variables))
    validated = ObservationTable.validate(table, codec.lat, codec.lon, ocean_mask=codec.mask.cpu().numpy(),
                                          channels=codec.channels, default_error_std=default_error_std)  # fmt: skip
    clean, report = validated.data, validated.report
    if "time" not in clean.coords:
        raise ObservationError("the observation table has no 'time' coordinate; assimilate works time by time")
    times = background["time"].values
    states, _ = codec.encode(background[codec.variables])
    states = states.to(device)
    if members < 1 or steps < 1:
        raise ConfigError(f"members and steps must be >= 1, got {members}, {steps}")
    engine = _analysis_engine(model, members=members, steps=steps, sampler=sampler, schedule=None,
                              denoiser=denoiser, clip_latent=clip_latent, device=device, progress=progress,
                              fields=len(times), runaway=RunawayCheck(on_runaway, runaway_factor, bound=max_normalized))
    fields, n_used, runaways = [], {}, {}
    with engine:
        for t, time in enumerate(times):
            observed = validated.at_time(time)
            at_time = observed.data
            n_used[str(time)] = int(at_time.sizes["obs"])
            operator = y = error_std = None
            if at_time.sizes["obs"]:
                operator = PointOperator.from_table(observed).to(device)
                y = torch.as_tensor(at_time["value"].values, dtype=torch.float64)
                error_std = torch.as_tensor(at_time["error_std"].values, dtype=torch.float64)
            guide = _analysis_guidance(model, operator, y, error_std, guidance=guidance,
                                       guidance_options=guidance_options, reward=reward, reward_scale=reward_scale,
                                       reward_mode=reward_mode)  # fmt: skip
            x, _, found = _draw_analysis(model, engine, guide, states[t], time_generator(seed, time, device),
                                         f"guidance {guidance!r}", where=f"time {time}")
            if found:
                runaways[str(time)] = [r.describe() for r in found]
            fields.append(x.detach().cpu())
    out = codec.decode(torch.stack(fields, dim=1), member=True, time=times)
    for name in codec.variables:
        out[name].attrs = generated_attrs(background[name].attrs)
    described = getattr(reward, "describe", lambda: None)() if reward is not None else None
    config = {"guidance": guidance, "guidance_options": guidance_options or {}, "reward_scale": reward_scale,
              "reward_mode": reward_mode, "reward": described, "sampler": sampler, "steps": steps,
              "members": members, "seed": seed, "clip_latent": clip_latent, "threads": threads}  # fmt: skip
    return record_provenance(out, background.attrs, "geodiff.assimilate", config, model_sha256=model.sha256,
                             seed=seed, observations={**report.as_dict(), "used_per_time": n_used},
                             runaway={**engine.runaway.describe(), "members": runaways})


# ---- cycling


@dataclass
class CycleResult:
    """``analysis`` (member, time, lat, lon) and ``background`` (time, lat, lon) of every cycle."""

    analysis: xr.Dataset
    background: xr.Dataset


def cycle(
    model: AssimilationModel,
    forecast_model: Any,
    first_background: xr.Dataset,
    observations: xr.Dataset | pd.DataFrame,
    times: Any,
    *,
    interval_s: float,
    members: int = 8,
    steps: int = 16,
    seed: int = 0,
    progress: bool = True,
    **options: Any,
) -> CycleResult:
    """Assimilation cycles at ``times`` (spaced ``interval_s`` seconds): analyse the background with
    :func:`assimilate` (``options`` passed on), forecast the analysis ensemble mean with
    ``forecast_model.forecast`` to the next time as its background. ``first_background`` has one time."""
    times = np.atleast_1d(np.asarray(times))
    if first_background.sizes.get("time") != 1:
        raise GridError("first_background must hold exactly one time")
    if not callable(getattr(forecast_model, "forecast", None)):
        raise ConfigError(f"forecast_model must have forecast(state, duration_s), got {type(forecast_model).__name__}")
    codec = model.codec
    background = first_background.assign_coords(time=times[:1])
    analyses, backgrounds = [], []
    for t, time in enumerate(tqdm(times, desc="cycle", disable=not progress)):
        analysis = assimilate(model, background, observations, members=members, steps=steps, seed=seed,
                              progress=False, **options)  # fmt: skip
        analyses.append(analysis)
        backgrounds.append(background)
        if t + 1 < times.size:
            mean_state, _ = codec.encode(analysis.mean("member", keep_attrs=True)[codec.variables])
            forecast = forecast_model.forecast(mean_state.to(torch.float64), float(interval_s))
            background = codec.decode(forecast.to(torch.float32), time=times[t + 1 : t + 2])
            for name in codec.variables:
                background[name].attrs = dict(first_background[name].attrs)
            background.attrs = dict(first_background.attrs)
    analysis = xr.concat(analyses, dim="time", combine_attrs="override")
    config = {"interval_s": float(interval_s), "cycles": int(times.size), "members": members, "steps": steps,
              "seed": seed, "forecast_model": type(forecast_model).__name__}  # fmt: skip
    line = f"geodiff.pipelines.assimilate.cycle({json.dumps(config)})"
    analysis.attrs = append_history(dict(analyses[0].attrs), line)
    return CycleResult(analysis=analysis, background=xr.concat(backgrounds, dim="time", combine_attrs="override"))
