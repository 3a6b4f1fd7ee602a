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
the callable) to ``[B]``. It is a :class:`~geodiff.guidance.base.Guidance` without observations, so it combines
with observation guidance through :func:`geodiff.guidance.combined.combine` (the corrections add).

Example
-------
>>> import torch
>>> from geodiff.guidance.reward import RewardGuidance
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
from geodiff.guidance.base import DenoiserFn, Guidance, GuidedDenoiser, sigma_column
from geodiff.guidance.linearization import Linearization

__all__ = ["RewardGuidance", "RewardDenoiser"]


class RewardGuidance(Guidance):
    """Reward guidance: builds a :class:`RewardDenoiser` adding ``scale * sigma^2 * grad_x reward(x0_hat(x))``
    (``mode="tilt"``) or ``scale * grad reward(x0_hat)`` (``mode="x0"``) (module docstring). ``description``
    (JSON) names the reward in provenance."""

    name = "reward"

    def __init__(self, reward: Callable[[Tensor], Tensor], *, scale: float = 1.0, mode: str = "tilt",
                 description: Any = None):  # fmt: skip
        super().__init__()
        if mode not in ("tilt", "x0"):
            raise ConfigError(f"mode must be 'tilt' or 'x0', got {mode!r}")
        if not callable(reward):
            raise ConfigError(f"reward must be callable, got {type(reward).__name__}")
        if not scale >= 0:
            raise ConfigError(f"scale must be >= 0, got {scale}")
        self.reward = reward
        self.scale = float(scale)
        self.mode = mode
        self.config = {"scale": self.scale, "mode": mode, "reward": description}

    def wrap(self, denoiser: DenoiserFn) -> RewardDenoiser:
        return RewardDenoiser(denoiser, self)


class RewardDenoiser(GuidedDenoiser):
    """The reward-guided denoiser ``(x [B, ...], sigma, cond=None) -> x0_guided`` (module docstring)."""

    def __init__(self, denoiser: DenoiserFn, guidance: RewardGuidance):
        super().__init__(denoiser)
        self.guidance = guidance

    def reward_gradient(self, x0: Tensor) -> Tensor:
        """``grad reward`` at ``x0 [B, ...]`` (the gradient of the sum over the batch: each member's own)."""
        total = Linearization(lambda point: self.guidance.reward(point).sum(), x0)
        return total.vjp(torch.ones_like(total.value), keep_graph=False)

    def __call__(self, x: Tensor, sigma: float | Tensor, cond: Any = None) -> Tensor:
        scale = self.guidance.scale
        if self.guidance.mode == "x0":
            with torch.no_grad():
                x0 = self.denoiser(x, sigma, cond)
            return x0 + scale * self.reward_gradient(x0)
        denoised = self.linearize(x, sigma, cond)
        grad = denoised.vjp(self.reward_gradient(denoised.value), keep_graph=False)  # grad_x reward(x0_hat(x))
        _, column = sigma_column(sigma, x)
        return denoised.value + scale * column**2 * grad
