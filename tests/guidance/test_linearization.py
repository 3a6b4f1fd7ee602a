"""Jacobian products of a function at a point, against explicit Jacobians; the network is never trained by them."""

from pathlib import Path

import torch

import geodiff.guidance
from geodiff.guidance.linearization import Linearization


def test_products_match_the_explicit_jacobian():
    weight = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def f(p):  # [B, 4] -> [B, 3], nonlinear
        return torch.tanh(p @ weight.T) * 2.0

    point = torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    lin = Linearization(f, point)
    jacobian = torch.func.jacrev(f)(point)  # [2, 3, 2, 4]
    v = torch.randn(2, 3, dtype=torch.float64)
    t = torch.randn(2, 4, dtype=torch.float64)
    torch.testing.assert_close(lin.value, f(point))
    torch.testing.assert_close(lin.vjp(v), torch.einsum("bn,bnco->co", v, jacobian))
    torch.testing.assert_close(lin.jvp(t), torch.einsum("bnco,co->bn", jacobian, t))
    torch.testing.assert_close(lin.vjp(2 * v, keep_graph=False), 2 * torch.einsum("bn,bnco->co", v, jacobian))


def test_works_under_no_grad_and_leaves_parameters_alone():
    layer = torch.nn.Linear(4, 2)
    point = torch.ones(3, 4)
    with torch.no_grad():
        lin = Linearization(layer, point)
        grad = lin.vjp(torch.ones(3, 2))
    torch.testing.assert_close(grad, layer.weight.sum(0).detach().expand(3, -1))
    assert not lin.value.requires_grad and not point.requires_grad
    assert layer.weight.grad is None


def test_the_guidance_package_enables_gradients_in_one_place():
    """Every guidance method differentiates through :class:`Linearization` (no copy of the enable-grad pattern)."""
    package = Path(geodiff.guidance.__file__).parent
    users = sorted(p.name for p in package.glob("*.py") if "torch.enable_grad" in p.read_text())
    assert users == ["linearization.py"]
