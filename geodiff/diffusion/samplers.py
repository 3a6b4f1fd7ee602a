"""Samplers: solvers of the reverse diffusion, all with one signature.

``sampler(denoiser, noise, sigmas, *, cond=None, generator=None, callback=None, hook=None) -> x0``

- ``denoiser``: any callable ``(x [B,C,H,W], sigma: float, cond) -> x0_hat [B,C,H,W]`` (a
  :class:`~geodiff.diffusion.denoiser.Denoiser`, or a guidance wrapper around one);
- ``noise``: standard normal ``[B,C,H,W]``; sampling starts at ``x = noise * sigmas[0]``;
- ``sigmas``: float64 ``[N+1]`` noise levels, descending, ending with 0 (from a schedule);
- ``callback(StepInfo)``: called after every step (progress bars, diagnostics, plots);
- ``hook(x_next, *, x, x0_hat, sigma, sigma_next, generator) -> x_next``: a change of the transition applied
  after every step.

Convention ``x = x0 + sigma eps``. Each step is a method ``step(denoiser, x, i, sigma, sigma_next, state, ...)``
that sampler wrappers override around the wrapped sampler's own step (guidance that changes the transition:
:class:`geodiff.guidance.base.GuidedSampler`); ``state`` carries multistep history.
Sigma maths is done on Python floats (float64) taken from ``sigmas`` once, so the loop never syncs with the
device, and each update is written as one or two fused element-wise operations (``torch.lerp``, in-place
``add_``) on the field, so that the loop costs well under 1 % of a sampling run with a real network
(``benchmarks/performance.py``). Step formulas, with ``r = sigma_next / sigma`` and ``D = x0_hat``:

- DDPM ancestral: ``x' = D + r^2 (x - D) + sigma_next sqrt(1 - r^2) z``. With a :class:`VPSchedule`'s sigmas this is
  exactly Ho et al.'s ancestral step with the posterior variance beta-tilde, written in VE coordinates.
- DDIM (Song et al. 2021): ``x' = D + sqrt(sigma_next^2 - s^2) (x - D) / sigma + s z``,
  ``s = eta sigma_next sqrt(1 - r^2)`` (eta=0 deterministic, eta=1 equals DDPM).
- Euler (EDM Alg. 1 first order): ``x' = x + (sigma_next - sigma) (x - D) / sigma``.
- Heun (EDM Alg. 2, with churn): Euler step then trapezoidal correction, none on the last step.
- DPM-Solver++(2M) (Lu et al. 2022) in ``t = -log sigma``; first and last steps first order.

Example
-------
>>> import torch
>>> from geodiff.diffusion.gaussian import GaussianDenoiser
>>> from geodiff.diffusion.samplers import HeunSampler
>>> from geodiff.diffusion.schedules import EDMSchedule
>>> oracle = GaussianDenoiser(torch.full((4,), 2.0), torch.eye(4) * 0.01, shape=(1, 2, 2))
>>> g = torch.Generator().manual_seed(0)
>>> x = HeunSampler()(oracle, torch.randn(8, 1, 2, 2, generator=g), EDMSchedule().sigmas(18), generator=g)
>>> round(x.mean().item(), 1)
2.0
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
from torch import Tensor

from geodiff.config import Configurable
from geodiff.errors import ConfigError, GridError

__all__ = [
    "StepInfo",
    "Sampler",
    "DDPMSampler",
    "DDIMSampler",
    "EulerSampler",
    "HeunSampler",
    "DPMSolverPP2MSampler",
]

DenoiserFn = Callable[..., Tensor]


@dataclass
class StepInfo:
    """What a callback sees after step ``step``: the transition ``sigma -> sigma_next`` and the fields
    ``x`` (before), ``x0_hat`` (the denoiser's estimate used) and ``x_next`` (after), all ``[B,C,H,W]``."""

    step: int
    steps: int
    sigma: float
    sigma_next: float
    x: Tensor
    x0_hat: Tensor
    x_next: Tensor


class Hook(Protocol):
    def __call__(
        self, x_next: Tensor, *, x: Tensor, x0_hat: Tensor, sigma: float, sigma_next: float, generator: Any
    ) -> Tensor: ...


def _noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _check_sigmas(sigmas: Tensor) -> list[float]:
    sigmas = torch.as_tensor(sigmas)
    if sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ConfigError(f"sigmas must be a 1-D tensor of at least 2 noise levels, got shape {tuple(sigmas.shape)}")
    values = sigmas.to(torch.float64).tolist()
    if any(b >= a for a, b in zip(values[:-1], values[1:])) or values[-1] < 0:
        raise ConfigError("sigmas must be strictly decreasing and non-negative (a schedule's sigmas(steps))")
    return values


class Sampler(Configurable, ABC):
    """Base class: the sampling loop shared by every solver; subclasses define :meth:`step`."""

    #: network evaluations per step (Heun: 2 except the last)
    evaluations_per_step: int = 1

    def nfe(self, steps: int) -> int:
        """Network evaluations of a ``steps``-step run."""
        return steps * self.evaluations_per_step

    @abstractmethod
    def step(
        self,
        denoiser: DenoiserFn,
        x: Tensor,
        i: int,
        sigma: float,
        sigma_next: float,
        state: dict[str, Any],
        *,
        cond: dict[str, Tensor] | None,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        """One transition ``sigma -> sigma_next`` of ``x [B,C,H,W]``; returns ``(x_next, x0_hat)``."""

    @torch.no_grad()
    def __call__(
        self,
        denoiser: DenoiserFn,
        noise: Tensor,
        sigmas: Tensor,
        *,
        cond: dict[str, Tensor] | None = None,
        generator: torch.Generator | None = None,
        callback: Callable[[StepInfo], None] | None = None,
        hook: Hook | None = None,
    ) -> Tensor:
        """Sample from ``noise [B,C,H,W]`` (standard normal) along ``sigmas`` (float64 ``[N+1]``) -> ``[B,C,H,W]``."""
        if noise.ndim < 2:
            raise GridError(f"noise must be [batch, channel, ...], got shape {tuple(noise.shape)}")
        levels = _check_sigmas(sigmas)
        steps = len(levels) - 1
        x = noise * levels[0]
        state: dict[str, Any] = {"steps": steps}
        for i in range(steps):
            sigma, sigma_next = levels[i], levels[i + 1]
            x_next, x0_hat = self.step(denoiser, x, i, sigma, sigma_next, state, cond=cond, generator=generator)
            if hook is not None:
                x_next = hook(x_next, x=x, x0_hat=x0_hat, sigma=sigma, sigma_next=sigma_next, generator=generator)
            if callback is not None:
                callback(StepInfo(i, steps, sigma, sigma_next, x, x0_hat, x_next))
            x = x_next
        return x


class DDPMSampler(Sampler):
    """Ancestral sampling (Ho et al. 2020) in VE coordinates; exact DDPM with :class:`VPSchedule` sigmas."""

    def step(self, denoiser, x, i, sigma, sigma_next, state, *, cond, generator):
        x0 = denoiser(x, sigma, cond)
        if sigma_next == 0:
            return x0, x0
        ratio2 = (sigma_next / sigma) ** 2
        x_next = torch.lerp(x0, x, ratio2).add_(_noise_like(x, generator), alpha=sigma_next * math.sqrt(1 - ratio2))
        return x_next, x0


class DDIMSampler(Sampler):
    """DDIM (Song et al. 2021) with stochasticity ``eta`` (0: deterministic, 1: DDPM ancestral)."""

    def __init__(self, eta: float = 0.0):
        if eta < 0:
            raise ConfigError(f"eta must be >= 0, got {eta}")
        self.eta = float(eta)

    def step(self, denoiser, x, i, sigma, sigma_next, state, *, cond, generator):
        x0 = denoiser(x, sigma, cond)
        if sigma_next == 0:
            return x0, x0
        s = self.eta * sigma_next * math.sqrt(max(0.0, 1 - (sigma_next / sigma) ** 2))
        x_next = torch.lerp(x0, x, math.sqrt(max(0.0, sigma_next**2 - s**2)) / sigma)
        if s > 0:
            x_next.add_(_noise_like(x, generator), alpha=s)
        return x_next, x0


class EulerSampler(Sampler):
    """First-order probability-flow ODE solver (EDM Alg. 1 without the correction)."""

    def step(self, denoiser, x, i, sigma, sigma_next, state, *, cond, generator):
        x0 = denoiser(x, sigma, cond)
        return torch.lerp(x, x0, (sigma - sigma_next) / sigma), x0  # x + (sigma_next - sigma) (x - x0) / sigma


class HeunSampler(Sampler):
    """EDM's second-order sampler (Karras et al. 2022, Alg. 2) with optional churn.

    ``churn`` is EDM's S_churn (0 = deterministic); noise is added only while ``s_tmin <= sigma <= s_tmax``,
    scaled by ``s_noise``.
    """

    evaluations_per_step = 2

    def __init__(self, churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0):
        self.churn, self.s_tmin, self.s_tmax, self.s_noise = float(churn), float(s_tmin), float(s_tmax), float(s_noise)

    def nfe(self, steps: int) -> int:
        return 2 * steps - 1

    def step(self, denoiser, x, i, sigma, sigma_next, state, *, cond, generator):
        gamma = 0.0
        if self.churn > 0 and self.s_tmin <= sigma <= self.s_tmax:
            gamma = min(self.churn / state["steps"], math.sqrt(2) - 1)
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            x = torch.add(x, _noise_like(x, generator), alpha=math.sqrt(sigma_hat**2 - sigma**2) * self.s_noise)
        x0 = denoiser(x, sigma_hat, cond)
        # Euler: x_euler = x + h d, h = sigma_next - sigma_hat, d = (x - x0) / sigma_hat
        x_euler = torch.lerp(x, x0, (sigma_hat - sigma_next) / sigma_hat)
        if sigma_next == 0:
            return x_euler, x0
        x0_next = denoiser(x_euler, sigma_next, cond)
        # trapezoid: x + h (d + d_next) / 2 = (x + x_euler) / 2 + h / (2 sigma_next) (x_euler - x0_next)
        x_next = torch.lerp(x, x_euler, 0.5).add_(x_euler - x0_next, alpha=(sigma_next - sigma_hat) / (2 * sigma_next))
        return x_next, x0


class DPMSolverPP2MSampler(Sampler):
    """DPM-Solver++(2M) (Lu et al. 2022, multistep data prediction) in ``t = -log sigma``."""

    def step(self, denoiser, x, i, sigma, sigma_next, state, *, cond, generator):
        x0 = denoiser(x, sigma, cond)
        previous = state.get("previous")  # (x0_hat, sigma) of the step before
        state["previous"] = (x0, sigma)
        if sigma_next == 0:
            return x0, x0
        h = math.log(sigma) - math.log(sigma_next)
        if previous is None:
            estimate = x0
        else:
            r = (math.log(previous[1]) - math.log(sigma)) / h
            estimate = torch.lerp(x0, previous[0], -1 / (2 * r))  # (1 + 1/(2r)) x0 - 1/(2r) x0_previous
        return torch.lerp(x, estimate, -math.expm1(-h)), x0  # (sigma_next / sigma) x + (1 - e^-h) estimate
