r"""Rewards: scores of analysed states, higher is better, differentiable (registered plugin kind ``"reward"``).

A reward is built for one assimilation case (its held-out observations, its verifying data) and maps states in
**physical units** ``x [B, C, H, W]`` to ``[B]``. All are torch computations, so they can rank sampled analyses
(preference pairs, :mod:`geodiff.alignment.dpo`) and steer sampling by their gradient
(:mod:`geodiff.guidance.reward`).

=========================  ===================================================================================
name                       reward (``[B]``)
=========================  ===================================================================================
``observation_accuracy``   ``-mean_n ((A x - y)_n / error_std_n)^2``: misfit to (held-out) observations
``forecast_skill``         the same misfit of the forecast ``M(x)`` after ``lead_s`` seconds to later
                           observations, or ``-mean(((M(x) - target) / scale)^2)`` against a verifying field
``geostrophic_balance``    ``-mean((u - u_g)^2 + (v - v_g)^2) / wind_scale^2``, ``u_g = -(g/f0) dz/dy``,
                           ``v_g = (g/f0) dz/dx``: 0 for an exactly balanced state
``spectral_slope``         ``-(s - target)^2``, ``s`` the least-squares slope of log kinetic-energy spectrum vs
                           log wavenumber over a band
=========================  ===================================================================================

:class:`WeightedReward` sums several with weights (used to rank pairs) and reports each part.

Example
-------
>>> import torch
>>> from geodiff.alignment.rewards import ObservationAccuracy
>>> from geodiff.operators import GridPointOperator
>>> reward = ObservationAccuracy(GridPointOperator(torch.tensor([0, 3]), (1, 2, 2)), torch.tensor([1.0, 2.0]), 0.5)
>>> reward(torch.tensor([[[[1.0, 0.0], [0.0, 3.0]]]])).tolist()  # residuals 0 and 1 -> -(0 + 4) / 2
[-2.0]
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from geodiff.errors import ConfigError, GridError, ObservationError

__all__ = [
    "Reward",
    "ObservationAccuracy",
    "ForecastSkill",
    "GeostrophicBalance",
    "SpectralSlope",
    "WeightedReward",
    "spectral_derivatives",
    "kinetic_energy_spectrum",
]

GRAVITY = 9.80665


class Reward(ABC):
    """``reward(x [B, C, H, W] physical units) -> [B]``, higher is better; ``config`` is its JSON description."""

    name: ClassVar[str] = ""
    config: dict[str, Any]

    @abstractmethod
    def __call__(self, state: Tensor) -> Tensor: ...

    def describe(self) -> dict[str, Any]:
        """Name and settings, for provenance."""
        return {"name": self.name, **self.config}


def _check_state(state: Tensor, channels: int | None = None) -> None:
    if state.ndim != 4 or (channels is not None and state.shape[1] < channels):
        raise GridError(f"a reward takes states [B, C, H, W]{'' if channels is None else f' with C >= {channels}'}; "
                        f"got {list(state.shape)}")


def _misfit(predicted: Tensor, y: Tensor, error_std: Tensor) -> Tensor:
    y = y.to(predicted)
    error_std = error_std.to(predicted)
    return ((predicted - y) / error_std).pow(2).mean(-1)


def _observations(operator: Callable[[Tensor], Tensor], y: Any, error_std: Any) -> tuple[Tensor, Tensor]:
    y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
    error_std = torch.as_tensor(error_std, dtype=torch.float64).reshape(-1)
    if error_std.numel() == 1:
        error_std = error_std.expand(y.numel()).clone()
    n_obs = getattr(operator, "n_obs", y.numel())
    if y.numel() == 0 or y.numel() != n_obs or error_std.numel() != y.numel():
        raise ObservationError(f"y ({y.numel()}), the operator ({n_obs}) and error_std ({error_std.numel()}) "
                               "must hold the same number (>= 1) of observations")
    if not (torch.isfinite(y).all() and (error_std > 0).all()):
        raise ObservationError("y must be finite and error_std positive")
    return y, error_std


class ObservationAccuracy(Reward):
    """Misfit to observations ``y [N]`` of ``operator(x) -> [B, N]`` with errors ``error_std`` (table above)."""

    name = "observation_accuracy"

    def __init__(self, operator: Callable[[Tensor], Tensor], y: Any, error_std: Any):
        self.operator = operator
        self.y, self.error_std = _observations(operator, y, error_std)
        self.config = {"n_obs": int(self.y.numel())}

    def __call__(self, state: Tensor) -> Tensor:
        _check_state(state)
        return -_misfit(self.operator(state), self.y, self.error_std)


class ForecastSkill(Reward):
    """Skill of the forecast ``model.forecast(x, lead_s)``: against later observations ``(operator, y,
    error_std)`` or a verifying field ``target [C, H, W]`` with per-channel ``scale [C]`` (table above).

    >>> import torch
    >>> from geodiff.dynamics import BarotropicModel
    >>> model = BarotropicModel(nx=16, ny=16)
    >>> truth = model.random_state(1, generator=torch.Generator().manual_seed(0))
    >>> reward = ForecastSkill(model, model.dt, target=model.forecast(truth, model.dt)[0], scale=[10.0, 1.0, 1.0])
    >>> abs(reward(truth).item()) < 1e-20
    True
    """

    name = "forecast_skill"

    def __init__(
        self,
        model: Any,
        lead_s: float,
        *,
        operator: Callable[[Tensor], Tensor] | None = None,
        y: Any = None,
        error_std: Any = None,
        target: Tensor | None = None,
        scale: Any = None,
    ):
        if not callable(getattr(model, "forecast", None)):
            raise ConfigError(f"model must have a forecast(state, duration_s) method, got {type(model).__name__}")
        if (operator is None) == (target is None):
            raise ConfigError("give either observations (operator, y, error_std) or a verifying field target")
        self.model = model
        self.lead_s = float(lead_s)
        self.operator = operator
        if operator is not None:
            self.y, self.error_std = _observations(operator, y, error_std)
            self.target = self.scale = None
            self.config = {"lead_s": self.lead_s, "verification": "observations", "n_obs": int(self.y.numel())}
        else:
            self.target = torch.as_tensor(target)
            channels = self.target.shape[0]
            scale = torch.ones(channels) if scale is None else torch.as_tensor(scale, dtype=torch.float64)
            if self.target.ndim != 3 or scale.shape != (channels,) or not bool((scale > 0).all()):
                raise GridError(f"target must be [C, H, W] and scale [C] positive; got {list(self.target.shape)} "
                                f"and {list(scale.shape)}")
            self.scale = scale
            self.config = {"lead_s": self.lead_s, "verification": "field", "scale": scale.tolist()}

    def __call__(self, state: Tensor) -> Tensor:
        _check_state(state)
        forecast = self.model.forecast(state, self.lead_s)
        if self.operator is not None:
            return -_misfit(self.operator(forecast), self.y, self.error_std)
        scale = self.scale.to(forecast).reshape(1, -1, 1, 1)
        return -((forecast - self.target.to(forecast)) / scale).pow(2).mean(dim=(1, 2, 3))


def spectral_derivatives(field: Tensor, dx: float, dy: float) -> tuple[Tensor, Tensor]:
    """``(d/dx, d/dy)`` of a doubly periodic ``field [..., H, W]`` (x along W, y along H; metres) by FFT."""
    height, width = field.shape[-2:]
    kx = 2 * math.pi * torch.fft.rfftfreq(width, dx, dtype=torch.float64).to(field.device)
    ky = 2 * math.pi * torch.fft.fftfreq(height, dy, dtype=torch.float64).to(field.device)
    spectrum = torch.fft.rfft2(field)
    if width % 2 == 0:  # the Nyquist column has no defined derivative
        kx = kx.clone()
        kx[-1] = 0
    if height % 2 == 0:
        ky = ky.clone()
        ky[height // 2] = 0
    ddx = torch.fft.irfft2(spectrum * (1j * kx)[None, :].to(spectrum.dtype), s=(height, width))
    ddy = torch.fft.irfft2(spectrum * (1j * ky)[:, None].to(spectrum.dtype), s=(height, width))
    return ddx, ddy


class GeostrophicBalance(Reward):
    """Departure of the winds from geostrophy of the height (table above).

    ``channels = (z, u, v)`` indices; ``f0`` (1/s), ``dx``, ``dy`` (m); ``periodic`` uses spectral derivatives,
    else centred differences (one-sided at the edges, ``torch.gradient``); ``wind_scale`` (m/s) normalises.

    >>> import torch
    >>> from geodiff.dynamics import BarotropicModel
    >>> model = BarotropicModel(nx=16, ny=16)
    >>> reward = GeostrophicBalance(f0=model.f0, dx=model.dx, dy=model.dy)
    >>> state = model.random_state(1, generator=torch.Generator().manual_seed(0))
    >>> abs(reward(state).item()) < 1e-12
    True
    """

    name = "geostrophic_balance"

    def __init__(
        self,
        *,
        f0: float,
        dx: float,
        dy: float,
        channels: Sequence[int] = (0, 1, 2),
        periodic: bool = True,
        wind_scale: float = 10.0,
    ):
        if f0 == 0 or not (dx > 0 and dy > 0 and wind_scale > 0) or len(channels) != 3:
            raise ConfigError("need f0 != 0, dx, dy, wind_scale > 0 and three channels (z, u, v)")
        self.f0, self.dx, self.dy = float(f0), float(dx), float(dy)
        self.channels = tuple(int(c) for c in channels)
        self.periodic = bool(periodic)
        self.wind_scale = float(wind_scale)
        self.config = {"f0": self.f0, "dx": self.dx, "dy": self.dy, "channels": list(self.channels),
                       "periodic": self.periodic, "wind_scale": self.wind_scale}  # fmt: skip

    def geostrophic_wind(self, height: Tensor) -> tuple[Tensor, Tensor]:
        """``(u_g, v_g)`` of geopotential height ``[..., H, W]`` (m)."""
        if self.periodic:
            dzdx, dzdy = spectral_derivatives(height, self.dx, self.dy)
        else:
            dzdy, dzdx = torch.gradient(height, spacing=(self.dy, self.dx), dim=(-2, -1))
        factor = GRAVITY / self.f0
        return -factor * dzdy, factor * dzdx

    def __call__(self, state: Tensor) -> Tensor:
        _check_state(state, max(self.channels) + 1)
        z, u, v = (state[:, c] for c in self.channels)
        u_g, v_g = self.geostrophic_wind(z)
        return -((u - u_g).pow(2) + (v - v_g).pow(2)).mean(dim=(-2, -1)) / self.wind_scale**2


def kinetic_energy_spectrum(u: Tensor, v: Tensor, length_x: float) -> tuple[Tensor, Tensor]:
    """Isotropic kinetic-energy spectrum of doubly periodic winds ``[B, H, W]``: ``(k [K] in 1/m, E [B, K])``,
    shell ``k_n = 2 pi n / length_x`` summing ``|u_hat|^2 + |v_hat|^2`` over integer shells ``n = 1..min(H,W)/2-1``."""
    height, width = u.shape[-2:]
    energy = (torch.fft.fft2(u).abs().pow(2) + torch.fft.fft2(v).abs().pow(2)) / (2 * (height * width) ** 2)
    index_y = torch.fft.fftfreq(height, 1.0 / height, dtype=torch.float64).to(u.device)
    index_x = torch.fft.fftfreq(width, 1.0 / width, dtype=torch.float64).to(u.device)
    shell = torch.sqrt(index_y[:, None] ** 2 + index_x[None, :] ** 2).round().long()
    n_shells = min(height, width) // 2
    spectrum = torch.zeros(u.shape[0], n_shells, dtype=energy.dtype, device=u.device)
    inside = shell < n_shells
    spectrum = spectrum.index_add(1, shell[inside], energy[:, inside])
    shells = torch.arange(1, n_shells, dtype=torch.float64, device=u.device)
    return 2 * math.pi * shells / length_x, spectrum[:, 1:]


class SpectralSlope(Reward):
    """Slope of the kinetic-energy spectrum against a target (table above).

    ``channels = (u, v)``; shells ``band = (n_min, n_max)`` (inclusive, integer wavenumbers ``2 pi n / length``);
    ``target`` the slope of the truth (e.g. of training data, :meth:`slope`).
    """

    name = "spectral_slope"

    def __init__(self, *, target: float, length_x: float, band: Sequence[int] = (3, 10),
                 channels: Sequence[int] = (1, 2)):  # fmt: skip
        if len(band) != 2 or not 1 <= band[0] < band[1] or len(channels) != 2:
            raise ConfigError(f"band must be (n_min, n_max) with 1 <= n_min < n_max, got {band}; channels (u, v)")
        self.target = float(target)
        self.length_x = float(length_x)
        self.band = (int(band[0]), int(band[1]))
        self.channels = tuple(int(c) for c in channels)
        self.config = {"target": self.target, "length_x": self.length_x, "band": list(self.band),
                       "channels": list(self.channels)}  # fmt: skip

    def slope(self, state: Tensor) -> Tensor:
        """Least-squares slope ``[B]`` of ``log E`` against ``log k`` over the band."""
        _check_state(state, max(self.channels) + 1)
        u, v = (state[:, c] for c in self.channels)
        k, spectrum = kinetic_energy_spectrum(u, v, self.length_x)
        n_max = k.numel()
        if self.band[1] > n_max:
            raise GridError(f"band {self.band} exceeds the {n_max} resolved shells of this grid")
        chosen = slice(self.band[0] - 1, self.band[1])
        log_k = k[chosen].log().to(spectrum.dtype)
        log_e = spectrum[:, chosen].clamp_min(torch.finfo(spectrum.dtype).tiny).log()
        centred_k = log_k - log_k.mean()
        return ((log_e - log_e.mean(-1, keepdim=True)) * centred_k).sum(-1) / centred_k.pow(2).sum()

    def __call__(self, state: Tensor) -> Tensor:
        return -(self.slope(state) - self.target).pow(2)


class WeightedReward(Reward):
    """``sum_k weight_k reward_k(x)``; :meth:`parts` gives each reward's value.

    >>> import torch
    >>> from geodiff.operators import GridPointOperator
    >>> a = ObservationAccuracy(GridPointOperator(torch.tensor([0]), (1, 1, 2)), torch.tensor([1.0]), 1.0)
    >>> b = ObservationAccuracy(GridPointOperator(torch.tensor([1]), (1, 1, 2)), torch.tensor([1.0]), 1.0)
    >>> WeightedReward({"a": (a, 1.0), "b": (b, 0.5)})(torch.zeros(1, 1, 1, 2)).tolist()
    [-1.5]
    """

    name = "weighted"

    def __init__(self, rewards: Mapping[str, tuple[Reward, float]]):
        if not rewards:
            raise ConfigError("WeightedReward needs at least one (reward, weight)")
        self.rewards = {name: (reward, float(weight)) for name, (reward, weight) in rewards.items()}
        self.config = {"parts": {name: {"weight": w, **r.describe()} for name, (r, w) in self.rewards.items()}}

    def parts(self, state: Tensor) -> dict[str, Tensor]:
        """``{name: reward [B]}`` (unweighted)."""
        return {name: reward(state) for name, (reward, _) in self.rewards.items()}

    def __call__(self, state: Tensor) -> Tensor:
        return sum(weight * reward(state) for reward, weight in self.rewards.values())
