r"""Starting the sampler at the denoised mean, for priors whose mean is far from zero in ``sigma_max`` units.

Samplers start at ``x_T = sigma_max eps``: the noisy marginal ``p(x_T) = N(m, S + sigma_max^2 I)`` taken as
``N(0, sigma_max^2 I)``, which holds when the data's mean ``m`` is small against ``sigma_max``. The norm that counts
is the whole field's: a field of ``P`` cells offset by ``a`` per cell has ``|m| = a sqrt(P)``, so 2000 cells one
(normalised) unit from zero put ``m`` 0.56 ``sigma_max`` (= 80) away along its own direction. For a Gaussian prior
(or posterior) of eigenvalues ``lam_k``, the probability-flow ODE contracts ``x_T - m`` by about
``sqrt(lam_k) / sigma_max`` along eigenvector ``k``, so the start's offset ``-m_k`` survives as a bias of
``m_k / sigma_max`` posterior standard deviations in that direction, whatever the step count. Guided by
observations, ``m`` is the posterior mean, so this bias remains even for a prior of zero-mean anomalies when the
observations say the field is far from its climatology. On the real grids of ``benchmarks/gaussian_check.py``
(per-channel normalisation, ``|m|`` 37-42) the ensemble mean of the exact MMPS solve lay 0.04-0.12 OI posterior
sds from OI's mean with 24 steps as with 96, and 0.000 with this start (``benchmarks/RESULTS.md``).

:class:`CentredStart` wraps a sampler and starts it at ``x_T = D(0, sigma_max) + sigma_max eps``, ``D`` the
(guided) denoiser: for a Gaussian ``N(m, S)``, ``D(0, sigma) = sigma^2 (S + sigma^2 I)^-1 m``, so the offset left is
``S (S + sigma^2 I)^-1 m``, a bias ``lam_k / sigma_max^2`` times the old one. It costs one denoiser call (on the
batch) before the first step. Meant for priors that know their mean, such as the exact Gaussian denoiser and the
hybrid prior's Gaussian part; a trained network never saw the input ``0`` at ``sigma_max``. A guidance that
replaces the sampler's loop (a sampler wrapper that overrides ``step``, e.g. RePaint) runs its own start.

Example
-------
>>> import torch
>>> from geodiff.diffusion.centred_start import CentredStart
>>> from geodiff.diffusion.gaussian import GaussianDenoiser
>>> from geodiff.diffusion.samplers import HeunSampler
>>> from geodiff.diffusion.schedules import EDMSchedule
>>> prior = GaussianDenoiser(torch.full((400,), 3.0), 0.01 * torch.eye(400), shape=(1, 20, 20))  # |m| = 60
>>> zero = torch.zeros(1, 1, 20, 20, dtype=torch.float64)  # the noise-free member: the ensemble's expectation
>>> def bias(sampler):  # of the ensemble mean, in prior standard deviations (0.1)
...     return round((sampler(prior, zero, EDMSchedule().sigmas(24)).mean().item() - 3.0) / 0.1, 3)
>>> bias(HeunSampler()), abs(bias(CentredStart(HeunSampler())))
(-0.039, 0.0)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["CentredStart", "runs_no_network"]


def runs_no_network(denoiser: Any) -> bool:
    """True for a denoiser that is its exact Gaussian prior alone (a :class:`~geodiff.diffusion.spectral.SpectralPrior`
    without a learned correction): the priors whose denoised mean at ``x = 0`` is meaningful, so that
    :func:`geodiff.reconstruct` starts them centred.

    >>> import torch
    >>> from geodiff.diffusion.gaussian import GaussianDenoiser
    >>> runs_no_network(GaussianDenoiser(torch.zeros(1), torch.eye(1), shape=(1, 1, 1))), runs_no_network(None)
    (True, False)
    """
    from geodiff.diffusion.spectral import SpectralPrior

    return isinstance(denoiser, SpectralPrior) and not getattr(denoiser, "correction", False)


class CentredStart:
    """A sampler started at ``D(0, sigma_max) + sigma_max noise`` (module docstring); same call signature as the
    wrapped sampler (``sampler(denoiser, noise [B, C, H, W], sigmas, **kwargs) -> [B, C, H, W]``) and one more
    denoiser evaluation."""

    def __init__(self, sampler: Any):
        self.sampler = sampler

    def nfe(self, steps: int) -> int:
        return self.sampler.nfe(steps) + 1

    @torch.no_grad()
    def __call__(self, denoiser: Any, noise: Tensor, sigmas: Tensor, **kwargs: Any) -> Tensor:
        sigma_max = float(torch.as_tensor(sigmas)[0])
        centre = denoiser(torch.zeros_like(noise), sigma_max, kwargs.get("cond"))
        return self.sampler(denoiser, torch.add(noise, centre.to(noise.dtype), alpha=1 / sigma_max), sigmas, **kwargs)

    def step(self, denoiser: Any, x: Tensor, i: int, sigma: float, sigma_next: float, state: dict[str, Any],
             **kwargs: Any) -> tuple[Tensor, Tensor]:
        """One step of the wrapped sampler (the start is :meth:`__call__`'s), so that a wrapped sampler can still be
        driven step by step."""
        return self.sampler.step(denoiser, x, i, sigma, sigma_next, state, **kwargs)
