r"""Coarse-consistency guidance: the area mean of the sample must match a coarse field within its error.

The coarse field is an observation of the high-resolution state through the area-mean operator
``C`` (:class:`~geodiff.operators.CoarsenOperator`, integer factor, land-aware): ``y = C x0 + e``,
``e ~ N(0, diag(error_std^2))`` with ``error_std`` the coarse product's error (its uncertainty as an area mean;
a coarse field computed from the truth itself has error 0, use a small positive value then). This is a linear
Gaussian observation, so the guidance is MMPS (:mod:`geodiff.guidance.mmps`) with ``C`` as the operator:

    ``x0_guided = x0_hat + sigma^2 (d x0_hat / d x)^T C^T (R + sigma^2 C (d x0_hat / d x) C^T)^-1 (y - C x0_hat)``

(with ``cg_iterations >= N`` and an exact Gaussian denoiser this is the exact ``E[x0 | x_sigma, y]``, so a
converged sampler draws from the exact posterior given the coarse field). ``method="diagonal"`` gives the cheaper
SDA approximation with ``diag(C C^T) = sum_k w_k^2`` (``1 / f^2`` for an all-ocean block). Station observations
(a :class:`~geodiff.operators.PointOperator`) and the coarse field can be guided together in one solve by
stacking the operators (:meth:`CoarseGuidance.with_stations`).

Step-size convention: as MMPS (``scale = 1`` is the Bayes update).

Example
-------
>>> import torch
>>> from geodiff.diffusion.gaussian import GaussianDenoiser
>>> from geodiff.guidance.coarse import CoarseGuidance
>>> from geodiff.operators import CoarsenOperator
>>> prior = GaussianDenoiser(torch.zeros(4), torch.eye(4), shape=(1, 2, 2))
>>> guidance = CoarseGuidance.from_field(torch.tensor([[[1.0]]]), CoarsenOperator((1, 2, 2), 2), 1e-3)
>>> x0 = guidance.wrap(prior)(torch.zeros(1, 1, 2, 2, dtype=torch.float64), 1e-2)
>>> round(float(x0.mean()), 3)  # the block mean is pulled onto the coarse value
1.0
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from geodiff.errors import ConfigError
from geodiff.guidance.mmps import MMPSGuidance
from geodiff.operators import CoarsenOperator, LinearOperator, StackedOperator

__all__ = ["CoarseGuidance"]


class CoarseGuidance(MMPSGuidance):
    """MMPS guidance towards a coarse field through an area-mean operator (module docstring).

    ``y``: coarse values ``[N]`` or ``[B, N]`` at the operator's kept cells (normalised units);
    ``operator``: a :class:`~geodiff.operators.CoarsenOperator` (or a stack of it with station operators);
    ``error_std``: positive, one value or ``[N]``. Options as :class:`~geodiff.guidance.mmps.MMPSGuidance`.
    """

    name = "coarse"

    @classmethod
    def from_field(cls, coarse: Tensor, operator: CoarsenOperator, error_std: Any, **options: Any) -> CoarseGuidance:
        """Guidance from a coarse field ``[C, Hc, Wc]`` or ``[B, C, Hc, Wc]`` on the operator's coarse grid; the
        values at dropped (land) cells are not used, a NaN at a kept cell raises."""
        if not isinstance(operator, CoarsenOperator):
            raise ConfigError(f"from_field needs a CoarsenOperator, got {type(operator).__name__}")
        return cls(operator.observed(coarse), operator, error_std, **options)

    def with_stations(self, y: Tensor, operator: LinearOperator, error_std: Any) -> CoarseGuidance:
        """One guidance for the coarse field and station observations ``y [N_s]`` through ``operator`` (e.g. a
        normalised :class:`~geodiff.operators.PointOperator`): operators stacked, one joint MMPS solve.

        >>> from geodiff.operators import GridPointOperator
        >>> coarse = CoarseGuidance(torch.tensor([0.5]), CoarsenOperator((1, 2, 2), 2), 0.1)
        >>> coarse.with_stations(torch.tensor([1.0]), GridPointOperator(torch.tensor([3]), (1, 2, 2)), 0.2).n_obs
        2
        """
        if self.y.ndim != 1:
            raise ConfigError("stations can be added to a coarse guidance with one coarse field ([N]) only")
        y = torch.cat([self.y.to(torch.float64), torch.as_tensor(y, dtype=torch.float64).reshape(-1)])
        error = torch.as_tensor(error_std, dtype=torch.float64).reshape(-1)
        if error.numel() == 1:
            error = error.expand(operator.n_obs)
        error = torch.cat([self.error_std.to(torch.float64), error])
        return type(self)(y, StackedOperator([self.operator, operator]), error, **self.config)
