"""3D-Var and ETKF reproduce the exact Kalman analysis in a linear-Gaussian case."""

import numpy as np
import pytest
import torch

from geodiff.baselines.etkf import etkf, gaspari_cohn
from geodiff.baselines.var3d import fit_background_covariance, var3d_analysis, var3d_cost
from geodiff.diffusion.gaussian import GaussianDenoiser
from geodiff.errors import ConfigError, GridError, ObservationError


def problem(seed=0, size=6, n_obs=3):
    rng = np.random.default_rng(seed)
    root = rng.normal(size=(size, size))
    cov = root @ root.T / size + 0.1 * np.eye(size)
    mean = rng.normal(size=size)
    h = rng.normal(size=(n_obs, size))
    error_std = rng.uniform(0.2, 0.8, size=n_obs)
    y = rng.normal(size=n_obs)
    return mean, cov, h, y, error_std


def kalman(mean, cov, h, y, error_std):
    oracle = GaussianDenoiser(torch.as_tensor(mean), torch.as_tensor(cov), shape=(1, 1, mean.size))
    m, c = oracle.posterior(torch.as_tensor(h), torch.as_tensor(y), torch.diag(torch.as_tensor(error_std) ** 2))
    return m.numpy(), c.numpy()


def test_var3d_is_the_kalman_mean_and_minimises_the_cost():
    mean, cov, h, y, error_std = problem()
    analysis = var3d_analysis(mean, cov, h, y, error_std)
    np.testing.assert_allclose(analysis, kalman(mean, cov, h, y, error_std)[0], rtol=1e-10, atol=1e-12)
    cost = var3d_cost(analysis, mean, cov, h, y, error_std)
    rng = np.random.default_rng(1)
    for _ in range(5):
        assert var3d_cost(analysis + 1e-3 * rng.normal(size=mean.size), mean, cov, h, y, error_std) > cost
    batch = var3d_analysis(np.stack([mean, mean]), cov, h, y, error_std)
    np.testing.assert_allclose(batch, np.stack([analysis, analysis]), rtol=1e-12)


def test_fitted_covariance_is_the_sample_covariance_shrunk_to_its_diagonal():
    samples = np.random.default_rng(2).normal(size=(50, 4))
    sample_cov = np.cov(samples, rowvar=False)
    np.testing.assert_allclose(fit_background_covariance(samples, shrinkage=0.0), sample_cov, rtol=1e-12)
    shrunk = fit_background_covariance(samples, shrinkage=0.25)
    np.testing.assert_allclose(np.diag(shrunk), np.diag(sample_cov), rtol=1e-12)
    np.testing.assert_allclose(shrunk[0, 1], 0.75 * sample_cov[0, 1], rtol=1e-12)
    with pytest.raises(ConfigError, match="shrinkage"):
        fit_background_covariance(samples, shrinkage=2.0)


def test_etkf_mean_and_covariance_are_the_kalman_update_of_the_ensemble_gaussian():
    _, _, h, y, error_std = problem(n_obs=4)
    ensemble = np.random.default_rng(3).normal(size=(12, 6)) + 1.0
    analysis = etkf(ensemble, h, y, error_std)
    mean, cov = kalman(ensemble.mean(0), np.cov(ensemble, rowvar=False), h, y, error_std)
    np.testing.assert_allclose(analysis.mean(0), mean, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(np.cov(analysis, rowvar=False), cov, rtol=1e-9, atol=1e-10)
    # inflation: the Kalman update of the inflated covariance
    inflated = etkf(ensemble, h, y, error_std, inflation=1.5)
    mean, cov = kalman(ensemble.mean(0), 1.5 * np.cov(ensemble, rowvar=False), h, y, error_std)
    np.testing.assert_allclose(inflated.mean(0), mean, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(np.cov(inflated, rowvar=False), cov, rtol=1e-9, atol=1e-10)


def test_letkf_with_unit_weights_is_the_global_etkf_and_zero_weights_leave_the_background():
    _, _, h, y, error_std = problem(n_obs=4)
    ensemble = np.random.default_rng(4).normal(size=(8, 6))
    point = np.array([0, 0, 1, 1, 2, 2])
    np.testing.assert_allclose(etkf(ensemble, h, y, error_std, localization=np.ones((3, 4)), state_point=point),
                               etkf(ensemble, h, y, error_std), rtol=1e-10, atol=1e-12)
    weights = np.ones((3, 4))
    weights[1] = 0.0
    local = etkf(ensemble, h, y, error_std, localization=weights, state_point=point)
    np.testing.assert_allclose(local[:, 2:4], ensemble[:, 2:4], rtol=1e-12, atol=1e-12)


def test_gaspari_cohn_and_errors():
    taper = gaspari_cohn(np.linspace(0, 3, 31), 1.0)
    assert taper[0] == 1.0 and np.all(np.diff(taper) <= 1e-12) and np.all(taper[20:] == 0)
    with pytest.raises(GridError, match="H must be"):
        etkf(np.zeros((3, 2)), np.zeros((1, 3)), np.zeros(1), np.ones(1))
    with pytest.raises(ObservationError):
        var3d_analysis(np.zeros(2), np.eye(2), np.eye(2), np.array([1.0, np.nan]), np.ones(2))
