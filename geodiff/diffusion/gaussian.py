"""An exact denoiser for Gaussian data: the analytic oracle that samplers and guidance are tested against.

For ``x0 ~ N(m, S)`` and ``x = x0 + sigma eps``, ``E[x0 | x] = m + S (S + sigma^2 I)^-1 (x - m)``. With the
eigendecomposition ``S = U diag(lam) U^T`` this is ``m + U diag(lam / (lam + sigma^2)) U^T (x - m)``, computed in
float64. With linear observations ``y = A x0 + e``, ``e ~ N(0, R)``, the posterior is Gaussian too
(:meth:`GaussianDenoiser.posterior`, the Kalman update), which is what guided samplers must reproduce.

Example
-------
>>> import torch
>>> from geodiff.diffusion.gaussian import GaussianDenoiser
>>> oracle = GaussianDenoiser(torch.zeros(4), torch.eye(4), shape=(1, 2, 2))
>>> x = torch.ones(1, 1, 2, 2)
>>> oracle(x, 1.0).flatten().tolist()  # shrinks halfway to the mean when sigma^2 equals the variance
[0.5, 0.5, 0.5, 0.5]
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from geodiff.diffusion.denoiser import sigma_tensor
from geodiff.errors import GridError

__all__ = ["GaussianDenoiser"]


class GaussianDenoiser(nn.Module):
    """Exact ``E[x0 | x_sigma]`` for ``x0 ~ N(mean [D], cov [D, D])`` reshaped to fields of ``shape = (C, H, W)``."""

    def __init__(self, mean: Tensor, cov: Tensor, shape: tuple[int, ...]):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        cov = torch.as_tensor(cov, dtype=torch.float64)
        size = mean.numel()
        if cov.shape != (size, size) or torch.Size(shape).numel() != size:
            raise GridError(f"mean has {size} entries; cov must be [{size}, {size}] and shape must hold {size} cells")
        eigenvalues, eigenvectors = torch.linalg.eigh((cov + cov.T) / 2)
        self.shape = tuple(shape)
        self.register_buffer("mean", mean)
        self.register_buffer("cov", cov)
        self.register_buffer("eigenvalues", eigenvalues.clamp_min(0))
        self.register_buffer("eigenvectors", eigenvectors)

    def forward(self, x: Tensor, sigma: float | Tensor, cond: dict[str, Tensor] | None = None) -> Tensor:
        """``x [B, *shape]`` at noise ``sigma`` -> exact posterior mean ``[B, *shape]`` in ``x``'s dtype."""
        sigma = sigma_tensor(sigma, x.shape[0], x.device)
        flat = x.reshape(x.shape[0], -1).to(torch.float64) - self.mean
        coords = flat @ self.eigenvectors
        shrink = self.eigenvalues / (self.eigenvalues + sigma[:, None] ** 2)
        x0 = self.mean + (coords * shrink) @ self.eigenvectors.T
        return x0.to(x.dtype).reshape(x.shape)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact draws from the prior, float64 ``[n, *shape]``."""
        z = torch.randn(n, self.mean.numel(), dtype=torch.float64, generator=generator)
        x = self.mean + (z * self.eigenvalues.sqrt()) @ self.eigenvectors.T
        return x.reshape(n, *self.shape)

    def posterior(self, operator: Tensor, y: Tensor, error_cov: Tensor) -> tuple[Tensor, Tensor]:
        """Kalman update for ``y = operator @ x0 + e``, ``e ~ N(0, error_cov)``.

        ``operator [N, D]`` (dense: this is a small test oracle), ``y [N]``, ``error_cov [N, N]`` ->
        posterior mean ``[D]`` and covariance ``[D, D]``, float64.
        """
        a = torch.as_tensor(operator, dtype=torch.float64)
        y = torch.as_tensor(y, dtype=torch.float64)
        r = torch.as_tensor(error_cov, dtype=torch.float64)
        innovation_cov = a @ self.cov @ a.T + r
        gain = torch.linalg.solve(innovation_cov, a @ self.cov).T
        mean = self.mean + gain @ (y - a @ self.mean)
        cov = self.cov - gain @ a @ self.cov
        return mean, (cov + cov.T) / 2
