"""Denoising losses: masking, weighting, noise-level distributions, reproducibility, analytic values."""

import math

import pytest
import torch

from geodiff.diffusion.gaussian import GaussianDenoiser
from geodiff.diffusion.losses import DDPMLoss, EDMLoss, masked_mean
from geodiff.diffusion.schedules import VPSchedule
from geodiff.errors import ConfigError, GridError

from tests.training.training_helpers import SHAPE, gaussian_data, tiny_denoiser

LOSSES = {"edm": EDMLoss(), "ddpm": DDPMLoss()}


def land_mask():
    mask = torch.ones(SHAPE, dtype=torch.bool)
    mask[0, :2, 1:] = False
    mask[1, 3, :] = False
    return mask


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("denoiser_mask", [False, True], ids=["plain_denoiser", "masked_denoiser"])
def test_land_values_do_not_change_the_loss(name, denoiser_mask):
    loss, mask = LOSSES[name], land_mask()
    denoiser = tiny_denoiser(mask=mask if denoiser_mask else None)
    x0 = gaussian_data(6)
    other = x0.clone()
    other[:, ~mask] = torch.randn(6, int((~mask).sum())) * 50.0  # arbitrary land values
    first = loss(denoiser, x0, mask=mask, generator=torch.Generator().manual_seed(3))
    second = loss(denoiser, other, mask=mask, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, second)
    # ... while ocean values do change it
    other[:, mask] += 1.0
    assert loss(denoiser, other, mask=mask, generator=torch.Generator().manual_seed(3)) != first


@pytest.mark.parametrize("name", LOSSES)
def test_loss_is_weighted_mean_over_valid_cells_only(name):
    loss, mask = LOSSES[name], land_mask()
    x0 = gaussian_data(5)

    def zero(x, sigma, cond=None):  # D = 0: the squared error is x0^2
        return torch.zeros_like(x)

    value = loss(zero, x0, mask=mask, generator=torch.Generator().manual_seed(4))
    draw = loss.draw(x0.shape, generator=torch.Generator().manual_seed(4))
    per_sample = (x0**2 * mask).flatten(1).sum(1).double()
    expected = (per_sample * draw.weight).sum() / (mask.sum() * x0.shape[0])
    torch.testing.assert_close(value.double(), expected, rtol=1e-6, atol=0)
    everything_land = loss(zero, x0, mask=torch.zeros(SHAPE, dtype=torch.bool), generator=torch.Generator())
    assert everything_land.item() == 0.0
    # a per-sample mask [B, C, H, W] (crops) works the same way
    batch_mask = mask.expand(5, *SHAPE)
    same = loss(zero, x0, mask=batch_mask, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(same, value)


def test_masked_mean_ignores_invalid_cells():
    values = torch.arange(8.0).reshape(1, 2, 2, 2)
    mask = torch.tensor([[[True, False], [False, False]], [[False, False], [False, True]]])
    assert masked_mean(values, mask).item() == (0.0 + 7.0) / 2


def test_edm_noise_levels_are_lognormal_with_edm_weight():
    loss = EDMLoss(P_mean=-1.0, P_std=0.8, sigma_data=0.3)
    sigma, weight = loss.noise_levels(20000, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert sigma.dtype == weight.dtype == torch.float64
    log = sigma.log()
    assert abs(log.mean().item() + 1.0) < 0.02 and abs(log.std().item() - 0.8) < 0.02
    torch.testing.assert_close(weight, (sigma**2 + 0.09) / (sigma * 0.3) ** 2)


def test_ddpm_timesteps_are_uniform_and_weight_gives_eps_mse():
    schedule = VPSchedule(num_train_timesteps=50)
    loss = DDPMLoss(schedule)
    sigma, weight = loss.noise_levels(50000, torch.Generator().manual_seed(0), torch.device("cpu"))
    t = torch.searchsorted(schedule.train_sigmas, sigma)
    assert torch.equal(schedule.train_sigmas[t], sigma)
    counts = torch.bincount(t, minlength=50).double()
    assert (counts - 1000).abs().max() < 5 * math.sqrt(1000)  # uniform within 5 standard errors
    torch.testing.assert_close(weight, sigma**-2)


def test_ddpm_loss_equals_ddpm_eps_objective_in_vp_coordinates():
    """L = |eps_net(sqrt(abar) x0 + sqrt(1 - abar) eps, t) - eps|^2 for an eps-parameterised denoiser."""
    schedule = VPSchedule()
    denoiser = tiny_denoiser(parameterization="eps", noise_label="vp_timestep", schedule=schedule)
    loss = DDPMLoss(schedule)
    x0 = gaussian_data(16)
    value = loss(denoiser, x0, generator=torch.Generator().manual_seed(2))
    draw = loss.draw(x0.shape, generator=torch.Generator().manual_seed(2))
    t = torch.searchsorted(schedule.train_sigmas, draw.sigma)
    abar = schedule.alphas_cumprod[t].float().reshape(-1, 1, 1, 1)
    x_vp = abar.sqrt() * x0 + (1 - abar).sqrt() * draw.noise
    with torch.no_grad():
        eps_hat = denoiser.backbone(x_vp, t.float())
    expected = ((eps_hat - draw.noise) ** 2).mean()
    torch.testing.assert_close(value.detach(), expected, rtol=2e-4, atol=0)


def test_exact_denoiser_scores_one_under_edm_weighting():
    """For N(0, sd^2) cells the exact denoiser has lambda(sigma) E|D - x0|^2 = 1 at every sigma."""
    oracle = GaussianDenoiser(torch.zeros(8), torch.eye(8) * 0.25, shape=(2, 2, 2))
    x0 = oracle.sample(4000, generator=torch.Generator().manual_seed(0)).float()
    value = EDMLoss(sigma_data=0.5)(oracle, x0, generator=torch.Generator().manual_seed(1))
    assert abs(value.item() - 1.0) < 0.03  # standard error sqrt(2 / 32000) = 0.008


@pytest.mark.parametrize("name", LOSSES)
def test_same_generator_same_loss(name):
    loss, denoiser, x0 = LOSSES[name], tiny_denoiser(), gaussian_data(4)
    a = loss(denoiser, x0, generator=torch.Generator().manual_seed(9))
    b = loss(denoiser, x0, generator=torch.Generator().manual_seed(9))
    c = loss(denoiser, x0, generator=torch.Generator().manual_seed(10))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_arguments_are_rejected():
    denoiser, x0 = tiny_denoiser(), gaussian_data(2)
    with pytest.raises(GridError, match="mask"):
        EDMLoss()(denoiser, x0, mask=torch.ones(1, 4, 4, dtype=torch.bool))
    with pytest.raises(GridError, match="bool"):
        EDMLoss()(denoiser, x0, mask=torch.ones(SHAPE))
    with pytest.raises(GridError, match="B, C, H, W"):
        EDMLoss()(denoiser, x0[0])
    with pytest.raises(ConfigError, match="VPSchedule"):
        DDPMLoss(schedule="vp")
    with pytest.raises(ConfigError, match="P_std"):
        EDMLoss(P_std=0)
