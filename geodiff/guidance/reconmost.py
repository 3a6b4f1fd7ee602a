r"""ReconMOST guidance (Song et al. 2025): shift the DDPM ancestral mean towards the observations.

ReconMOST reconstructs multi-level ocean temperature with a DDPM prior trained on CMIP6 and guides each reverse
step with sparse in-situ (EN4) observations, without back-propagating through the network: in the VP
coordinates ``z_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` the ancestral step draws
``z_{t-1} ~ N(mu_t + delta_t, v_t I)`` with

    ``delta_t = scale * beta_t * A^T (y - A x0_hat)``        (``scale = 4`` by default)

where ``x0_hat`` is the network's estimate at step ``t`` and ``A^T`` scatters the residuals at the observed points
back onto the grid (for a point operator: onto the interpolation corners, with the bilinear/linear weights).

**Derivation in geodiff's convention** ``x = x0 + sigma * eps``. The two coordinates are related by
``x = z / sqrt(abar)`` with ``abar = 1 / (1 + sigma^2)``. For a transition ``sigma -> sigma_next``,

    ``beta = 1 - abar(sigma) / abar(sigma_next) = 1 - (1 + sigma_next^2) / (1 + sigma^2)``,

which is exactly DDPM's ``beta_t`` for a :class:`~geodiff.diffusion.schedules.VPSchedule`'s sigmas (and the beta of
the combined step when steps are skipped): :meth:`geodiff.diffusion.schedules.VPSchedule.beta`. A shift ``delta``
of ``z_{t-1}`` is a shift ``delta / sqrt(abar(sigma_next)) = sqrt(1 + sigma_next^2) * delta`` of ``x_{t-1}``. The
sampler wrapper (:class:`ReconMOSTSampler`) therefore adds

    ``x_next += scale * beta * sqrt(1 + sigma_next^2) * A^T (y - A x0_hat)``

after each step of the wrapped sampler, with that step's ``x0_hat``. ``y`` and ``x0_hat`` are both in data
(normalised) units, as in ReconMOST: the residual is not rescaled by ``sqrt(abar)``. With
:class:`~geodiff.diffusion.samplers.DDPMSampler` and ``VPSchedule().sigmas(1000)`` this is ReconMOST's guided DDPM
step for step; with other samplers it is the same shift per transition.

Step-size conventions (``config``):

- ``scale``: ReconMOST's ``grad_scale`` (default 4).
- ``variance="beta"`` (default, as above) or ``"posterior"``: the shift uses the ancestral step's posterior
  variance ``beta_tilde = beta (1 - abar_next) / (1 - abar)`` instead of ``beta``
  (:meth:`~geodiff.diffusion.schedules.VPSchedule.posterior_beta`; the classifier-guidance convention of
  guided-diffusion, ``mean + variance * gradient * scale``).
- ``weighted=False`` (default, as ReconMOST): plain residuals; ``True`` weights each residual by
  ``mean(error_std^2) / error_std^2`` so that precise observations pull harder (same overall size).
- ``sigma_max``: guide only while ``sigma <= sigma_max`` (None: every step).

This is a nudging scheme, not a posterior sampler: the ensemble mean moves towards the observations but the
spread is not the posterior spread (see ``tests/guidance`` for the measured gap on a Gaussian problem).

Example
-------
>>> import torch
>>> from geodiff.diffusion.gaussian import GaussianDenoiser
>>> from geodiff.diffusion.samplers import DDPMSampler
>>> from geodiff.diffusion.schedules import VPSchedule
>>> from geodiff.guidance import ReconMOSTGuidance
>>> from geodiff.operators import GridPointOperator
>>> prior = GaussianDenoiser(torch.zeros(2), torch.eye(2), shape=(1, 1, 2))
>>> guidance = ReconMOSTGuidance(torch.tensor([1.5]), GridPointOperator(torch.tensor([0]), (1, 1, 2)), 0.1)
>>> g = torch.Generator().manual_seed(0)
>>> x = guidance.sample(DDPMSampler(), prior, torch.randn(200, 1, 1, 2, generator=g), VPSchedule().sigmas(250),
...                     generator=g)
>>> 1.0 < x[:, 0, 0, 0].mean().item() < 1.6  # pulled from the prior mean 0 towards 1.5
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch import Tensor

from geodiff.diffusion.schedules import VPSchedule
from geodiff.errors import ConfigError
from geodiff.guidance.base import GuidedSampler, ObservationGuidance

__all__ = ["ReconMOSTGuidance", "ReconMOSTSampler"]


class ReconMOSTGuidance(ObservationGuidance):
    """ReconMOST's mean shift ``x_next += scale * beta * sqrt(1 + sigma_next^2) * A^T (y - A x0_hat)``: builds a
    :class:`ReconMOSTSampler` (module docstring for the derivation and the options)."""

    name = "reconmost"

    def __init__(
        self,
        y: Any,
        operator: Callable[[Tensor], Tensor],
        error_std: Any,
        *,
        scale: float = 4.0,
        variance: str = "beta",
        weighted: bool = False,
        sigma_max: float | None = None,
    ):
        super().__init__(y, operator, error_std)
        if variance not in ("beta", "posterior"):
            raise ConfigError(f"variance must be 'beta' or 'posterior', got {variance!r}")
        if not scale >= 0:
            raise ConfigError(f"scale must be >= 0, got {scale}")
        self.scale = float(scale)
        self.variance_kind = variance
        self.weighted = bool(weighted)
        self.sigma_max = None if sigma_max is None else float(sigma_max)
        self.config = {
            "scale": self.scale, "variance": variance, "weighted": self.weighted, "sigma_max": self.sigma_max,
        }  # fmt: skip

    def step_size(self, sigma: float, sigma_next: float) -> float:
        """``scale * beta * sqrt(1 + sigma_next^2)`` (or with ``beta_tilde``) of the transition, float64."""
        beta = VPSchedule.posterior_beta if self.variance_kind == "posterior" else VPSchedule.beta
        return self.scale * beta(sigma, sigma_next) * math.sqrt(1.0 + sigma_next**2)

    def wrap_sampler(self, sampler: Any) -> ReconMOSTSampler:
        return ReconMOSTSampler(sampler, self)


class ReconMOSTSampler(GuidedSampler):
    """The wrapped sampler's step followed by ReconMOST's shift with the step's own ``x0_hat``
    (:meth:`ReconMOSTGuidance.step_size`; no shift while ``sigma > sigma_max``)."""

    def __init__(self, sampler: Any, guidance: ReconMOSTGuidance):
        super().__init__(sampler)
        self.guidance = guidance

    def step(self, denoiser, x, i, sigma, sigma_next, state, *, cond, generator):
        x_next, x0_hat = self.sampler.step(denoiser, x, i, sigma, sigma_next, state, cond=cond, generator=generator)
        guidance, observations = self.guidance, self.guidance.observations
        sigma, sigma_next = float(sigma), float(sigma_next)
        if guidance.sigma_max is not None and sigma > guidance.sigma_max:
            return x_next, x0_hat
        residual = observations.observed(x0_hat) - observations.operator(x0_hat)
        if guidance.weighted:
            variance = observations.variance(x0_hat)
            residual = residual * (variance.mean() / variance)
        shift = guidance.step_size(sigma, sigma_next) * observations.adjoint(residual, x0_hat)
        return x_next + shift, x0_hat
