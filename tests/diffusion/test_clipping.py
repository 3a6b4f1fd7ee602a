"""ClipDenoised: untouched members are bitwise unchanged; a runaway denoiser ends exactly at the bound."""

import pytest
import torch

from geodiff.diffusion.clipping import ClipDenoised
from geodiff.diffusion.gaussian import GaussianDenoiser
from geodiff.diffusion.samplers import DDPMSampler, HeunSampler
from geodiff.diffusion.schedules import EDMSchedule, VPSchedule
from geodiff.errors import ConfigError


@pytest.mark.parametrize("sampler, schedule", [(HeunSampler(), EDMSchedule()), (DDPMSampler(), VPSchedule())])
def test_a_bound_above_the_data_changes_nothing(sampler, schedule):
    prior = GaussianDenoiser(torch.zeros(4), torch.eye(4), shape=(1, 2, 2))
    noise = torch.randn(64, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    sigmas = schedule.sigmas(12)
    plain = sampler(prior, noise, sigmas, generator=torch.Generator().manual_seed(1))
    clipped = ClipDenoised(sampler, 10.0)(prior, noise, sigmas, generator=torch.Generator().manual_seed(1))
    assert torch.equal(plain, clipped)
    assert ClipDenoised(sampler, 10.0).nfe(12) == sampler.nfe(12)


def test_a_runaway_denoiser_ends_at_the_bound_and_a_tight_bound_clips():
    prior = GaussianDenoiser(torch.zeros(4), torch.eye(4), shape=(1, 2, 2))
    noise = torch.randn(256, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = ClipDenoised(HeunSampler(), 0.5)(prior, noise, EDMSchedule().sigmas(12))
    assert out.abs().max().item() == 0.5  # N(0, 1) samples pass 0.5 often: they end exactly on the bound
    with pytest.raises(ConfigError, match="bound"):
        ClipDenoised(HeunSampler(), 0.0)
