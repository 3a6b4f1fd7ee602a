"""The forecast-model protocol: what rewards, the cycling driver and the ensemble baselines need of a model.

A forecast model advances a batch of states in physical units, ``forecast(state [B, C, H, W], duration_s)``,
with channels named by ``variables`` (in order). It is a plain torch computation, so a forecast can be
differentiated (forecast-skill rewards and their gradients). Any object with these members works; the built-in
one is registered as ``geodiff.registry.get("forecast", "barotropic")``.

Example
-------
>>> from geodiff.dynamics import BarotropicModel, ForecastModel
>>> isinstance(BarotropicModel(nx=16, ny=16), ForecastModel)
True
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

__all__ = ["ForecastModel"]


@runtime_checkable
class ForecastModel(Protocol):
    """``forecast(state [B, C, H, W], duration_s: float) -> [B, C, H, W]`` in the units of ``variables``."""

    variables: tuple[str, ...]

    def forecast(self, state: Tensor, duration_s: float) -> Tensor:
        """The state ``duration_s`` seconds later (same shape, units and channel order)."""
        ...
