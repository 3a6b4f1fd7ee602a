r"""Ensemble transform Kalman filter (ETKF, Hunt et al. 2007), optionally local (LETKF with R-localisation).

Analysis of an ensemble ``X [K, D]`` (``K`` members) with observations ``y = H x + e`` (``H [N, D]``,
``R = diag(error_std^2)``). With ``X_b`` the anomalies ``[D, K]`` (scaled by the multiplicative ``inflation``
``rho``: ``sqrt(rho) X_b``), ``Y_b = H X_b`` and ``C = Y_b^T R^-1``:

    ``P~ = [(K - 1) I + C Y_b]^-1``,  ``w = P~ C (y - H x_mean)``,  ``W = [(K - 1) P~]^(1/2)`` (symmetric root)

and the analysis members are ``x_mean + X_b (w + W_k)``. Its mean and covariance are the exact Kalman update of
the ensemble's Gaussian (mean, sample covariance): what the tests check. With ``localization [P, N]`` (weights
in [0, 1] of observation ``n`` for analysis point ``p``, e.g. Gaspari-Cohn of the distance) and ``state_point
[D]`` (the point of each state element), every point gets its own transform with ``R^-1`` multiplied by its
weights (LETKF), computed for all points at once.

Example
-------
>>> import numpy as np
>>> from geodiff.baselines.etkf import etkf
>>> ensemble = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0]])
>>> etkf(ensemble, np.array([[1.0, 0.0]]), np.array([3.0]), np.array([1.0])).mean(0).round(3).tolist()
[2.0, 0.333]
"""

from __future__ import annotations

import numpy as np

from geodiff.errors import ConfigError, GridError, ObservationError

__all__ = ["etkf", "gaspari_cohn"]


def gaspari_cohn(distance: np.ndarray, radius: float) -> np.ndarray:
    """Gaspari & Cohn (1999) fifth-order taper of ``distance`` (same units as ``radius``; 0 beyond ``2 radius``).

    >>> gaspari_cohn(np.array([0.0, 2.0]), 1.0).tolist()
    [1.0, 0.0]
    """
    if not radius > 0:
        raise ConfigError(f"radius must be positive, got {radius}")
    r = np.abs(np.asarray(distance, dtype=np.float64)) / radius
    out = np.zeros_like(r)
    near = r <= 1
    far = (r > 1) & (r < 2)
    a = r[near]
    out[near] = -0.25 * a**5 + 0.5 * a**4 + 0.625 * a**3 - 5 / 3 * a**2 + 1
    b = r[far]
    out[far] = b**5 / 12 - 0.5 * b**4 + 0.625 * b**3 + 5 / 3 * b**2 - 5 * b + 4 - 2 / (3 * b)
    return out


def _transform(yb: np.ndarray, innovation: np.ndarray, weight: np.ndarray, members: int) -> tuple[np.ndarray, ...]:
    """``w [..., K]`` and ``W [..., K, K]`` from ``Y_b [N, K]``, ``innovation [N]`` and ``R^-1 weights [..., N]``."""
    c = yb.T[None] * weight[:, None, :]  # [P, K, N]
    precision = (members - 1) * np.eye(members) + c @ yb  # [P, K, K]
    values, vectors = np.linalg.eigh(precision)
    p_tilde = (vectors / values[:, None, :]) @ np.swapaxes(vectors, -1, -2)
    w_mean = np.einsum("pkl,pln,n->pk", p_tilde, c, innovation)
    w_pert = (vectors * np.sqrt((members - 1) / values)[:, None, :]) @ np.swapaxes(vectors, -1, -2)
    return w_mean, w_pert


def etkf(
    ensemble: np.ndarray,
    operator: np.ndarray,
    y: np.ndarray,
    error_std: np.ndarray,
    *,
    inflation: float = 1.0,
    localization: np.ndarray | None = None,
    state_point: np.ndarray | None = None,
) -> np.ndarray:
    """Analysis ensemble ``[K, D]`` of ``ensemble [K, D]`` (module docstring)."""
    ensemble = np.asarray(ensemble, dtype=np.float64)
    operator = np.asarray(operator, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    error_std = np.broadcast_to(np.asarray(error_std, dtype=np.float64).reshape(-1), y.shape)
    if ensemble.ndim != 2 or ensemble.shape[0] < 2:
        raise GridError(f"ensemble must be [K, D] with K >= 2 members, got {ensemble.shape}")
    members, size = ensemble.shape
    if operator.shape != (y.size, size):
        raise GridError(f"H must be [{y.size}, {size}], got {operator.shape}")
    if not (np.isfinite(y).all() and (error_std > 0).all()):
        raise ObservationError("y must be finite and error_std positive")
    if not inflation >= 1:
        raise ConfigError(f"inflation must be >= 1, got {inflation}")
    mean = ensemble.mean(0)
    anomalies = (ensemble - mean).T * np.sqrt(inflation)  # [D, K]
    yb = operator @ anomalies  # [N, K]
    innovation = y - operator @ mean
    inverse_r = 1 / error_std**2
    if localization is None:
        w_mean, w_pert = _transform(yb, innovation, inverse_r[None], members)
        weights = w_mean[0][:, None] + w_pert[0]  # [K, K']
        return (mean[:, None] + anomalies @ weights).T
    localization = np.asarray(localization, dtype=np.float64)
    state_point = np.asarray(state_point)
    if localization.ndim != 2 or localization.shape[1] != y.size or state_point.shape != (size,):
        raise GridError(f"localization must be [P, {y.size}] and state_point [{size}]; got {localization.shape}, "
                        f"{state_point.shape}")
    w_mean, w_pert = _transform(yb, innovation, localization * inverse_r[None], members)
    weights = w_mean[:, :, None] + w_pert  # [P, K, K']
    analysis = mean[:, None] + np.einsum("dk,dkl->dl", anomalies, weights[state_point])
    return analysis.T
