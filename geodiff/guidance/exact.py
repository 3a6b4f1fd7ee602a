r"""MMPS's observation solve done exactly, for a denoiser that knows its Gaussian Tweedie covariance.

For a :class:`~geodiff.diffusion.spectral.SpectralPrior`, ``V = Cov[x0 | x_sigma] = U diag(d) U^T`` with
``d = lam sigma^2 / (lam + sigma^2)`` (:mod:`geodiff.diffusion.spectral`). With ``G = A U`` (``[N, K]``, formed
once per observation set from the sparse ``A^T``), MMPS's system is the dense ``N x N``

    ``(R + A V A^T) u = y - A x0_hat``,   ``R + A V A^T = R + G diag(d) G^T``,

solved by Cholesky (float64) once per noise level, and the guided mean is ``x0_hat + V A^T u = x0_hat +
U diag(d) G^T u``: no pass through the network's Jacobian. For the exact Gaussian denoiser this is the exact
``E[x0 | x_sigma, y]`` at every noise level (what ``method="cg"`` reaches only with ``cg_iterations >= N``). For
the hybrid prior it uses the Gaussian part's covariance and leaves out the learned correction's Jacobian.

Cost per observation set: one adjoint of ``N`` unit vectors and a sparse ``[N, P] x [P, K]`` product; per noise
level: ``N^2 K`` for the Gram matrix and an ``N x N`` Cholesky; per member: ``N K + P K``.

Example
-------
>>> import torch
>>> from geodiff.diffusion.gaussian import GaussianDenoiser
>>> from geodiff.guidance.exact import ExactSolve
>>> from geodiff.guidance.likelihood import GaussianLikelihood
>>> from geodiff.operators import GridPointOperator
>>> prior = GaussianDenoiser(torch.zeros(2), torch.eye(2), shape=(1, 1, 2))
>>> obs = GaussianLikelihood(torch.tensor([1.0]), GridPointOperator(torch.tensor([0]), (1, 1, 2)), 1.0)
>>> x = torch.zeros(1, 1, 1, 2, dtype=torch.float64)
>>> x0 = prior(x, 1.0)
>>> correction = ExactSolve(prior.gaussian_spectrum(), obs, x).correction(obs.observed(x) - obs.operator(x0), 1.0)
>>> [round(v, 12) for v in (x0 + correction).flatten().tolist()]  # E[x0 | x, y]: y / 3 at sigma = 1, unit error
[0.333333333333, 0.0]
"""

from __future__ import annotations

import torch
from torch import Tensor

from geodiff.diffusion.spectral import GaussianSpectrum
from geodiff.guidance.base import sigma_column
from geodiff.guidance.likelihood import GaussianLikelihood

__all__ = ["ExactSolve"]


class ExactSolve:
    """The exact MMPS solve for one observation set and one spectral prior on fields shaped like ``like``
    ``[B, C, H, W]`` (module docstring)."""

    def __init__(self, spectrum: GaussianSpectrum, observations: GaussianLikelihood, like: Tensor):
        self.spectrum = spectrum
        self.shape = tuple(like.shape[1:])
        self.error_var = observations.error_std.to(device=spectrum.values.device, dtype=torch.float64) ** 2
        unit = torch.eye(observations.n_obs, dtype=torch.float64, device=like.device)
        adjoint = observations.adjoint(unit, like[:1].to(torch.float64).expand(observations.n_obs, *self.shape))
        rows = adjoint.reshape(observations.n_obs, -1)[:, spectrum.index.to(like.device)]  # A^T as [N, P]
        self.projected = torch.sparse.mm(rows.to_sparse(), spectrum.vectors.to(like.device))  # G = A U, [N, K]
        self._cholesky: dict[float, Tensor] = {}

    def _factor(self, sigma: float) -> Tensor:
        """Cholesky factor of ``R + G diag(d(sigma)) G^T``, cached per noise level."""
        if sigma not in self._cholesky:
            tweedie = self.spectrum.tweedie_variances(torch.tensor([sigma], dtype=torch.float64))[0]
            gram = (self.projected * tweedie) @ self.projected.T + torch.diag(self.error_var)
            self._cholesky[sigma] = torch.linalg.cholesky(gram)
        return self._cholesky[sigma]

    def solve(self, residual: Tensor, sigma: float | Tensor) -> Tensor:
        """``u = (R + A V A^T)^-1 residual`` float64 ``[B, N]`` for ``residual [B, N]`` at ``sigma`` (scalar or
        ``[B]``)."""
        levels, _ = sigma_column(sigma, residual)
        residual = residual.to(torch.float64)
        u = torch.empty_like(residual)
        for level in torch.unique(levels).tolist():
            rows = levels == level
            u[rows] = torch.cholesky_solve(residual[rows].T, self._factor(level)).T
        return u

    def covariance_times_adjoint(self, u: Tensor, sigma: float | Tensor) -> Tensor:
        """``V A^T u = U diag(d) G^T u`` as fields ``[B, C, H, W]`` (0 outside the valid cells), float64."""
        levels, _ = sigma_column(sigma, u)
        coordinates = (u @ self.projected) * self.spectrum.tweedie_variances(levels)
        out = torch.zeros(u.shape[0], torch.Size(self.shape).numel(), dtype=torch.float64, device=u.device)
        out[:, self.spectrum.index.to(u.device)] = coordinates @ self.spectrum.vectors.T
        return out.reshape(u.shape[0], *self.shape)

    def correction(self, residual: Tensor, sigma: float | Tensor) -> Tensor:
        """The guided mean's correction ``V A^T (R + A V A^T)^-1 residual`` ``[B, C, H, W]`` float64."""
        return self.covariance_times_adjoint(self.solve(residual, sigma), sigma)
