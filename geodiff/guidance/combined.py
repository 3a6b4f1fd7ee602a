r"""Several guidances acting together: observation sets merged, denoiser corrections added, transitions in turn.

:class:`CombinedGuidance` (or :func:`combine` on a list) groups its parts by class:

- parts of the same class and settings are merged into one (:meth:`~geodiff.guidance.base.Guidance.merge`:
  observations concatenated, operators stacked, so MMPS solves one joint system);
- the guided denoisers of the remaining parts add their corrections,
  ``x0_hat + sum_k (x0_guided_k - x0_hat)`` (the likelihood scores of independent observation sets add);
- the guided samplers are nested in the order of the parts, so their transitions apply in that order, except that
  a resampling wrapper (RePaint) goes outside all others: its replacement comes last and its resampling repeats
  the whole transition. At most one resampling wrapper can be combined.

An empty list means unguided sampling (:class:`Unguided`).

Example
-------
>>> import torch
>>> from geodiff.guidance import DPSGuidance
>>> from geodiff.operators import GridPointOperator
>>> a = DPSGuidance(torch.tensor([1.0]), GridPointOperator(torch.tensor([0]), (1, 1, 2)), 0.1)
>>> b = DPSGuidance(torch.tensor([2.0]), GridPointOperator(torch.tensor([1]), (1, 1, 2)), 0.1)
>>> combined = CombinedGuidance([a, b])
>>> len(combined.parts), combined.parts[0].n_obs
(1, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from geodiff.errors import ConfigError
from geodiff.guidance.base import DenoiserFn, Guidance, GuidedDenoiser

__all__ = ["CombinedGuidance", "SummedCorrections", "Unguided", "combine"]


class Unguided(Guidance):
    """Unguided sampling (what an empty list of guidances means): the denoiser and the sampler unchanged.

    >>> Unguided().describe()
    {'name': 'none', 'n_obs': 0}
    """

    name = "none"


class CombinedGuidance(Guidance):
    """Several guidances (observation sets or methods) acting together; see the module docstring."""

    name = "combined"

    def __init__(self, guidances: Sequence[Guidance]):
        super().__init__()
        flat: list[Guidance] = []
        for g in guidances:
            if not isinstance(g, Guidance):
                raise ConfigError(f"CombinedGuidance takes Guidance objects, got {type(g).__name__}")
            flat += g.parts if isinstance(g, CombinedGuidance) else [g]
        if not flat:
            raise ConfigError("CombinedGuidance needs at least one guidance")
        parts: list[Guidance] = []
        for cls in dict.fromkeys(type(g) for g in flat):  # classes in order of first appearance
            group = [g for g in flat if type(g) is cls]
            merged = cls.merge(group) if len(group) > 1 else group[0]
            parts += [merged] if merged is not None else group
        if sum(g.resamples for g in parts) > 1:
            raise ConfigError("at most one resampling guidance (e.g. repaint) can be combined")
        self.parts = parts
        self.config = {"parts": [g.describe() for g in parts]}

    @property
    def n_obs(self) -> int:
        return sum(g.n_obs for g in self.parts)

    def wrap(self, denoiser: DenoiserFn) -> DenoiserFn:
        wrapped = [g.wrap(denoiser) for g in self.parts]
        wrapped = [w for w in wrapped if w is not denoiser]
        if not wrapped:
            return denoiser
        return wrapped[0] if len(wrapped) == 1 else SummedCorrections(denoiser, wrapped)

    def wrap_sampler(self, sampler: Any) -> Any:
        for g in sorted(self.parts, key=lambda part: part.resamples):  # stable: resampling last, i.e. outermost
            sampler = g.wrap_sampler(sampler)
        return sampler


class SummedCorrections(GuidedDenoiser):
    """Several guided denoisers around one denoiser: ``x0_hat + sum_k (x0_guided_k - x0_hat)`` (each wrapper
    evaluates the denoiser itself; the likelihood scores of independent observation sets add)."""

    def __init__(self, denoiser: DenoiserFn, wrapped: Sequence[DenoiserFn]):
        super().__init__(denoiser)
        self.wrapped = list(wrapped)

    def __call__(self, x: Tensor, sigma: float | Tensor, cond: Any = None) -> Tensor:
        with torch.no_grad():
            base = self.denoiser(x, sigma, cond)
        out = base.clone()
        for guided in self.wrapped:
            out = out + (guided(x, sigma, cond) - base)
        return out


def combine(guidances: Guidance | Sequence[Guidance]) -> Guidance:
    """A single guidance from one or several (a list becomes a :class:`CombinedGuidance`; an empty list means
    unguided sampling).

    >>> combine([]).describe()
    {'name': 'none', 'n_obs': 0}
    """
    if isinstance(guidances, Guidance):
        return guidances
    guidances = list(guidances)
    if not guidances:
        return Unguided()
    return guidances[0] if len(guidances) == 1 else CombinedGuidance(guidances)
