"""Preconditioning: every parameterisation, fed the ideal network output, gives the exact denoiser."""

import pytest
import torch
from torch import nn

from geodiff.config import Configurable
from geodiff.diffusion.denoiser import Denoiser, eps_to_x0, v_to_x0, x0_to_eps, x0_to_v
from geodiff.diffusion.gaussian import GaussianDenoiser
from geodiff.diffusion.schedules import VPSchedule
from geodiff.errors import ConfigError, GridError


class IdealBackbone(Configurable, nn.Module):
    """Computes what a perfect network of a given parameterisation would output, from the exact denoiser.

    It recovers sigma from the noise label and x from the preconditioned input, so the whole
    preconditioning chain (c_in, c_noise, c_skip, c_out) is exercised."""

    def __init__(self, parameterization: str = "edm", noise_label: str = "edm"):
        super().__init__()
        self.parameterization, self.noise_label = parameterization, noise_label
        self.oracle = GaussianDenoiser(torch.linspace(-1, 1, 6), torch.eye(6) * 0.3 + 0.1, (1, 2, 3))
        self.schedule = VPSchedule()
        self.probe = None

    def forward(self, x_in, noise_label, *, mask=None, cond=None):
        label = noise_label.to(torch.float64)
        if self.noise_label == "edm":
            sigma = (4 * label).exp()
        elif self.noise_label == "sigma":
            sigma = label
        else:
            index = label.floor().long().clamp(max=998)
            frac = label - index
            logs = self.schedule.train_sigmas.log()
            sigma = (logs[index] * (1 - frac) + logs[index + 1] * frac).exp()
        c = sigma.reshape(-1, 1, 1, 1)
        if self.parameterization == "edm":
            x = x_in.to(torch.float64) * (c**2 + 0.25).sqrt()
            c_skip, c_out = 0.25 / (c**2 + 0.25), c * 0.5 / (c**2 + 0.25).sqrt()
            return (self.oracle(x, sigma) - c_skip * x) / c_out
        x = x_in.to(torch.float64) * (1 + c**2).sqrt()
        x0 = self.oracle(x, sigma)
        if self.parameterization == "eps":
            return x0_to_eps(x, x0, sigma)
        if self.parameterization == "v":
            return x0_to_v(x, x0, sigma)
        return x0


@pytest.mark.parametrize("parameterization", ["edm", "eps", "v", "x0"])
@pytest.mark.parametrize("noise_label", ["edm", "sigma", "vp_timestep"])
def test_ideal_network_gives_exact_denoiser(parameterization, noise_label):
    backbone = IdealBackbone(parameterization, noise_label)
    denoiser = Denoiser(backbone, parameterization=parameterization, noise_label=noise_label, schedule=VPSchedule())
    x = torch.randn(4, 1, 2, 3, dtype=torch.float64) * 3
    sigma = torch.tensor([0.05, 0.7, 3.0, 40.0], dtype=torch.float64)
    expected = backbone.oracle(x, sigma)
    # the fractional-timestep label interpolates log sigma linearly between training levels: exact up to float32
    torch.testing.assert_close(denoiser(x, sigma), expected, rtol=2e-5, atol=2e-5)


def test_conversions_round_trip():
    x, x0 = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    sigma = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    torch.testing.assert_close(eps_to_x0(x, x0_to_eps(x, x0, sigma), sigma), x0)
    torch.testing.assert_close(v_to_x0(x, x0_to_v(x, x0, sigma), sigma), x0, rtol=1e-5, atol=1e-5)


def test_mask_zeroes_invalid_cells_and_hides_their_inputs():
    seen = {}

    class Recorder(Configurable, nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(()))

        def forward(self, x_in, noise_label, *, mask=None, cond=None):
            seen["x_in"], seen["mask"] = x_in, mask
            return x_in * self.weight

    mask = torch.ones(1, 3, 3, dtype=torch.bool)
    mask[0, 1, 1] = False
    denoiser = Denoiser(Recorder(), mask=mask)
    out = denoiser(torch.full((2, 1, 3, 3), 5.0), 1.0)
    assert out[:, 0, 1, 1].eq(0).all() and out[:, 0, 0, 0].ne(0).all()
    assert seen["x_in"][:, 0, 1, 1].eq(0).all() and seen["mask"] is denoiser.mask


def test_bad_arguments_are_named():
    with pytest.raises(ConfigError, match="parameterization"):
        Denoiser(nn.Identity(), parameterization="score")
    with pytest.raises(ConfigError, match="vp_timestep"):
        Denoiser(nn.Identity(), noise_label="vp_timestep")
    denoiser = Denoiser(IdealBackbone())
    with pytest.raises(GridError, match="sigma"):
        denoiser(torch.zeros(2, 1, 2, 3), torch.ones(3))
