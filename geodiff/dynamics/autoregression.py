r"""Statistical forecast models of gridded fields: persistence, persistence + trend, and point-wise AR(1).

:class:`PointwiseAutoregression` advances a state by whole steps (e.g. one year of annual means) with an
independent affine map at every grid point and channel,

    ``x(t + step) = coefficient * x(t) + offset``   (``coefficient``, ``offset`` of shape ``[C, H, W]``),

which holds persistence (``coefficient = 1``, ``offset = 0``), persistence plus a linear trend
(``coefficient = 1``, ``offset`` = the least-squares linear trend per step) and a least-squares AR(1) regression
(:meth:`PointwiseAutoregression.fit`). It follows the :class:`~geodiff.dynamics.base.ForecastModel` protocol, so
it serves as the background model of :func:`geodiff.pipelines.assimilate.cycle` and in forecast-skill rewards.
A lead of ``n`` steps applies the map ``n`` times; a lead that is not a whole number of steps is an error.

Example
-------
>>> import torch
>>> from geodiff.dynamics.autoregression import PointwiseAutoregression
>>> series = torch.arange(4.0).reshape(4, 1, 1, 1)  # 0, 1, 2, 3: a pure trend of +1 per step
>>> model = PointwiseAutoregression.fit(series, step_s=1.0, variables=("t",), kind="persistence_trend")
>>> model.forecast(torch.tensor([[[[3.0]]]]), 2.0).item()
5.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from geodiff.errors import ConfigError, DataError, GridError

__all__ = ["PointwiseAutoregression", "FORECAST_KINDS"]

FORECAST_KINDS = ("persistence", "persistence_trend", "ar1")


class PointwiseAutoregression:
    """``x(t + step_s) = coefficient * x(t) + offset`` at each point (module docstring).

    ``coefficient``, ``offset``: ``[C, H, W]`` (offset in the units of the state); ``step_s``: seconds per step;
    ``variables``: the ``C`` channel names.
    """

    def __init__(self, coefficient: Tensor, offset: Tensor, *, step_s: float, variables: Sequence[str],
                 kind: str = "custom"):  # fmt: skip
        coefficient = torch.as_tensor(coefficient, dtype=torch.float64)
        offset = torch.as_tensor(offset, dtype=torch.float64)
        if coefficient.ndim != 3 or coefficient.shape != offset.shape:
            raise GridError(f"coefficient and offset must both be [C, H, W]; got {list(coefficient.shape)} and "
                            f"{list(offset.shape)}")
        if len(variables) != coefficient.shape[0]:
            raise GridError(f"variables {tuple(variables)} must name the {coefficient.shape[0]} channels")
        if not (torch.isfinite(coefficient).all() and torch.isfinite(offset).all()):
            raise DataError("coefficient and offset must be finite")
        if not step_s > 0:
            raise ConfigError(f"step_s must be positive, got {step_s}")
        self.coefficient, self.offset = coefficient, offset
        self.step_s = float(step_s)
        self.variables = tuple(variables)
        self.kind = kind
        self.config: dict[str, Any] = {"kind": kind, "step_s": self.step_s, "variables": list(self.variables),
                                       "shape": list(coefficient.shape)}  # fmt: skip

    @classmethod
    def fit(cls, series: Tensor, *, step_s: float, variables: Sequence[str],
            kind: str = "persistence_trend") -> PointwiseAutoregression:  # fmt: skip
        """Fit to a time series ``series [T, C, H, W]`` of consecutive steps (``T >= 2``; ``T >= 3`` for ``ar1``).

        ``kind``: ``"persistence"`` (nothing fitted), ``"persistence_trend"`` (offset = least-squares slope of
        ``x`` against the step index, per point) or ``"ar1"`` (least squares of ``x(t+1)`` on ``x(t)`` per point).
        """
        if kind not in FORECAST_KINDS:
            raise ConfigError(f"kind must be one of {FORECAST_KINDS}, got {kind!r}")
        series = torch.as_tensor(series, dtype=torch.float64)
        minimum = 3 if kind == "ar1" else 2
        if series.ndim != 4 or series.shape[0] < minimum:
            raise GridError(f"series must be [T >= {minimum}, C, H, W] for kind {kind!r}; got {list(series.shape)}")
        if not torch.isfinite(series).all():
            raise DataError("series holds NaN/inf values")
        before, after = series[:-1], series[1:]
        if kind == "persistence":
            coefficient, offset = torch.ones_like(series[0]), torch.zeros_like(series[0])
        elif kind == "persistence_trend":
            steps = torch.arange(series.shape[0], dtype=torch.float64)
            steps = (steps - steps.mean()).reshape(-1, 1, 1, 1)
            slope = ((series - series.mean(0)) * steps).sum(0) / steps.pow(2).sum()
            coefficient, offset = torch.ones_like(series[0]), slope
        else:
            anomaly = before - before.mean(0)
            variance = anomaly.pow(2).mean(0)
            if bool((variance == 0).any()):
                raise DataError("ar1 needs a series that varies at every point; some points are constant")
            coefficient = (anomaly * (after - after.mean(0))).mean(0) / variance
            offset = after.mean(0) - coefficient * before.mean(0)
        return cls(coefficient, offset, step_s=step_s, variables=variables, kind=kind)

    def steps(self, duration_s: float) -> int:
        """Number of whole steps in ``duration_s`` (an error unless it is a non-negative multiple of ``step_s``)."""
        ratio = float(duration_s) / self.step_s
        count = round(ratio)
        if count < 0 or not math.isclose(ratio, count, rel_tol=0.0, abs_tol=1e-9):
            raise ConfigError(f"duration_s {duration_s} is not a non-negative multiple of step_s {self.step_s}")
        return count

    def forecast(self, state: Tensor, duration_s: float) -> Tensor:
        """The state ``[B, C, H, W]`` after ``duration_s`` seconds (same dtype; differentiable)."""
        if state.ndim != 4 or tuple(state.shape[1:]) != tuple(self.coefficient.shape):
            raise GridError(f"state must be [B, {', '.join(map(str, self.coefficient.shape))}]; "
                            f"got {list(state.shape)}")
        coefficient, offset = self.coefficient.to(state), self.offset.to(state)
        for _ in range(self.steps(duration_s)):
            state = coefficient * state + offset
        return state
