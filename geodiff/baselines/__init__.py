"""Classical reconstruction baselines: observations (or training data) in, xr.Dataset on the target grid out.

* :func:`climatology`: training mean at each cell, or the latitude-depth mean where the target was held out;
* :func:`optimal_interpolation` (with :func:`fit_covariance`): Gaussian-process kriging per level with a fitted
  stationary covariance (great-circle distance, Matern/exponential/Gaussian, time correlation), posterior mean
  and std;
* :func:`dineof`: iterative EOF gap filling (Beckers & Rixen 2003) with cross-validated number of modes;
* :func:`eof_projection`: its stable limit with training data: ridge least-squares fit of training EOFs.

Every function returns the target grid's variable name with NaN on land, CF attributes kept and ``history``
appended. The functions share their names with their modules (``geodiff.baselines.dineof`` is the function);
use ``importlib.import_module("geodiff.baselines.dineof")`` for a module itself.

Example
-------
>>> from geodiff import baselines
>>> sorted(baselines.__all__)
['climatology', 'dineof', 'eof_projection', 'fit_covariance', 'optimal_interpolation']
"""

from geodiff.baselines.climatology import climatology
from geodiff.baselines.dineof import dineof, eof_projection
from geodiff.baselines.optimal_interpolation import fit_covariance, optimal_interpolation

__all__ = ["climatology", "dineof", "eof_projection", "fit_covariance", "optimal_interpolation"]
