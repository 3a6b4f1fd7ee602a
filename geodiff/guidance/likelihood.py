r"""Observations as data: ``y = A x0 + e``, ``e ~ N(0, R)``, ``R = diag(error_std^2)``, validated once.

:class:`GaussianLikelihood` holds the three things every observation guidance is built from, in the
**normalised** units of the field (see :meth:`geodiff.operators.PointOperator.to_normalized`):

- ``y``: ``[N]`` (shared by the batch) or ``[B, N]`` (one set per member, e.g. perturbed observations);
- ``operator``: ``A``, a :class:`~geodiff.operators.LinearOperator` (``A(x) -> [B, N]``, ``A.adjoint(r)``,
  ``A.gram_diagonal()``) or any linear callable ``x [B, C, H, W] -> [B, N]`` (its adjoint and ``diag(A A^T)`` are
  then taken with autograd);
- ``error_std``: ``[N]``, positive (a single number is broadcast).

It does nothing but answer questions about the observations (``A^T r``, ``diag(A A^T)``, ``y`` and ``R`` in a
field's dtype and device); the guidance methods decide what to do with them.

Example
-------
>>> import torch
>>> from geodiff.guidance.likelihood import GaussianLikelihood
>>> from geodiff.operators import GridPointOperator
>>> obs = GaussianLikelihood(torch.tensor([1.0, 2.0]), GridPointOperator(torch.tensor([0, 3]), (1, 2, 2)), 0.5)
>>> obs.n_obs, obs.error_std.tolist()
(2, [0.5, 0.5])
>>> obs.adjoint(torch.tensor([[1.0, 2.0]]), torch.zeros(1, 1, 2, 2)).flatten().tolist()  # A^T r
[1.0, 0.0, 0.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from geodiff.errors import ObservationError
from geodiff.guidance.linearization import Linearization
from geodiff.operators import LinearOperator, StackedOperator

__all__ = ["GaussianLikelihood"]


class GaussianLikelihood:
    """Validated observations ``(y, A, error_std)`` (module docstring); raises
    :class:`~geodiff.errors.ObservationError` naming what is wrong."""

    __slots__ = ("y", "operator", "error_std")

    def __init__(self, y: Any, operator: Callable[[Tensor], Tensor], error_std: Any):
        if not callable(operator):
            raise ObservationError(f"the observation operator must be callable, got {type(operator).__name__}")
        y = torch.as_tensor(y)
        if not torch.is_floating_point(y):
            y = y.to(torch.float64)
        if y.ndim not in (1, 2) or y.shape[-1] == 0:
            raise ObservationError(f"y must be [N] or [B, N] with N >= 1, got shape {tuple(y.shape)}")
        n_obs = y.shape[-1]
        expected = getattr(operator, "n_obs", n_obs)
        if expected != n_obs:
            raise ObservationError(f"y has {n_obs} observations but the operator maps to {expected}")
        if not torch.all(torch.isfinite(y)):
            raise ObservationError("y has non-finite values; drop them with validate_observations first")
        error_std = torch.as_tensor(error_std, dtype=y.dtype).reshape(-1)
        if error_std.numel() == 1:
            error_std = error_std.expand(n_obs).clone()
        if error_std.numel() != n_obs:
            raise ObservationError(f"error_std has {error_std.numel()} values; expected 1 or {n_obs}")
        if not torch.all((error_std > 0) & torch.isfinite(error_std)):
            raise ObservationError("error_std must be positive and finite for every observation")
        self.y: Tensor = y
        self.operator = operator
        self.error_std: Tensor = error_std

    @property
    def n_obs(self) -> int:
        """Number of observations ``N``."""
        return int(self.y.shape[-1])

    def observed(self, like: Tensor) -> Tensor:
        """``y`` as ``[B, N]`` in the dtype and device of the field ``like [B, ...]``."""
        y = self.y.to(device=like.device, dtype=like.dtype)
        return y.expand(like.shape[0], -1) if y.ndim == 1 else y

    def variance(self, like: Tensor) -> Tensor:
        """``error_std^2`` ``[N]`` (the diagonal of ``R``) in ``like``'s dtype and device."""
        return self.error_std.to(device=like.device, dtype=like.dtype) ** 2

    def adjoint(self, r: Tensor, like: Tensor) -> Tensor:
        """``A^T r`` ``[B, C, H, W]`` for ``r [B, N]``: the operator's own ``adjoint`` or, for a plain linear
        callable, its vector-Jacobian product at a field shaped like ``like [B, C, H, W]``."""
        adjoint = getattr(self.operator, "adjoint", None)
        if adjoint is not None:
            return adjoint(r)
        return Linearization(self.operator, torch.zeros_like(like)).vjp(r, keep_graph=False)

    def gram_diagonal(self, like: Tensor) -> Tensor:
        """``diag(A A^T)`` ``[N]`` in ``like``'s dtype and device: the operator's own, or for a plain callable
        one adjoint per observation (small ``N`` only)."""
        gram = getattr(self.operator, "gram_diagonal", None)
        if gram is not None:
            return gram().to(device=like.device, dtype=like.dtype)
        rows = []
        for n in range(self.n_obs):
            unit = torch.zeros(1, self.n_obs, dtype=like.dtype, device=like.device)
            unit[0, n] = 1
            rows.append(self.adjoint(unit, like[:1]).pow(2).sum())
        return torch.stack(rows)

    @classmethod
    def concatenate(cls, parts: Sequence[GaussianLikelihood]) -> GaussianLikelihood | None:
        """One set from several on the same field (``y`` and ``error_std`` concatenated, operators stacked), or
        None when they cannot be stacked (an operator that is not a
        :class:`~geodiff.operators.LinearOperator`, or per-member ``y``)."""
        if not all(isinstance(p.operator, LinearOperator) for p in parts) or any(p.y.ndim != 1 for p in parts):
            return None
        y = torch.cat([p.y.to(torch.float64) for p in parts])
        error_std = torch.cat([p.error_std.to(torch.float64) for p in parts])
        return cls(y, StackedOperator([p.operator for p in parts]), error_std)
