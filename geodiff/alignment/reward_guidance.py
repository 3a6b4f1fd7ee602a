r"""Reward-gradient guidance at sampling time, as a denoiser wrapper; two conventions (``mode``):

- ``"tilt"``: sample from the prior tilted by the reward, ``p(x) exp(lambda r(x))``. With
  ``x0_hat(x) = E[x0 | x_sigma]`` and the DPS-style approximation ``E[r(x0) | x] ~ r(x0_hat(x))``, the score of
  the tilted density gains ``lambda grad_x r(x0_hat(x))``; as a denoiser wrapper (Tweedie) this is

      ``x0_guided = x0_hat + lambda sigma^2 grad_x r(x0_hat(x))``

  (exact for a Gaussian prior and a quadratic reward up to the approximation; the step grows as ``sigma^2``, so
  at high noise a nonlinear reward's gradient can throw samples far off).
- ``"x0"``: one gradient-ascent step on the denoised estimate, ``x0_guided = x0_hat + lambda grad r(x0_hat)``
  (the gradient with respect to ``x0_hat``, not back-propagated through the denoiser: cheaper, bounded at every
  noise level).

Step-size convention: ``scale = lambda`` in units of 1 / reward (the rewards of :mod:`geodiff.alignment.rewards`
are O(1) means, so useful values depend on the reward; the benchmark measures them). ``reward`` maps the
sampled variable (for a latent model: the latent, decoded and de-normalised inside
the callable) to ``[B]``. It is a :class:`~geodiff.guidance.base.Guidance`, so it combines with observation
guidance through :func:`geodiff.guidance.base.combine` (the corrections add).

Example
-------
>>> import torch
>>> from geodiff.alignment.reward_guidance import RewardGuidance
>>> from geodiff.diffusion.gaussian import GaussianDenoiser
>>> prior = GaussianDenoiser(torch.zeros(1), torch.eye(1), shape=(1, 1, 1))
>>> guided = RewardGuidance(lambda x: -0.5 * (x.flatten(1) - 2).pow(2).sum(1), scale=1.0).wrap(prior)
>>> x = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
>>> guided(x, 1.0).item()  # x0_hat = 0, J = 1/2: 0 + 1 * 1 * (1/2) * 2
1.0
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from geodiff.errors import ConfigError
from geodiff.guidance.base import DenoiserFn, Guidance, sigma_column

__all__ = ["RewardGuidance"]


class RewardGuidance(Guidance):
    """Denoiser wrapper adding ``scale * sigma^2 * grad_x reward(x0_hat(x))`` (``mode="tilt"``) or
    ``scale * grad reward(x0_hat)`` (``mode="x0"``) (module docstring)."""

    name = "reward"

    def __init__(self, reward: Callable[[Tensor], Tensor], *, scale: float = 1.0, mode: str = "tilt",
                 description: Any = None):  # fmt: skip
        if mode not in ("tilt", "x0"):
            raise ConfigError(f"mode must be 'tilt' or 'x0', got {mode!r}")
        if not callable(reward):
            raise ConfigError(f"reward must be callable, got {type(reward).__name__}")
        if not scale >= 0:
            raise ConfigError(f"scale must be >= 0, got {scale}")
        self.reward = reward
        self.scale = float(scale)
        self.mode = mode
        self.y = torch.zeros(0)
        self.error_std = torch.zeros(0)
        self.operator = None
        self.config = {"scale": self.scale, "mode": mode, "reward": description}

    def gradient(self, denoiser: DenoiserFn, x: Tensor, sigma: float | Tensor, cond: Any = None):
        """``(x0_hat, grad_x reward(x0_hat(x)))`` at ``x [B, ...]``."""
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            x0 = denoiser(x_in, sigma, cond)
            value = self.reward(x0)
            (grad,) = torch.autograd.grad(value.sum(), x_in)
        return x0.detach(), grad

    def wrap(self, denoiser: DenoiserFn) -> DenoiserFn:
        def guided(x: Tensor, sigma: float | Tensor, cond: Any = None) -> Tensor:
            if self.mode == "x0":
                with torch.no_grad():
                    x0 = denoiser(x, sigma, cond)
                with torch.enable_grad():
                    point = x0.detach().requires_grad_(True)
                    (grad,) = torch.autograd.grad(self.reward(point).sum(), point)
                return x0 + self.scale * grad
            x0, grad = self.gradient(denoiser, x, sigma, cond)
            _, column = sigma_column(sigma, x)
            return x0 + self.scale * column**2 * grad

        return guided
