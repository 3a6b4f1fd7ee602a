"""A linear-Gaussian test problem with an exact answer: Gaussian prior on a 1x6x8 field, its exact denoiser,
linear observations with Gaussian noise, and the Kalman posterior that guided samplers are compared with."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from geodiff.diffusion.gaussian import GaussianDenoiser
from geodiff.operators import GridPointOperator, PointOperator

H, W = 6, 8
LAT = np.linspace(-10.0, 10.0, H)
LON = np.arange(0.0, 360.0, 45.0)  # global: periodic longitude


def smooth_prior() -> GaussianDenoiser:
    """Unit-variance squared-exponential covariance (length 1.5 cells) around a smooth non-zero mean."""
    jj, ii = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    points = torch.stack([jj.flatten(), ii.flatten()], 1)
    cov = torch.exp(-torch.cdist(points, points) ** 2 / (2 * 1.5**2)) + 1e-3 * torch.eye(H * W)
    mean = (0.5 * torch.sin(ii * math.pi / 4) + 0.05 * jj).flatten()
    return GaussianDenoiser(mean, cov, (1, H, W))


@dataclass
class GaussianProblem:
    prior: GaussianDenoiser
    operator: object
    y: torch.Tensor  # [N] float64
    error_std: torch.Tensor  # [N] float64
    matrix: torch.Tensor  # dense A [N, D] (test oracle only)
    mean: torch.Tensor  # Kalman posterior mean [D]
    cov: torch.Tensor  # Kalman posterior covariance [D, D]

    def sample(self, guidance, sampler, sigmas, members: int, seed: int = 0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn(members, 1, H, W, generator=generator)
        return guidance.sample(sampler, self.prior, noise, sigmas, generator=generator)

    def errors(self, x: torch.Tensor) -> dict[str, float]:
        """Ensemble vs Kalman posterior: ``relative_mean_error = |m - mu_post| / |mu_prior - mu_post|`` (0 exact,
        1 = no better than the prior mean), ``max_z = max |m - mu_post| / sd_post``, and the variance ratio
        ensemble / posterior over the cells the observations leave uncertain (posterior sd > 0.05)."""
        x = x.reshape(x.shape[0], -1).to(torch.float64)
        m, v = x.mean(0), x.var(0)
        sd = self.cov.diagonal().sqrt()
        uncertain = sd > 0.05
        ratio = v[uncertain] / self.cov.diagonal()[uncertain]
        relative = torch.linalg.norm(m - self.mean) / torch.linalg.norm(self.prior.mean - self.mean)
        return {
            "relative_mean_error": float(relative),
            "max_z": float(((m - self.mean).abs() / sd).max()),
            "variance_ratio_mean": float(ratio.mean()),
            "variance_ratio_min": float(ratio.min()),
            "variance_ratio_max": float(ratio.max()),
        }


def _problem(operator, matrix, error: float, noisy: bool, seed: int = 3) -> GaussianProblem:
    prior = smooth_prior()
    generator = torch.Generator().manual_seed(seed)
    truth = prior.sample(1, generator=generator).reshape(-1)
    error_std = torch.full((matrix.shape[0],), error, dtype=torch.float64)
    y = matrix @ truth
    if noisy:
        y = y + error_std * torch.randn(matrix.shape[0], generator=generator, dtype=torch.float64)
    mean, cov = prior.posterior(matrix, y, torch.diag(error_std**2))
    return GaussianProblem(prior, operator, y, error_std, matrix, mean, cov)


@pytest.fixture(scope="session")
def point_problem() -> GaussianProblem:
    """Six interpolated (off-grid) observations, one across the dateline, error_std 0.2 (prior sd 1)."""
    operator = PointOperator(
        LAT, LON, lat=[-7.0, -2.5, 1.0, 3.3, 8.0, 9.0], lon=[10.0, 100.0, 200.0, 352.0, 60.0, 290.0]
    )
    return _problem(operator, operator.to_sparse().to_dense(), 0.2, noisy=True)


@pytest.fixture(scope="session")
def grid_problem() -> GaussianProblem:
    """Six observations exactly on grid points, (nearly) noise-free: error_std 1e-3."""
    index = torch.tensor([3, 12, 21, 30, 37, 46])
    matrix = torch.zeros(6, H * W, dtype=torch.float64)
    matrix[torch.arange(6), index] = 1.0
    return _problem(GridPointOperator(index, (1, H, W)), matrix, 1e-3, noisy=False)
