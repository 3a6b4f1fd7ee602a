r"""Observation guidance of a latent diffusion model: observations of the decoded state ``y = A(D(z)) + e``.

:class:`DecodedOperator` composes the decoder ``D`` (latent ``[B, Z, h, w]`` -> normalised state
``[B, C, H, W]``) with a linear observation operator ``A`` (e.g. a normalised
:class:`~geodiff.operators.PointOperator`): ``G(z) = A(D(z)) -> [B, N]``. It is nonlinear, so

- **DPS** works unchanged (:class:`~geodiff.guidance.DPSGuidance` with ``operator=G``): its gradient
  ``grad_z ||y - G(z0_hat(z))||^2`` is taken with autograd through decoder and denoiser;
- **MMPS** needs the Jacobian of ``G``: :class:`LatentMMPSGuidance` linearises ``G`` at ``z0_hat``
  (Gauss-Newton, ``G(z0) ~ G(z0_hat) + Jg (z0 - z0_hat)``) and applies the MMPS update of
  :mod:`geodiff.guidance.mmps` with ``Jg`` in place of ``A``:

      ``z0_guided = z0_hat + sigma^2 J^T Jg^T u``,  ``u = (R + sigma^2 Jg J Jg^T)^-1 (y - G(z0_hat))``

  (``J = d z0_hat / d z``), solved matrix-free with conjugate gradients: ``Jg^T u`` is a vector-Jacobian product
  through the decoder, ``Jg v`` a Jacobian-vector product (double backward; both
  :class:`~geodiff.guidance.linearization.Linearization`). For a linear decoder and an exact
  Gaussian latent denoiser this is the exact ``E[z0 | z, y]`` once ``cg_iterations >= N``.

Step-size convention: as MMPS, the exact posterior-mean update (``sigma^2`` times the likelihood score of the
linearised model); ``scale`` multiplies it (1 = Bayes).

Example
-------
>>> import torch
>>> from geodiff.guidance.latent_mmps import DecodedOperator
>>> from geodiff.operators import GridPointOperator
>>> decoder = torch.nn.Upsample(scale_factor=2)  # a toy decoder: latent [B, 1, 1, 1] -> state [B, 1, 2, 2]
>>> G = DecodedOperator(decoder, GridPointOperator(torch.tensor([0, 3]), (1, 2, 2)))
>>> G(torch.ones(1, 1, 1, 1)).tolist(), G.n_obs
([[1.0, 1.0]], 2)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from geodiff.errors import ConfigError
from geodiff.guidance.base import DenoiserFn, GuidedDenoiser, sigma_column
from geodiff.guidance.linearization import Linearization
from geodiff.guidance.mmps import MMPSGuidance, conjugate_gradient

__all__ = ["DecodedOperator", "LatentMMPSGuidance", "LatentMMPSDenoiser"]


class DecodedOperator(nn.Module):
    """``G(z [B, Z, h, w]) = operator(decoder(z)) -> [B, N]``; ``n_obs`` from the operator."""

    def __init__(self, decoder: Callable[[Tensor], Tensor], operator: Callable[[Tensor], Tensor]):
        super().__init__()
        self.decoder = decoder
        self.operator = operator
        n_obs = getattr(operator, "n_obs", None)
        if n_obs is None:
            raise ConfigError("the observation operator must say how many observations it maps to (n_obs)")
        self.n_obs = int(n_obs)

    def forward(self, z: Tensor) -> Tensor:
        return self.operator(self.decoder(z))


class LatentMMPSGuidance(MMPSGuidance):
    """MMPS through a nonlinear (decoded) operator, linearised at ``z0_hat``: builds a :class:`LatentMMPSDenoiser`
    (module docstring). Only ``method="cg"``; ``cg_iterations`` and ``scale`` as in
    :class:`~geodiff.guidance.MMPSGuidance`."""

    name = "latent_mmps"

    def __init__(self, y: Any, operator: Callable[[Tensor], Tensor], error_std: Any, *, cg_iterations: int = 1,
                 scale: float = 1.0):  # fmt: skip
        super().__init__(y, operator, error_std, method="cg", cg_iterations=cg_iterations, scale=scale)
        self.config = {"cg_iterations": cg_iterations, "scale": self.scale}

    def wrap(self, denoiser: DenoiserFn) -> LatentMMPSDenoiser:
        return LatentMMPSDenoiser(denoiser, self)


class LatentMMPSDenoiser(GuidedDenoiser):
    """The linearised-MMPS denoiser wrapper ``(z [B, Z, h, w], sigma, cond=None) -> z0_guided`` (module
    docstring): ``J`` by vector-Jacobian products through the denoiser, ``Jg`` and ``Jg^T`` through the operator."""

    def __init__(self, denoiser: DenoiserFn, guidance: LatentMMPSGuidance):
        super().__init__(denoiser)
        self.guidance = guidance

    def __call__(self, x: Tensor, sigma: float | Tensor, cond: Any = None) -> Tensor:
        observations = self.guidance.observations
        _, column = sigma_column(sigma, x)
        denoised = self.linearize(x, sigma, cond)  # z -> z0_hat: J
        decoded = Linearization(observations.operator, denoised.value)  # z0 -> G(z0): Jg at z0_hat
        residual = observations.observed(x) - decoded.value
        error_var = observations.variance(x)

        def covariance(u: Tensor) -> Tensor:  # (R + sigma^2 Jg J Jg^T) u, row-wise
            return error_var * u + decoded.jvp(column**2 * denoised.vjp(decoded.vjp(u)))

        u = conjugate_gradient(covariance, residual, self.guidance.cg_iterations)
        correction = denoised.vjp(decoded.vjp(u))
        return (denoised.value + self.guidance.scale * column**2 * correction).detach()
