"""A denoiser that starts from an exact Gaussian prior and learns the correction.

``x0_hat(x, sigma) = E_G[x0 | x] + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))`` where ``E_G`` is the exact
posterior mean of ``x0 ~ N(0, S)`` given ``x = x0 + sigma eps`` (normalised anomalies have mean 0) and ``F`` a
backbone with EDM preconditioning (:class:`~geodiff.diffusion.denoiser.Denoiser`). With the backbone's output layer
initialised to zero (geodiff's UNet does this) the untrained denoiser *is* the Gaussian one, so guided sampling
starts from the Gaussian posterior (optimal interpolation with covariance ``S``) and training can only add what the
data show beyond it.

The covariance of the valid cells is a hybrid of the training anomalies and a stationary model:
``S = W^T W + blockdiag_c(K_c)`` with ``W [K, P]`` the training anomalies scaled by ``sqrt((1 - alpha) / (N - 1))``
(a low-rank, flow-dependent part) and ``K_c = alpha * (variance rho(d / L) + nugget [d = 0])`` a stationary
covariance per channel (:func:`geodiff.covariance.stationary_covariance`; what optimal interpolation uses). ``W``
is a buffer (saved with the weights); the stationary parameters and the grid are configuration. ``S`` is
decomposed once (``eigh``, float64) when first used on a mask.

Example
-------
>>> import torch
>>> from geodiff.backbones import UNet
>>> from geodiff.diffusion.gaussian_prior import GaussianResidualDenoiser
>>> prior = {"lat": [0.0, 1.0], "lon": [0.0, 1.0], "rank": 3, "cells": 4, "stationary": [
...     {"model": "exponential", "variance": 0.5, "length_scale": 300.0, "nugget": 0.01}]}
>>> denoiser = GaussianResidualDenoiser(UNet(1, base_channels=8, channel_mults=(1,), num_res_blocks=1),
...                                     prior=prior, sigma_data=1.0, mask=torch.ones(1, 2, 2, dtype=torch.bool))
>>> denoiser.factor.shape
torch.Size([3, 4])
>>> x = torch.randn(2, 1, 2, 2)
>>> torch.allclose(denoiser(x, 0.5), denoiser.gaussian(x, 0.5))  # zero-initialised network: exactly Gaussian
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from geodiff.covariance import MODELS, stationary_covariance
from geodiff.diffusion.denoiser import Denoiser, sigma_tensor
from geodiff.diffusion.spectral import GaussianSpectrum
from geodiff.errors import ConfigError, GridError

__all__ = ["GaussianResidualDenoiser", "hybrid_covariance"]


def _check_prior(prior: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(prior, Mapping):
        raise ConfigError(f"prior must be a dict, got {type(prior).__name__}")
    missing = [key for key in ("lat", "lon", "rank", "cells", "stationary") if key not in prior]
    if missing:
        raise ConfigError(f"prior lacks {missing}; it needs lat, lon, rank, cells and stationary")
    for key in ("rank", "cells"):
        value = prior[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"prior {key!r} must be an integer >= 0, got {value!r}")
    if not isinstance(prior["stationary"], list) or not prior["stationary"]:
        raise ConfigError("prior 'stationary' must be a list with one model per channel")
    for k, part in enumerate(prior["stationary"]):
        if not isinstance(part, Mapping) or part.get("model") not in MODELS:
            raise ConfigError(f"prior 'stationary'[{k}] needs 'model' in {MODELS}, 'variance', 'length_scale', 'nugget'")
    return {"lat": [float(v) for v in prior["lat"]], "lon": [float(v) for v in prior["lon"]],
            "rank": int(prior["rank"]), "cells": int(prior["cells"]),
            "stationary": [{"model": str(p["model"]), "variance": float(p["variance"]),
                            "length_scale": float(p["length_scale"]), "nugget": float(p["nugget"])}
                           for p in prior["stationary"]]}


def hybrid_covariance(factor: np.ndarray, stationary: list[Mapping[str, Any]], lat: Any, lon: Any,
                      mask: np.ndarray) -> np.ndarray:
    """``W^T W + blockdiag_c(K_c)`` over the valid cells of ``mask [C, H, W]`` (row-major), float64 ``[P, P]``."""
    mask = np.asarray(mask, dtype=bool)
    if len(stationary) != mask.shape[0]:
        raise GridError(f"the prior has {len(stationary)} stationary models for {mask.shape[0]} channels")
    factor = np.asarray(factor, dtype=np.float64)
    cells = int(mask.sum())
    if factor.shape[1] != cells:
        raise GridError(f"the prior's factor covers {factor.shape[1]} cells; the mask has {cells} valid cells")
    cov = factor.T @ factor
    start = 0
    for channel, part in enumerate(stationary):
        n = int(mask[channel].sum())
        cov[start:start + n, start:start + n] += stationary_covariance(
            part["model"], part["variance"], part["length_scale"], part["nugget"], lat, lon, mask[channel])
        start += n
    return cov


class GaussianResidualDenoiser(Denoiser):
    """Exact Gaussian denoiser of ``N(0, S)`` plus an EDM-preconditioned learned residual (module docstring).

    Parameters
    ----------
    backbone, sigma_data, parameterization, noise_label, schedule, mask: as :class:`Denoiser`.
    prior: ``{"lat": [H], "lon": [W], "rank": K, "cells": P, "stationary": [{"model", "variance", "length_scale",
        "nugget"} per channel]}`` (normalised units; length scale in km; ``P`` valid cells of the mask). The
        low-rank factor ``W [K, P]`` is the buffer :attr:`factor`, set by whoever builds the prior
        (``geodiff.fit``) and saved with the weights.
    correction: False leaves the learned correction out (the denoiser is the Gaussian part alone and the backbone
        is not run); ``geodiff.fit`` sets it when the correction does not help guided reconstructions of the
        validation period (:mod:`geodiff.training.correction_check`).
    """

    def __init__(self, backbone: nn.Module | dict[str, Any], *, prior: dict[str, Any], sigma_data: float = 1.0,
                 parameterization: str = "edm", noise_label: str = "edm", schedule: Any = None,
                 mask: Tensor | None = None, correction: bool = True):
        super().__init__(backbone, sigma_data=sigma_data, parameterization=parameterization,
                         noise_label=noise_label, schedule=schedule, mask=mask)
        prior = _check_prior(prior)
        if not isinstance(correction, bool):
            raise ConfigError(f"correction must be True or False, got {correction!r}")
        self.config["prior"] = prior
        self.config["correction"] = correction
        self.prior = prior
        self.correction = correction
        self.register_buffer("factor", torch.zeros(prior["rank"], prior["cells"], dtype=torch.float32))
        self._decomposition: tuple[str, Tensor, Tensor] | None = None
        if mask is not None:
            self.set_mask(mask)

    def set_mask(self, mask: Tensor | None) -> None:
        """Like :meth:`Denoiser.set_mask`; the mask must fit the prior's grid and number of valid cells."""
        if mask is not None and hasattr(self, "prior"):
            mask = torch.as_tensor(mask, dtype=torch.bool)
            expected = (len(self.prior["stationary"]), len(self.prior["lat"]), len(self.prior["lon"]))
            if tuple(mask.shape) != expected or int(mask.sum()) != self.prior["cells"]:
                raise GridError(f"mask {list(mask.shape)} with {int(mask.sum())} valid cells does not fit the prior "
                                f"({list(expected)}, {self.prior['cells']} valid cells)")
        super().set_mask(mask)
        self._decomposition = None

    def covariance(self) -> np.ndarray:
        """The prior covariance ``S [P, P]`` (float64) of the valid cells."""
        return hybrid_covariance(self.factor.detach().cpu().numpy(), self.prior["stationary"], self.prior["lat"],
                                 self.prior["lon"], self.mask.cpu().numpy())

    def _eigen(self) -> tuple[Tensor, Tensor]:
        if self.mask is None:
            raise GridError("set the mask (set_mask) before using the Gaussian prior")
        key = hashlib.sha256(self.factor.detach().cpu().numpy().tobytes()).hexdigest()
        if self._decomposition is None or self._decomposition[0] != key:
            values, vectors = np.linalg.eigh(self.covariance())
            device = self.factor.device
            self._decomposition = (key, torch.from_numpy(np.clip(values, 0.0, None)).to(device),
                                   torch.from_numpy(vectors).to(device))
        return self._decomposition[1], self._decomposition[2]

    def gaussian_spectrum(self) -> GaussianSpectrum:
        """The eigendecomposition of ``S`` on the valid cells (:mod:`geodiff.diffusion.spectral`): the Gaussian part's
        Tweedie covariance, without the learned correction's Jacobian."""
        values, vectors = self._eigen()
        return GaussianSpectrum(torch.nonzero(self.mask.reshape(-1)).flatten(), values, vectors)

    def gaussian(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """Exact ``E[x0 | x]`` under ``N(0, S)`` on the valid cells (0 elsewhere), ``x [B, C, H, W]``; float64 maths."""
        values, vectors = self._eigen()
        sigma = sigma_tensor(sigma, x.shape[0], x.device).to(torch.float64)
        valid = self.mask.reshape(-1)
        flat = x.reshape(x.shape[0], -1).to(torch.float64)[:, valid]
        shrink = values / (values + sigma[:, None] ** 2)
        x0 = ((flat @ vectors) * shrink) @ vectors.T
        out = torch.zeros(x.shape[0], valid.numel(), dtype=torch.float64, device=x.device)
        out[:, valid] = x0
        return out.to(x.dtype).reshape(x.shape)

    def forward(self, x: Tensor, sigma: float | Tensor, cond: dict[str, Tensor] | None = None, *,
                mask: Tensor | None = None) -> Tensor:
        """``E_G[x0 | x] + c_out F(c_in x)`` on the valid cells (``E_G[x0 | x]`` alone without the correction).
        A per-call ``mask`` must equal the prior's."""
        if mask is not None:
            mask = torch.as_tensor(mask, device=x.device)
            if not bool((mask == self.mask.to(mask.device)).all()):
                raise GridError("a GaussianResidualDenoiser works on its prior's whole grid; train it without patches")
        if not self.correction:
            return self.gaussian(x, sigma)
        learned = super().forward(x, sigma, cond)
        _, c_skip, _, _ = self.coefficients(sigma_tensor(sigma, x.shape[0], x.device).to(torch.float64))
        valid = self.mask.to(dtype=x.dtype, device=x.device)
        skip = (c_skip.to(x.dtype).reshape(-1, 1, 1, 1) * x) * valid
        return learned - skip + self.gaussian(x, sigma)
