"""Guidance through a decoder on a Gaussian oracle: linearised MMPS is the exact posterior mean for a linear
decoder; DPS through the decoder is its DPS formula."""

import torch

from geodiff.diffusion.gaussian import GaussianDenoiser
from geodiff.diffusion.samplers import HeunSampler
from geodiff.diffusion.schedules import EDMSchedule
from geodiff.guidance import DecodedOperator, DPSGuidance, LatentMMPSGuidance
from geodiff.operators import GridPointOperator

LATENT = (2, 2, 2)


def setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    root = torch.randn(8, 8, generator=g, dtype=torch.float64)
    cov = root @ root.T / 8 + 0.2 * torch.eye(8, dtype=torch.float64)
    prior = GaussianDenoiser(torch.randn(8, generator=g, dtype=torch.float64), cov, shape=LATENT)
    weight = torch.randn(16, 8, generator=g, dtype=torch.float64)

    def decoder(z):
        return (z.flatten(1) @ weight.T).reshape(z.shape[0], 1, 4, 4)

    op = GridPointOperator(torch.tensor([1, 6, 14]), (1, 4, 4))
    y = torch.randn(3, generator=g, dtype=torch.float64)
    error_std = torch.tensor([0.3, 0.5, 0.4], dtype=torch.float64)
    h = torch.eye(16, dtype=torch.float64)[[1, 6, 14]] @ weight  # [3, 8]
    return prior, cov, decoder, op, y, error_std, h


def exact_guided_mean(prior, cov, h, y, error_std, x, sigma):
    m = prior(x, sigma).flatten(1)
    jac = cov @ torch.linalg.inv(cov + sigma**2 * torch.eye(8, dtype=torch.float64))
    s = sigma**2 * jac
    gain = s @ h.T @ torch.linalg.inv(h @ s @ h.T + torch.diag(error_std**2))
    return (m + (y - m @ h.T) @ gain.T).reshape(x.shape), m, jac


def test_latent_mmps_is_the_exact_posterior_mean_for_a_linear_decoder():
    prior, cov, decoder, op, y, error_std, h = setup()
    x = torch.randn(2, *LATENT, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    guidance = LatentMMPSGuidance(y, DecodedOperator(decoder, op), error_std, cg_iterations=3)
    for sigma in (0.1, 1.0, 5.0):
        expected, m, _ = exact_guided_mean(prior, cov, h, y, error_std, x, sigma)
        got = guidance.wrap(prior)(x, sigma)
        torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-10)
        assert (got.flatten(1) - m).abs().max() > 1e-3  # the observations did move the estimate


def test_dps_through_the_decoder_is_the_dps_formula():
    prior, cov, decoder, op, y, error_std, h = setup(2)
    x = torch.randn(3, *LATENT, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    sigma = 0.7
    _, m, jac = exact_guided_mean(prior, cov, h, y, error_std, x, sigma)
    expected = m + sigma**2 * ((y - m @ h.T) / error_std**2) @ h @ jac  # jac symmetric
    got = DPSGuidance(y, DecodedOperator(decoder, op), error_std, limit_overshoot=False).wrap(prior)(x, sigma)
    torch.testing.assert_close(got.flatten(1), expected, rtol=1e-9, atol=1e-10)


def test_guided_sampling_with_linearised_mmps_draws_the_kalman_posterior():
    prior, cov, decoder, op, y, error_std, h = setup(4)
    guidance = LatentMMPSGuidance(y, DecodedOperator(decoder, op), error_std, cg_iterations=3)
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(400, *LATENT, generator=g, dtype=torch.float64)
    z = guidance.sample(HeunSampler(), prior, noise, EDMSchedule(sigma_max=40.0).sigmas(48), generator=g)
    mean, posterior_cov = prior.posterior(h, y, torch.diag(error_std**2))
    spread = posterior_cov.diagonal().sqrt()
    # 400 draws: the sample mean is within 4 standard errors (spread / 20) of the exact posterior mean
    assert ((z.flatten(1).mean(0) - mean).abs() / spread).max() < 4 / 20
    torch.testing.assert_close(z.flatten(1).std(0), spread, rtol=0.15, atol=0)
