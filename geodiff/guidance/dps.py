r"""Diffusion Posterior Sampling (DPS, Chung et al. 2023): the likelihood gradient through the denoiser.

DPS approximates ``p(y | x_sigma)`` by ``N(y; A x0_hat(x_sigma), R)``, ``R = diag(error_std^2)``: the denoiser's
estimate is treated as exact. The guidance is the gradient, **through the network**, with respect to ``x`` of

    ``L(x) = ||(y - A x0_hat(x)) / error_std||^2 / 2``        (per batch member; autograd, one backward pass)

Two step-size conventions (``convention=``):

- ``"score"`` (default): a denoiser wrapper. Tweedie's formula for the guided posterior,
  ``E[x0 | x, y] = x0_hat + sigma^2 grad_x log p(y | x)``, with DPS's likelihood gives

      ``x0_guided = x0_hat - scale * sigma^2 * grad_x L``

  independent of the sampler and of the number of steps (``scale = 1`` is the plain Bayes rule under DPS's
  approximation). Because DPS ignores the uncertainty of ``x0_hat``, the step is too large at high noise when
  ``error_std`` is small compared with the prior spread (overshoot; MMPS, :mod:`geodiff.guidance.mmps`, fixes
  exactly this): with ``limit_overshoot=True`` (default) a step that would leave the estimate worse than no step
  is cut to the best step along it (:mod:`geodiff.guidance.overshoot`); ``False`` keeps DPS's raw step, which
  runs away with small observation errors (15 degC held-out RMSE against climatology's 2.7 on a real grid).
- ``"chung"``: Chung et al.'s Algorithm 1: after each (DDPM) step, in VP coordinates,
  ``z_next -= zeta * grad_z ||y - A x0_hat||`` -- the gradient of the residual **norm** (not squared), i.e.
  normalised by the residual norm, with ``zeta = scale`` (Chung et al. use 0.1-1). Here the residual is whitened
  relative to the mean error, ``(y - A x0_hat) * rms(error_std) / error_std`` (equal errors: exactly Chung's
  norm). In geodiff's coordinates ``x = z / sqrt(abar)`` with ``abar = 1 / (1 + sigma^2)``, so
  ``grad_z = sqrt(1 + sigma^2) grad_x`` and a shift of ``z_next`` is ``sqrt(1 + sigma_next^2)`` times a shift of
  ``x_next``:

      ``x_next -= scale * sqrt(1 + sigma^2) * sqrt(1 + sigma_next^2) * grad_x ||r_w(x)||``

  This is a denoiser wrapper (it computes the gradient while evaluating ``x0_hat``, which it leaves unchanged)
  plus a transition hook (it applies the step); :meth:`Guidance.sample` uses both. The total pull grows with the
  number of steps, as in the original.

Both are approximate posterior samplers (see ``tests/guidance`` for the measured gap to the exact posterior).

Example
-------
>>> import torch
>>> from geodiff.diffusion.gaussian import GaussianDenoiser
>>> from geodiff.diffusion.samplers import DDPMSampler
>>> from geodiff.diffusion.schedules import EDMSchedule
>>> from geodiff.guidance import DPSGuidance
>>> from geodiff.operators import GridPointOperator
>>> prior = GaussianDenoiser(torch.zeros(2), torch.eye(2), shape=(1, 1, 2))
>>> guidance = DPSGuidance(torch.tensor([1.0]), GridPointOperator(torch.tensor([0]), (1, 1, 2)), 1.0)
>>> g = torch.Generator().manual_seed(0)
>>> x = guidance.sample(DDPMSampler(), prior, torch.randn(500, 1, 1, 2, generator=g), EDMSchedule().sigmas(64),
...                     generator=g)
>>> 0.3 < x[:, 0, 0, 0].mean().item() < 0.7  # exact posterior mean 0.5
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from geodiff.errors import ConfigError
from geodiff.guidance.base import DenoiserFn, Guidance, apply_adjoint, sigma_column
from geodiff.guidance.overshoot import limited_step

__all__ = ["DPSGuidance"]

_CONVENTIONS = ("score", "chung")


class DPSGuidance(Guidance):
    """DPS guidance; ``convention="score"`` (denoiser wrapper) or ``"chung"`` (wrapper + hook), ``scale`` the
    step factor (module docstring)."""

    name = "dps"

    def __init__(
        self,
        y: Any,
        operator: Callable[[Tensor], Tensor],
        error_std: Any,
        *,
        convention: str = "score",
        scale: float = 1.0,
        limit_overshoot: bool = True,
    ):
        super().__init__(y, operator, error_std)
        if convention not in _CONVENTIONS:
            raise ConfigError(f"convention must be one of {_CONVENTIONS}, got {convention!r}")
        if not scale >= 0:
            raise ConfigError(f"scale must be >= 0, got {scale}")
        self.convention = convention
        self.scale = float(scale)
        self.limit_overshoot = bool(limit_overshoot)
        self.config = {"convention": convention, "scale": self.scale, "limit_overshoot": self.limit_overshoot}
        self._wrapped: _DPSDenoiser | None = None

    def gradient(self, denoiser: DenoiserFn, x: Tensor, sigma: float | Tensor, cond: Any = None):
        """``(x0_hat, grad_x loss)`` at ``x [B, C, H, W]``: the loss is ``L`` (score) or ``||r_w||`` (chung).

        Lean: the graph is built for the denoiser only; ``dL / d x0_hat = -A^T w`` is formed in closed form
        (``w = r / error_std^2`` for ``L``, ``w = c^2 r / (error_std^2 ||r_w||)`` for the norm, ``c = rms(error_std)``)
        and pulled back with one vector-Jacobian product.
        """
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            x0 = denoiser(x_in, sigma, cond)
        x0_value = x0.detach()
        residual = self.observed(x) - self.operator(x0_value)
        variance = self.variance(x)
        if self.convention == "score":
            weights = residual / variance
        else:
            scale2 = variance.mean()
            whitened = residual * (scale2 / variance).sqrt()
            norm = (whitened.pow(2).sum(dim=1, keepdim=True) + torch.finfo(x.dtype).tiny).sqrt()
            weights = residual * (scale2 / variance) / norm
        pullback = apply_adjoint(self.operator, weights, x).neg_()
        (grad,) = torch.autograd.grad(x0, x_in, pullback)
        return x0_value, grad

    def wrap(self, denoiser: DenoiserFn) -> DenoiserFn:
        self._wrapped = _DPSDenoiser(self, denoiser)
        return self._wrapped

    def sampling_hook(self):
        return self.hook if self.convention == "chung" else None

    def hook(self, x_next: Tensor, *, x: Tensor, x0_hat: Tensor, sigma: float, sigma_next: float, generator: Any):
        if self.convention != "chung":
            return x_next
        if self._wrapped is None:
            raise ConfigError("DPS with convention='chung' needs its denoiser wrapper: use guidance.sample(...) or "
                              "pass guidance.wrap(denoiser) to the sampler together with hook=guidance.hook")
        grad = self._wrapped.cached(x, sigma)
        factor = self.scale * math.sqrt(1.0 + float(sigma) ** 2) * math.sqrt(1.0 + float(sigma_next) ** 2)
        return x_next - factor * grad


class _DPSDenoiser:
    """The DPS-guided denoiser ``(x, sigma, cond=None) -> x0`` (see :class:`DPSGuidance`)."""

    def __init__(self, guidance: DPSGuidance, denoiser: DenoiserFn):
        self.guidance = guidance
        self.denoiser = denoiser
        self._recent: list[tuple[float, Tensor, Any, Tensor]] = []  # (sigma, x, cond, grad) of the last two calls

    def __call__(self, x: Tensor, sigma: float | Tensor, cond: Any = None) -> Tensor:
        x0, grad = self.guidance.gradient(self.denoiser, x, sigma, cond)
        if self.guidance.convention == "score":
            _, column = sigma_column(sigma, x)
            if not self.guidance.limit_overshoot:
                return torch.addcmul(x0, column**2, grad, value=-self.guidance.scale)
            guidance = self.guidance
            residual = guidance.observed(x) - guidance.operator(x0)
            variance = guidance.variance(x)
            return limited_step(x0, -(column**2) * grad, residual, residual / variance, guidance.operator, variance,
                                guidance.scale)
        self._recent = [*self._recent[-1:], (sigma, x, cond, grad)]
        return x0

    def cached(self, x: Tensor, sigma: float) -> Tensor:
        """The gradient at ``(x, sigma)``: from the sampler's own evaluation when it was the same, else computed."""
        for seen_sigma, seen_x, cond, grad in reversed(self._recent):
            if seen_x is x and isinstance(seen_sigma, float) and seen_sigma == float(sigma):
                return grad
        cond = self._recent[-1][2] if self._recent else None
        return self.guidance.gradient(self.denoiser, x, sigma, cond)[1]
