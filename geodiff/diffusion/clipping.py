"""Clipping the denoised estimate to the range the model was trained on (``clip_denoised``).

A guided sampler can push one member off the data manifold where the network was never trained: there its
Jacobian is meaningless, guidance corrections grow, and the member runs away to finite but absurd values (hundreds
of degrees). Clipping ``x0_hat`` to ``[-bound, bound]`` (in normalised units) at every denoiser call keeps each
step's target inside the training range, as DDPM samplers do with ``clip_denoised`` (diffusers' ``clip_sample``).
With a bound above every training value (geodiff uses 10 standard deviations), a well-behaved member is never
clipped, so its result is unchanged; a member that does reach the bound has diverged, and since samplers end on
``x0_hat`` it ends exactly at the bound, where :func:`geodiff.reconstruct` reports it.

Example
-------
>>> import torch
>>> from geodiff.diffusion.clipping import ClipDenoised
>>> from geodiff.diffusion.samplers import EulerSampler
>>> from geodiff.diffusion.schedules import EDMSchedule
>>> wild = lambda x, sigma, cond=None: 100 * torch.ones_like(x)  # a denoiser that runs away
>>> ClipDenoised(EulerSampler(), 10.0)(wild, torch.zeros(1, 1, 2, 2), EDMSchedule().sigmas(4)).max().item()
10.0
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from geodiff.errors import ConfigError

__all__ = ["ClipDenoised"]


class ClipDenoised:
    """A sampler whose denoiser output is clamped to ``[-bound, bound]``; same call signature as the wrapped
    sampler (``sampler(denoiser, noise [B,C,H,W], sigmas, **kwargs) -> [B,C,H,W]``) and the same ``nfe``."""

    def __init__(self, sampler: Any, bound: float):
        if not bound > 0:
            raise ConfigError(f"clip bound must be > 0 (normalised units), got {bound!r}")
        self.sampler = sampler
        self.bound = float(bound)

    def nfe(self, steps: int) -> int:
        return self.sampler.nfe(steps)

    def clipped(self, denoiser: Any) -> Any:
        """``denoiser`` with its output clamped to ``[-bound, bound]``."""
        bound = self.bound

        def clipped(x: Tensor, sigma: Any, cond: Any = None) -> Tensor:
            return denoiser(x, sigma, cond).clamp(-bound, bound)

        return clipped

    def __call__(self, denoiser: Any, noise: Tensor, sigmas: Tensor, **kwargs: Any) -> Tensor:
        return self.sampler(self.clipped(denoiser), noise, sigmas, **kwargs)

    def step(self, denoiser: Any, x: Tensor, i: int, sigma: float, sigma_next: float, state: dict[str, Any],
             **kwargs: Any) -> tuple[Tensor, Tensor]:
        """One step of the wrapped sampler with the clamped denoiser, so that samplers overriding ``step``
        (guidance's sampler wrappers) can wrap a clipped sampler."""
        return self.sampler.step(self.clipped(denoiser), x, i, sigma, sigma_next, state, **kwargs)
