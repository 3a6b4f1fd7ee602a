"""The fused sampler steps, the denoiser's scalar-sigma fast path and the lean guidance gradients equal the plain
formulas they replace (float64, to rounding)."""

import math

import pytest
import torch

from geodiff.backbones.unet import UNet
from geodiff.diffusion.denoiser import Denoiser
from geodiff.diffusion.samplers import DDIMSampler, DDPMSampler, DPMSolverPP2MSampler, EulerSampler, HeunSampler
from geodiff.diffusion.schedules import EDMSchedule, VPSchedule
from geodiff.guidance import DPSGuidance, MMPSGuidance
from geodiff.guidance.mmps import conjugate_gradient
from geodiff.operators import GridPointOperator

SHAPE = (2, 3, 5)


class LinearDenoiser(torch.nn.Module):
    """``x0_hat = s(sigma) (M x) + b``: a linear map with a non-symmetric ``M`` (like a trained network)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        d = math.prod(SHAPE)
        self.m = torch.eye(d, dtype=torch.float64) + 0.1 * torch.randn(d, d, generator=g, dtype=torch.float64)
        self.b = torch.randn(d, generator=g, dtype=torch.float64)

    def forward(self, x, sigma, cond=None):
        s = 1.0 / (1.0 + float(sigma) ** 2)
        return (s * x.reshape(x.shape[0], -1) @ self.m.T + self.b).reshape(x.shape)


def reference_step(name, denoiser, x, sigma, sigma_next, z, previous=None):
    """The step formulas of the sampler module docstring, written out plainly."""
    d = denoiser(x, sigma)
    if name == "ddpm":
        r2 = (sigma_next / sigma) ** 2
        return d + r2 * (x - d) + sigma_next * math.sqrt(1 - r2) * z
    if name == "ddim":
        return d + sigma_next / sigma * (x - d)
    if name == "euler":
        return x + (sigma_next - sigma) * (x - d) / sigma
    if name == "heun":
        slope = (x - d) / sigma
        x_euler = x + (sigma_next - sigma) * slope
        slope_next = (x_euler - denoiser(x_euler, sigma_next)) / sigma_next
        return x + (sigma_next - sigma) * (slope + slope_next) / 2
    h = math.log(sigma) - math.log(sigma_next)
    if previous is None:
        estimate = d
    else:
        r = (math.log(previous[1]) - math.log(sigma)) / h
        estimate = (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * previous[0]
    return (sigma_next / sigma) * x + (-math.expm1(-h)) * estimate


SAMPLERS = {"ddpm": DDPMSampler(), "ddim": DDIMSampler(), "euler": EulerSampler(), "heun": HeunSampler(),
            "dpmpp_2m": DPMSolverPP2MSampler()}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_fused_steps_equal_the_plain_formulas(name):
    denoiser = LinearDenoiser()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, *SHAPE, dtype=torch.float64, generator=g)
    sigma, sigma_next, sigma_prev = 2.5, 1.2, 4.0
    state = {"steps": 10}
    if name == "dpmpp_2m":
        state["previous"] = (denoiser(x * 1.1, sigma_prev), sigma_prev)
    previous = state.get("previous")
    step_generator = torch.Generator().manual_seed(7)
    x_next, x0 = SAMPLERS[name].step(denoiser, x, 1, sigma, sigma_next, state, cond=None, generator=step_generator)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    expected = reference_step(name, denoiser, x, sigma, sigma_next, z, previous)
    torch.testing.assert_close(x_next, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x0, denoiser(x, sigma), rtol=0, atol=0)


def test_heun_last_step_returns_the_denoised_estimate_exactly():
    denoiser = LinearDenoiser()
    x = torch.randn(3, *SHAPE, dtype=torch.float64)
    x_next, x0 = HeunSampler().step(denoiser, x, 0, 0.5, 0.0, {"steps": 1}, cond=None, generator=None)
    assert torch.equal(x_next, x0)


@pytest.mark.parametrize(
    ("parameterization", "noise_label", "schedule"),
    [("edm", "edm", None), ("eps", "vp_timestep", VPSchedule()), ("v", "sigma", None), ("x0", "edm", None)],
)
@pytest.mark.parametrize("masked", [False, True])
def test_scalar_sigma_fast_path_equals_the_batched_path(parameterization, noise_label, schedule, masked):
    torch.manual_seed(0)
    net = UNet(in_channels=2, base_channels=8, channel_mults=(1, 2), mask_aware=masked).double()
    for p in net.parameters():  # the output layer starts at zero: give every weight a value
        torch.nn.init.normal_(p, std=0.1)
    mask = torch.rand(2, 8, 12) > 0.3 if masked else None
    denoiser = Denoiser(net, parameterization=parameterization, noise_label=noise_label, schedule=schedule, mask=mask)
    x = torch.randn(3, 2, 8, 12, dtype=torch.float64)
    for sigma in (0.01, 0.7, 40.0):
        fast = denoiser(x, sigma)
        batched = denoiser(x, torch.full((3,), sigma, dtype=torch.float64))
        torch.testing.assert_close(fast, batched, rtol=1e-10, atol=1e-12)
        if masked:
            assert torch.all(fast[:, ~mask] == 0)


def test_fast_path_follows_a_changed_mask():
    net = UNet(in_channels=1, base_channels=8, channel_mults=(1,))
    torch.nn.init.normal_(net.output[-1].weight, std=0.1)
    denoiser = Denoiser(net, mask=torch.ones(1, 4, 4, dtype=torch.bool))
    x = torch.ones(1, 1, 4, 4)
    assert torch.all(denoiser(x, 0.1) != 0)
    denoiser.mask[0, 0, 0] = False  # in-place change of the same tensor
    assert denoiser(x, 0.1)[0, 0, 0, 0] == 0
    denoiser.set_mask(torch.zeros(1, 4, 4, dtype=torch.bool))
    assert torch.all(denoiser(x, 0.1) == 0)


def test_sampling_with_the_fast_path_equals_sampling_with_per_member_sigmas():
    """A whole Heun run through the scalar path equals one through [B] sigmas (the general path)."""
    torch.manual_seed(0)
    net = UNet(in_channels=1, base_channels=8, channel_mults=(1,)).double()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    denoiser = Denoiser(net)

    def per_member(x, sigma, cond=None):
        return denoiser(x, torch.full((x.shape[0],), float(sigma), dtype=torch.float64), cond)

    noise = torch.randn(2, 1, 6, 8, dtype=torch.float64)
    sigmas = EDMSchedule().sigmas(6)
    torch.testing.assert_close(HeunSampler()(denoiser, noise, sigmas), HeunSampler()(per_member, noise, sigmas),
                               rtol=1e-9, atol=1e-9)


def _operator():
    return GridPointOperator(torch.tensor([0, 4, 7, 11, 12, 29]), SHAPE)


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_mmps_accumulated_correction_equals_the_explicit_final_vjp(iterations):
    """x0 + sigma^2 J^T A^T u with u from CG: the pull-back accumulated during CG equals a fresh one."""
    denoiser = LinearDenoiser(seed=1)
    op = _operator()
    y = torch.linspace(-1, 1, 6, dtype=torch.float64)
    err = torch.full((6,), 0.3, dtype=torch.float64)
    x = torch.randn(2, *SHAPE, dtype=torch.float64)
    sigma = 0.8
    guided = MMPSGuidance(y, op, err, cg_iterations=iterations).wrap(denoiser)(x, sigma)

    jacobian_t = (1.0 / (1.0 + sigma**2)) * denoiser.m.T  # (d x0_hat / d x)^T, flattened

    def jt(field):
        return (field.reshape(field.shape[0], -1) @ jacobian_t.T).reshape(field.shape)

    x0 = denoiser(x, sigma)
    residual = y - op(x0)
    u = conjugate_gradient(lambda v: err**2 * v + op(sigma**2 * jt(op.adjoint(v))), residual, iterations)
    expected = x0 + sigma**2 * jt(op.adjoint(u))
    torch.testing.assert_close(guided, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("convention", ["score", "chung"])
def test_dps_closed_form_pullback_equals_autograd_through_the_loss(convention):
    denoiser = LinearDenoiser(seed=2)
    op = _operator()
    y = torch.linspace(-1, 1, 6, dtype=torch.float64)
    err = torch.linspace(0.1, 0.6, 6, dtype=torch.float64)
    x = torch.randn(3, *SHAPE, dtype=torch.float64)
    guidance = DPSGuidance(y, op, err, convention=convention)
    x0, grad = guidance.wrap(denoiser).gradient(x, 1.3)
    x_in = x.clone().requires_grad_(True)
    residual = y - op(denoiser(x_in, 1.3))
    if convention == "score":
        loss = 0.5 * (residual**2 / err**2).sum()
    else:
        whitened = residual * ((err**2).mean().sqrt() / err)
        loss = whitened.pow(2).sum(dim=1).sqrt().sum()
    (expected,) = torch.autograd.grad(loss, x_in)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(x0, denoiser(x, 1.3))


def test_fast_path_accepts_a_mask_made_in_inference_mode():
    net = UNet(in_channels=1, base_channels=8, channel_mults=(1,))
    with torch.inference_mode():
        denoiser = Denoiser(net, mask=torch.ones(1, 4, 4, dtype=torch.bool))
        first = denoiser(torch.ones(1, 1, 4, 4), 0.1)
    torch.testing.assert_close(denoiser(torch.ones(1, 1, 4, 4), 0.1), first)


def test_changing_sigma_data_after_a_forward_pass_takes_effect():
    """The per-noise-level coefficient cache is keyed on the preconditioning settings, not on sigma alone."""
    from geodiff.backbones import UNet
    from geodiff.diffusion.denoiser import Denoiser

    torch.manual_seed(0)
    denoiser = Denoiser(UNet(in_channels=1, base_channels=8, channel_mults=(1,), num_res_blocks=1))
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        denoiser(x, 1.0)
        denoiser.sigma_data = 2.0
        changed = denoiser(x, 1.0)
        fresh = Denoiser(denoiser.backbone, sigma_data=2.0)(x, 1.0)
    assert torch.equal(changed, fresh)
