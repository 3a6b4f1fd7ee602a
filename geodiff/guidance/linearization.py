r"""A function linearised at a point: the one place guidance differentiates through a network or an operator.

Guidance methods need products with the Jacobian ``J = d f / d p`` of a function ``f`` at a point ``p`` (the
denoiser ``x -> x0_hat`` at the sampler's state, a decoder, an operator without an ``adjoint``, a reward), never
the Jacobian itself. :class:`Linearization` evaluates ``f(p)`` once with gradients enabled (samplers run under
``torch.no_grad``) and keeps the graph, so that any number of products follow without evaluating ``f`` again:

- ``vjp(v) = J^T v`` (vector-Jacobian product: one backward pass through the kept graph);
- ``jvp(t) = J t`` (Jacobian-vector product, by the double-backward trick: ``J t = d <J^T w, t> / d w`` for a
  dummy ``w``; the graph of ``J^T w`` is built on the first call).

The point is detached first, so nothing upstream of ``p`` is differentiated, and no parameter of ``f`` receives a
gradient (``torch.autograd.grad`` returns the gradient instead of accumulating it in ``.grad``).

Example
-------
>>> import torch
>>> from geodiff.guidance.linearization import Linearization
>>> square = Linearization(lambda p: p**2, torch.tensor([1.0, 3.0]))
>>> square.value.tolist(), square.vjp(torch.ones(2)).tolist(), square.jvp(torch.tensor([1.0, 0.0])).tolist()
([1.0, 9.0], [2.0, 6.0], [2.0, 0.0])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["Linearization"]


class Linearization:
    """``f`` evaluated at ``point`` with its graph kept: ``value = f(point)`` (detached) and Jacobian products.

    ``point``: any tensor (e.g. ``x [B, C, H, W]``); ``f`` maps it to a tensor of any shape (``[B, C, H, W]``,
    ``[B, N]``, ``[]``). ``vjp`` takes a tensor shaped like ``value`` and returns one shaped like ``point``;
    ``jvp`` the other way round.
    """

    def __init__(self, function: Callable[[Tensor], Tensor], point: Tensor):
        with torch.enable_grad():
            self.point = point.detach().requires_grad_(True)
            self.output = function(self.point)
        self.value = self.output.detach()
        self._dual: Tensor | None = None
        self._transposed: Tensor | None = None

    def vjp(self, cotangent: Tensor, *, keep_graph: bool = True) -> Tensor:
        """``J^T cotangent`` (shaped like ``point``); ``keep_graph=False`` frees the graph (the last product)."""
        return torch.autograd.grad(self.output, self.point, cotangent, retain_graph=keep_graph)[0]

    def jvp(self, tangent: Tensor) -> Tensor:
        """``J tangent`` (shaped like ``value``), by double backward through the kept graph."""
        if self._transposed is None:
            with torch.enable_grad():
                self._dual = torch.zeros_like(self.output, requires_grad=True)
                # J^T dual, differentiable in ``dual``: J t = d <J^T dual, t> / d dual
                self._transposed = torch.autograd.grad(self.output, self.point, self._dual, create_graph=True)[0]
        return torch.autograd.grad(self._transposed, self._dual, tangent, retain_graph=True)[0]
