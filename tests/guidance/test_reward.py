"""Reward guidance on a Gaussian oracle: the quadratic reward's tilted Gaussian mean, its x0 step, and its
combination with observation guidance."""

import pytest
import torch

from geodiff.diffusion.gaussian import GaussianDenoiser
from geodiff.errors import ConfigError
from geodiff.guidance import DPSGuidance, RewardGuidance, combine
from geodiff.operators import GridPointOperator


def test_reward_guidance_of_a_quadratic_reward_is_the_tilted_gaussian_mean():
    # prior N(0, I), reward r(x) = -|x - a|^2 / 2 with scale lambda: tilted density N(lambda a / (1 + lambda), ...)
    prior = GaussianDenoiser(torch.zeros(4), torch.eye(4), shape=(1, 2, 2))
    target = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    lam = 1.5

    def reward(x):
        return -0.5 * (x.flatten(1) - target).pow(2).sum(1)

    guidance = RewardGuidance(reward, scale=lam)
    sigma, x = 0.8, torch.randn(2, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    shrink = 1 / (1 + sigma**2)
    x0 = shrink * x.flatten(1)
    expected = x0 + lam * sigma**2 * shrink * (target - x0)  # x0_hat + lambda sigma^2 J^T grad r
    torch.testing.assert_close(guidance.wrap(prior)(x, sigma).flatten(1), expected)
    # mode "x0": one gradient step on x0_hat
    step = RewardGuidance(reward, scale=0.25, mode="x0").wrap(prior)(x, sigma).flatten(1)
    torch.testing.assert_close(step, x0 + 0.25 * (target - x0))
    # combined with observation guidance the corrections add
    op = GridPointOperator(torch.tensor([0]), (1, 2, 2))
    obs = DPSGuidance(torch.tensor([1.0], dtype=torch.float64), op, 0.5)
    both = combine([obs, guidance]).wrap(prior)(x, sigma)
    alone = obs.wrap(prior)(x, sigma)
    torch.testing.assert_close(both, alone + guidance.wrap(prior)(x, sigma) - prior(x, sigma))


def test_reward_guidance_has_settings_and_no_observations():
    guidance = RewardGuidance(lambda x: x.flatten(1).sum(1), scale=2.0, mode="x0", description="sum")
    assert guidance.describe() == {"name": "reward", "n_obs": 0, "scale": 2.0, "mode": "x0", "reward": "sum"}
    assert not hasattr(guidance, "observations")
    with pytest.raises(ConfigError, match="mode"):
        RewardGuidance(lambda x: x, mode="ascent")
    with pytest.raises(ConfigError, match="callable"):
        RewardGuidance("reward")
    with pytest.raises(ConfigError, match="scale"):
        RewardGuidance(lambda x: x, scale=-1.0)
