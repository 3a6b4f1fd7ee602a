"""Noise schedules: which noise levels sigma a sampler visits.

Everything in geodiff uses the variance-exploding convention ``x_sigma = x0 + sigma * eps``. A model trained
with a variance-preserving (DDPM) process is used in that convention too: ``x_vp = x / sqrt(1 + sigma^2)`` and
``alphabar = 1 / (1 + sigma^2)`` (the :class:`~geodiff.diffusion.denoiser.Denoiser` does the scaling).

A schedule only discretises sigma; solvers live in :mod:`geodiff.diffusion.samplers`. All sigma maths is
float64.

Example
-------
>>> from geodiff.diffusion.schedules import EDMSchedule, VPSchedule
>>> [round(s, 3) for s in EDMSchedule().sigmas(4).tolist()]
[80.0, 9.723, 0.47, 0.002, 0.0]
>>> vp = VPSchedule()
>>> vp.sigmas(1000).shape, float(vp.sigmas(1000)[-2]) == float(vp.train_sigmas[0])
(torch.Size([1001]), True)
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from geodiff.config import Configurable
from geodiff.errors import ConfigError

__all__ = ["Schedule", "EDMSchedule", "VESchedule", "VPSchedule"]


def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")


class Schedule(Configurable, ABC):
    """Base class: ``sigmas(steps) -> float64 [steps + 1]``, descending from ``sigma_max``, last entry 0."""

    sigma_min: float
    sigma_max: float

    @abstractmethod
    def sigmas(self, steps: int) -> Tensor:
        """Noise levels visited by a ``steps``-step sampler, float64 ``[steps + 1]``, ending with 0."""


class EDMSchedule(Schedule):
    """Karras et al. (2022) eq. 5: ``sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho``."""

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0):
        if not 0 < sigma_min < sigma_max:
            raise ConfigError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self.sigma_min, self.sigma_max, self.rho = float(sigma_min), float(sigma_max), float(rho)

    def sigmas(self, steps: int) -> Tensor:
        _check_steps(steps)
        ramp = torch.linspace(0, 1, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1, dtype=torch.float64)
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        sigmas = (hi + ramp * (lo - hi)) ** self.rho
        return torch.cat([sigmas, sigmas.new_zeros(1)])


class VESchedule(Schedule):
    """Geometric noise levels (Song et al. 2021, variance exploding): ``sigma_i = smax (smin/smax)^(i/(N-1))``."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 100.0):
        if not 0 < sigma_min < sigma_max:
            raise ConfigError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def sigmas(self, steps: int) -> Tensor:
        _check_steps(steps)
        ramp = torch.linspace(0, 1, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1, dtype=torch.float64)
        sigmas = self.sigma_max * (self.sigma_min / self.sigma_max) ** ramp
        return torch.cat([sigmas, sigmas.new_zeros(1)])


class VPSchedule(Schedule):
    """Discrete DDPM schedule (Ho et al. 2020): linear betas over ``num_train_timesteps`` steps.

    ``alphas_cumprod[t] = prod_{s<=t} (1 - beta_s)`` and ``train_sigmas[t] = sqrt((1 - abar_t) / abar_t)``
    (ascending in ``t``). ``sigmas(steps)`` picks ``steps`` evenly spaced training timesteps from the last to the
    first, so ``sigmas(num_train_timesteps)`` visits every DDPM step. ``timestep(sigma)`` maps a noise level back to
    a (fractional) training timestep, the noise label of networks trained on discrete timesteps.
    """

    def __init__(self, beta_start: float = 1e-4, beta_end: float = 0.02, num_train_timesteps: int = 1000):
        if not (0 < beta_start <= beta_end < 1) or num_train_timesteps < 2:
            raise ConfigError(
                f"need 0 < beta_start <= beta_end < 1 and num_train_timesteps >= 2, got {beta_start}, {beta_end}, "
                f"{num_train_timesteps}"
            )
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        self.num_train_timesteps = int(num_train_timesteps)
        betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        self.train_sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod).sqrt()
        self.sigma_min = float(self.train_sigmas[0])
        self.sigma_max = float(self.train_sigmas[-1])

    def timesteps(self, steps: int) -> Tensor:
        """The ``steps`` training timesteps visited, int64, descending (last one is 0)."""
        _check_steps(steps)
        if steps > self.num_train_timesteps:
            raise ConfigError(f"steps={steps} exceeds num_train_timesteps={self.num_train_timesteps}")
        return torch.linspace(self.num_train_timesteps - 1, 0, steps, dtype=torch.float64).round().long()

    def sigmas(self, steps: int) -> Tensor:
        sigmas = self.train_sigmas[self.timesteps(steps)]
        return torch.cat([sigmas, sigmas.new_zeros(1)])

    def timestep(self, sigma: Tensor | float) -> Tensor:
        """Fractional training timestep of noise level ``sigma`` (float64, same shape), by linear interpolation of
        ``log sigma`` between the training levels; clamped to ``[0, T-1]``."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        log_levels = self.train_sigmas.to(sigma.device).log()
        log_sigma = sigma.clamp_min(self.sigma_min).log()
        upper = torch.searchsorted(log_levels, log_sigma.reshape(-1)).clamp(1, self.num_train_timesteps - 1)
        lo, hi = log_levels[upper - 1], log_levels[upper]
        frac = ((log_sigma.reshape(-1) - lo) / (hi - lo)).clamp(0, 1)
        return ((upper - 1).to(torch.float64) + frac).reshape(sigma.shape)

    @staticmethod
    def beta(sigma: float, sigma_next: float) -> float:
        """The DDPM ``beta_t = 1 - abar_t / abar_{t-1}`` of a transition from ``sigma`` to ``sigma_next``
        (``abar = 1 / (1 + sigma^2)``; any two levels, so skipped steps give the beta of the combined step).

        >>> VPSchedule.beta(3.0, 1.0)
        0.8
        """
        return 1.0 - (1.0 + sigma_next**2) / (1.0 + sigma**2)

    @staticmethod
    def posterior_beta(sigma: float, sigma_next: float) -> float:
        """The variance of DDPM's ancestral step (its posterior variance) ``beta_tilde = beta (1 - abar_{t-1}) /
        (1 - abar_t)`` of a transition from ``sigma`` to ``sigma_next`` (``1 - abar = sigma^2 / (1 + sigma^2)``)."""
        beta = VPSchedule.beta(sigma, sigma_next)
        return beta * (sigma_next**2 / (1.0 + sigma_next**2)) * ((1.0 + sigma**2) / sigma**2)


def log_sigma_label(sigma: Tensor) -> Tensor:
    """EDM noise label ``c_noise = ln(sigma) / 4`` (float64 in, float64 out)."""
    return sigma.log() / 4

