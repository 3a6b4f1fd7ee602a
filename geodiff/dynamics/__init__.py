"""Forecast models: pluggable dynamical models that advance a state ``[B, C, H, W]`` in time.

:class:`~geodiff.dynamics.base.ForecastModel` is the protocol (registered under plugin kind ``"forecast"``);
:class:`~geodiff.dynamics.barotropic.BarotropicModel` is the built-in twin model (barotropic vorticity on a
doubly periodic beta plane, pseudo-spectral, RK4); :class:`~geodiff.dynamics.autoregression.PointwiseAutoregression`
is a statistical one for real fields (persistence, persistence + trend, point-wise AR(1)).
"""

from geodiff.dynamics.autoregression import PointwiseAutoregression
from geodiff.dynamics.barotropic import BarotropicModel
from geodiff.dynamics.base import ForecastModel

__all__ = ["BarotropicModel", "ForecastModel", "PointwiseAutoregression"]
