r"""3D-Var / optimal interpolation with a static background-error covariance (state vectors, linear operator).

For a background ``x_b [D]``, observations ``y = H x + e`` (``H [N, D]``, ``e ~ N(0, R)``, ``R = diag(error_std^2)``)
and a static covariance ``B [D, D]``, 3D-Var minimises

    ``J(x) = (x - x_b)^T B^-1 (x - x_b) / 2 + (y - H x)^T R^-1 (y - H x) / 2``

whose minimiser for a linear ``H`` is the optimal-interpolation (BLUE) update, solved in observation space:

    ``x_a = x_b + B H^T (H B H^T + R)^-1 (y - H x_b)``

(the exact Kalman mean when the background error is ``N(0, B)``). ``B`` is estimated once from training data by
:func:`fit_background_covariance`: the sample covariance of background-error samples (e.g. forecast minus truth),
shrunk towards its diagonal (``shrinkage``) and optionally tapered by a localisation matrix, since the samples are
usually fewer than the state's size.

Example
-------
>>> import numpy as np
>>> from geodiff.baselines.var3d import var3d_analysis
>>> var3d_analysis(np.zeros(2), np.eye(2), np.array([[1.0, 0.0]]), np.array([2.0]), np.array([1.0])).tolist()
[1.0, 0.0]
"""

from __future__ import annotations

import numpy as np

from geodiff.errors import ConfigError, DataError, GridError, ObservationError

__all__ = ["fit_background_covariance", "var3d_analysis", "var3d_cost"]


def fit_background_covariance(
    errors: np.ndarray, *, shrinkage: float = 0.1, taper: np.ndarray | None = None
) -> np.ndarray:
    """Static ``B [D, D]`` from background-error samples ``errors [S, D]``:
    ``(1 - shrinkage) (S_hat o taper) + shrinkage diag(S_hat)`` (``S_hat`` the sample covariance, ``o`` the
    elementwise product with an optional localisation ``taper [D, D]``)."""
    errors = np.asarray(errors, dtype=np.float64)
    if errors.ndim != 2 or errors.shape[0] < 2:
        raise GridError(f"errors must be [S, D] with S >= 2 samples, got shape {errors.shape}")
    if not np.isfinite(errors).all():
        raise DataError("background-error samples hold NaN/inf values")
    if not 0 <= shrinkage <= 1:
        raise ConfigError(f"shrinkage must lie in [0, 1], got {shrinkage}")
    anomalies = errors - errors.mean(0)
    sample = anomalies.T @ anomalies / (errors.shape[0] - 1)
    if taper is not None:
        taper = np.asarray(taper, dtype=np.float64)
        if taper.shape != sample.shape:
            raise GridError(f"taper must be [{sample.shape[0]}, {sample.shape[0]}], got {taper.shape}")
        sample = sample * taper
    return (1 - shrinkage) * sample + shrinkage * np.diag(np.diag(sample))


def _check(background: np.ndarray, covariance: np.ndarray, operator: np.ndarray, y: np.ndarray,
           error_std: np.ndarray) -> tuple[np.ndarray, ...]:  # fmt: skip
    background = np.asarray(background, dtype=np.float64)
    covariance = np.asarray(covariance, dtype=np.float64)
    operator = np.asarray(operator, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    error_std = np.broadcast_to(np.asarray(error_std, dtype=np.float64).reshape(-1), y.shape)
    size = background.shape[-1]
    if covariance.shape != (size, size) or operator.shape != (y.size, size):
        raise GridError(f"need B [{size}, {size}] and H [{y.size}, {size}]; got {covariance.shape}, {operator.shape}")
    if not (np.isfinite(y).all() and (error_std > 0).all()):
        raise ObservationError("y must be finite and error_std positive")
    return background, covariance, operator, y, error_std


def var3d_analysis(
    background: np.ndarray, covariance: np.ndarray, operator: np.ndarray, y: np.ndarray, error_std: np.ndarray
) -> np.ndarray:
    """The 3D-Var analysis ``x_a [D]`` (or ``[M, D]`` for ``M`` backgrounds) (module docstring)."""
    background, b, h, y, error_std = _check(background, covariance, operator, y, error_std)
    bht = b @ h.T
    innovation_cov = h @ bht + np.diag(error_std**2)
    innovation = y - background @ h.T
    increment = np.linalg.solve(innovation_cov, innovation.T).T @ bht.T
    return background + increment


def var3d_cost(
    x: np.ndarray, background: np.ndarray, covariance: np.ndarray, operator: np.ndarray, y: np.ndarray,
    error_std: np.ndarray,
) -> float:
    """``J(x)`` of the module docstring (for checks; ``B`` must be invertible)."""
    background, b, h, y, error_std = _check(background, covariance, operator, y, error_std)
    dx = np.asarray(x, dtype=np.float64) - background
    dy = y - h @ np.asarray(x, dtype=np.float64)
    return float(dx @ np.linalg.solve(b, dx) / 2 + np.sum((dy / error_std) ** 2) / 2)
