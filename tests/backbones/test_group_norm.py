"""FastGroupNorm: PyTorch's forward bit for bit, the per-channel backward equal to PyTorch's, used only where it
is faster, and switched into diffusers and geodiff UNets by runtime.optimize without changing what is saved."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from geodiff import runtime
from geodiff.backbones import DiffusersUNet
from geodiff.backbones.group_norm import (
    FastGroupNorm,
    group_norm_channels_last,
    takes_fast_backward,
    use_fast_group_norm,
)
from geodiff.diffusion.denoiser import Denoiser
from geodiff.errors import ConfigError


def channels_last(*shape, dtype=torch.float64, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = 2.0 * torch.randn(*shape, generator=g, dtype=dtype) + 0.7
    return x.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    "shape, groups, affine",
    [((2, 8, 32, 32), 4, True), ((1, 12, 5, 7), 3, True), ((3, 6, 4, 4), 1, False), ((2, 16, 9, 3), 16, True)],
)
def test_gradients_equal_pytorchs_group_norm_in_float64(shape, groups, affine):
    x = channels_last(*shape)
    weight = torch.randn(shape[1], dtype=torch.float64, requires_grad=True) if affine else None
    bias = torch.randn(shape[1], dtype=torch.float64, requires_grad=True) if affine else None
    grad_y = channels_last(*shape, seed=1)
    inputs_ref, inputs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    params = [p for p in (weight, bias) if p is not None]
    y_ref = F.group_norm(inputs_ref, groups, weight, bias, 1e-6)
    expected = torch.autograd.grad(y_ref, [inputs_ref, *params], grad_y)
    y = group_norm_channels_last(inputs, groups, weight, bias, 1e-6)
    got = torch.autograd.grad(y, [inputs, *params], grad_y)
    assert torch.equal(y, y_ref)
    assert got[0].is_contiguous(memory_format=torch.channels_last)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


def test_backward_passes_gradcheck_and_takes_gradients_of_any_layout():
    x = channels_last(1, 4, 3, 5).requires_grad_(True)
    weight = torch.randn(4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, w, b: group_norm_channels_last(a, 2, w, b), (x, weight, bias))
    # y.sum() sends back an expanded (stride-0) gradient; it must be read as the ones it stands for
    x2 = x.detach().clone().requires_grad_(True)
    group_norm_channels_last(x2, 2, weight.detach() + 1.0).pow(2).sum().backward()
    x3 = x.detach().clone().requires_grad_(True)
    F.group_norm(x3, 2, weight.detach() + 1.0).pow(2).sum().backward()
    torch.testing.assert_close(x2.grad, x3.grad, rtol=1e-12, atol=1e-12)


def test_a_second_derivative_is_refused_not_wrong():
    x = channels_last(1, 4, 3, 5).requires_grad_(True)
    (grad,) = torch.autograd.grad(group_norm_channels_last(x, 2).pow(3).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()


def test_fast_backward_is_taken_only_where_it_is_faster():
    big = channels_last(1, 64, 32, 64, dtype=torch.float32).requires_grad_(True)
    assert takes_fast_backward(big, 32)  # 2 channels per group, 2048 positions
    assert not takes_fast_backward(big, 8)  # 8 channels per group: PyTorch's kernel is as fast
    assert not takes_fast_backward(channels_last(1, 64, 16, 32, dtype=torch.float32).requires_grad_(True), 32)
    assert not takes_fast_backward(big.detach().contiguous().requires_grad_(True), 32)  # NCHW
    assert not takes_fast_backward(big.detach(), 32)  # nothing to differentiate
    assert not takes_fast_backward(big.detach().bfloat16().requires_grad_(True), 32)
    with torch.no_grad():
        assert not takes_fast_backward(big, 32)


def test_fast_group_norm_layer_matches_nn_group_norm_and_is_as_accurate_in_float32():
    torch.manual_seed(0)
    plain = nn.GroupNorm(32, 64)
    nn.init.normal_(plain.weight)
    nn.init.normal_(plain.bias)
    fast = FastGroupNorm(32, 64)
    fast.load_state_dict(plain.state_dict())
    exact = FastGroupNorm(32, 64).double()
    exact.load_state_dict(plain.state_dict())
    x = channels_last(2, 64, 32, 32, dtype=torch.float32)
    grad_y = channels_last(2, 64, 32, 32, dtype=torch.float32, seed=3)

    def gradients(layer, inputs, grad_out, native):
        inputs = inputs.clone().requires_grad_(True)
        y = F.group_norm(inputs, 32, layer.weight, layer.bias, layer.eps) if native else layer(inputs)
        return y, torch.autograd.grad(y, [inputs, layer.weight, layer.bias], grad_out)

    b = x.clone().requires_grad_(True)
    assert takes_fast_backward(b, fast.num_groups)
    y_plain, native = gradients(plain, x, grad_y, native=True)
    y_fast, got = gradients(fast, x, grad_y, native=False)
    _, truth = gradients(exact, x.double(), grad_y.double(), native=True)
    assert torch.equal(y_plain, y_fast)
    for g, n, t in zip(got, native, truth):  # float32 rounding no worse than PyTorch's own kernel's
        scale = float(t.abs().max())
        assert float((g.double() - t).abs().max()) <= 2 * float((n.double() - t).abs().max()) + 1e-7 * scale


def test_optimize_switches_a_diffusers_unet_without_changing_outputs_gradients_or_state():
    config = {"block_out_channels": (32, 64), "layers_per_block": 1, "norm_num_groups": 16,
              "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
              "up_block_types": ("AttnUpBlock2D", "UpBlock2D"), "attention_head_dim": 8}  # fmt: skip
    torch.manual_seed(0)
    reference = Denoiser(DiffusersUNet(in_channels=2, **config)).eval().requires_grad_(False)
    keys = set(reference.state_dict())
    optimized = Denoiser(DiffusersUNet(in_channels=2, **config))
    optimized.load_state_dict(reference.state_dict())
    runtime.optimize(optimized, allocator=False)
    layers = [m for m in optimized.modules() if isinstance(m, nn.GroupNorm)]
    assert layers and all(type(m) is FastGroupNorm for m in layers)
    assert set(optimized.state_dict()) == keys
    assert use_fast_group_norm(optimized) == 0  # already switched
    x = torch.randn(2, 2, 32, 64)
    with torch.no_grad():
        torch.testing.assert_close(optimized(x, 1.5), reference(x, 1.5), rtol=1e-4, atol=1e-4)
    grads = []
    for denoiser in (reference, optimized):
        x_in = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(denoiser(x_in, 1.5).square().sum(), x_in)
        grads.append(grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-4)


def test_bad_shapes_and_group_counts_are_rejected_by_name():
    with pytest.raises(ConfigError, match="12 channels do not split into 5 groups"):
        group_norm_channels_last(channels_last(1, 12, 4, 4), 5)
    with pytest.raises(ConfigError, match=r"x \[N, C, H, W\], got shape \(12, 16\)"):
        group_norm_channels_last(torch.zeros(12, 16), 4)
    with pytest.raises(ConfigError, match="8 channels do not split into 3 groups"):
        FastGroupNorm(3, 8)
