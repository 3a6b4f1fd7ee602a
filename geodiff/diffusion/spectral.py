r"""The eigendecomposition of a denoiser's Gaussian prior, offered to guidance for exact posterior solves.

A denoiser whose prior is Gaussian, ``x0 ~ N(m, S)`` on ``P`` valid cells with ``S = U diag(lam) U^T``, knows its
Tweedie covariance exactly: for ``x = x0 + sigma eps``,

    ``Cov[x0 | x] = sigma^2 d x0_hat / d x = U diag(lam sigma^2 / (lam + sigma^2)) U^T``.

Such a denoiser offers its :class:`GaussianSpectrum` through :meth:`SpectralPrior.gaussian_spectrum`, so that
guidance can form ``A Cov[x0 | x] A^T + R`` (``N x N`` for ``N`` observations) and solve it exactly instead of
iterating through network Jacobians (:mod:`geodiff.guidance.mmps`, ``method="exact"``). The exact Gaussian
denoiser (:class:`~geodiff.diffusion.gaussian.GaussianDenoiser`) and the hybrid prior
(:class:`~geodiff.diffusion.gaussian_prior.GaussianResidualDenoiser`, whose spectrum is that of its Gaussian part,
without the learned correction) offer it.

Example
-------
>>> import torch
>>> from geodiff.diffusion.gaussian import GaussianDenoiser
>>> from geodiff.diffusion.spectral import SpectralPrior
>>> prior = GaussianDenoiser(torch.zeros(2), torch.diag(torch.tensor([1.0, 4.0])), shape=(1, 1, 2))
>>> isinstance(prior, SpectralPrior)
True
>>> prior.gaussian_spectrum().tweedie_variances(torch.tensor([2.0])).tolist()  # lam sigma^2 / (lam + sigma^2)
[[0.8, 2.0]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["GaussianSpectrum", "SpectralPrior"]


@dataclass(frozen=True)
class GaussianSpectrum:
    """``S = vectors diag(values) vectors^T`` over the valid cells ``index`` of a flattened ``[C*H*W]`` field.

    ``index``: ``[P]`` int64, the valid cells in row-major order; ``values``: ``[K]`` float64 eigenvalues
    (>= 0, normalised units squared); ``vectors``: ``[P, K]`` float64 orthonormal eigenvectors.
    """

    index: Tensor
    values: Tensor
    vectors: Tensor

    def tweedie_variances(self, sigma: Tensor) -> Tensor:
        """Eigenvalues of ``Cov[x0 | x_sigma]``, ``lam sigma^2 / (lam + sigma^2)``, float64 ``[B, K]`` for
        ``sigma [B]``."""
        variance = torch.as_tensor(sigma, dtype=torch.float64, device=self.values.device).reshape(-1, 1) ** 2
        return self.values * variance / (self.values + variance)


@runtime_checkable
class SpectralPrior(Protocol):
    """A denoiser whose prior (or the Gaussian part of it) has a known eigendecomposition."""

    def gaussian_spectrum(self) -> GaussianSpectrum:
        """The prior covariance's eigendecomposition on the valid cells."""
        ...
