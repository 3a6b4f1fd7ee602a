"""An exact denoiser for Gaussian data: the analytic oracle that samplers and guidance are tested against.

For ``x0 ~ N(m, S)`` and ``x = x0 + sigma eps``, ``E[x0 | x] = m + S (S + sigma^2 I)^-1 (x - m)``. With the
eigendecomposition ``S = U diag(lam) U^T`` this is ``m + U diag(lam / (lam + sigma^2)) U^T (x - m)``, computed in
float64. With linear observations ``y = A x0 + e``, ``e ~ N(0, R)``, the posterior is Gaussian too
(:meth:`GaussianDenoiser.posterior`, the Kalman update), which is what guided samplers must reproduce.

With a ``mask`` (True = valid cell, e.g. ocean), ``m`` and ``S`` describe only the ``P`` valid cells: the
decomposition is of the ``P x P`` covariance (a few thousand cells decompose in seconds), so it is exact on any
grid, periodic or not, with land anywhere; cells outside the mask are 0 in every output, as in a masked
:class:`~geodiff.diffusion.denoiser.Denoiser`. A stationary covariance on a real grid comes from
:func:`geodiff.baselines.optimal_interpolation.covariance_matrix` (the one optimal interpolation uses).

Example
-------
>>> import torch
>>> from geodiff.diffusion.gaussian import GaussianDenoiser
>>> oracle = GaussianDenoiser(torch.zeros(4), torch.eye(4), shape=(1, 2, 2))
>>> x = torch.ones(1, 1, 2, 2)
>>> oracle(x, 1.0).flatten().tolist()  # shrinks halfway to the mean when sigma^2 equals the variance
[0.5, 0.5, 0.5, 0.5]
>>> land = torch.tensor([[[True, False], [True, True]]])  # one land cell: 3 valid cells
>>> GaussianDenoiser(torch.zeros(3), torch.eye(3), shape=(1, 2, 2), mask=land)(x, 1.0).flatten().tolist()
[0.5, 0.0, 0.5, 0.5]
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from geodiff.diffusion.denoiser import sigma_tensor
from geodiff.diffusion.spectral import GaussianSpectrum
from geodiff.errors import GridError

__all__ = ["GaussianDenoiser"]


class GaussianDenoiser(nn.Module):
    """Exact ``E[x0 | x_sigma]`` for ``x0 ~ N(mean [P], cov [P, P])`` on fields of ``shape = (C, H, W)``.

    Without ``mask``, ``P = C * H * W`` (every cell); with ``mask`` (bool ``shape``, True = valid), ``P`` is the
    number of valid cells, in the mask's row-major order, and the other cells are 0.
    """

    def __init__(self, mean: Tensor, cov: Tensor, shape: tuple[int, ...], mask: Tensor | None = None):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        cov = torch.as_tensor(cov, dtype=torch.float64)
        size = mean.numel()
        cells = torch.Size(shape).numel()
        if mask is None:
            index = torch.arange(cells)
        else:
            mask = torch.as_tensor(mask, dtype=torch.bool)
            if tuple(mask.shape) != tuple(shape):
                raise GridError(f"mask has shape {tuple(mask.shape)}; expected the field shape {tuple(shape)}")
            index = torch.nonzero(mask.reshape(-1)).flatten()
        if cov.shape != (size, size) or index.numel() != size:
            where = "valid cells of the mask" if mask is not None else "cells of shape"
            raise GridError(f"mean has {size} entries; cov must be [{size}, {size}] and there must be {size} {where} "
                            f"(there are {index.numel()})")
        eigenvalues, eigenvectors = torch.linalg.eigh((cov + cov.T) / 2)
        self.shape = tuple(shape)
        self.register_buffer("mean", mean)
        self.register_buffer("cov", cov)
        self.register_buffer("eigenvalues", eigenvalues.clamp_min(0))
        self.register_buffer("eigenvectors", eigenvectors)
        self.register_buffer("index", index)
        self.masked = mask is not None

    def _scatter(self, values: Tensor) -> Tensor:
        """Valid-cell values ``[B, P]`` -> flat fields ``[B, C*H*W]`` (0 outside the mask)."""
        if not self.masked:
            return values
        out = values.new_zeros(values.shape[0], torch.Size(self.shape).numel())
        return out.index_copy(1, self.index, values)

    def forward(self, x: Tensor, sigma: float | Tensor, cond: dict[str, Tensor] | None = None) -> Tensor:
        """``x [B, *shape]`` at noise ``sigma`` -> exact posterior mean ``[B, *shape]`` in ``x``'s dtype."""
        sigma = sigma_tensor(sigma, x.shape[0], x.device)
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        if self.masked:
            flat = flat.index_select(1, self.index)
        coords = (flat - self.mean) @ self.eigenvectors
        shrink = self.eigenvalues / (self.eigenvalues + sigma[:, None] ** 2)
        x0 = self.mean + (coords * shrink) @ self.eigenvectors.T
        return self._scatter(x0).to(x.dtype).reshape(x.shape)

    def gaussian_spectrum(self) -> GaussianSpectrum:
        """The covariance's eigendecomposition on the valid cells (:mod:`geodiff.diffusion.spectral`)."""
        return GaussianSpectrum(self.index, self.eigenvalues, self.eigenvectors)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact draws from the prior, float64 ``[n, *shape]``."""
        z = torch.randn(n, self.mean.numel(), dtype=torch.float64, generator=generator)
        x = self.mean + (z * self.eigenvalues.sqrt()) @ self.eigenvectors.T
        return self._scatter(x).reshape(n, *self.shape)

    def posterior(self, operator: Tensor, y: Tensor, error_cov: Tensor) -> tuple[Tensor, Tensor]:
        """Kalman update for ``y = operator @ x0 + e``, ``e ~ N(0, error_cov)``.

        ``operator [N, C*H*W]`` on the whole field (dense: this is a test oracle), ``y [N]``, ``error_cov [N, N]``
        -> posterior mean ``[C*H*W]`` (0 outside the mask) and covariance ``[P, P]`` of the valid cells, float64.
        """
        a = torch.as_tensor(operator, dtype=torch.float64)
        if self.masked:
            a = a.index_select(1, self.index)
        y = torch.as_tensor(y, dtype=torch.float64)
        r = torch.as_tensor(error_cov, dtype=torch.float64)
        innovation_cov = a @ self.cov @ a.T + r
        gain = torch.linalg.solve(innovation_cov, a @ self.cov).T
        mean = self.mean + gain @ (y - a @ self.mean)
        cov = self.cov - gain @ a @ self.cov
        return self._scatter(mean[None])[0], (cov + cov.T) / 2
