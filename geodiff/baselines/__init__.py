"""Classical reconstruction baselines: observations (or training data) in, xr.Dataset on the target grid out.

* :func:`climatology`: training mean at each cell, or the latitude-depth mean where the target was held out;
* :func:`optimal_interpolation` (with :func:`fit_covariance`): Gaussian-process kriging per level with a fitted
  stationary covariance (great-circle distance, Matern/exponential/Gaussian, time correlation), posterior mean
  and std;
* :func:`dineof`: iterative EOF gap filling (Beckers & Rixen 2003) with cross-validated number of modes;
* :func:`eof_projection`: its stable limit with training data: ridge least-squares fit of training EOFs;
* downscaling: :func:`bilinear`, :func:`bicubic` (:func:`interpolate`), and a deterministic regression network
  with the diffusion model's backbone (:class:`RegressionModel`, imported on first use: it needs torch; trained by
  :func:`geodiff.training.regression.train_regression`);
* assimilation: 3D-Var with a static background covariance (:func:`fit_background_covariance`,
  :func:`var3d_analysis`, :func:`var3d_cost`) and the (localised) ensemble transform Kalman filter :func:`etkf`.

Every function returns the target grid's variable name with NaN on land, CF attributes kept and ``history``
appended. The functions share their names with their modules (``geodiff.baselines.dineof`` is the function);
use ``importlib.import_module("geodiff.baselines.dineof")`` for a module itself.

Example
-------
>>> from geodiff import baselines
>>> sorted(baselines.__all__)[:6]
['RegressionModel', 'bicubic', 'bilinear', 'climatology', 'dineof', 'eof_projection']
"""

from geodiff.baselines.climatology import climatology
from geodiff.baselines.dineof import dineof, eof_projection
from typing import Any

from geodiff.baselines.etkf import etkf
from geodiff.baselines.interpolation import bicubic, bilinear, interpolate
from geodiff.baselines.optimal_interpolation import fit_covariance, optimal_interpolation
from geodiff.baselines.var3d import fit_background_covariance, var3d_analysis, var3d_cost

__all__ = [
    "climatology", "dineof", "eof_projection", "fit_covariance", "optimal_interpolation",
    "bilinear", "bicubic", "interpolate", "RegressionModel",
    "fit_background_covariance", "var3d_analysis", "var3d_cost", "etkf",
]  # fmt: skip

_LAZY = {"RegressionModel"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from geodiff.baselines import regression

        return getattr(regression, name)
    raise AttributeError(f"module 'geodiff.baselines' has no attribute {name!r}")
